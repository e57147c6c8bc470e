import { mintToken } from '../../src/tokens.ts'
import { LOCAL_ADDRESSES } from '../generator.ts'
import { nowMs, round } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import { StreamPool } from '../stream-pool.ts'
import {
  type BenchContext,
  freshTenant,
  machineQuiet,
  type Row,
  type ScenarioResult,
  type Scope,
  startService,
  tenantPublisher,
} from './common.ts'

const BATCH_SIZE = 1_000
/** Batches in flight while filling the log: filling is setup here, not the measurement. */
const FILL_CONCURRENCY = 2
/** How often the server's RSS is sampled during the replay, for its peak. */
const RSS_SAMPLE_MS = 100
/** Nothing new on the stream for this long: the rest counts as lost. */
const STALL_MS = 15_000

/** Scenario 5: a client comes back 100,000 events behind and resumes with Last-Event-ID 0. */
export async function replay(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const total = ctx.quick ? 10_000 : 100_000
  const service = await startService(ctx, scope)
  const tenant = freshTenant('replay')
  const user = 'bench-returning'
  const publisher = await tenantPublisher(ctx, scope, service, tenant, FILL_CONCURRENCY, 'events:publish')

  ctx.log(`replay: publishing ${total} events to one user`)
  const fillStarted = nowMs()
  let nextBatch = 0
  await Promise.all(
    Array.from({ length: FILL_CONCURRENCY }, async () => {
      while (nextBatch * BATCH_SIZE < total) {
        const first = nextBatch++ * BATCH_SIZE
        const events = Array.from({ length: Math.min(BATCH_SIZE, total - first) }, (_, i) => ({
          type: 'bench.replay',
          to: { users: [user] },
          title: `Missed event ${first + i}`,
          body: 'Something that happened while you were away.',
          data: { t: 0, n: first + i } satisfies BenchData,
        }))
        const r = await publisher.post('/v1/events/batch', JSON.stringify({ events }))
        if (r.status !== 201) throw new Error(`batch publish answered ${r.status}: ${r.body}`)
        scope.check()
      }
    }),
  )
  const fillMs = nowMs() - fillStarted
  publisher.close()
  // The fill is setup: the service's log tail follows it for a while after the last publish, and PostgreSQL
  // may start autovacuum on the new rows. The replay is measured once the machine is quiet again.
  const settleMs = await machineQuiet()
  ctx.log(`replay: machine quiet ${settleMs} ms after the fill`)

  ctx.log('replay: resuming from Last-Event-ID 0')
  // One stream: the parent holds it itself (no worker needed).
  const pool = new StreamPool({
    host: service.host,
    port: service.port,
    streams: 1,
    tokenFor: () => mintToken(ctx.secret, { sub: user, tenant }),
    localAddresses: LOCAL_ADDRESSES,
    events: total,
    lastEventId: '0',
  })
  scope.defer(() => pool.close())
  let peakRssMiB = service.rssMiB()
  const sampler = setInterval(() => (peakRssMiB = Math.max(peakRssMiB, service.rssMiB())), RSS_SAMPLE_MS)
  scope.defer(() => clearInterval(sampler))
  const cpuBefore = { service: service.cpuMs(), client: process.cpuUsage() }
  const started = nowMs()
  const opened = await pool.open()
  if (opened.opened !== 1) throw new Error(`the stream did not open: ${JSON.stringify(opened.failures)}`)
  let changedAt = nowMs()
  let seen = 0
  while (pool.progress().unique < total && nowMs() - changedAt < STALL_MS) {
    await new Promise((r) => setTimeout(r, 20))
    const p = pool.progress()
    if (p.unique !== seen) {
      seen = p.unique
      changedAt = nowMs()
    }
    scope.check()
  }
  clearInterval(sampler)
  const cpuMs = service.cpuMs() - cpuBefore.service
  const client = process.cpuUsage(cpuBefore.client)
  const report = pool.report()
  pool.close()

  const elapsedMs = report.lastReceiveMs - started
  const figures = {
    events: total,
    received: report.unique,
    /** Events received per second, from the stream request sent to the last event received. */
    eventsPerSec: elapsedMs > 0 ? round(report.unique / (elapsedMs / 1000)) : 0,
    secondsToLastEvent: round(elapsedMs / 1000, 2),
    msToFirstEvent: round(report.firstReceiveMs - started, 1),
    lost: total - report.unique,
    duplicated: report.duplicated,
    outOfOrder: report.outOfOrder,
    serverPeakRssMiB: peakRssMiB,
    /** CPU of the service process per replayed event (PGlite runs inside it; PostgreSQL does not). */
    serviceCpuUsPerEvent: round((cpuMs * 1000) / Math.max(1, report.unique), 2),
    serviceCpuPct: round((100 * cpuMs) / elapsedMs),
    /** This process reads the stream: near 100, the client was the bottleneck. */
    clientCpuPct: round((client.user + client.system) / 10 / elapsedMs),
    fillEventsPerSec: round(total / (fillMs / 1000)),
    /** After the fill, the wait for a quiet machine before the replay. */
    settleMs,
  }
  const rows: Row[] = [
    ['replay', 'events /s', figures.eventsPerSec, null, null],
    ['replay', `s to event ${total}`, figures.secondsToLastEvent, null, null],
    ['replay', 'ms to first event', figures.msToFirstEvent, null, null],
    ['replay', 'lost / duplicated', `${figures.lost} / ${figures.duplicated}`, null, null],
    ['replay', 'server peak RSS MiB', figures.serverPeakRssMiB, null, null],
    ['replay', 'service CPU µs / event', figures.serviceCpuUsPerEvent, null, null],
  ]
  return { line: { scenario: 'replay', backend: ctx.backend, ...figures, reference: null, ratio: null }, rows }
}
