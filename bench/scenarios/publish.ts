import { mintToken } from '../../src/tokens.ts'
import { closedLoop, type LoadResult, openLoop, Publisher } from '../publisher.ts'
import { percentiles, round } from '../stats.ts'
import { type BenchContext, freshTenant, type Row, type ScenarioResult, type Scope, startService } from './common.ts'

/** Concurrent keep-alive publishers for single events: a busy backend's worker pool. */
const SINGLE_CLIENTS = 32
/**
 * The target rate for single publishes: sent at exactly this rate (open loop), their p99 must stay
 * under 20 ms. (At the closed loop's top speed, latency is mostly the queue of 32 clients by construction.)
 */
const PACED_RATE = 3_000
/** Concurrent batch publishers: a bulk import or two beside each other. */
const BATCH_CLIENTS = 4
const BATCH_SIZE = 1_000
/** Load before measuring, not counted: JIT, connection pools and caches reach their steady state. */
const WARMUP_MS = 2_000

/** Scenario 4: durable publishing (committed before the 201), single events and batches, to one user. */
export async function publishThroughput(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const durationMs = ctx.quick ? 3_000 : 10_000
  const service = await startService(ctx, scope)
  const tenant = freshTenant('publish')
  const token = mintToken(ctx.secret, { sub: 'bench-publisher', tenant, scope: 'events:publish' })
  const publisher = new Publisher(service.host, service.port, token, SINGLE_CLIENTS)
  scope.defer(() => publisher.close())
  await publisher.warm()

  let n = 0
  const single = () =>
    JSON.stringify({
      type: 'bench.publish',
      to: { users: ['bench-reader'] },
      title: `Bench event ${n}`,
      body: 'An ordinary notification for one person.',
      data: { n: n++ },
    })
  const batchBody = JSON.stringify({
    events: Array.from({ length: BATCH_SIZE }, (_, i) => ({
      type: 'bench.publish',
      to: { users: ['bench-reader'] },
      title: `Bench batch event ${i}`,
      body: 'An ordinary notification for one person.',
      data: { n: i },
    })),
  })

  ctx.log(`publish: single events, ${SINGLE_CLIENTS} clients, ${durationMs / 1000} s`)
  await closedLoop(publisher, {
    clients: SINGLE_CLIENTS,
    durationMs: WARMUP_MS,
    path: '/v1/events',
    body: single,
    expectStatus: 201,
  })
  scope.check()
  let cpu = service.cpuMs()
  const singles = await closedLoop(publisher, {
    clients: SINGLE_CLIENTS,
    durationMs,
    path: '/v1/events',
    body: single,
    expectStatus: 201,
  })
  const singleCpuMs = service.cpuMs() - cpu
  scope.check()
  ctx.log(`publish: single events at ${PACED_RATE} /s (open loop), ${durationMs / 1000} s`)
  cpu = service.cpuMs()
  const paced = await openLoop(publisher, {
    ratePerSec: PACED_RATE,
    durationMs,
    path: '/v1/events',
    body: single,
    expectStatus: 201,
  })
  const pacedCpuMs = service.cpuMs() - cpu
  scope.check()
  ctx.log(`publish: batches of ${BATCH_SIZE}, ${BATCH_CLIENTS} clients, ${durationMs / 1000} s`)
  const load = { clients: BATCH_CLIENTS, path: '/v1/events/batch', body: () => batchBody, expectStatus: 201 }
  await closedLoop(publisher, { ...load, durationMs: WARMUP_MS })
  scope.check()
  cpu = service.cpuMs()
  const batches = await closedLoop(publisher, { ...load, durationMs })
  const batchCpuMs = service.cpuMs() - cpu
  const rssMiB = service.rssMiB()

  const singleFigures = figures(singles, SINGLE_CLIENTS, 1, singleCpuMs)
  const pacedFigures = { ratePerSec: PACED_RATE, ...figures(paced, SINGLE_CLIENTS, 1, pacedCpuMs) }
  const batchFigures = figures(batches, BATCH_CLIENTS, BATCH_SIZE, batchCpuMs)
  const rows: Row[] = [
    ['publish-single', 'events /s', singleFigures.eventsPerSec, null, null],
    ['publish-single', 'latency p50 ms', singleFigures.latencyMs?.p50 ?? null, null, null],
    ['publish-single', 'latency p99 ms', singleFigures.latencyMs?.p99 ?? null, null, null],
    ['publish-single', 'service CPU µs / event', singleFigures.serviceCpuUsPerEvent, null, null],
    ['publish-paced', `events /s (${PACED_RATE} /s sent)`, pacedFigures.eventsPerSec, null, null],
    ['publish-paced', 'latency p50 ms (from when due)', pacedFigures.latencyMs?.p50 ?? null, null, null],
    ['publish-paced', 'latency p99 ms (from when due)', pacedFigures.latencyMs?.p99 ?? null, null, null],
    ['publish-paced', 'service CPU µs / event', pacedFigures.serviceCpuUsPerEvent, null, null],
    ['publish-batch', 'events /s', batchFigures.eventsPerSec, null, null],
    ['publish-batch', 'request p50 ms', batchFigures.latencyMs?.p50 ?? null, null, null],
    ['publish-batch', 'service CPU µs / event', batchFigures.serviceCpuUsPerEvent, null, null],
  ]
  for (const [what, f] of [
    ['single', singleFigures],
    ['paced', pacedFigures],
    ['batch', batchFigures],
  ] as const) {
    if (Object.keys(f.errors).length) rows.push([`publish-${what}`, 'errors', JSON.stringify(f.errors), null, null])
  }
  return {
    line: {
      scenario: 'publish',
      backend: ctx.backend,
      single: singleFigures,
      paced: pacedFigures,
      batch: batchFigures,
      serverRssMiB: rssMiB,
      reference: null,
      ratio: null,
    },
    rows,
  }
}

function figures(r: LoadResult, clients: number, eventsPerRequest: number, serviceCpuMs: number) {
  const events = r.ok * eventsPerRequest
  return {
    clients,
    eventsPerRequest,
    durationSec: round(r.elapsedMs / 1000, 2),
    requests: r.ok,
    eventsPerSec: round(events / (r.elapsedMs / 1000)),
    /** Per request: send to 201, the event committed. */
    latencyMs: percentiles(r.latencies),
    errors: r.errors,
    /** CPU of the service process per event published (PGlite runs inside it; PostgreSQL does not). */
    serviceCpuUsPerEvent: round((serviceCpuMs * 1000) / Math.max(1, events), 1),
    serviceCpuPct: round((100 * serviceCpuMs) / r.elapsedMs),
  }
}
