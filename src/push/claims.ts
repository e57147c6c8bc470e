import { and, eq, inArray, isNotNull, type SQL, sql } from 'drizzle-orm'
import type { Database } from '../db/client.ts'
import { type EventRow, events, instances, pushDeliveries, pushSubscriptions, receipts } from '../db/schema.ts'
import { enqueueWebhooks } from '../webhooks/outbox.ts'
import { localizedRow } from '../wire-format.ts'

// The push outbox's SQL, as the dispatcher (dispatcher.ts) runs it: claiming due pushes, loading what they need,
// recording their outcomes, handing claims back. No scheduling here: when and how much is the dispatcher's call.

/**
 * A claim lasts this long at most. Rows claimed by an instance that stopped heart-beating (see Presence) are
 * taken over sooner, once its heartbeat is older than `instanceTtlS`.
 */
const CLAIM_S = 60

/** A push_deliveries row this instance has claimed; its attempt is counted from the claim. */
export interface ClaimedPush {
  id: number
  eventId: number
  subscriptionId: number | null
  tenant: string
  userId: string
  attempts: number
  /** Held-back `normal` push: instances that claimed the user's presence at publish time (see outbox.ts). */
  presentOn: string[] | null
  /** The device's push service, as stored when the push was planned (see outbox.ts). */
  service: string | null
  /** A nudge (outbox.ts planNudgePushes): shown again though the device may show it already; skipped once read. */
  nudge: boolean
}

export type Subscription = typeof pushSubscriptions.$inferSelect

/**
 * A claimed push once loaded: still to send (with its event and device), or settled without a request. A push
 * of an edit or a recall (outbox.ts CHANGE_PUSHES) has its `change`, and the event as it now stands.
 */
export type LoadedPush =
  | { state: 'send'; claimed: ClaimedPush; event: EventRow; sub: Subscription; change?: 'update' | 'delete' }
  | { state: 'failed'; claimed: ClaimedPush; error: string }
  | { state: 'skipped'; claimed: ClaimedPush; why: string }

/** What to write to a push_deliveries row after an attempt: its new state, and when it is due again if pending. */
export type DeliveryUpdate = Partial<
  Pick<typeof pushDeliveries.$inferInsert, 'state' | 'lastStatus' | 'lastError' | 'nextAttemptAt'>
>

/** What a claim must leave alone: devices busy here, and room left per push service. */
export interface ClaimLimits {
  /** Rows at most. */
  limit: number
  /** Devices with a push in flight or queued here: none of their rows are claimed. */
  busyDevices: Iterable<number>
  /** Rows that may still be taken per push service; a service not named may take `perService`. */
  room: Record<string, number>
  perService: number
}

export class PushClaims {
  constructor(
    private readonly database: Database,
    private readonly instanceId: string,
    /** An instance whose heartbeat is older than this is dead: its claims are taken over. */
    private readonly instanceTtlS: number,
    /**
     * A clock a test moves (AppOptions.clock): a push is due once its time has come by the database's clock or by
     * this one, whichever is later (pushes waiting for quiet hours are due by the clock they were computed with).
     */
    private readonly clock?: () => Date,
  ) {}

  /** The time a push must be due by to be claimed now. */
  private dueBy(): SQL {
    return this.clock ? sql`greatest(now(), ${this.clock().toISOString()}::timestamptz)` : sql`now()`
  }

  /**
   * Claims due rows, oldest first, leaving out busy devices, and taking no more for a push service than it has
   * room for (each row names its push service, stored when it was planned). Counts the attempt. Sorted by id.
   */
  async claim({ limit, busyDevices, room, perService }: ClaimLimits): Promise<ClaimedPush[]> {
    const rows = await this.database.query<{
      id: string | number
      event_id: string | number
      subscription_id: string | number | null
      tenant: string
      user_id: string
      attempts: number
      present_on: string[] | null
      service: string | null
      nudge: boolean
    }>(sql`
      with candidates as (
        select pd.id, pd.next_attempt_at, pd.service
        from push_deliveries pd
        where pd.state = 'pending' and pd.next_attempt_at <= ${this.dueBy()}
          and (pd.claimed_until is null or pd.claimed_until < now() or not exists (
            select 1 from instances i
            where i.id = pd.claimed_by and i.seen_at > now() - make_interval(secs => ${this.instanceTtlS})))
          and (pd.subscription_id is null
            or not pd.subscription_id = any(array(select json_array_elements_text(${JSON.stringify([...busyDevices])}::json)::bigint)))
          and coalesce((${JSON.stringify(room)}::jsonb ->> pd.service)::int, 1) > 0
        order by pd.next_attempt_at
        limit ${limit}
        for update of pd skip locked),
      fitting as (
        select id from (
          select id, service, row_number() over (partition by service order by next_attempt_at, id) as n from candidates) c
        where service is null or n <= coalesce((${JSON.stringify(room)}::jsonb ->> service)::int, ${perService}))
      update push_deliveries d
      set claimed_by = ${this.instanceId}, claimed_until = now() + make_interval(secs => ${CLAIM_S}),
          attempts = d.attempts + 1, updated_at = now()
      from fitting f
      where d.id = f.id
      returning d.id, d.event_id, d.subscription_id, d.tenant, d.user_id, d.attempts, d.present_on, d.service, d.nudge`)
    const claimed = rows.map((r) => ({
      id: Number(r.id),
      eventId: Number(r.event_id),
      subscriptionId: r.subscription_id === null ? null : Number(r.subscription_id),
      tenant: r.tenant,
      userId: r.user_id,
      attempts: Number(r.attempts),
      presentOn: r.present_on,
      service: r.service,
      nudge: r.nudge,
    }))
    // Ids follow publish order: a device's pushes claimed together go out in it.
    return claimed.sort((a, b) => a.id - b.id)
  }

  /**
   * Loads what the claimed rows need in four queries (one more with pushes of edits or recalls, and one more with
   * events whose text is per locale: their users' directory locales), and says of each
   * whether it is still to send: not if its event expired or its device was removed (failed), or if it was
   * acked, streamed or recalled meanwhile (skipped).
   */
  async load(claimed: ClaimedPush[]): Promise<LoadedPush[]> {
    const { db } = this.database
    const eventIds = [...new Set(claimed.map((c) => c.eventId))]
    const subIds = [...new Set(claimed.map((c) => c.subscriptionId).filter((id): id is number => id !== null))]
    const instanceIds = [...new Set(claimed.flatMap((c) => c.presentOn ?? []))]
    const [eventRows, subRows, acked, instanceRows] = await Promise.all([
      db.select().from(events).where(inArray(events.id, eventIds)),
      subIds.length ? db.select().from(pushSubscriptions).where(inArray(pushSubscriptions.id, subIds)) : [],
      db
        .select({
          tenant: receipts.tenant,
          userId: receipts.userId,
          eventId: receipts.eventId,
          readAt: receipts.readAt,
        })
        .from(receipts)
        .where(and(inArray(receipts.eventId, eventIds), isNotNull(receipts.ackedAt))),
      instanceIds.length ? db.select().from(instances).where(inArray(instances.id, instanceIds)) : [],
    ])
    // A push of an edit or a recall sends its event as it now stands.
    const refIds = [...new Set(eventRows.flatMap((e) => (e.refId === null ? [] : [e.refId])))]
    if (refIds.length) eventRows.push(...(await db.select().from(events).where(inArray(events.id, refIds))))
    const lastBeat = new Map(instanceRows.map((i) => [i.id, i.seenAt.getTime()]))
    /** An instance that beat after the event was created was alive when it was published: its stream was real. */
    const wasStreamed = (c: ClaimedPush, event: EventRow) =>
      c.presentOn?.some((id) => (lastBeat.get(id) ?? 0) >= event.createdAt.getTime()) ?? false
    const eventsById = new Map(eventRows.map((e) => [e.id, e]))
    const subsById = new Map(subRows.map((s) => [s.id, s]))
    const ackedKeys = new Set(acked.map((a) => `${a.tenant}\u0000${a.userId}\u0000${a.eventId}`))
    // Events whose type rendered their text per locale go in each recipient's directory locale (event-types/).
    const eventOf = (c: ClaimedPush) => {
      const row = eventsById.get(c.eventId)
      return row?.refId == null ? row : eventsById.get(row.refId)
    }
    const locales = await this.localesOf(claimed.filter((c) => eventOf(c)?.localizedJson != null))
    const readKeys = new Set(acked.flatMap((a) => (a.readAt ? [`${a.tenant}\u0000${a.userId}\u0000${a.eventId}`] : [])))

    return claimed.map((c): LoadedPush => {
      const row = eventsById.get(c.eventId)
      const stored = eventOf(c)
      const event = stored && localizedRow(stored, locales.get(`${c.tenant}\u0000${c.userId}`))
      const sub = c.subscriptionId === null ? undefined : subsById.get(c.subscriptionId)
      if (!row || !event) return { state: 'failed', claimed: c, error: 'event expired' }
      if (!sub) return { state: 'failed', claimed: c, error: 'subscription removed' }
      if (row.kind === 'delete') return { state: 'send', claimed: c, event, sub, change: 'delete' }
      // Recalled since: its recall follows to every device this could have reached.
      if (event.recalledAt) return { state: 'skipped', claimed: c, why: 'event recalled' }
      if (row.kind === 'update') return { state: 'send', claimed: c, event, sub, change: 'update' }
      // A nudge is for those who have not read the event (acking it, from a notification, is not reading it).
      if (c.nudge) {
        if (readKeys.has(`${c.tenant}\u0000${c.userId}\u0000${c.eventId}`)) {
          return { state: 'skipped', claimed: c, why: 'already read' }
        }
        return { state: 'send', claimed: c, event, sub }
      }
      if (ackedKeys.has(`${c.tenant}\u0000${c.userId}\u0000${c.eventId}`)) {
        return { state: 'skipped', claimed: c, why: 'already acked' }
      }
      if (wasStreamed(c, event)) return { state: 'skipped', claimed: c, why: 'delivered on an open stream' }
      return { state: 'send', claimed: c, event, sub }
    })
  }

  /** The directory locales of the pushes' users (none asked: no query), keyed by tenant and user. */
  private async localesOf(pushes: readonly ClaimedPush[]): Promise<Map<string, string>> {
    if (!pushes.length) return new Map()
    const users = JSON.stringify(pushes.map((c) => ({ tenant: c.tenant, user_id: c.userId })))
    const rows = await this.database.query<{ tenant: string; user_id: string; locale: string }>(sql`
      select d.tenant, d.user_id, d.locale from directory_users d
      join (select distinct * from json_to_recordset(${users}::json) as u(tenant text, user_id text)) u
        on u.tenant = d.tenant and u.user_id = d.user_id
      where d.locale is not null`)
    return new Map(rows.map((r) => [`${r.tenant}\u0000${r.user_id}`, r.locale]))
  }

  /**
   * Writes outcomes in one statement, and releases their claims. A push that failed for good is reported to the
   * tenant's `push.failed` webhooks in the same statement (one message per push_deliveries row).
   */
  async record(updates: Iterable<[id: number, update: DeliveryUpdate]>): Promise<void> {
    const batch = [...updates].map(([id, u]) => ({
      id,
      state: u.state,
      last_status: u.lastStatus ?? null,
      last_error: u.lastError ?? null,
      next_attempt_at: u.nextAttemptAt?.toISOString() ?? null,
    }))
    // presentOn is settled by the first attempt: from then on the row is an ordinary push.
    await this.database.query(sql`
      with recorded as (
        update push_deliveries d
        set state = o.state, last_status = o.last_status, last_error = o.last_error,
            next_attempt_at = coalesce(o.next_attempt_at, d.next_attempt_at),
            present_on = null, claimed_by = null, claimed_until = null, updated_at = now()
        from json_to_recordset(${JSON.stringify(batch)}::json)
          as o(id bigint, state text, last_status int, last_error text, next_attempt_at timestamptz)
        where d.id = o.id
        returning d.id, d.event_id, d.tenant, d.user_id, d.state, d.last_status, d.last_error
      ), webhooks as (${enqueueWebhooks(
        'push.failed',
        sql`
          select tenant, id::text as msg_key,
            json_build_object('eventId', event_id::text, 'tenant', tenant, 'userId', user_id,
              'status', last_status, 'error', last_error) as data
          from recorded where state = 'failed'`,
      )})
      select count(*) as recorded from recorded`)
  }

  /**
   * Releases this instance's claims on pending rows (at shutdown). Those in `notStarted` were claimed but
   * never attempted: their attempt is not counted.
   */
  async handBack(notStarted: number[]): Promise<void> {
    const { db } = this.database
    if (notStarted.length) {
      await db
        .update(pushDeliveries)
        .set({ claimedBy: null, claimedUntil: null, attempts: sql`${pushDeliveries.attempts} - 1` })
        .where(inArray(pushDeliveries.id, notStarted))
    }
    await db
      .update(pushDeliveries)
      .set({ claimedBy: null, claimedUntil: null })
      .where(and(eq(pushDeliveries.claimedBy, this.instanceId), eq(pushDeliveries.state, 'pending')))
  }

  /** Deletes a device (its push service answered 404/410); its rows still pending fail as 'subscription removed'. */
  async forgetDevice(subscriptionId: number): Promise<void> {
    await this.database.db.delete(pushSubscriptions).where(eq(pushSubscriptions.id, subscriptionId))
  }

  /** A user's devices (for a test push). */
  devicesOf(owner: { tenant: string; userId: string }): Promise<Subscription[]> {
    return this.database.db
      .select()
      .from(pushSubscriptions)
      .where(and(eq(pushSubscriptions.tenant, owner.tenant), eq(pushSubscriptions.userId, owner.userId)))
  }
}
