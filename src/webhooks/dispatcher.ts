import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import { retryDelayMs } from './backoff.ts'
import { type ClaimedDelivery, type DeliveryOutcome, WebhookClaims } from './claims.ts'
import { type SendOutcome, WebhookSender } from './send.ts'
import type { Resolve } from './urls.ts'

/** Look for due deliveries (retries, rows other instances wrote) at least this often. */
export const POLL_MS = 500
/** A claim outlives an attempt's deadline by this much: time to write its outcome. */
const CLAIM_MARGIN_S = 5
/** At shutdown, attempts in flight get this long at most to finish before their claims are handed back. */
const STOP_GRACE_MS = 5_000

export interface WebhookDispatcherOptions {
  /** Requests in flight per instance (WEBHOOK_CONCURRENCY); one endpoint gets at most half. */
  concurrency: number
  /** Deadline of one attempt (WEBHOOK_TIMEOUT_MS). */
  timeoutMs: number
  /** Attempts per delivery before it counts as failed (WEBHOOK_MAX_ATTEMPTS). */
  maxAttempts: number
  /** The first retry's backoff; it doubles per attempt (WEBHOOK_RETRY_BASE_MS). */
  retryBaseMs: number
  /** An endpoint failing for longer than this is disabled (WEBHOOK_DISABLE_AFTER_H, in hours). */
  disableAfterH: number
  /** Host patterns that may be http or private (WEBHOOK_URL_ALLOWLIST). */
  allowlist: readonly string[]
  /** An instance whose heartbeat is older than this is dead: its claims are taken over (PRESENCE_TTL_S). */
  instanceTtlS: number
  /** CA certificates to trust for endpoints instead of the system's (tests pass their own). */
  ca?: string | Buffer | Array<string | Buffer>
  /** "Now" for when a delivery is due and for endpoint health; the database's clock unless a test moves it. */
  now?: () => Date
  /** DNS, for tests. */
  resolve?: Resolve
}

/**
 * Sends the webhook outbox. Every instance runs one; rows are claimed with `for update skip locked` and a
 * `claimed_until`, so no two instances send the same row at once, and the row of an instance killed mid-request
 * is taken over when its claim expires (2 × WEBHOOK_TIMEOUT_MS + 5 s), or sooner once its heartbeat is older than
 * PRESENCE_TTL_S. At least once: a receiver deduplicates by `webhook-id`.
 *
 * Only as many rows are claimed as there are free slots (WEBHOOK_CONCURRENCY, at most half of them for one
 * endpoint, so a slow endpoint holds up its own deliveries, not everyone's); outcomes are written in one
 * statement for all that arrived meanwhile.
 */
export class WebhookDispatcher {
  private inFlight = 0
  private readonly perEndpoint = new Map<number, number>()
  /** The claim loop, while it runs. */
  private claiming: Promise<void> | undefined
  private again = false
  /** Rows claimed as the dispatcher stopped, never attempted: handed back with their attempt uncounted. */
  private readonly notStarted: number[] = []
  /** The last claim took all that was due: claim again only when woken (a change, the poll). */
  private drained = false
  private stopped = false
  private poll: NodeJS.Timeout | undefined
  private readonly idle = new Set<() => void>()
  private toRecord: DeliveryOutcome[] = []
  private recording: Promise<void> | undefined
  private readonly claims: WebhookClaims
  private readonly sender: WebhookSender

  constructor(
    database: Database,
    private readonly options: WebhookDispatcherOptions,
    instanceId: string,
    private readonly log: FastifyBaseLogger,
  ) {
    this.claims = new WebhookClaims(database, {
      instanceId,
      instanceTtlS: options.instanceTtlS,
      claimS: Math.ceil((2 * options.timeoutMs) / 1000) + CLAIM_MARGIN_S,
      disableAfterS: options.disableAfterH * 3600,
      clock: options.now,
    })
    this.sender = new WebhookSender({
      timeoutMs: options.timeoutMs,
      allowlist: options.allowlist,
      ca: options.ca,
      maxSockets: options.concurrency,
      resolve: options.resolve,
    })
  }

  start() {
    this.poll = setInterval(() => this.wake(), POLL_MS)
    this.poll.unref()
    this.wake()
  }

  /** Deliveries may be due (a change enqueued some, an endpoint was enabled): claim what fits. */
  wake(): void {
    this.drained = false
    this.fill()
  }

  /** Sweeps sent and failed deliveries older than `retentionDays`. */
  prune(retentionDays: number): Promise<number> {
    return this.claims.prune(retentionDays)
  }

  private fill(): void {
    if (this.stopped || this.drained) return
    if (this.claiming) {
      this.again = true
      return
    }
    this.claiming = this.claimAndSend().finally(() => {
      this.claiming = undefined
    })
  }

  private async claimAndSend() {
    try {
      do {
        this.again = false
        const free = this.options.concurrency - this.inFlight
        if (free <= 0 || this.stopped) break
        const share = this.share()
        const room: Record<string, number> = {}
        for (const [endpoint, n] of this.perEndpoint) room[endpoint] = share - n
        const claimed = await this.claims.claim(free, room, share)
        if (this.stopped) {
          this.notStarted.push(...claimed.map((c) => c.id))
          break
        }
        for (const c of claimed) this.send(c)
        // Fewer than asked: nothing more is due now (or only for endpoints at their share).
        if (claimed.length < free) this.drained = true
        else this.again = true
      } while (this.again && !this.stopped)
    } catch (err) {
      this.log.warn({ err }, 'claiming webhook deliveries failed; retrying on the next poll')
    }
  }

  /** One endpoint never gets more than half the slots. */
  private share() {
    return Math.max(1, Math.floor(this.options.concurrency / 2))
  }

  private send(c: ClaimedDelivery) {
    this.inFlight++
    this.perEndpoint.set(c.endpointId, (this.perEndpoint.get(c.endpointId) ?? 0) + 1)
    void this.sender
      .send(c)
      .catch((err): SendOutcome => ({ ok: false, status: null, error: `internal: ${(err as Error).message}` }))
      .then((outcome) => {
        this.inFlight--
        const left = (this.perEndpoint.get(c.endpointId) ?? 1) - 1
        if (left > 0) this.perEndpoint.set(c.endpointId, left)
        else this.perEndpoint.delete(c.endpointId)
        this.finish(c, outcome)
        if (this.inFlight === 0) for (const resolve of this.idle) resolve()
        // A slot is free, and this endpoint is below its share again: what the last claim left for it (it took
        // no more than the share) may be claimed now, not at the next poll.
        this.wake()
      })
  }

  /** Settles an attempt: sent, due again after a backoff, or failed for good after its last attempt. */
  private finish(c: ClaimedDelivery, outcome: SendOutcome) {
    if (outcome.ok) {
      this.recordLater({
        id: c.id,
        endpointId: c.endpointId,
        state: 'sent',
        lastStatus: outcome.status,
        lastError: null,
      })
      return
    }
    const delay = retryDelayMs({
      attempt: c.attempts,
      maxAttempts: this.options.maxAttempts,
      baseMs: this.options.retryBaseMs,
      retryAfterMs: outcome.retryAfterMs,
    })
    if (delay === undefined) {
      this.recordLater({
        id: c.id,
        endpointId: c.endpointId,
        state: 'failed',
        lastStatus: outcome.status,
        lastError: `${outcome.error} (gave up after ${c.attempts} attempts)`,
      })
      return
    }
    this.recordLater({
      id: c.id,
      endpointId: c.endpointId,
      state: 'pending',
      lastStatus: outcome.status,
      lastError: outcome.error,
      retryInMs: delay,
    })
  }

  /**
   * Queues an outcome; one statement writes all that are queued. If a write fails, those claims expire and the
   * deliveries are attempted again: at least once, never lost.
   */
  private recordLater(outcome: DeliveryOutcome) {
    this.toRecord.push(outcome)
    if (!this.recording) this.recording = this.writeRecorded()
  }

  private async writeRecorded() {
    await Promise.resolve() // outcomes settled in the same turn go in one statement
    try {
      while (this.toRecord.length) {
        const batch = this.toRecord
        this.toRecord = []
        try {
          await this.claims.record(batch, (lastError) => this.disabledReason(lastError))
        } catch (err) {
          this.log.warn(
            { err, deliveries: batch.map((o) => o.id) },
            'recording webhook outcomes failed; their claims will expire',
          )
        }
      }
    } finally {
      this.recording = undefined
    }
  }

  private disabledReason(lastError: string): string {
    return `Every delivery failed for more than ${this.options.disableAfterH} h (WEBHOOK_DISABLE_AFTER_H); the last: ${lastError}`
  }

  /** Stops claiming, waits a little for attempts in flight, writes their outcomes, and hands back the rest. */
  async stop(graceMs = Math.min(STOP_GRACE_MS, this.options.timeoutMs)) {
    this.stopped = true
    clearInterval(this.poll)
    await this.claiming
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
    try {
      await this.claims.handBack(this.notStarted)
    } catch (err) {
      this.log.warn({ err }, 'handing back webhook claims failed')
    }
    this.sender.close()
  }
}
