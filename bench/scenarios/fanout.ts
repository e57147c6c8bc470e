import { mintToken } from '../../src/tokens.ts'
import { StreamGenerator } from '../generator.ts'
import type { RunningServer } from '../processes.ts'
import { type PostResult, Publisher } from '../publisher.ts'
import { nowMs, type Percentiles, percentiles, ratio, round, Samples } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import {
  type BenchContext,
  freshTenant,
  type Row,
  type ScenarioResult,
  type Scope,
  startReference,
  startService,
} from './common.ts'

/** Publishes in flight at once during the burst: "as fast as possible" without one socket per event. */
const PUBLISH_CONCURRENCY = 8
/** Nothing new for this long after the burst: whatever has not arrived counts as lost. */
const STALL_MS = 15_000
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

/** One burst: every figure the scenario reports about delivery. */
export interface BurstFigures {
  events: number
  publishErrors: number
  /** Publish request latency (send to 201) during the burst. */
  publishLatencyMs: Percentiles | null
  /** Distinct (stream, event) deliveries per second, from the first publish sent to the last event received. */
  deliveriesPerSec: number
  /** Publish sent (the `t` in the event's data) to event received, over every delivery. */
  latencyMs: Percentiles | null
  lost: number
  duplicated: number
  outOfOrder: number
  durationSec: number
  /** Server CPU time during the burst per delivery, µs: less distorted by other load than the rates. */
  serverCpuUsPerDelivery: number
  /** Server CPU during the burst, % of one core: near 100 means the server was the bottleneck. */
  serverCpuPct: number
  /** Load-generator CPU during the burst, % of one core per generator process: near 100, the generator was. */
  generatorCpuPct: number
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
  ctx.log(`${name}: service`)
  const service = await startService(ctx, scope)
  const ours = await measure(name, service, ctx, scope, sizes)
  await service.stop()
  scope.check()
  ctx.log(`${name}: reference`)
  const refServer = await startReference(ctx, scope)
  const reference = await measure(name, refServer, ctx, scope, sizes)
  await refServer.stop()

  const compared = (label: string, pick: (f: FanoutFigures) => number | null | undefined, withRatio = true): Row => {
    const [a, b] = [pick(ours) ?? null, pick(reference) ?? null]
    return [name, label, a, b, withRatio ? ratio(a, b) : null]
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
    [
      name,
      'server / generator CPU %',
      `${ours.serverCpuPct} / ${ours.generatorCpuPct}`,
      `${reference.serverCpuPct} / ${reference.generatorCpuPct}`,
      null,
    ],
    [
      name,
      'lost / duplicated',
      `${ours.lost} / ${ours.duplicated}`,
      `${reference.lost} / ${reference.duplicated}`,
      null,
    ],
  ]
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
      reference: { server: 'raw node:http, in memory', ...reference },
      // Ours divided by the reference's: below 1 is slower for rates, above 1 is slower for latencies and costs.
      ratio: {
        deliveriesPerSec: ratio(ours.deliveriesPerSec, reference.deliveriesPerSec),
        latencyP50: ratio(ours.latencyMs?.p50, reference.latencyMs?.p50),
        latencyP99: ratio(ours.latencyMs?.p99, reference.latencyMs?.p99),
        serverCpuPerDelivery: ratio(ours.serverCpuUsPerDelivery, reference.serverCpuUsPerDelivery),
        streamsOpenedPerSec: ratio(ours.streamsOpenedPerSec, reference.streamsOpenedPerSec),
        serverCpuPerStreamOpened: ratio(ours.serverCpuMsPerStreamOpened, reference.serverCpuMsPerStreamOpened),
        serverRssMiB: ratio(ours.serverRssMiB, reference.serverRssMiB),
      },
    },
    rows,
  }
}

/** One server: open the streams, warm up, then the bursts; the same steps for the service and the reference. */
async function measure(
  name: string,
  server: RunningServer,
  ctx: BenchContext,
  scope: Scope,
  sizes: FanoutSizes,
): Promise<FanoutFigures> {
  const tenant = freshTenant(name)
  const publisher = new Publisher(
    server.host,
    server.port,
    mintToken(ctx.secret, { sub: 'bench-publisher', tenant, scope: 'events:publish events:broadcast' }),
    PUBLISH_CONCURRENCY,
  )
  scope.defer(() => publisher.close())
  // The publisher's connections first: a server near its open-file limit stalls new connections.
  await publisher.warm()
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
    const broadcast = (n: number) =>
      publisher.post(
        '/v1/events',
        JSON.stringify({
          type: 'bench.fanout',
          to: { tenant: true },
          title: `Bench event ${n}`,
          body: 'A tenant-wide notice of ordinary size, as a school would send to everyone.',
          data: { t: nowMs(), n } satisfies BenchData,
        }),
      )

    // One event before measuring: proves every stream is live and warms both servers' code paths alike.
    const warm = await broadcast(-1)
    if (warm.status !== 201) throw new Error(`warm-up publish answered ${warm.status}: ${warm.body}`)
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
      bursts.push(await burst(server, generator, opened.opened, sizes.events, (i) => broadcast(r * sizes.events + i)))
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

/** Publishes `events` broadcasts, PUBLISH_CONCURRENCY at a time, and waits until every stream has them all. */
async function burst(
  server: RunningServer,
  generator: StreamGenerator,
  streams: number,
  events: number,
  broadcast: (i: number) => Promise<PostResult>,
): Promise<BurstFigures> {
  const publishLatency = new Samples()
  let publishErrors = 0
  let next = 0
  const cpuBefore = { server: server.cpuMs(), generator: generator.cpuMs() }
  const started = nowMs()
  await Promise.all(
    Array.from({ length: PUBLISH_CONCURRENCY }, async () => {
      while (next < events) {
        const r = await broadcast(next++)
        if (r.status === 201) publishLatency.push(r.ms)
        else publishErrors++
      }
    }),
  )
  const expected = streams * (events - publishErrors)
  await generator.waitFor((p) => p.unique >= expected, STALL_MS)
  const report = await generator.report(true)
  const wallMs = nowMs() - started
  const serverCpuMs = server.cpuMs() - cpuBefore.server
  const generatorCpuMs = generator.cpuMs() - cpuBefore.generator
  const durationMs = report.lastReceiveMs - started
  return {
    events: events - publishErrors,
    publishErrors,
    publishLatencyMs: percentiles(publishLatency.values()),
    deliveriesPerSec: durationMs > 0 ? round(report.unique / (durationMs / 1000)) : 0,
    latencyMs: percentiles(report.latencies),
    lost: expected - report.unique,
    duplicated: report.duplicated,
    outOfOrder: report.outOfOrder,
    durationSec: round(durationMs / 1000, 3),
    serverCpuUsPerDelivery: round((serverCpuMs * 1000) / Math.max(1, report.unique), 2),
    serverCpuPct: round((100 * serverCpuMs) / wallMs),
    generatorCpuPct: round((100 * generatorCpuMs) / wallMs / generator.processes),
  }
}
