import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import type { EventRow } from '../db/schema.ts'
import type { Metrics, PushOutcome } from '../metrics.ts'
import type { AckTokens } from './ack-token.ts'
import { nextAttemptAt, tooLateToPush } from './backoff.ts'
import { type ClaimedPush, type DeliveryUpdate, PushClaims, type Subscription } from './claims.ts'
import type { VapidKeys } from './keys.ts'
import { pushPayload, pushTopicOf, recallPayload, urgencyOf } from './payload.ts'
import { PushPool, type PushPoolOptions } from './push-pool.ts'
import { QuietHoursGate, REPLACED_BY_LATER } from './quiet-hours.ts'
import { type Outcome, type PushHeaders, sendPush } from './send.ts'

/** Look for due pushes (delayed `high` ones, retries) at least this often. */
const POLL_MS = 1_000
/**
 * With at least this many pushes in flight their outcomes come in bulk, and each waits up to RECORD_GATHER_MS
 * for others to share its statement: on PGlite a statement runs on the main thread, and costs about the same
 * however many rows it writes (see bench/README.md, scenario 6). With fewer, an outcome is written at once, so
 * a push's status is current as soon as it can be.
 */
const RECORD_GATHER_IN_FLIGHT = 16
const RECORD_GATHER_MS = 25
/**
 * Pushes started in one go at most. Handing a push to its thread takes the main thread some work (its payload
 * and ack token, the message): a broadcast's hundreds are handed over a batch per event-loop turn, and requests
 * are answered in between.
 */
const PUMP_BATCH = 32
/** What a test push still waiting for a slot at shutdown reports (it is not retried: it has no outbox row). */
const SHUTTING_DOWN: Outcome = { state: 'retry', error: 'the service is shutting down' }
/**
 * Which push service an endpoint belongs to: its scheme and authority, as the outbox stores it for planned
 * pushes (SERVICE_PATTERN in outbox.ts), so a test push shares the same per-service slots.
 */
const serviceOf = (endpoint: string) => /^[a-z]+:\/\/[^/?#]+/.exec(endpoint)?.[0] ?? endpoint

export interface DispatcherOptions {
  /** Attempts per push before it counts as failed (PUSH_MAX_ATTEMPTS). */
  maxAttempts: number
  /** Pushes in flight at once (PUSH_CONCURRENCY). */
  concurrency: number
  /** First retry delay; doubles each attempt (PUSH_RETRY_BASE_MS). */
  retryBaseMs: number
  /** CA certificates to trust for push services instead of the system's (tests pass their own). */
  ca?: PushPoolOptions['ca']
  /** An instance whose heartbeat is older than this is dead: its claims are taken over (PRESENCE_TTL_S). */
  instanceTtlS: number
  /** "Now" for quiet hours and for when a push is due: real time unless a test moves it (AppOptions.clock). */
  now?: () => Date
}

/** A claimed push with what sending it needs, waiting for a free slot. */
interface OutboxPush {
  kind: 'outbox'
  claimed: ClaimedPush
  event: EventRow
  sub: Subscription
  service: string
  /** A push of an edit (the event replaced as it now stands) or of a recall. */
  change?: 'update' | 'delete'
}

/** A test push (POST /v1/push/test): no outbox row, as it has no event; its outcome goes back to its caller. */
interface TestPush {
  kind: 'test'
  sub: Subscription
  service: string
  payload: string
  headers: PushHeaders
  settle: (outcome: Outcome) => void
}

/** A push in the ready queue, waiting for a free slot. */
type QueuedPush = OutboxPush | TestPush

/** A test push's outcome at one device. */
export interface TestOutcome {
  subscriptionId: number
  outcome: Outcome
}

/**
 * Sends the push outbox. Every instance runs one; rows are claimed with `for update skip locked`, so no
 * two instances send the same row, and a claim left by a dead instance is taken over.
 *
 * A pipeline, so that a slot never waits for the database:
 * - claims fill a local queue of pushes that are claimed and loaded (`ready`), ahead of the slots;
 * - a slot freed by an answer takes the next ready push at once (`pump`), and the queue is topped up behind it;
 * - outcomes are written in one statement for all that arrived since the last write (`recordLater`).
 *
 * Bounds: at most `concurrency` pushes in flight, at most half of them to one push service, one at a time per
 * device; at most `concurrency` ready pushes per push service. A push service that hangs therefore holds half
 * the slots and its own queue, never the others': the last of its ready pushes starts within two send
 * timeouts (SEND_TIMEOUT_MS in push-worker.ts), well inside a claim (CLAIM_S in claims.ts). Test pushes
 * (`sendTest`) take the same queue and slots.
 *
 * Pushes are encrypted and sent from worker threads (PushPool): the main thread only hands them over and
 * records their outcomes, so a broadcast to thousands of devices never holds up requests and streams.
 */
export class PushDispatcher {
  private inFlight = 0
  /** Devices with a push in flight here, and pushes in flight per push service. */
  private readonly sendingTo = new Set<number>()
  private readonly perService = new Map<string, number>()
  private ready: QueuedPush[] = []
  private claiming = false
  private again = false
  /** The last claim found nothing due that it could take: wait for a publish or the poll before claiming again. */
  private drained = false
  /** Counts outside wakes, so a claim that comes back empty knows whether a publish happened meanwhile. */
  private wakes = 0
  private readonly toRecord = new Map<number, DeliveryUpdate>()
  private recording: Promise<void> | undefined
  private stopped = false
  private poll: NodeJS.Timeout | undefined
  private readonly idle = new Set<() => void>()
  /** A pump is due on the next turn (the last one started PUMP_BATCH pushes). */
  private pumpAgain = false
  private readonly threads: PushPool
  private readonly claims: PushClaims
  private readonly quietHours: QuietHoursGate

  constructor(
    database: Database,
    private readonly vapid: VapidKeys,
    private readonly ackTokens: AckTokens,
    private readonly options: DispatcherOptions,
    instanceId: string,
    private readonly log: FastifyBaseLogger,
    private readonly metrics: Metrics,
  ) {
    this.threads = new PushPool({ concurrency: options.concurrency, ca: options.ca })
    this.claims = new PushClaims(database, instanceId, options.instanceTtlS, options.now)
    this.quietHours = new QuietHoursGate(database, options.now ?? (() => new Date()))
  }

  start() {
    this.poll = setInterval(() => this.wake(), POLL_MS)
    this.poll.unref()
    this.wake()
  }

  /** New pushes may be due (a publish committed, or the poll): claim what fits. */
  wake(): void {
    this.wakes++
    this.drained = false
    this.topUp()
  }

  /** Claims more into the ready queue unless a claim is running (it goes round again) or nothing is due. */
  private topUp(): void {
    if (this.stopped || this.drained) return
    if (this.claiming) {
      this.again = true
      return
    }
    void this.claimAndLoad()
  }

  /**
   * Claims, loads and pumps until nothing more fits or is due. The event loop takes a turn before each claim:
   * on PGlite a statement runs on the main thread, so the slots freed by answers that came meanwhile are only
   * seen then, and are filled by one claim rather than one claim each.
   */
  private async claimAndLoad() {
    this.claiming = true
    try {
      do {
        await nextTurn()
        if (this.stopped) break
        this.again = false
        const limit = 2 * this.options.concurrency - this.ready.length
        if (limit <= 0) break
        const wakes = this.wakes
        const { claimed, anyServiceFull } = await this.claim(limit)
        if (claimed.length) await this.load(claimed)
        this.pump()
        if (claimed.length === limit) this.again = true
        // Nothing claimable and no push service's queue full: nothing is due until the next publish or poll.
        if (!claimed.length && !anyServiceFull && this.wakes === wakes) this.drained = true
      } while (this.again && !this.stopped)
    } catch (err) {
      this.log.warn({ err }, 'claiming pushes failed; retrying on the next poll')
    } finally {
      this.claiming = false
    }
  }

  /**
   * Claims due rows, leaving out devices with a push in flight or ready here, and taking no more for a push
   * service than its queue has room for (the ready queue counts by the name each row stores for its service).
   */
  private async claim(limit: number): Promise<{ claimed: ClaimedPush[]; anyServiceFull: boolean }> {
    const cap = this.options.concurrency
    const room: Record<string, number> = {}
    const busyDevices = new Set(this.sendingTo)
    for (const r of this.ready) {
      room[r.service] = (room[r.service] ?? cap) - 1
      busyDevices.add(r.sub.id)
    }
    const anyServiceFull = Object.values(room).some((n) => n <= 0)
    const claimed = await this.claims.claim({ limit, busyDevices, room, perService: cap })
    return { claimed, anyServiceFull }
  }

  /** Loads the claimed rows; queues those still to send, settles the others. */
  private async load(claimed: ClaimedPush[]) {
    const all = await this.claims.load(claimed)
    // Pushes of events (not of their edits or recalls) whose users are in quiet hours wait, or are replaced.
    const held = await this.quietHours.hold(all.flatMap((l) => (l.state === 'send' && !l.change ? [l] : [])))
    for (const loaded of all) {
      const c = loaded.claimed
      if (held.waiting.has(c.id)) continue
      if (held.replaced.has(c.id)) {
        this.skip(c.id, REPLACED_BY_LATER)
        continue
      }
      if (loaded.state === 'failed') this.finish(c, { state: 'failed', error: loaded.error })
      else if (loaded.state === 'skipped') this.skip(c.id, loaded.why)
      else {
        const { event, sub, change } = loaded
        this.ready.push({ kind: 'outbox', claimed: c, event, sub, service: c.service ?? sub.endpoint, change })
      }
    }
  }

  /**
   * Starts ready pushes while slots are free, skipping those whose device or push service is busy; at most
   * PUMP_BATCH of them, the rest on the event loop's next turn.
   */
  private pump() {
    const share = this.serviceShare()
    const waiting: QueuedPush[] = []
    let started = 0
    for (const r of this.ready) {
      if (this.stopped || this.inFlight >= this.options.concurrency || started >= PUMP_BATCH) waiting.push(r)
      else if (r.kind === 'outbox' && tooLateToPush(r.event.expiresAt, Date.now())) {
        this.finish(r.claimed, { state: 'failed', error: 'event expired' })
      } else if (this.sendingTo.has(r.sub.id) || (this.perService.get(r.service) ?? 0) >= share) waiting.push(r)
      else {
        this.sendNow(r)
        started++
      }
    }
    this.ready = waiting
    if (started >= PUMP_BATCH && !this.pumpAgain) {
      this.pumpAgain = true
      setImmediate(() => {
        this.pumpAgain = false
        this.pump()
      })
    }
  }

  /**
   * One push service never gets more than half the slots, and one device never has two pushes in flight:
   * a slow or failing endpoint holds up its own pushes, not everyone's.
   */
  private serviceShare() {
    return Math.max(1, Math.floor(this.options.concurrency / 2))
  }

  private sendNow(r: QueuedPush) {
    const { sub, service } = r
    this.inFlight++
    this.sendingTo.add(sub.id)
    this.perService.set(service, (this.perService.get(service) ?? 0) + 1)
    void (
      r.kind === 'outbox' ? this.send(r.event, sub, r.change, r.claimed.nudge) : this.push(sub, r.payload, r.headers)
    )
      .catch((err): Outcome => ({ state: 'retry', error: `internal: ${(err as Error).message}` }))
      .then((outcome) => {
        // The slot is free as soon as the push service has answered; the outcome is written behind it.
        this.inFlight--
        this.sendingTo.delete(sub.id)
        const left = (this.perService.get(service) ?? 1) - 1
        if (left > 0) this.perService.set(service, left)
        else this.perService.delete(service)
        if (r.kind === 'outbox') this.finish(r.claimed, outcome, r.event)
        else this.finishTest(r, outcome)
        if (this.inFlight === 0) for (const resolve of this.idle) resolve()
        this.pump()
        this.topUp()
      })
  }

  /**
   * An event's push, or the push of its edit or recall (`change`): under the event's Topic (its collapseKey), so
   * that one still waiting at the push service is replaced rather than followed.
   */
  private async send(
    event: EventRow,
    sub: Subscription,
    change?: 'update' | 'delete',
    nudge = false,
  ): Promise<Outcome> {
    const ttlSeconds = Math.max(0, Math.floor((event.expiresAt.getTime() - Date.now()) / 1000))
    const headers = { TTL: ttlSeconds, urgency: urgencyOf(event.priority), topic: pushTopicOf(event.collapseKey) }
    if (change === 'delete') return this.push(sub, recallPayload(event), headers)
    const ackToken = this.ackTokens.sign({ tenant: sub.tenant, userId: sub.userId, eventId: event.id }, ttlSeconds)
    return this.push(
      sub,
      pushPayload(event, ackToken, change === 'update' ? 'update' : nudge ? 'nudge' : undefined),
      headers,
    )
  }

  private push(sub: Subscription, payload: string, headers: PushHeaders): Promise<Outcome> {
    return sendPush(sub, payload, headers, this.vapid, this.threads)
  }

  /**
   * Sends a test push to each of the user's devices through the queue, like any other push (same slots,
   * same bounds), and resolves with each device's outcome once all have one. Not retried; a device whose
   * push service answers 404/410 is forgotten before its outcome is given. No devices: an empty list.
   */
  async sendTest(
    owner: { tenant: string; userId: string },
    payload: string,
    headers: PushHeaders,
  ): Promise<TestOutcome[]> {
    const devices = await this.claims.devicesOf(owner)
    const outcomes = devices.map(
      (sub) =>
        new Promise<Outcome>((settle) => {
          if (this.stopped) settle(SHUTTING_DOWN)
          else this.ready.push({ kind: 'test', sub, service: serviceOf(sub.endpoint), payload, headers, settle })
        }),
    )
    this.pump()
    return (await Promise.all(outcomes)).map((outcome, i) => ({ subscriptionId: devices[i].id, outcome }))
  }

  /** Settles a test push: its caller gets the outcome, after a gone device has been forgotten. */
  private finishTest(r: TestPush, outcome: Outcome) {
    if (outcome.state === 'failed' && outcome.gone) void this.forget(r.sub.id).then(() => r.settle(outcome))
    else r.settle(outcome)
  }

  /** Settles an attempt: sent, failed for good, or due again after a backoff. */
  private finish(c: ClaimedPush, outcome: Outcome, event?: EventRow) {
    if (outcome.state === 'sent') {
      this.count('sent', outcome.status)
      this.recordLater(c.id, { state: 'sent', lastStatus: outcome.status, lastError: null })
      return
    }
    if (outcome.state === 'failed') {
      this.count('failed', outcome.status)
      if (outcome.gone && c.subscriptionId !== null) void this.forget(c.subscriptionId)
      this.recordLater(c.id, { state: 'failed', lastStatus: outcome.status ?? null, lastError: outcome.error })
      return
    }
    const due = nextAttemptAt({
      attempt: c.attempts,
      maxAttempts: this.options.maxAttempts,
      baseMs: this.options.retryBaseMs,
      now: Date.now(),
      expiresAt: event?.expiresAt,
      retryAfterMs: outcome.retryAfterMs,
    })
    if (due === undefined) {
      this.count('failed', outcome.status)
      this.recordLater(c.id, {
        state: 'failed',
        lastStatus: outcome.status ?? null,
        lastError: `${outcome.error} (gave up after ${c.attempts} attempts)`,
      })
      return
    }
    this.count('retry', outcome.status)
    this.recordLater(c.id, {
      state: 'pending',
      lastStatus: outcome.status ?? null,
      lastError: outcome.error,
      nextAttemptAt: new Date(due),
    })
  }

  /**
   * 404/410: the browser dropped this subscription. Forget the device, and its pushes waiting here; resolves
   * once it is deleted (or that failed, logged).
   */
  private forget(subscriptionId: number): Promise<void> {
    const deleted = this.claims.forgetDevice(subscriptionId).then(
      () => {},
      (err) => this.log.warn({ err, subscription: subscriptionId }, 'forgetting a gone subscription failed'),
    )
    const gone = this.ready.filter((r) => r.sub.id === subscriptionId)
    this.ready = this.ready.filter((r) => r.sub.id !== subscriptionId)
    const removed: Outcome = { state: 'failed', error: 'subscription removed' }
    for (const r of gone) {
      if (r.kind === 'outbox') this.finish(r.claimed, removed)
      else r.settle(removed)
    }
    return deleted
  }

  /** A skipped push, recorded like any other outcome. */
  private skip(id: number, why: string) {
    this.count('skipped')
    this.recordLater(id, { state: 'skipped', lastError: why })
  }

  /**
   * Queues an outcome; one statement writes all that are queued, and those arriving meanwhile go in the next.
   * If a write fails, those claims expire and the pushes are attempted again: at least once, never lost.
   */
  private recordLater(id: number, update: DeliveryUpdate) {
    this.toRecord.set(id, update)
    if (!this.recording) this.recording = this.writeRecorded()
  }

  /**
   * Writes until the queue is empty; `recording` is cleared in the same turn as the queue is found empty.
   * After each statement the event loop takes a turn first: on PGlite a statement runs on the main thread, so
   * answers that came meanwhile are only read then, and go in the next statement rather than one each.
   */
  private async writeRecorded() {
    await Promise.resolve() // outcomes settled in the same turn (a claim's skips, say) go in one statement
    try {
      while (this.toRecord.size) {
        if (this.inFlight >= RECORD_GATHER_IN_FLIGHT) await sleep(RECORD_GATHER_MS)
        const batch = [...this.toRecord]
        this.toRecord.clear()
        try {
          await this.claims.record(batch)
        } catch (err) {
          this.log.warn(
            { err, deliveries: batch.map(([id]) => id) },
            'recording push outcomes failed; their claims will expire',
          )
        }
        await nextTurn()
      }
    } finally {
      this.recording = undefined
    }
  }

  /** Counted as decided, before it is recorded: a failed write does not undo an attempt that was made. */
  private count(outcome: PushOutcome, status?: number) {
    this.metrics.pushAttempts.inc({ outcome, status: status === undefined ? 'none' : String(status) })
  }

  /**
   * Stops claiming, waits (up to `graceMs`) for pushes in flight, writes their outcomes, hands back the rest,
   * and ends the push threads. Test pushes not started are settled as not sent.
   */
  async stop(graceMs = 5_000) {
    this.stopped = true
    clearInterval(this.poll)
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs)
        this.idle.add(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    while (this.recording) await this.recording
    const notStarted: number[] = []
    for (const r of this.ready) {
      if (r.kind === 'outbox') notStarted.push(r.claimed.id)
      else r.settle(SHUTTING_DOWN)
    }
    this.ready = []
    await this.threads.close()
    try {
      await this.claims.handBack(notStarted)
    } catch (err) {
      this.log.warn({ err }, 'handing back push claims failed')
    }
  }
}
