import type { Agent } from 'node:https'
import { and, eq, inArray, isNotNull, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import webpush from 'web-push'
import type { Database } from '../db/client.ts'
import { type EventRow, events, instances, pushDeliveries, pushSubscriptions, receipts } from '../db/schema.ts'
import type { Metrics, PushOutcome } from '../metrics.ts'
import type { AckTokens } from './ack-token.ts'
import type { VapidKeys } from './keys.ts'
import { pushPayload, pushTopicOf, urgencyOf } from './payload.ts'

/**
 * A claim lasts this long at most. Rows claimed by an instance that stopped heart-beating (see Presence) are
 * taken over sooner, once its heartbeat is older than `instanceTtlS`.
 */
const CLAIM_S = 60
/** Look for due pushes (delayed `high` ones, retries) at least this often. */
const POLL_MS = 1_000
/** A push service that has not answered by then counts as a network error (retried). */
const SEND_TIMEOUT_MS = 10_000
/** Backoff after a failed attempt: base × 2^(attempt-1), capped, with jitter. */
const MAX_BACKOFF_MS = 3_600_000

export interface DispatcherOptions {
  maxAttempts: number
  concurrency: number
  /** First retry delay; doubles each attempt. Defaults to 5 s. */
  retryBaseMs?: number
  /** https agent for the push services (tests pass one trusting their own CA). */
  agent?: Agent
  /** An instance whose heartbeat is older than this is dead: its claims are taken over (PRESENCE_TTL_S). */
  instanceTtlS: number
}

type Outcome =
  | { state: 'sent'; status: number }
  | { state: 'retry'; status?: number; error: string; retryAfterMs?: number }
  | { state: 'failed'; status?: number; error: string; gone?: boolean }

interface Claimed {
  id: number
  eventId: number
  subscriptionId: number | null
  tenant: string
  userId: string
  attempts: number
  /** Held-back `normal` push: instances that claimed the user's presence at publish time (see outbox.ts). */
  presentOn: string[] | null
}

/**
 * Sends the push outbox. Every instance runs one; rows are claimed with `for update skip locked`, so no
 * two instances send the same row, and a claim left by a dead instance is taken over.
 * At most `concurrency` pushes are in flight; a slow push service holds only its own slots.
 */
export class PushDispatcher {
  private inFlight = 0
  /** Devices with a push in flight here, and pushes in flight per push service (origin). */
  private readonly sendingTo = new Set<number>()
  private readonly perOrigin = new Map<string, number>()
  private claiming = false
  private again = false
  private stopped = false
  private poll: NodeJS.Timeout | undefined
  private readonly idle = new Set<() => void>()

  constructor(
    private readonly database: Database,
    private readonly vapid: VapidKeys,
    private readonly ackTokens: AckTokens,
    private readonly options: DispatcherOptions,
    private readonly instanceId: string,
    private readonly log: FastifyBaseLogger,
    private readonly metrics: Metrics,
  ) {}

  start() {
    this.poll = setInterval(() => this.wake(), POLL_MS)
    this.poll.unref()
    this.wake()
  }

  /** New pushes may be due (a publish committed): claim what fits now. */
  wake(): void {
    if (this.stopped) return
    if (this.claiming) {
      this.again = true
      return
    }
    void this.claimAndSend()
  }

  private async claimAndSend() {
    this.claiming = true
    try {
      do {
        this.again = false
        const free = this.options.concurrency - this.inFlight
        if (free <= 0) break
        const claimed = await this.claim(free)
        if (claimed.length) await this.sendAll(claimed)
        if (claimed.length === free) this.again = true
      } while (this.again && !this.stopped)
    } catch (err) {
      this.log.warn({ err }, 'claiming pushes failed; retrying on the next poll')
    } finally {
      this.claiming = false
    }
  }

  private async claim(limit: number): Promise<Claimed[]> {
    const rows = await this.database.query<{
      id: string | number
      event_id: string | number
      subscription_id: string | number | null
      tenant: string
      user_id: string
      attempts: number
      present_on: string[] | null
    }>(sql`
      update push_deliveries d
      set claimed_by = ${this.instanceId}, claimed_until = now() + make_interval(secs => ${CLAIM_S}),
          attempts = d.attempts + 1, updated_at = now()
      where d.id in (
        select pd.id from push_deliveries pd
        left join push_subscriptions s on s.id = pd.subscription_id
        where pd.state = 'pending' and pd.next_attempt_at <= now()
          and (pd.claimed_until is null or pd.claimed_until < now() or not exists (
            select 1 from instances i
            where i.id = pd.claimed_by and i.seen_at > now() - make_interval(secs => ${this.options.instanceTtlS})))
          ${this.notBusy()}
        order by pd.next_attempt_at
        limit ${limit}
        for update of pd skip locked)
      returning d.id, d.event_id, d.subscription_id, d.tenant, d.user_id, d.attempts, d.present_on`)
    return rows.map((r) => ({
      id: Number(r.id),
      eventId: Number(r.event_id),
      subscriptionId: r.subscription_id === null ? null : Number(r.subscription_id),
      tenant: r.tenant,
      userId: r.user_id,
      attempts: Number(r.attempts),
      presentOn: r.present_on,
    }))
  }

  /** Loads what the claimed rows need in three queries, then sends each without waiting for the others. */
  private async sendAll(claimed: Claimed[]) {
    const { db } = this.database
    const eventIds = [...new Set(claimed.map((c) => c.eventId))]
    const subIds = [...new Set(claimed.map((c) => c.subscriptionId).filter((id): id is number => id !== null))]
    const instanceIds = [...new Set(claimed.flatMap((c) => c.presentOn ?? []))]
    const [eventRows, subRows, acked, instanceRows] = await Promise.all([
      db.select().from(events).where(inArray(events.id, eventIds)),
      subIds.length ? db.select().from(pushSubscriptions).where(inArray(pushSubscriptions.id, subIds)) : [],
      db
        .select({ tenant: receipts.tenant, userId: receipts.userId, eventId: receipts.eventId })
        .from(receipts)
        .where(and(inArray(receipts.eventId, eventIds), isNotNull(receipts.ackedAt))),
      instanceIds.length ? db.select().from(instances).where(inArray(instances.id, instanceIds)) : [],
    ])
    const lastBeat = new Map(instanceRows.map((i) => [i.id, i.seenAt.getTime()]))
    /** An instance that beat after the event was created was alive when it was published: its stream was real. */
    const wasStreamed = (c: Claimed, event: EventRow) =>
      c.presentOn?.some((id) => (lastBeat.get(id) ?? 0) >= event.createdAt.getTime()) ?? false
    const eventsById = new Map(eventRows.map((e) => [e.id, e]))
    const subsById = new Map(subRows.map((s) => [s.id, s]))
    const ackedKeys = new Set(acked.map((a) => `${a.tenant}\u0000${a.userId}\u0000${a.eventId}`))

    for (const c of claimed) {
      const event = eventsById.get(c.eventId)
      const sub = c.subscriptionId === null ? undefined : subsById.get(c.subscriptionId)
      if (!event || event.expiresAt.getTime() <= Date.now()) {
        void this.finish(c, { state: 'failed', error: 'event expired' })
      } else if (!sub) {
        void this.finish(c, { state: 'failed', error: 'subscription removed' })
      } else if (ackedKeys.has(`${c.tenant}\u0000${c.userId}\u0000${c.eventId}`)) {
        this.skip(c.id, 'already acked')
      } else if (wasStreamed(c, event)) {
        this.skip(c.id, 'delivered on an open stream')
      } else if (this.sendingTo.has(sub.id) || this.originBusy(sub.endpoint)) {
        // Its device already has a push in flight (claimed together), or its push service has its share:
        // back to the table, due as it was; claims skip it until the device or service is free.
        this.release(c.id)
      } else {
        this.sendNow(c, event, sub)
      }
    }
  }

  /** SQL: leave out rows whose device has a push in flight here or whose push service has its share of slots. */
  private notBusy() {
    const devices = [...this.sendingTo]
    const share = this.originShare()
    const origins = [...this.perOrigin].filter(([, n]) => n >= share).map(([origin]) => `${origin}/`)
    return sql.join(
      [
        devices.length
          ? sql`and (pd.subscription_id is null or pd.subscription_id not in (${sql.join(
              devices.map((d) => sql`${d}`),
              sql`, `,
            )}))`
          : sql``,
        ...origins.map((o) => sql`and (s.endpoint is null or not starts_with(s.endpoint, ${o}))`),
      ],
      sql` `,
    )
  }

  private sendNow(c: Claimed, event: EventRow, sub: typeof pushSubscriptions.$inferSelect) {
    const origin = originOf(sub.endpoint)
    this.inFlight++
    this.sendingTo.add(sub.id)
    this.perOrigin.set(origin, (this.perOrigin.get(origin) ?? 0) + 1)
    void this.send(event, sub)
      .then((outcome) => this.finish(c, outcome, event))
      .finally(() => {
        this.inFlight--
        this.sendingTo.delete(sub.id)
        const left = (this.perOrigin.get(origin) ?? 1) - 1
        if (left > 0) this.perOrigin.set(origin, left)
        else this.perOrigin.delete(origin)
        if (this.inFlight === 0) for (const resolve of this.idle) resolve()
        this.wake()
      })
  }

  /**
   * One push service never gets more than half the slots, and one device never has two pushes in flight:
   * a slow or failing endpoint holds up its own pushes, not everyone's.
   */
  private originBusy(endpoint: string): boolean {
    return (this.perOrigin.get(originOf(endpoint)) ?? 0) >= this.originShare()
  }

  private originShare() {
    return Math.max(1, Math.floor(this.options.concurrency / 2))
  }

  /** Hands a claimed row back, due as it was, without counting an attempt. */
  private release(id: number) {
    this.database.db
      .update(pushDeliveries)
      .set({ claimedBy: null, claimedUntil: null, attempts: sql`${pushDeliveries.attempts} - 1` })
      .where(eq(pushDeliveries.id, id))
      .catch((err) => this.log.warn({ err, delivery: id }, 'releasing a push failed; its claim will expire'))
  }

  private async send(event: EventRow, sub: typeof pushSubscriptions.$inferSelect): Promise<Outcome> {
    const ttlSeconds = Math.max(0, Math.floor((event.expiresAt.getTime() - Date.now()) / 1000))
    const ackToken = this.ackTokens.sign({ tenant: sub.tenant, userId: sub.userId, eventId: event.id }, ttlSeconds)
    return sendPush(
      sub,
      pushPayload(event, ackToken),
      { TTL: ttlSeconds, urgency: urgencyOf(event.priority), topic: pushTopicOf(event.collapseKey) },
      this.vapid,
      this.options.agent,
    )
  }

  /** Records an attempt's outcome: sent, failed for good, or due again after a backoff. */
  private async finish(c: Claimed, outcome: Outcome, event?: EventRow) {
    try {
      if (outcome.state === 'sent') {
        this.count('sent', outcome.status)
        await this.record(c.id, { state: 'sent', lastStatus: outcome.status, lastError: null })
        return
      }
      if (outcome.state === 'failed') {
        this.count('failed', outcome.status)
        if (outcome.gone && c.subscriptionId !== null) {
          // 404/410: the browser dropped this subscription; forget the device.
          await this.database.db.delete(pushSubscriptions).where(eq(pushSubscriptions.id, c.subscriptionId))
        }
        await this.record(c.id, { state: 'failed', lastStatus: outcome.status ?? null, lastError: outcome.error })
        return
      }
      const base = this.options.retryBaseMs ?? 5_000
      const backoff = Math.min(base * 2 ** (c.attempts - 1), MAX_BACKOFF_MS)
      const delay = Math.max(outcome.retryAfterMs ?? 0, backoff / 2 + Math.random() * (backoff / 2))
      const due = Date.now() + delay
      if (c.attempts >= this.options.maxAttempts || (event && due >= event.expiresAt.getTime())) {
        this.count('failed', outcome.status)
        await this.record(c.id, {
          state: 'failed',
          lastStatus: outcome.status ?? null,
          lastError: `${outcome.error} (gave up after ${c.attempts} attempts)`,
        })
        return
      }
      this.count('retry', outcome.status)
      await this.record(c.id, {
        state: 'pending',
        lastStatus: outcome.status ?? null,
        lastError: outcome.error,
        nextAttemptAt: new Date(due),
      })
    } catch (err) {
      // The claim expires and another attempt is made: at least once, never lost.
      this.log.warn({ err, delivery: c.id }, 'recording a push outcome failed')
    }
  }

  /** Writes an outcome and releases the claim (awaited: a drizzle query only runs when awaited). */
  private async record(
    id: number,
    set: Partial<Pick<typeof pushDeliveries.$inferInsert, 'state' | 'lastStatus' | 'lastError' | 'nextAttemptAt'>>,
  ): Promise<void> {
    await this.database.db
      .update(pushDeliveries)
      // presentOn is settled by the first attempt: from then on the row is an ordinary push.
      .set({ ...set, presentOn: null, claimedBy: null, claimedUntil: null, updatedAt: sql`now()` })
      .where(eq(pushDeliveries.id, id))
  }

  /** A skipped push: recorded without waiting; if recording fails, the claim expires and it is skipped again. */
  private skip(id: number, why: string) {
    this.count('skipped')
    this.record(id, { state: 'skipped', lastError: why }).catch((err) =>
      this.log.warn({ err, delivery: id }, 'recording a skipped push failed'),
    )
  }

  /** Counted as decided, before it is recorded: a failed write does not undo an attempt that was made. */
  private count(outcome: PushOutcome, status?: number) {
    this.metrics.pushAttempts.inc({ outcome, status: status === undefined ? 'none' : String(status) })
  }

  /** Stops claiming, waits (up to `graceMs`) for pushes in flight, and hands back claims not finished. */
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
    await this.database.db
      .update(pushDeliveries)
      .set({ claimedBy: null, claimedUntil: null })
      .where(and(eq(pushDeliveries.claimedBy, this.instanceId), eq(pushDeliveries.state, 'pending')))
      .catch((err) => this.log.warn({ err }, 'handing back push claims failed'))
  }
}

/** One Web Push request, classified: sent, retry later (429, 5xx, network), or failed for good. */
export async function sendPush(
  sub: { endpoint: string; p256dh: string; auth: string },
  payload: string,
  headers: { TTL: number; urgency: 'very-low' | 'low' | 'normal' | 'high'; topic?: string },
  vapid: VapidKeys,
  agent?: Agent,
): Promise<Outcome> {
  try {
    const res = await webpush.sendNotification(
      { endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth } },
      payload,
      {
        // No vapidDetails: web-push would sign a token of its own (webpush.setVapidDetails is never called).
        headers: { Authorization: vapidAuthorization(vapid, originOf(sub.endpoint)) },
        TTL: headers.TTL,
        urgency: headers.urgency,
        ...(headers.topic ? { topic: headers.topic } : {}),
        timeout: SEND_TIMEOUT_MS,
        ...(agent ? { agent } : {}),
      },
    )
    return { state: 'sent', status: res.statusCode }
  } catch (err) {
    const e = err as { statusCode?: number; headers?: Record<string, string>; message?: string }
    const status = e.statusCode
    if (status === undefined) return { state: 'retry', error: `network: ${e.message ?? String(err)}` }
    if (status === 404 || status === 410) return { state: 'failed', status, error: 'subscription gone', gone: true }
    if (status === 429 || status >= 500) {
      return {
        state: 'retry',
        status,
        error: `push service answered ${status}`,
        retryAfterMs: retryAfterMs(e.headers?.['retry-after']),
      }
    }
    return { state: 'failed', status, error: `push service refused: ${status}` }
  }
}

/** A VAPID token may be valid for up to 24 h: one per push service is signed for 12 h and renewed 1 h before. */
const VAPID_TOKEN_S = 12 * 3600
const VAPID_RENEW_BEFORE_S = 3600
const vapidTokens = new Map<string, { authorization: string; expiresAt: number }>()

/**
 * The `Authorization: vapid t=…, k=…` header for a push service. web-push signs a new ES256 token (and
 * converts the key to PEM) for every message: most of a push's CPU. The token names only the push service's
 * origin, so one serves every message to it until it nears its expiry.
 */
function vapidAuthorization(vapid: VapidKeys, audience: string): string {
  const key = `${vapid.publicKey} ${vapid.subject} ${audience}`
  const now = Math.floor(Date.now() / 1000)
  const cached = vapidTokens.get(key)
  if (cached && cached.expiresAt - now > VAPID_RENEW_BEFORE_S) return cached.authorization
  const expiresAt = now + VAPID_TOKEN_S
  const { Authorization } = webpush.getVapidHeaders(
    audience,
    vapid.subject,
    vapid.publicKey,
    vapid.privateKey,
    'aes128gcm',
    expiresAt,
  )
  if (vapidTokens.size >= 1_000) vapidTokens.clear() // push services are few; this only bounds the map
  vapidTokens.set(key, { authorization: Authorization, expiresAt })
  return Authorization
}

const originOf = (endpoint: string) => {
  try {
    return new URL(endpoint).origin
  } catch {
    return endpoint
  }
}

/** `Retry-After` as seconds or an HTTP date, in ms from now. */
function retryAfterMs(value: string | undefined): number | undefined {
  if (!value) return undefined
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}
