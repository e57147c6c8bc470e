import { cpuMsOf, Worker } from './processes.ts'
import { nowMs } from './stats.ts'
import type { PoolProgress, PoolReport } from './stream-pool.ts'
import type { WorkerOpen } from './stream-worker.ts'
import type { TargetedPlan } from './targeted-plan.ts'

/** 127.0.0.2 … 127.0.0.9: eight source addresses, each good for ~28k connections to one port. */
export const LOCAL_ADDRESSES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 2}`)

export interface GeneratorOptions {
  host: string
  port: number
  streams: number
  /** Measured events each stream expects. */
  events: number
  secret: string
  tenant: string
  /** Stream i belongs to user `${userPrefix}${i}`. */
  userPrefix: string
  /** Sockets one worker may hold: under the per-process open-file limit, with room for everything else. */
  streamsPerWorker: number
  lastEventId?: string
  /** Time allowed for opening (see PoolOptions.openPhaseMs). */
  openPhaseMs?: number
  /** Request path of every stream (default `/v1/stream`; Nchan: `/sub/<channel>`). */
  path?: string
  /** No Authorization header (Nchan). */
  anonymous?: boolean
  /** Scenario 7's plan: per-user roles and topics, and who each event is for. */
  targeted?: TargetedPlan
}

export interface Opened {
  opened: number
  openFailed: number
  failures: Record<string, number>
  /** Until every worker had all its streams answered. */
  openMs: number
  workers: number
}

/** SSE streams spread over as many worker processes as the open-file limit calls for. */
export class StreamGenerator {
  private constructor(private readonly workers: Worker[]) {}

  static async open(o: GeneratorOptions): Promise<{ generator: StreamGenerator; opened: Opened }> {
    const count = Math.max(1, Math.ceil(o.streams / o.streamsPerWorker))
    const workers = Array.from({ length: count }, () => new Worker('./stream-worker.ts'))
    const generator = new StreamGenerator(workers)
    const started = nowMs()
    const per = Math.ceil(o.streams / count)
    const results = await Promise.all(
      workers.map((w, k) => {
        const options: WorkerOpen = {
          host: o.host,
          port: o.port,
          streams: Math.min(per, o.streams - k * per),
          events: o.events,
          secret: o.secret,
          tenant: o.tenant,
          userPrefix: o.userPrefix,
          userOffset: k * per,
          localAddresses: LOCAL_ADDRESSES,
          lastEventId: o.lastEventId,
          openPhaseMs: o.openPhaseMs,
          path: o.path,
          anonymous: o.anonymous,
          targeted: o.targeted,
        }
        return w.call<{ opened: number; openFailed: number; failures: Record<string, number> }>('open', { options })
      }),
    )
    const failures: Record<string, number> = {}
    for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v
    return {
      generator,
      opened: {
        opened: sum(results.map((r) => r.opened)),
        openFailed: sum(results.map((r) => r.openFailed)),
        failures,
        openMs: nowMs() - started,
        workers: count,
      },
    }
  }

  async progress(): Promise<PoolProgress> {
    const all = await Promise.all(this.workers.map((w) => w.call<PoolProgress>('progress')))
    return {
      warmed: sum(all.map((p) => p.warmed)),
      unique: sum(all.map((p) => p.unique)),
      duplicated: sum(all.map((p) => p.duplicated)),
      lastReceiveMs: Math.max(...all.map((p) => p.lastReceiveMs)),
      lastWarmedMs: Math.max(...all.map((p) => p.lastWarmedMs)),
    }
  }

  /**
   * Polls until `done(progress)` or until nothing new arrived for `stallMs` (the rest is lost, or late enough
   * to count as lost).
   */
  async waitFor(done: (p: PoolProgress) => boolean, stallMs: number): Promise<PoolProgress> {
    let last = await this.progress()
    let changedAt = nowMs()
    while (!done(last) && nowMs() - changedAt < stallMs) {
      await new Promise((r) => setTimeout(r, 50))
      const p = await this.progress()
      if (p.unique !== last.unique || p.warmed !== last.warmed || p.duplicated !== last.duplicated) changedAt = nowMs()
      last = p
    }
    return last
  }

  /** Merged counts of every worker; `newRound` starts the delivery counts again (see StreamPool.report). */
  async report(newRound = false): Promise<PoolReport> {
    const all = await Promise.all(this.workers.map((w) => w.call<PoolReport>('report', { newRound })))
    const failures: Record<string, number> = {}
    for (const r of all) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v
    const total = (k: keyof PoolReport) => sum(all.map((r) => r[k] as number))
    const firsts = all.map((r) => r.firstReceiveMs).filter((t) => t > 0)
    return {
      opened: total('opened'),
      openFailed: total('openFailed'),
      failures,
      closedEarly: total('closedEarly'),
      warmed: total('warmed'),
      unique: total('unique'),
      duplicated: total('duplicated'),
      outOfOrder: total('outOfOrder'),
      unexpected: total('unexpected'),
      misaddressed: total('misaddressed'),
      firstReceiveMs: firsts.length ? Math.min(...firsts) : 0,
      lastReceiveMs: Math.max(...all.map((r) => r.lastReceiveMs)),
      lastWarmedMs: Math.max(...all.map((r) => r.lastWarmedMs)),
      latencies: concatArrays(all.map((r) => r.latencies)),
    }
  }

  /** Drops every stream's socket (scenario 14); how many were open. */
  async disconnect(): Promise<number> {
    return sum(await Promise.all(this.workers.map((w) => w.call<number>('disconnect'))))
  }

  /**
   * Every dropped stream reconnects at once, each with the id of the last event it got as Last-Event-ID (at most
   * `concurrency` connects in flight per generator process). `firstRequestMs`: the first request sent, any process.
   */
  async reconnect(
    concurrency: number,
  ): Promise<{ reconnected: number; failed: number; failures: Record<string, number>; firstRequestMs: number }> {
    type R = { reconnected: number; failed: number; failures: Record<string, number>; firstRequestMs: number }
    const all = await Promise.all(this.workers.map((w) => w.call<R>('reconnect', { concurrency })))
    const failures: Record<string, number> = {}
    for (const r of all) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v
    const firsts = all.map((r) => r.firstRequestMs).filter((t) => t > 0)
    return {
      reconnected: sum(all.map((r) => r.reconnected)),
      failed: sum(all.map((r) => r.failed)),
      failures,
      firstRequestMs: firsts.length ? Math.min(...firsts) : 0,
    }
  }

  /** CPU time the worker processes have used so far, ms. */
  cpuMs(): number {
    return sum(this.workers.map((w) => cpuMsOf(w.pid)))
  }

  get processes(): number {
    return this.workers.length
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close()))
  }
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0)

function concatArrays(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(sum(parts.map((p) => p.length)))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
