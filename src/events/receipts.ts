import { and, eq, gt, inArray, lte, type SQL, sql } from 'drizzle-orm'
import type { Caller } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { events, pushDeliveries, receipts } from '../db/schema.ts'
import { isCurrentEvent, viewerOf, visibleEventTo } from './visibility.ts'

export type ReceiptState = 'acked' | 'read'

/** What the user's other tabs and devices are told, as the `receipt` event's data. */
export type ReceiptNotice = { ids: string[]; state: ReceiptState } | { upTo: string; state: 'read' }

/**
 * Marks the caller's visible events among `which` as acked or read (read implies acked); idempotent: the
 * first time stays recorded. Returns the ids that were visible; events the caller cannot see are untouched.
 */
export async function markEvents(
  database: Database,
  caller: Caller,
  which: SQL,
  state: ReceiptState,
): Promise<number[]> {
  const now = sql`now()`
  const source = database.db
    .select({
      tenant: sql<string>`${caller.tenant}`.as('tenant'),
      userId: sql<string>`${caller.userId}`.as('user_id'),
      eventId: events.id,
      ackedAt: sql<Date>`now()`.as('acked_at'),
      readAt: sql<Date | null>`${state === 'read' ? now : sql`null::timestamptz`}`.as('read_at'),
    })
    .from(events)
    .where(and(mayMark(caller), which))
  const rows = await database.db
    .insert(receipts)
    .select(source)
    .onConflictDoUpdate({
      target: [receipts.tenant, receipts.userId, receipts.eventId],
      set: {
        ackedAt: sql`coalesce(${receipts.ackedAt}, excluded.acked_at)`,
        readAt: sql`coalesce(${receipts.readAt}, excluded.read_at)`,
      },
    })
    .returning({ eventId: receipts.eventId })
  return rows.map((r) => Number(r.eventId))
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
  return { acked: counts.acked, read: counts.read, push }
}
