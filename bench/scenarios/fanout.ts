import { type BurstFigures, burst, PUBLISH_CONCURRENCY, STALL_MS } from '../burst.ts'
import { StreamGenerator } from '../generator.ts'
import { type PublishSplit, publishTimings, splitOf } from '../service-timings.ts'
import { nowMs, ratio, round, type Spread, showSpread, spreadOf } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import { referenceLabel, startTarget, type Target, type TargetKind } from '../targets.ts'
import { type BenchContext, freshTenant, type Row, type ScenarioResult, type Scope, tenantPublisher } from './common.ts'

/** Opening streams stops after this (per server), so a slow server cannot eat the scenario's whole time limit. */
const OPEN_PHASE_MS = 60_000
/** No new round starts after this much time in rounds (per server); at least MIN_ROUNDS always run. */
const ROUNDS_BUDGET_MS = 45_000
/** Rounds that run whatever the budget (or all of them, when fewer are asked for): medians and ranges need them. */
const MIN_ROUNDS = 3
/** Between rounds: the last round's stragglers and timers settle. */
const ROUND_PAUSE_MS = 500

export interface FanoutSizes {
  streams: number
  /** Tenant broadcasts per round. */
  events: number
  /** Bursts measured on the same streams; the median one is reported, so one disturbed burst does not decide. */
  rounds: number
  /** Tenant broadcasts per round sent one in flight at a time (each after the previous one was answered). */
  steady: number
  /** After the rounds: broadcasts at a fixed rate for a fixed time (open loop), once per server. */
  paced?: { ratePerSec: number; durationMs: number }
}

/** One phase's figures over the rounds: median and range of each. */
export interface PhaseSpread {
  deliveriesPerSec: Spread
  latencyP50Ms: Spread
  latencyP99Ms: Spread
  /** Publish request sent to answered (201; Nchan 201/202). */
  publishAnswerP50Ms: Spread
  publishAnswerP99Ms: Spread
  serverCpuUsPerDelivery: Spread
  serverCpuPct: Spread
  generatorCpuPct: Spread
  lost: number
  duplicated: number
  outOfOrder: number
  publishErrors: number
}

function phaseSpread(rounds: BurstFigures[]): PhaseSpread {
  return {
    deliveriesPerSec: spreadOf(rounds.map((b) => b.deliveriesPerSec)),
    latencyP50Ms: spreadOf(rounds.map((b) => b.latencyMs?.p50)),
    latencyP99Ms: spreadOf(rounds.map((b) => b.latencyMs?.p99)),
    publishAnswerP50Ms: spreadOf(rounds.map((b) => b.publishLatencyMs?.p50)),
    publishAnswerP99Ms: spreadOf(rounds.map((b) => b.publishLatencyMs?.p99)),
    serverCpuUsPerDelivery: spreadOf(rounds.map((b) => b.serverCpuUsPerDelivery)),
    serverCpuPct: spreadOf(rounds.map((b) => b.serverCpuPct)),
    generatorCpuPct: spreadOf(rounds.map((b) => b.generatorCpuPct)),
    lost: rounds.reduce((n, b) => n + b.lost, 0),
    duplicated: rounds.reduce((n, b) => n + b.duplicated, 0),
    outOfOrder: rounds.reduce((n, b) => n + b.outOfOrder, 0),
    publishErrors: rounds.reduce((n, b) => n + b.publishErrors, 0),
  }
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
  /** Each phase over the rounds (median and range): bursts of 8 in flight, and one in flight at a time. */
  phases: { burst: PhaseSpread; oneInFlight: PhaseSpread }
  /** The service's own mean time per publish in each round (herald only, from its /metrics). */
  publishSplits?: { burst: Array<PublishSplit | undefined>; oneInFlight: Array<PublishSplit | undefined> }
  /** The paced phase (one run), when the scenario has one. */
  paced: (BurstFigures & { ratePerSec: number; durationSec: number }) | undefined
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
    compared('rounds', (f) => f.rounds, false),
  ]
  // Each phase's figures as `median (min–max)` over the rounds; the ratio is of the medians.
  const spreadRow = (label: string, pick: (f: FanoutFigures) => Spread, digits = 1): Row => {
    const row: Row = [
      name,
      label,
      showSpread(pick(ours), digits),
      showSpread(pick(rawNode), digits),
      ratio(pick(ours).median, pick(rawNode).median),
    ]
    if (nchan) row.push(showSpread(pick(nchan), digits), ratio(pick(ours).median, pick(nchan).median))
    return row
  }
  for (const [phase, title] of [
    ['burst', `burst (${sizes.events} broadcasts, 8 in flight)`],
    ['oneInFlight', `one in flight (${sizes.steady} broadcasts)`],
  ] as const) {
    const p = (f: FanoutFigures) => f.phases[phase]
    rows.push(
      spreadRow(`${title}: deliveries /s`, (f) => p(f).deliveriesPerSec, 0),
      spreadRow(`${title}: latency p50 ms`, (f) => p(f).latencyP50Ms),
      spreadRow(`${title}: latency p99 ms`, (f) => p(f).latencyP99Ms),
      spreadRow(`${title}: publish answer p50 ms`, (f) => p(f).publishAnswerP50Ms, 2),
      spreadRow(`${title}: publish answer p99 ms`, (f) => p(f).publishAnswerP99Ms, 2),
      spreadRow(`${title}: server CPU µs / delivery`, (f) => p(f).serverCpuUsPerDelivery, 2),
      both(
        `${title}: server / generator CPU % (medians)`,
        (f) => `${p(f).serverCpuPct.median} / ${p(f).generatorCpuPct.median}`,
      ),
      both(
        `${title}: lost / duplicated / out of order`,
        (f) => `${p(f).lost} / ${p(f).duplicated} / ${p(f).outOfOrder}`,
      ),
    )
  }
  if (sizes.paced) {
    const title = `paced ${sizes.paced.ratePerSec}/s × ${sizes.paced.durationMs / 1000} s`
    rows.push(
      compared(`${title}: latency p50 ms`, (f) => f.paced?.latencyMs?.p50),
      compared(`${title}: latency p99 ms`, (f) => f.paced?.latencyMs?.p99),
      compared(`${title}: latency max ms`, (f) => f.paced?.latencyMs?.max),
      compared(`${title}: publish answer p99 ms`, (f) => f.paced?.publishLatencyMs?.p99),
      compared(`${title}: server CPU µs / delivery`, (f) => f.paced?.serverCpuUsPerDelivery),
      both(`${title}: lost / duplicated / out of order`, (f) =>
        f.paced ? `${f.paced.lost} / ${f.paced.duplicated} / ${f.paced.outOfOrder}` : '-',
      ),
    )
  }
  rows.push(both('all phases: lost / duplicated', (f) => `${f.lost} / ${f.duplicated}`))
  // Ours divided by the reference's: below 1 is slower for rates, above 1 is slower for latencies and costs.
  const phaseRatios = (a: PhaseSpread, b: PhaseSpread) => ({
    deliveriesPerSec: ratio(a.deliveriesPerSec.median, b.deliveriesPerSec.median),
    latencyP50: ratio(a.latencyP50Ms.median, b.latencyP50Ms.median),
    latencyP99: ratio(a.latencyP99Ms.median, b.latencyP99Ms.median),
    publishAnswerP50: ratio(a.publishAnswerP50Ms.median, b.publishAnswerP50Ms.median),
    publishAnswerP99: ratio(a.publishAnswerP99Ms.median, b.publishAnswerP99Ms.median),
    serverCpuPerDelivery: ratio(a.serverCpuUsPerDelivery.median, b.serverCpuUsPerDelivery.median),
  })
  const ratiosTo = (ref: FanoutFigures) => ({
    burst: phaseRatios(ours.phases.burst, ref.phases.burst),
    oneInFlight: phaseRatios(ours.phases.oneInFlight, ref.phases.oneInFlight),
    paced: ours.paced
      ? {
          latencyP50: ratio(ours.paced.latencyMs?.p50, ref.paced?.latencyMs?.p50),
          latencyP99: ratio(ours.paced.latencyMs?.p99, ref.paced?.latencyMs?.p99),
          serverCpuPerDelivery: ratio(ours.paced.serverCpuUsPerDelivery, ref.paced?.serverCpuUsPerDelivery),
        }
      : null,
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
      sizes,
      serviceWorkers: Number(ctx.serviceWorkers),
      phases: ours.phases,
      paced: ours.paced,
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
  const perRound = sizes.events + sizes.steady
  const pacedEvents = sizes.paced ? Math.round((sizes.paced.ratePerSec * sizes.paced.durationMs) / 1000) : 0
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
    events: perRound * sizes.rounds + pacedEvents,
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

    const bursts: Array<BurstFigures & { publishSplit?: PublishSplit }> = []
    const steady: Array<BurstFigures & { publishSplit?: PublishSplit }> = []
    const roundsStarted = nowMs()
    // The service says how long its publishes took inside it (its /metrics): the rest of an answer is waiting.
    const timings = () => (target.kind === 'herald' ? publishTimings(server.host, server.port) : undefined)
    const phase = async (
      events: number,
      first: number,
      extra: Partial<Parameters<typeof burst>[0]>,
    ): Promise<BurstFigures & { publishSplit?: PublishSplit }> => {
      const before = await timings()
      const b = await burst({
        serverCpuMs: () => server.cpuMs(),
        generator,
        events,
        publish: (i) => broadcast(first + i),
        accepted: target.accepted,
        expectedFor: (accepted) => opened.opened * accepted.length,
        ...extra,
      })
      const after = await timings()
      return before && after ? { ...b, publishSplit: splitOf(before, after) } : b
    }
    const logPhase = (what: string, b: BurstFigures & { publishSplit?: PublishSplit }) =>
      ctx.log(
        `  ${server.name} ${what}: ${b.deliveriesPerSec} deliveries/s, p50 ${b.latencyMs?.p50} ms, p99 ` +
          `${b.latencyMs?.p99} ms, publish answer p50 ${b.publishLatencyMs?.p50} ms` +
          (b.publishSplit
            ? ` (inside the service ${b.publishSplit.serviceMs} ms on average, ${b.publishSplit.statementMs} ms of it the transaction)`
            : '') +
          `, ${b.serverCpuUsPerDelivery} µs server CPU per delivery, lost ${b.lost}`,
      )
    for (let r = 0; r < sizes.rounds && (r < MIN_ROUNDS || nowMs() - roundsStarted < ROUNDS_BUDGET_MS); r++) {
      scope.check()
      await new Promise((resolve) => setTimeout(resolve, ROUND_PAUSE_MS))
      const b = await phase(sizes.events, r * perRound, {})
      bursts.push(b)
      logPhase(`round ${r + 1} burst`, b)
      scope.check()
      await new Promise((resolve) => setTimeout(resolve, ROUND_PAUSE_MS))
      const s1 = await phase(sizes.steady, r * perRound + sizes.events, { concurrency: 1 })
      steady.push(s1)
      logPhase(`round ${r + 1} one in flight`, s1)
    }
    let paced: FanoutFigures['paced']
    if (sizes.paced) {
      scope.check()
      await new Promise((resolve) => setTimeout(resolve, ROUND_PAUSE_MS))
      const p = await phase(pacedEvents, perRound * sizes.rounds, { intervalMs: 1000 / sizes.paced.ratePerSec })
      paced = { ...p, ratePerSec: sizes.paced.ratePerSec, durationSec: sizes.paced.durationMs / 1000 }
      logPhase(`paced ${sizes.paced.ratePerSec}/s`, p)
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
      // Losses and duplicates of every round and phase count, not only the median burst's.
      lost: [...bursts, ...steady, ...(paced ? [paced] : [])].reduce((n, b) => n + b.lost, 0),
      duplicated: [...bursts, ...steady, ...(paced ? [paced] : [])].reduce((n, b) => n + b.duplicated, 0),
      outOfOrder: [...bursts, ...steady, ...(paced ? [paced] : [])].reduce((n, b) => n + b.outOfOrder, 0),
      rounds: bursts.length,
      phases: { burst: phaseSpread(bursts), oneInFlight: phaseSpread(steady) },
      // The service's own mean time per publish (request read to answer sent; the transaction), per round.
      publishSplits: { burst: bursts.map((b) => b.publishSplit), oneInFlight: steady.map((b) => b.publishSplit) },
      paced,
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
