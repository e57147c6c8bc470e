import { type BurstFigures, burst, STALL_MS } from '../burst.ts'
import { StreamGenerator } from '../generator.ts'
import { nowMs, round } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import { startTarget } from '../targets.ts'
import { type BenchContext, freshTenant, type Row, type ScenarioResult, type Scope, tenantPublisher } from './common.ts'

// Scenario 12: live-only events (`store: false`) against stored events, on the same streams of one service:
// tenant broadcasts in bursts (8 publishes in flight) and one publish in flight at a time, stored and live rounds
// alternating so neither gets a warmer or quieter machine. Target (issue 20): live at least as many deliveries /s.

const OPEN_PHASE_MS = 60_000
const ROUND_PAUSE_MS = 500

export interface LiveSizes {
  streams: number
  /** Tenant broadcasts per burst. */
  events: number
  /** Broadcasts per one-in-flight phase. */
  sequential: number
  /** Rounds; each runs a stored and a live burst, then a stored and a live one-in-flight phase. */
  rounds: number
}

type Kind = 'stored' | 'live'
type Phase = 'burst' | 'one-in-flight'

/** Median and range of one figure over the rounds. */
interface Spread {
  median: number
  min: number
  max: number
  samples: number[]
}

/** One kind's figures in one phase, over the rounds. */
interface PhaseFigures {
  deliveriesPerSec: Spread
  latencyP50Ms: Spread
  latencyP99Ms: Spread
  serverCpuUsPerDelivery: Spread
  publishLatencyP50Ms: Spread
  lost: number
  duplicated: number
  publishErrors: number
}

function spread(samples: number[]): Spread {
  const sorted = [...samples].sort((a, b) => a - b)
  return { median: sorted[Math.floor(sorted.length / 2)], min: sorted[0], max: sorted[sorted.length - 1], samples }
}

export async function liveVersusStored(ctx: BenchContext, scope: Scope, sizes: LiveSizes): Promise<ScenarioResult> {
  const name = 'live'
  const target = await startTarget('herald', ctx, scope)
  const { server } = target
  const tenant = freshTenant(name)
  const publisher = await tenantPublisher(ctx, scope, server, tenant, 8)
  const perRound = 2 * sizes.events + 2 * sizes.sequential
  const { generator, opened } = await StreamGenerator.open({
    host: server.host,
    port: server.port,
    streams: sizes.streams,
    events: perRound * sizes.rounds,
    secret: ctx.secret,
    tenant,
    userPrefix: 'u',
    streamsPerWorker: ctx.streamsPerWorker,
    openPhaseMs: OPEN_PHASE_MS,
  })
  scope.defer(() => generator.close())
  ctx.log(`  ${opened.opened} streams open in ${round(opened.openMs / 1000, 1)} s`)

  const broadcast = (kind: Kind, n: number) =>
    publisher.post(
      '/v1/events',
      JSON.stringify({
        type: 'bench.live',
        title: `Bench event ${n}`,
        body: 'A tenant-wide update of ordinary size, as a school dashboard would send to everyone.',
        data: { t: nowMs(), n } satisfies BenchData,
        to: { tenant: true },
        ...(kind === 'live' ? { store: false } : {}),
      }),
    )
  const accepted = (kind: Kind) => (status: number) => status === (kind === 'live' ? 202 : 201)

  const results: Record<`${Kind} ${Phase}`, BurstFigures[]> = {
    'stored burst': [],
    'live burst': [],
    'stored one-in-flight': [],
    'live one-in-flight': [],
  }
  try {
    const warm = await broadcast('stored', -1)
    if (warm.status !== 201) throw new Error(`warm-up publish answered ${warm.status}: ${warm.body}`)
    await generator.waitFor((p) => p.warmed >= opened.opened, STALL_MS)
    await generator.report(true)

    let next = 0
    for (let r = 0; r < sizes.rounds; r++) {
      for (const phase of ['burst', 'one-in-flight'] as const) {
        // Alternate which kind goes first, round by round.
        const kinds: Kind[] = r % 2 ? ['live', 'stored'] : ['stored', 'live']
        for (const kind of kinds) {
          scope.check()
          await new Promise((resolve) => setTimeout(resolve, ROUND_PAUSE_MS))
          const first = next
          const events = phase === 'burst' ? sizes.events : sizes.sequential
          next += events
          const b = await burst({
            serverCpuMs: () => server.cpuMs(),
            generator,
            events,
            publish: (i) => broadcast(kind, first + i),
            accepted: accepted(kind),
            expectedFor: (ok) => opened.opened * ok.length,
            concurrency: phase === 'burst' ? undefined : 1,
          })
          results[`${kind} ${phase}`].push(b)
          ctx.log(
            `  round ${r + 1} ${kind} ${phase}: ${b.deliveriesPerSec} deliveries/s, p50 ${b.latencyMs?.p50} ms, ` +
              `p99 ${b.latencyMs?.p99} ms, ${b.serverCpuUsPerDelivery} µs server CPU per delivery, lost ${b.lost}` +
              (b.publishErrors ? `, ${b.publishErrors} publishes refused` : ''),
          )
        }
      }
    }
  } finally {
    await generator.close()
    publisher.close()
  }

  const figures = Object.fromEntries(
    Object.entries(results).map(([key, bursts]) => [
      key,
      {
        deliveriesPerSec: spread(bursts.map((b) => b.deliveriesPerSec)),
        latencyP50Ms: spread(bursts.map((b) => b.latencyMs?.p50 ?? Number.NaN)),
        latencyP99Ms: spread(bursts.map((b) => b.latencyMs?.p99 ?? Number.NaN)),
        serverCpuUsPerDelivery: spread(bursts.map((b) => b.serverCpuUsPerDelivery)),
        publishLatencyP50Ms: spread(bursts.map((b) => b.publishLatencyMs?.p50 ?? Number.NaN)),
        lost: bursts.reduce((n, b) => n + b.lost, 0),
        duplicated: bursts.reduce((n, b) => n + b.duplicated, 0),
        publishErrors: bursts.reduce((n, b) => n + b.publishErrors, 0),
      },
    ]),
  ) as Record<`${Kind} ${Phase}`, PhaseFigures>
  const ratio = (phase: Phase) =>
    round(
      figures[`live ${phase}`].deliveriesPerSec.median /
        Math.max(1, figures[`stored ${phase}`].deliveriesPerSec.median),
      2,
    )
  const show = (s: Spread) => `${s.median} (${s.min}–${s.max})`
  const rows: Row[] = []
  for (const phase of ['burst', 'one-in-flight'] as const) {
    const stored = figures[`stored ${phase}`]
    const live = figures[`live ${phase}`]
    // The service's column only (no reference here): each figure for stored events, then for live ones.
    for (const [label, pick] of [
      ['deliveries /s', (f: PhaseFigures) => f.deliveriesPerSec],
      ['latency p50 ms', (f: PhaseFigures) => f.latencyP50Ms],
      ['latency p99 ms', (f: PhaseFigures) => f.latencyP99Ms],
      ['server CPU µs / delivery', (f: PhaseFigures) => f.serverCpuUsPerDelivery],
    ] as const) {
      rows.push([name, `${phase}, stored: ${label}, median (range)`, show(pick(stored)), null, null])
      rows.push([name, `${phase}, live: ${label}, median (range)`, show(pick(live)), null, null])
    }
    rows.push(
      [name, `${phase}: live / stored deliveries /s (medians)`, ratio(phase), null, null],
      [name, `${phase}: lost, stored / live`, `${stored.lost} / ${live.lost}`, null, null],
    )
  }
  return {
    line: {
      scenario: name,
      backend: ctx.backend,
      streams: opened.opened,
      openFailed: opened.openFailed,
      sizes,
      figures,
      liveOverStored: { burst: ratio('burst'), oneInFlight: ratio('one-in-flight') },
    },
    rows,
  }
}
