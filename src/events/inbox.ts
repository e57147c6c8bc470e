import { and, asc, count, desc, eq, gt, lt, lte, type SQL, sql } from 'drizzle-orm'
import type { PgColumn } from 'drizzle-orm/pg-core'
import type { Caller } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { type EventRow, events, receipts } from '../db/schema.ts'
import { eventJson, localizedRow } from '../wire-format.ts'
import type { InAppFilter } from './preference-rules.ts'
import { viewerOf, visibleEventTo } from './visibility.ts'

/** Page size for history and polling; at most MAX_PAGE. */
export const DEFAULT_PAGE = 50
export const MAX_PAGE = 500

export interface ListQuery {
  after?: number
  before?: number
  limit: number
  unread: boolean
  /** With `after`: read no further than the log tail's watermark, so a poller never skips an event still in flight. */
  upTo?: number
}

const myReceipt = (caller: Caller) =>
  and(eq(receipts.tenant, caller.tenant), eq(receipts.userId, caller.userId), eq(receipts.eventId, events.id))

/**
 * A column of the caller's receipt of the event at hand (null without one), read by the receipt's whole primary
 * key. A correlated subquery on purpose: PostgreSQL runs it as one index lookup per event whatever its
 * statistics say. As a join (left join, or `not exists`, which becomes an anti-join) the plan rests on row
 * estimates: on a database never analyzed it guessed one receipt per user and compared every event with every
 * receipt, 450 M pairs and 11-38 s for the unread count of a user with 30,000 receipts.
 */
const myReceiptColumn = (caller: Caller, column: PgColumn) =>
  sql`(select ${column} from ${receipts} where ${myReceipt(caller)})`.mapWith(column) as SQL<Date | null>

/** The event at hand is unread by the caller: no receipt, or one not read. */
const unreadBy = (caller: Caller) => sql`${myReceiptColumn(caller, receipts.readAt)} is null`

/** Not of a type registered to stay out of the inbox (event-types/): history and unread counts show these only. */
const inInbox = eq(events.inInbox, true)

/**
 * The reader's locale (BCP 47, as Intl writes it; undefined: none), for events whose type rendered their text per
 * locale. Asked only when a page holds such an event: most reads never look it up.
 */
export type LocaleOf = () => Promise<string | undefined>

/** The rows' JSON texts, each event's title and body in the reader's locale where it has them. */
async function jsonOf(rows: ReadonlyArray<ReceiptRow>, localeOf: LocaleOf | undefined): Promise<string[]> {
  const locale = localeOf && rows.some((r) => r.e.localizedJson !== null) ? await localeOf() : undefined
  return rows.map((r) => eventJson(localizedRow(r.e, locale), r))
}
interface ReceiptRow {
  e: EventRow
  readAt: Date | null
  ackedAt: Date | null
}

/** An event's columns and the caller's receipt times: what eventJson needs. */
const withReceipt = (caller: Caller) => ({
  e: events,
  readAt: myReceiptColumn(caller, receipts.readAt),
  ackedAt: myReceiptColumn(caller, receipts.ackedAt),
})

/**
 * The caller's events as a JSON text `{ "events": [...], "next": ... }`. With `after`: ascending (the polling
 * fallback), `next` is the last id or `after` itself when nothing is new. Otherwise newest first (history),
 * `next` is the id to pass as `before` for the following page, or null at the end.
 */
export async function listEvents(
  database: Database,
  caller: Caller,
  q: ListQuery,
  inApp?: InAppFilter,
  localeOf?: LocaleOf,
): Promise<string> {
  const conditions = [visibleEventTo(viewerOf(caller, inApp))]
  if (q.after !== undefined) conditions.push(gt(events.id, q.after))
  if (q.upTo !== undefined) conditions.push(lte(events.id, q.upTo))
  if (q.before !== undefined) conditions.push(lt(events.id, q.before))
  if (q.unread) conditions.push(unreadBy(caller))
  // Events of a type kept out of the inbox are streamed only: polling (`after`), the stream's fallback, has them.
  if (q.after === undefined) conditions.push(inInbox)
  const rows = await database.db
    .select(withReceipt(caller))
    .from(events)
    .where(and(...conditions))
    .orderBy(q.after !== undefined ? asc(events.id) : desc(events.id))
    .limit(q.limit)
  const last = rows.at(-1)?.e.id
  const next =
    q.after !== undefined
      ? String(last ?? q.after)
      : rows.length === q.limit && last !== undefined
        ? String(last)
        : null
  return `{"events":[${(await jsonOf(rows, localeOf)).join(',')}],"next":${next === null ? 'null' : `"${next}"`}}`
}

/** One visible event as JSON text, or undefined (the route answers 404: existence does not leak). */
export async function getEvent(
  database: Database,
  caller: Caller,
  id: number,
  inApp?: InAppFilter,
  localeOf?: LocaleOf,
): Promise<string | undefined> {
  const [row] = await database.db
    .select(withReceipt(caller))
    .from(events)
    .where(and(visibleEventTo(viewerOf(caller, inApp)), eq(events.id, id)))
  return row ? (await jsonOf([row], localeOf))[0] : undefined
}

/** The statement unreadCount runs (tests read its plan). */
export const unreadCountQuery = (database: Database, caller: Caller, inApp?: InAppFilter) =>
  database.db
    .select({ n: count() })
    .from(events)
    .where(and(visibleEventTo(viewerOf(caller, inApp)), inInbox, unreadBy(caller)))

export async function unreadCount(database: Database, caller: Caller, inApp?: InAppFilter): Promise<number> {
  const [row] = await unreadCountQuery(database, caller, inApp)
  return Number(row.n)
}
