import { STALL_MS } from '../burst.ts'
import { databaseCpuSince, databaseOf } from '../database-cpu.ts'
import { StreamGenerator } from '../generator.ts'
import { nowMs, ratio, round, type Spread, showSpread, spreadOf } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import { referenceLabel, startTarget, type Target, type TargetKind } from '../targets.ts'
import { type BenchContext, freshTenant, type Row, type ScenarioResult, type Scope, tenantPublisher } from './common.ts'

// Scenario 14: a reconnect storm. N streams of one tenant are open and caught up; every one of them is dropped
// (the client destroys its socket, as a network cut or a load balancer restart would); K tenant broadcasts are
// published while they are away; then all N reconnect at once, each with `Last-Event-ID: <the id of the last
// event it received>`. Measured: from the first reconnect request sent to the last missed event received, with
// every stream holding all K missed events, none twice, in order; and the server's CPU per resumed stream.
// The same rounds on the same streams (each round's events numbered apart). References: Nchan (its channel's
// message buffer answers Last-Event-ID); the raw-Node reference keeps no log, so it cannot resume and is skipped.

const OPEN_PHASE_MS = 60_000
/** After the drop: the server notices the closed sockets before anything is published. */
const DROP_SETTLE_MS = 1_000
/** After the publishes: the storm starts on a quiet server (the service's own log tail has followed them). */
const PUBLISH_SETTLE_MS = 500

export interface StormSizes {
  /** One measurement per size, on a fresh server each. */
  streams: number[]
  /** Broadcasts published while the streams are away, per round. */
  missed: number
  rounds: number
  /**
   * Reconnect requests in flight at once per generator process: "all at once" from the client's side, bounded so
   * the storm measures the server, not the kernel's accept backlog (SYN retries after 1 s, 3 s ...).
   */
  reconnectConcurrency: number
}

interface StormRound {
  /** First reconnect request sent to the last missed event received, ms. */
  catchUpMs: number
  /** First reconnect request sent to the last reconnect answered (200 and headers), ms. */
  reconnectedMs: number
  serverCpuMs: number
  serverCpuMsPerStream: number
  /** PostgreSQL only, the service only: CPU of the database's backends over the catch-up, per stream back. */
  databaseCpuMsPerStream: number | undefined
  /** The service's CPU and its database's together, per stream back (Nchan: its own, it has no database). */
  totalCpuMsPerStream: number
  reconnected: number
  reconnectFailed: number
  reconnectFailures: Record<string, number>
  expected: number
  delivered: number
  lost: number
  duplicated: number
  outOfOrder: number
  publishErrors: number
  /** Server CPU during the catch-up, % of one core. */
  serverCpuPct: number
  /** Load-generator CPU during the catch-up, % of one core per generator process: near 100, it was the limit. */
  generatorCpuPct: number
}

interface StormFigures {
  streams: number
  openFailed: number
  rounds: StormRound[]
  catchUpMs: Spread
  reconnectedMs: Spread
  serverCpuMsPerStream: Spread
  databaseCpuMsPerStream: Spread
  totalCpuMsPerStream: Spread
  serverCpuPct: Spread
  generatorCpuPct: Spread
  lost: number
  duplicated: number
  outOfOrder: number
  reconnectFailed: number
}

export async function reconnectStorm(ctx: BenchContext, scope: Scope, sizes: StormSizes): Promise<ScenarioResult> {
  const name = 'reconnect-storm'
  const bySize: Array<{ n: number; herald: StormFigures; nchan: StormFigures | undefined }> = []
  if (ctx.nchanMissing) ctx.log(`${name}: nchan skipped: ${ctx.nchanMissing}`)
  for (const n of sizes.streams) {
    const run = async (kind: TargetKind) => {
      scope.check()
      ctx.log(`${name}: ${kind}, ${n} streams`)
      const target = await startTarget(kind, ctx, scope)
      try {
        return await measure(name, target, ctx, scope, n, sizes)
      } finally {
        await target.server.stop()
      }
    }
    const herald = await run('herald')
    const nchan = ctx.nchanMissing ? undefined : await run('nchan')
    bySize.push({ n, herald, nchan })
  }

  const rows: Row[] = []
  const rawNodeSkipped = 'raw node keeps no event log: cannot resume'
  for (const { n, herald, nchan } of bySize) {
    const at = `${n.toLocaleString('en-US')} streams, ${sizes.missed} missed`
    const spreadRow = (label: string, pick: (f: StormFigures) => Spread, digits = 1): Row => {
      const row: Row = [name, `${at}: ${label}`, showSpread(pick(herald), digits), null, null]
      if (nchan) row.push(showSpread(pick(nchan), digits), ratio(pick(herald).median, pick(nchan).median))
      return row
    }
    const both = (label: string, show: (f: StormFigures) => string): Row => {
      const row: Row = [name, `${at}: ${label}`, show(herald), null, null]
      if (nchan) row.push(show(nchan), null)
      return row
    }
    rows.push(
      both('streams open / rounds', (f) => `${f.streams} / ${f.rounds.length}`),
      spreadRow('catch-up ms (first reconnect to last missed event)', (f) => f.catchUpMs, 0),
      spreadRow('all reconnects answered ms', (f) => f.reconnectedMs, 0),
      spreadRow('server CPU ms / resumed stream', (f) => f.serverCpuMsPerStream, 3),
      spreadRow('server CPU % during catch-up', (f) => f.serverCpuPct, 0),
      spreadRow('generator CPU % during catch-up (per process)', (f) => f.generatorCpuPct, 0),
      ...(ctx.backend === 'postgres'
        ? [
            spreadRow('PostgreSQL backends CPU ms / resumed stream', (f) => f.databaseCpuMsPerStream, 3),
            spreadRow('server + database CPU ms / resumed stream', (f) => f.totalCpuMsPerStream, 3),
          ]
        : []),
      both('lost / duplicated / out of order / reconnects failed', (f) =>
        [f.lost, f.duplicated, f.outOfOrder, f.reconnectFailed].join(' / '),
      ),
    )
  }
  const ratiosTo = (a: StormFigures, b: StormFigures | undefined) =>
    b
      ? {
          catchUpMs: ratio(a.catchUpMs.median, b.catchUpMs.median),
          serverCpuMsPerStream: ratio(a.serverCpuMsPerStream.median, b.serverCpuMsPerStream.median),
          totalCpuMsPerStream: ratio(a.totalCpuMsPerStream.median, b.totalCpuMsPerStream.median),
        }
      : null
  return {
    line: {
      scenario: name,
      backend: ctx.backend,
      sizes,
      serviceWorkers: Number(ctx.serviceWorkers),
      bySize: bySize.map(({ n, herald }) => ({ ...herald, streamsAsked: n })),
      lost: bySize.reduce((s, x) => s + x.herald.lost, 0),
      duplicated: bySize.reduce((s, x) => s + x.herald.duplicated, 0),
      references: {
        rawNode: { skipped: rawNodeSkipped },
        nchan: ctx.nchanMissing
          ? { skipped: ctx.nchanMissing }
          : {
              server: `nginx + Nchan, ${referenceLabel('nchan', ctx.nchanWorkers)}, no JWT auth, message buffer`,
              bySize: bySize.map(({ n, nchan }) => ({ ...nchan, streamsAsked: n })),
            },
      },
      ratios: {
        rawNode: null,
        nchan: Object.fromEntries(bySize.map(({ n, herald, nchan }) => [String(n), ratiosTo(herald, nchan)])),
      },
    },
    rows,
  }
}

/** One server, `n` streams: open and warm them, then the rounds of drop, publish K, storm back. */
async function measure(
  name: string,
  target: Target,
  ctx: BenchContext,
  scope: Scope,
  n: number,
  sizes: StormSizes,
): Promise<StormFigures> {
  const { server } = target
  const tenant = freshTenant(name)
  const publisher = await tenantPublisher(ctx, scope, server, tenant, 1)
  const { generator, opened } = await StreamGenerator.open({
    host: server.host,
    port: server.port,
    streams: n,
    events: sizes.missed * sizes.rounds,
    secret: ctx.secret,
    tenant,
    userPrefix: 'u',
    streamsPerWorker: ctx.streamsPerWorker,
    openPhaseMs: OPEN_PHASE_MS,
    ...target.streamsOf(tenant),
  })
  scope.defer(() => generator.close())
  ctx.log(`  ${server.name}: ${opened.opened} streams open in ${round(opened.openMs / 1000, 1)} s`)

  const broadcast = (i: number) => {
    const { path, body } = target.broadcast(tenant, {
      type: 'bench.storm',
      title: `Bench event ${i}`,
      body: 'A tenant-wide notice of ordinary size, published while every client was away.',
      data: { t: nowMs(), n: i } satisfies BenchData,
    })
    return publisher.post(path, body)
  }
  const rounds: StormRound[] = []
  try {
    // Every stream receives one event first: its id is what each stream sends back as Last-Event-ID.
    const warm = await broadcast(-1)
    if (!target.accepted(warm.status)) throw new Error(`warm-up publish answered ${warm.status}: ${warm.body}`)
    const warmed = await generator.waitFor((p) => p.warmed >= opened.opened, STALL_MS)
    if (warmed.warmed < opened.opened) ctx.log(`  only ${warmed.warmed} of ${opened.opened} streams got the warm-up`)
    await generator.report(true)

    for (let r = 0; r < sizes.rounds; r++) {
      scope.check()
      const dropped = await generator.disconnect()
      await new Promise((resolve) => setTimeout(resolve, DROP_SETTLE_MS))
      let publishErrors = 0
      // While they are away: one publish in flight at a time, numbered apart per round.
      for (let i = 0; i < sizes.missed; i++) {
        const res = await broadcast(r * sizes.missed + i)
        if (!target.accepted(res.status)) publishErrors++
      }
      await new Promise((resolve) => setTimeout(resolve, PUBLISH_SETTLE_MS))
      scope.check()
      const cpuBefore = server.cpuMs()
      const generatorCpuBefore = generator.cpuMs()
      const databaseCpu =
        target.kind === 'herald' && ctx.backend === 'postgres'
          ? databaseCpuSince(databaseOf(process.env.DATABASE_URL))
          : undefined
      const storm = await generator.reconnect(sizes.reconnectConcurrency)
      const answeredAt = nowMs()
      // Every dropped stream must get every accepted event: a stream that failed to come back loses them.
      const expected = dropped * (sizes.missed - publishErrors)
      await generator.waitFor((p) => p.unique >= expected, STALL_MS)
      const report = await generator.report(true)
      const serverCpuMs = server.cpuMs() - cpuBefore
      const databaseCpuMs = databaseCpu?.()
      const generatorCpuMs = generator.cpuMs() - generatorCpuBefore
      const back = Math.max(1, storm.reconnected)
      const catchUpMs = report.lastReceiveMs - storm.firstRequestMs
      const round1: StormRound = {
        catchUpMs: round(catchUpMs, 1),
        reconnectedMs: round(answeredAt - storm.firstRequestMs, 1),
        serverCpuMs: round(serverCpuMs, 1),
        serverCpuMsPerStream: round(serverCpuMs / back, 4),
        databaseCpuMsPerStream: databaseCpuMs === undefined ? undefined : round(databaseCpuMs / back, 4),
        totalCpuMsPerStream: round((serverCpuMs + (databaseCpuMs ?? 0)) / back, 4),
        reconnected: storm.reconnected,
        reconnectFailed: dropped - storm.reconnected,
        reconnectFailures: storm.failures,
        expected,
        delivered: report.unique,
        lost: expected - report.unique,
        duplicated: report.duplicated,
        outOfOrder: report.outOfOrder,
        publishErrors,
        serverCpuPct: round((100 * serverCpuMs) / Math.max(1, catchUpMs)),
        generatorCpuPct: round((100 * generatorCpuMs) / Math.max(1, catchUpMs) / generator.processes),
      }
      rounds.push(round1)
      ctx.log(
        `  ${server.name} round ${r + 1}: ${storm.reconnected} of ${dropped} back, all caught up in ` +
          `${round1.catchUpMs} ms (reconnects answered in ${round1.reconnectedMs} ms), ` +
          `${round1.serverCpuMsPerStream} ms server CPU per stream` +
          (databaseCpuMs === undefined ? '' : ` (+ ${round1.databaseCpuMsPerStream} ms PostgreSQL)`) +
          `, lost ${round1.lost}, duplicated ` +
          `${round1.duplicated}, out of order ${round1.outOfOrder}` +
          (storm.failed ? `, failed ${JSON.stringify(storm.failures)}` : ''),
      )
    }
  } finally {
    await generator.close()
    publisher.close()
  }
  return {
    streams: opened.opened,
    openFailed: opened.openFailed,
    rounds,
    catchUpMs: spreadOf(rounds.map((r) => r.catchUpMs)),
    reconnectedMs: spreadOf(rounds.map((r) => r.reconnectedMs)),
    serverCpuMsPerStream: spreadOf(rounds.map((r) => r.serverCpuMsPerStream)),
    databaseCpuMsPerStream: spreadOf(rounds.map((r) => r.databaseCpuMsPerStream)),
    totalCpuMsPerStream: spreadOf(rounds.map((r) => r.totalCpuMsPerStream)),
    serverCpuPct: spreadOf(rounds.map((r) => r.serverCpuPct)),
    generatorCpuPct: spreadOf(rounds.map((r) => r.generatorCpuPct)),
    lost: rounds.reduce((s, r) => s + r.lost, 0),
    duplicated: rounds.reduce((s, r) => s + r.duplicated, 0),
    outOfOrder: rounds.reduce((s, r) => s + r.outOfOrder, 0),
    reconnectFailed: rounds.reduce((s, r) => s + r.reconnectFailed, 0),
  }
}
