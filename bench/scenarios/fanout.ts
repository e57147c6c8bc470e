import { type BurstFigures, burst, PUBLISH_CONCURRENCY, STALL_MS } from '../burst.ts'
import { StreamGenerator } from '../generator.ts'
import { nowMs, ratio, round } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import { referenceLabel, startTarget, type Target, type TargetKind } from '../targets.ts'
import { type BenchContext, freshTenant, type Row, type ScenarioResult, type Scope, tenantPublisher } from './common.ts'

/** Opening streams stops after this (per server), so a slow server cannot eat the scenario's whole time limit. */
const OPEN_PHASE_MS = 60_000
/** No new round starts after this much time in rounds (per server); at least one always runs. */
const ROUNDS_BUDGET_MS = 30_000
/** Between rounds: the last round's stragglers and timers settle. */
const ROUND_PAUSE_MS = 500

export interface FanoutSizes {
  streams: number
  /** Tenant broadcasts per round. */
  events: number
  /** Bursts measured on the same streams; the median one is reported, so one disturbed burst does not decide. */
  rounds: number
}

export interface FanoutFigures extends BurstFigures {
  streams: number
  openFailed: number
  openFailures: Record<string, number>
  /** Opening every stream, from the first connect to the last 200. */
  openSec: number
  streamsOpenedPerSec: number
  /** Server CPU time per stream opened. */
  serverCpuMsPerStreamOpened: number
  generatorProcesses: number
  /** Server resident memory before the first stream. */
  serverRssMiBIdle: number
  /** Server resident memory with every stream open, before the bursts. */
  serverRssMiB: number
  /** Streams the server ended (or that failed) while we listened. */
  closedEarly: number
  /** Rounds run; the burst figures above are the median round's (by deliveries per second). */
  rounds: number
  perRound: Array<
    Pick<BurstFigures, 'deliveriesPerSec' | 'serverCpuUsPerDelivery' | 'lost' | 'duplicated'> & {
      latencyP50: number | undefined
      latencyP99: number | undefined
    }
  >
}

/** Scenarios 1 and 2: `streams` streams of one tenant, then bursts of `events` tenant broadcasts. */
export async function fanout(
  name: string,
  ctx: BenchContext,
  scope: Scope,
  sizes: FanoutSizes,
): Promise<ScenarioResult> {
  const run = async (kind: TargetKind) => {
    scope.check()
    ctx.log(`${name}: ${kind}`)
    const target = await startTarget(kind, ctx, scope)
    const figures = await measure(name, target, ctx, scope, sizes)
    await target.server.stop()
    return figures
  }
  const ours = await run('herald')
  const rawNode = await run('rawNode')
  if (ctx.nchanMissing) ctx.log(`${name}: nchan skipped: ${ctx.nchanMissing}`)
  const nchan = ctx.nchanMissing ? undefined : await run('nchan')

  const compared = (label: string, pick: (f: FanoutFigures) => number | null | undefined, withRatio = true): Row => {
    const [a, b] = [pick(ours) ?? null, pick(rawNode) ?? null]
    const row: Row = [name, label, a, b, withRatio ? ratio(a, b) : null]
    if (nchan) row.push(pick(nchan) ?? null, withRatio ? ratio(a, pick(nchan)) : null)
    return row
  }
  const both = (label: string, show: (f: FanoutFigures) => string): Row => {
    const row: Row = [name, label, show(ours), show(rawNode), null]
    if (nchan) row.push(show(nchan), null)
    return row
  }
  const rows: Row[] = [
    compared('streams open', (f) => f.streams, false),
    compared('streams opened /s', (f) => f.streamsOpenedPerSec),
    compared('server CPU ms / stream opened', (f) => f.serverCpuMsPerStreamOpened),
    compared('server RSS MiB, idle', (f) => f.serverRssMiBIdle),
    compared('server RSS MiB, streams open', (f) => f.serverRssMiB),
    compared('rounds (median shown)', (f) => f.rounds, false),
    compared('deliveries /s', (f) => f.deliveriesPerSec),
    compared('latency p50 ms', (f) => f.latencyMs?.p50),
    compared('latency p95 ms', (f) => f.latencyMs?.p95),
    compared('latency p99 ms', (f) => f.latencyMs?.p99),
    compared('latency max ms', (f) => f.latencyMs?.max),
    compared('server CPU µs / delivery', (f) => f.serverCpuUsPerDelivery),
    both('server / generator CPU %', (f) => `${f.serverCpuPct} / ${f.generatorCpuPct}`),
    both('lost / duplicated', (f) => `${f.lost} / ${f.duplicated}`),
  ]
  // Ours divided by the reference's: below 1 is slower for rates, above 1 is slower for latencies and costs.
  const ratiosTo = (ref: FanoutFigures) => ({
    deliveriesPerSec: ratio(ours.deliveriesPerSec, ref.deliveriesPerSec),
    latencyP50: ratio(ours.latencyMs?.p50, ref.latencyMs?.p50),
    latencyP99: ratio(ours.latencyMs?.p99, ref.latencyMs?.p99),
    serverCpuPerDelivery: ratio(ours.serverCpuUsPerDelivery, ref.serverCpuUsPerDelivery),
    streamsOpenedPerSec: ratio(ours.streamsOpenedPerSec, ref.streamsOpenedPerSec),
    serverCpuPerStreamOpened: ratio(ours.serverCpuMsPerStreamOpened, ref.serverCpuMsPerStreamOpened),
    serverRssMiB: ratio(ours.serverRssMiB, ref.serverRssMiB),
  })
  return {
    line: {
      scenario: name,
      backend: ctx.backend,
      streams: ours.streams,
      events: ours.events,
      deliveriesPerSec: ours.deliveriesPerSec,
      latencyMs: ours.latencyMs,
      lost: ours.lost,
      duplicated: ours.duplicated,
      details: ours,
      references: {
        rawNode: { server: 'raw node:http, in memory', ...rawNode },
        nchan: nchan
          ? { server: `nginx + Nchan, ${referenceLabel('nchan', ctx.nchanWorkers)}, no JWT auth`, ...nchan }
          : { skipped: ctx.nchanMissing },
      },
      ratios: { rawNode: ratiosTo(rawNode), nchan: nchan ? ratiosTo(nchan) : null },
    },
    rows,
  }
}

/** One server: open the streams, warm up, then the bursts; the same steps for the service and the references. */
async function measure(
  name: string,
  target: Target,
  ctx: BenchContext,
  scope: Scope,
  sizes: FanoutSizes,
): Promise<FanoutFigures> {
  const { server } = target
  const tenant = freshTenant(name)
  // The publisher's connections first: a server near its open-file limit stalls new connections.
  const publisher = await tenantPublisher(ctx, scope, server, tenant, PUBLISH_CONCURRENCY)
  scope.check()

  const serverRssMiBIdle = server.rssMiB()
  const cpuBeforeOpen = server.cpuMs()
  const { generator, opened } = await StreamGenerator.open({
    host: server.host,
    port: server.port,
    streams: sizes.streams,
    // Every round's events are numbered apart, so a straggler from one round is never counted in the next.
    events: sizes.events * sizes.rounds,
    secret: ctx.secret,
    tenant,
    userPrefix: 'u',
    streamsPerWorker: ctx.streamsPerWorker,
    openPhaseMs: OPEN_PHASE_MS,
    ...target.streamsOf(tenant),
  })
  scope.defer(() => generator.close())
  const openCpuMs = server.cpuMs() - cpuBeforeOpen
  const serverRssMiB = server.rssMiB()
  ctx.log(
    `  ${server.name}: ${opened.opened} streams open in ${round(opened.openMs / 1000, 1)} s` +
      (opened.openFailed ? ` (${opened.openFailed} failed: ${JSON.stringify(opened.failures)})` : ''),
  )

  try {
    scope.check()
    const broadcast = (n: number) => {
      const { path, body } = target.broadcast(tenant, {
        type: 'bench.fanout',
        title: `Bench event ${n}`,
        body: 'A tenant-wide notice of ordinary size, as a school would send to everyone.',
        data: { t: nowMs(), n } satisfies BenchData,
      })
      return publisher.post(path, body)
    }

    // One event before measuring: proves every stream is live and warms both servers' code paths alike.
    const warm = await broadcast(-1)
    if (!target.accepted(warm.status)) throw new Error(`warm-up publish answered ${warm.status}: ${warm.body}`)
    const warmed = await generator.waitFor((p) => p.warmed >= opened.opened, STALL_MS)
    if (warmed.warmed < opened.opened) {
      ctx.log(`  only ${warmed.warmed} of ${opened.opened} streams got the warm-up event`)
    }
    await generator.report(true)

    const bursts: BurstFigures[] = []
    const roundsStarted = nowMs()
    for (let r = 0; r < sizes.rounds && (r === 0 || nowMs() - roundsStarted < ROUNDS_BUDGET_MS); r++) {
      scope.check()
      await new Promise((resolve) => setTimeout(resolve, ROUND_PAUSE_MS))
      bursts.push(
        await burst({
          serverCpuMs: () => server.cpuMs(),
          generator,
          events: sizes.events,
          publish: (i) => broadcast(r * sizes.events + i),
          accepted: target.accepted,
          expectedFor: (accepted) => opened.opened * accepted.length,
        }),
      )
      const b = bursts[bursts.length - 1]
      ctx.log(
        `  ${server.name} round ${r + 1}: ${b.deliveriesPerSec} deliveries/s, p99 ${b.latencyMs?.p99} ms, ` +
          `${b.serverCpuUsPerDelivery} µs server CPU per delivery, lost ${b.lost}`,
      )
    }
    const median = [...bursts].sort((a, b) => a.deliveriesPerSec - b.deliveriesPerSec)[Math.floor(bursts.length / 2)]
    const closedEarly = (await generator.report()).closedEarly
    return {
      streams: opened.opened,
      openFailed: opened.openFailed,
      openFailures: opened.failures,
      openSec: round(opened.openMs / 1000, 2),
      streamsOpenedPerSec: round(opened.opened / (opened.openMs / 1000)),
      serverCpuMsPerStreamOpened: round(openCpuMs / Math.max(1, opened.opened), 3),
      generatorProcesses: opened.workers,
      serverRssMiBIdle,
      serverRssMiB,
      closedEarly,
      ...median,
      // Losses and duplicates of every round count, not only the median one's.
      lost: bursts.reduce((n, b) => n + b.lost, 0),
      duplicated: bursts.reduce((n, b) => n + b.duplicated, 0),
      outOfOrder: bursts.reduce((n, b) => n + b.outOfOrder, 0),
      rounds: bursts.length,
      perRound: bursts.map((b) => ({
        deliveriesPerSec: b.deliveriesPerSec,
        latencyP50: b.latencyMs?.p50,
        latencyP99: b.latencyMs?.p99,
        serverCpuUsPerDelivery: b.serverCpuUsPerDelivery,
        lost: b.lost,
        duplicated: b.duplicated,
      })),
    }
  } finally {
    // Streams closed by the client, not ended by the server's shutdown: the next step starts clean.
    await generator.close()
    publisher.close()
  }
}
