import { and, eq, gt, inArray, lte, type SQL, sql } from 'drizzle-orm'
import type { Caller } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { events, pushDeliveries, receipts } from '../db/schema.ts'
import { enqueueWebhooks } from '../webhooks/outbox.ts'
import { isoText } from '../wire-format.ts'
import { type RecipientTotals, recipientTotals } from './recipients.ts'
import { isCurrentEvent, viewerOf, visibleEventTo } from './visibility.ts'

export type ReceiptState = 'acked' | 'read'

/** What a publisher's open streams are told when a recipient acks or reads their events (`roll-call` frame). */
export interface RollCallNotice {
  /** The publisher's events the recipient marked. */
  ids: string[]
  userId: string
  state: ReceiptState
}

/** What the user's other tabs and devices are told, as the `receipt` event's data. */
export type ReceiptNotice = { ids: string[]; state: ReceiptState } | { upTo: string; state: 'read' }

/** An event marked, and who published it (their open streams follow the event's roll-call). */
export interface Marked {
  id: number
  actor: string
}

/**
 * Marks the caller's visible events among `which` as acked or read (read implies acked); idempotent: the
 * first time stays recorded. Returns the events that were visible, with their publishers, and how many webhook
 * messages were enqueued; events the caller cannot see are untouched. The `event.read` and `event.acked` webhooks go out in the same statement (one per
 * user and event: enqueued again, they are the same message).
 */
export async function markEvents(
  database: Database,
  caller: Caller,
  which: SQL,
  state: ReceiptState,
): Promise<{ marked: Marked[]; webhooks: number }> {
  const source = database.db
    .select({
      tenant: sql<string>`${caller.tenant}`.as('tenant'),
      userId: sql<string>`${caller.userId}`.as('user_id'),
      eventId: events.id,
      ackedAt: sql<Date>`now()`.as('acked_at'),
      readAt: sql<Date | null>`${state === 'read' ? sql`now()` : sql`null::timestamptz`}`.as('read_at'),
    })
    .from(events)
    .where(and(mayMark(caller), which))
  const hook = (type: 'event.read' | 'event.acked', column: SQL) =>
    enqueueWebhooks(
      type,
      sql`select tenant, event_id || ':' || user_id as msg_key,
        json_build_object('eventId', event_id::text, 'tenant', tenant, 'userId', user_id,
          'at', ${isoText(column)}) as data
        from marked where ${column} is not null`,
    )
  const rows = await database.query<{ event_id: string | number; actor: string; webhooks: string | number }>(sql`
    with marked as (
      insert into receipts (tenant, user_id, event_id, acked_at, read_at) ${source}
      on conflict (tenant, user_id, event_id) do update
        set acked_at = coalesce(receipts.acked_at, excluded.acked_at), read_at = coalesce(receipts.read_at, excluded.read_at)
      returning tenant, user_id, event_id, acked_at, read_at
    ), acked_hooks as (${hook('event.acked', sql`acked_at`)}
    )${state === 'read' ? sql`, read_hooks as (${hook('event.read', sql`read_at`)})` : sql``}
    select m.event_id, e.actor,
      (select count(*) from acked_hooks)${state === 'read' ? sql` + (select count(*) from read_hooks)` : sql``} as webhooks
    from marked m join events e on e.id = m.event_id`)
  return {
    marked: rows.map((r) => ({ id: Number(r.event_id), actor: r.actor })),
    webhooks: rows.length ? Number(rows[0].webhooks) : 0,
  }
}

/**
 * A user marks what they can see; an ackToken marks its one event (issued to a recipient when pushed). Only
 * events as they stand: never a recalled one, nor the log's rows of edits and recalls.
 */
function mayMark(caller: Caller): SQL {
  if (caller.ackEventId === undefined) return visibleEventTo(viewerOf(caller))
  return and(
    eq(events.id, caller.ackEventId),
    eq(events.tenant, caller.tenant),
    gt(events.expiresAt, sql`now()`),
    isCurrentEvent,
  ) as SQL
}

export const oneEvent = (id: number) => eq(events.id, id)
export const someEvents = (ids: number[]) => inArray(events.id, ids)
export const eventsUpTo = (id: number) => lte(events.id, id)

export interface DeliveryStatus {
  acked: number
  read: number
  push: { sent: number; failed: number; pending: number }
  /** Who the event was for (recipients.ts) and what became of it for them. */
  recipients: RecipientTotals
}

/**
 * Delivery figures for the publisher of an event or an `admin` of its tenant; undefined otherwise (404). A
 * recalled event keeps its figures (what was delivered before the recall); the log's rows of edits and
 * recalls are no events and have none.
 */
export async function deliveryStatus(
  database: Database,
  caller: Caller,
  id: number,
): Promise<DeliveryStatus | undefined> {
  const [event] = await database.db
    .select({ actor: events.actor })
    .from(events)
    .where(and(eq(events.id, id), eq(events.tenant, caller.tenant), eq(events.kind, 'event')))
  if (!event || (event.actor !== caller.userId && !caller.scopes.has('admin'))) return undefined
  const [counts] = await database.db
    .select({
      acked: sql<number>`count(*) filter (where ${receipts.ackedAt} is not null)`.mapWith(Number),
      read: sql<number>`count(*) filter (where ${receipts.readAt} is not null)`.mapWith(Number),
    })
    .from(receipts)
    .where(eq(receipts.eventId, id))
  const [push] = await database.db
    .select({
      sent: sql<number>`count(*) filter (where ${pushDeliveries.state} = 'sent')`.mapWith(Number),
      failed: sql<number>`count(*) filter (where ${pushDeliveries.state} = 'failed')`.mapWith(Number),
      // A held-back push (present_on) is not pending: it is normally dropped because the stream delivered.
      pending:
        sql<number>`count(*) filter (where ${pushDeliveries.state} = 'pending' and ${pushDeliveries.presentOn} is null)`.mapWith(
          Number,
        ),
    })
    .from(pushDeliveries)
    .where(eq(pushDeliveries.eventId, id))
  return {
    acked: counts.acked,
    read: counts.read,
    push,
    recipients: await recipientTotals(database, caller.tenant, id),
  }
}
