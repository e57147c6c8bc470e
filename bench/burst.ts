// One measured burst: publish a numbered set of events as fast as a few keep-alive clients can, and wait
// until every stream has what was addressed to it (or nothing new came for a while: the rest is lost).
import type { StreamGenerator } from './generator.ts'
import type { PostResult } from './publisher.ts'
import { nowMs, type Percentiles, percentiles, round, Samples } from './stats.ts'

/** Publishes in flight at once during a burst: "as fast as possible" without one socket per event. */
export const PUBLISH_CONCURRENCY = 8
/** Nothing new for this long after the burst: whatever has not arrived counts as lost. */
export const STALL_MS = 15_000

export interface BurstFigures {
  events: number
  publishErrors: number
  /** Publish request latency (send to 201) during the burst. */
  publishLatencyMs: Percentiles | null
  /** Distinct (stream, event) deliveries per second, from the first publish sent to the last event received. */
  deliveriesPerSec: number
  /** Publish sent (the `t` in the event's data) to event received, over every delivery. */
  latencyMs: Percentiles | null
  /** Deliveries expected (each accepted event × the streams it is addressed to). */
  expected: number
  delivered: number
  lost: number
  duplicated: number
  outOfOrder: number
  /** Events that reached a stream they were not addressed to (only counted where the scenario says who gets what). */
  misaddressed: number
  durationSec: number
  /** Server CPU time during the burst per delivery, µs: less distorted by other load than the rates. */
  serverCpuUsPerDelivery: number
  /** Server CPU time during the burst per accepted publish, µs (its fan-out included). */
  serverCpuUsPerPublish: number
  /** Server CPU during the burst, % of one core: near 100 means the server was the bottleneck. */
  serverCpuPct: number
  /** Load-generator CPU during the burst, % of one core per generator process: near 100, the generator was. */
  generatorCpuPct: number
}

export interface BurstOptions {
  /** CPU time of the server so far, ms. */
  serverCpuMs: () => number
  generator: StreamGenerator
  /** Events in the burst; `publish(i)` sends the i-th. */
  events: number
  publish: (i: number) => Promise<PostResult>
  accepted: (status: number) => boolean
  /** Deliveries expected from the events accepted (by their index in the burst). */
  expectedFor: (accepted: number[]) => number
  /** Publishes in flight at once (default PUBLISH_CONCURRENCY); 1: each waits for the one before to be answered. */
  concurrency?: number
  /**
   * Paced (open loop): the i-th publish is sent at `i × intervalMs` after the start whatever the answers, so
   * `concurrency` is ignored. Each latency still counts from the publish's own send time (the `t` in its data).
   */
  intervalMs?: number
}

export async function burst(o: BurstOptions): Promise<BurstFigures> {
  const publishLatency = new Samples()
  const accepted: number[] = []
  let publishErrors = 0
  let next = 0
  const cpuBefore = { server: o.serverCpuMs(), generator: o.generator.cpuMs() }
  const started = nowMs()
  const one = async (i: number) => {
    const r = await o.publish(i)
    if (o.accepted(r.status)) {
      publishLatency.push(r.ms)
      accepted.push(i)
    } else publishErrors++
  }
  if (o.intervalMs !== undefined) {
    const sent: Array<Promise<void>> = []
    for (let i = 0; i < o.events; i++) {
      const wait = started + i * o.intervalMs - nowMs()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      sent.push(one(i))
    }
    await Promise.all(sent)
  } else {
    await Promise.all(
      Array.from({ length: o.concurrency ?? PUBLISH_CONCURRENCY }, async () => {
        while (next < o.events) await one(next++)
      }),
    )
  }
  const expected = o.expectedFor(accepted)
  await o.generator.waitFor((p) => p.unique >= expected, STALL_MS)
  const report = await o.generator.report(true)
  const wallMs = nowMs() - started
  const serverCpuMs = o.serverCpuMs() - cpuBefore.server
  const generatorCpuMs = o.generator.cpuMs() - cpuBefore.generator
  const durationMs = report.lastReceiveMs - started
  return {
    events: accepted.length,
    publishErrors,
    publishLatencyMs: percentiles(publishLatency.values()),
    deliveriesPerSec: durationMs > 0 ? round(report.unique / (durationMs / 1000)) : 0,
    latencyMs: percentiles(report.latencies),
    expected,
    delivered: report.unique,
    lost: expected - report.unique,
    duplicated: report.duplicated,
    outOfOrder: report.outOfOrder,
    misaddressed: report.misaddressed,
    durationSec: round(durationMs / 1000, 3),
    serverCpuUsPerDelivery: round((serverCpuMs * 1000) / Math.max(1, report.unique), 2),
    serverCpuUsPerPublish: round((serverCpuMs * 1000) / Math.max(1, accepted.length), 1),
    serverCpuPct: round((100 * serverCpuMs) / wallMs),
    generatorCpuPct: round((100 * generatorCpuMs) / wallMs / o.generator.processes),
  }
}
