import { and, asc, eq, gt, type SQL, sql } from 'drizzle-orm'
import { z } from 'zod'
import type { Caller } from '../auth.ts'
import type { Database, Db } from '../db/client.ts'
import { scheduledPublishes } from '../db/schema.ts'
import type { NewEvent } from './model.ts'

// Scheduled publishes (`deliverAt`): the rule a delivery time follows, and the SQL of the scheduled_publishes
// table: accepting an item, the publisher's views of it, cancelling it, and the scheduler's claim. Publishing a
// due item is the ordinary publish statement (publish.ts), run in the claim's transaction by scheduler.ts.

/** How far ahead a publish may be scheduled. */
export const MAX_SCHEDULE_AHEAD_DAYS = 30
const MAX_SCHEDULE_AHEAD_MS = MAX_SCHEDULE_AHEAD_DAYS * 24 * 3600 * 1000

/** RFC 3339 `date-time`: a full date, a full time with optional fractions, and an offset (`Z` or `±hh:mm`). */
const RFC_3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/

/**
 * The instant an RFC 3339 date-time with an offset names, in ms since the epoch, or undefined when the text is
 * not one or names no real time (`2026-02-30`, `24:00:00`: JavaScript's Date.parse rolls those over). A leap
 * second (`:60`) is refused too: JavaScript time has none.
 */
export function parseRfc3339(text: string): number | undefined {
  const m = RFC_3339.exec(text)
  if (!m) return undefined
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number)
  const ms = m[7] ? Math.floor(Number(`0${m[7]}`) * 1000) : 0
  const local = Date.UTC(year, month - 1, day, hour, minute, second, ms)
  const d = new Date(local)
  const real =
    d.getUTCFullYear() === year &&
    d.getUTCMonth() === month - 1 &&
    d.getUTCDate() === day &&
    d.getUTCHours() === hour &&
    d.getUTCMinutes() === minute &&
    d.getUTCSeconds() === second
  if (!real) return undefined
  if (!m[8]) return local
  const [offsetHours, offsetMinutes] = [Number(m[9]), Number(m[10])]
  if (offsetHours > 23 || offsetMinutes > 59) return undefined
  const offsetMs = (offsetHours * 60 + offsetMinutes) * 60_000
  return m[8] === '+' ? local - offsetMs : local + offsetMs
}

/**
 * `deliverAt`: when a publish is to be made. Checked at acceptance against the service's clock: in the future,
 * at most MAX_SCHEDULE_AHEAD_DAYS ahead.
 */
export const deliverAtSchema = z
  .string()
  .max(64)
  .superRefine((text, ctx) => {
    const at = parseRfc3339(text)
    if (at === undefined) {
      ctx.addIssue({
        code: 'custom',
        message:
          'must be an RFC 3339 date and time with an offset, like "2026-12-24T08:00:00+01:00" or "2026-12-24T07:00:00Z"',
      })
      return
    }
    const now = Date.now()
    if (at <= now) ctx.addIssue({ code: 'custom', message: 'must be in the future' })
    else if (at > now + MAX_SCHEDULE_AHEAD_MS) {
      ctx.addIssue({ code: 'custom', message: `must be at most ${MAX_SCHEDULE_AHEAD_DAYS} days ahead` })
    }
  })
  .meta({
    format: 'date-time',
    description:
      `Publish later: an RFC 3339 date and time with an offset, in the future and at most ${MAX_SCHEDULE_AHEAD_DAYS} days ahead. ` +
      'The request is checked now (fields, scopes, sizes) and answered 202 with a `scheduledId`; the events are ' +
      'published at that time, get their ids then, and their `ttl` counts from then.',
  })

/** A `deliverAt` the schema accepted, as a Date. */
export const deliverAtOf = (text: string) => new Date(parseRfc3339(text) as number)

/** An event accepted for publishing: as validated (defaults applied), with `data` as the text it is stored as. */
export interface AcceptedEvent {
  event: NewEvent
  /** `data` as stored and sent, or null when the event has none. */
  dataJson: string | null
}

export type ScheduledState = (typeof scheduledPublishes.$inferSelect)['state']
export type ScheduledKind = (typeof scheduledPublishes.$inferSelect)['kind']

/** A publish accepted for later. */
export interface NewScheduled {
  caller: Caller
  kind: ScheduledKind
  deliverAt: Date
  events: AcceptedEvent[]
}

/** What an accepted scheduled publish answers: its id and when it goes out. */
export interface ScheduledRef {
  scheduledId: number
  deliverAt: Date
}

/** The caller as stored with the item: its scopes were checked at acceptance; the publish runs as this publisher. */
interface StoredCaller {
  userId: string
  tenant: string
  roles: readonly string[]
  topics: readonly string[]
  scopes: string[]
}

const storedCaller = (c: Caller): StoredCaller => ({
  userId: c.userId,
  tenant: c.tenant,
  roles: c.roles,
  topics: c.topics,
  scopes: [...c.scopes],
})

function callerOf(json: string): Caller {
  const c = JSON.parse(json) as StoredCaller
  return { userId: c.userId, tenant: c.tenant, roles: c.roles, topics: c.topics, scopes: new Set(c.scopes) }
}

/** The events column: each event as validated, without `data` (its parsed value), and `data` as its stored text. */
const eventsText = (events: AcceptedEvent[]) =>
  JSON.stringify(events.map((e) => ({ event: { ...e.event, data: undefined }, dataJson: e.dataJson })))

const eventsOf = (text: string) => JSON.parse(text) as AcceptedEvent[]

/** Stores a publish for later (in `on`: the Idempotency-Key's transaction, or none). */
export async function insertScheduled(on: Db, item: NewScheduled): Promise<ScheduledRef> {
  const [row] = await on
    .insert(scheduledPublishes)
    .values({
      tenant: item.caller.tenant,
      actor: item.caller.userId,
      caller: JSON.stringify(storedCaller(item.caller)),
      kind: item.kind,
      events: eventsText(item.events),
      deliverAt: item.deliverAt,
    })
    .returning({ id: scheduledPublishes.id, deliverAt: scheduledPublishes.deliverAt })
  return { scheduledId: Number(row.id), deliverAt: row.deliverAt }
}

/** When an item is to go out (an Idempotency-Key's replay answers with it). */
export async function deliveryTimeOf(on: Db, id: number): Promise<Date | undefined> {
  const [row] = await on
    .select({ deliverAt: scheduledPublishes.deliverAt })
    .from(scheduledPublishes)
    .where(eq(scheduledPublishes.id, id))
  return row?.deliverAt
}

/** The items a caller may see and cancel: their own, or, for an `admin`, every one of their tenant. */
const ownedBy = (caller: Caller): SQL | undefined =>
  and(
    eq(scheduledPublishes.tenant, caller.tenant),
    caller.scopes.has('admin') ? undefined : eq(scheduledPublishes.actor, caller.userId),
  )

/** A pending item in a list: what it is and when it goes out; its events are in the full item. */
export interface ScheduledSummary {
  id: string
  state: ScheduledState
  kind: ScheduledKind
  actor: string
  deliverAt: string
  createdAt: string
  eventCount: number
  /** The first event's title. */
  title: string
}

export interface ScheduledListQuery {
  after?: number
  limit: number
}

/** The caller's pending items (an admin's: the tenant's), in the order they were accepted. */
export async function listScheduled(
  database: Database,
  caller: Caller,
  q: ScheduledListQuery,
): Promise<{ scheduled: ScheduledSummary[]; next: string | null }> {
  const rows = await database.db
    .select({
      id: scheduledPublishes.id,
      state: scheduledPublishes.state,
      kind: scheduledPublishes.kind,
      actor: scheduledPublishes.actor,
      deliverAt: scheduledPublishes.deliverAt,
      createdAt: scheduledPublishes.createdAt,
      eventCount: sql<number>`json_array_length(${scheduledPublishes.events}::json)`.mapWith(Number),
      title: sql<string>`${scheduledPublishes.events}::json -> 0 -> 'event' ->> 'title'`,
    })
    .from(scheduledPublishes)
    .where(
      and(
        ownedBy(caller),
        eq(scheduledPublishes.state, 'pending'),
        q.after === undefined ? undefined : gt(scheduledPublishes.id, q.after),
      ),
    )
    .orderBy(asc(scheduledPublishes.id))
    .limit(q.limit)
  const scheduled = rows.map((r) => ({
    ...r,
    id: String(r.id),
    deliverAt: r.deliverAt.toISOString(),
    createdAt: r.createdAt.toISOString(),
  }))
  const next = rows.length === q.limit ? String(rows[rows.length - 1].id) : null
  return { scheduled, next }
}

/**
 * One item the caller may see, as JSON text: its state, its event ids once published, and its events as they
 * will be (or were) published, each `data` byte for byte as sent. Undefined when the caller may not see it.
 */
export async function scheduledJson(database: Database, caller: Caller, id: number): Promise<string | undefined> {
  const [row] = await database.db
    .select()
    .from(scheduledPublishes)
    .where(and(ownedBy(caller), eq(scheduledPublishes.id, id)))
  if (!row) return undefined
  const head = JSON.stringify({
    id: String(row.id),
    state: row.state,
    kind: row.kind,
    actor: row.actor,
    deliverAt: row.deliverAt.toISOString(),
    createdAt: row.createdAt.toISOString(),
    settledAt: row.settledAt?.toISOString() ?? null,
    eventIds: row.eventIds.map(String),
  })
  // `data` is spliced in as its stored text, as eventJson does for events.
  const events = eventsOf(row.events).map(
    (e) => `${JSON.stringify(e.event).slice(0, -1)},"data":${e.dataJson ?? 'null'}}`,
  )
  return `${head.slice(0, -1)},"events":[${events.join(',')}]}`
}

/** What cancelling found: cancelled now or before, already published (with its ids), or nothing the caller may see. */
export type CancelOutcome = { state: 'cancelled' } | { state: 'published'; eventIds: number[] } | { state: 'not-found' }

/**
 * Cancels a pending item. One the scheduler is publishing right now is locked by its claim: this waits for that
 * transaction, and then finds it published.
 */
export async function cancelScheduled(database: Database, caller: Caller, id: number): Promise<CancelOutcome> {
  const { db } = database
  const cancelled = await db
    .update(scheduledPublishes)
    .set({ state: 'cancelled', settledAt: sql`now()` })
    .where(and(ownedBy(caller), eq(scheduledPublishes.id, id), eq(scheduledPublishes.state, 'pending')))
    .returning({ id: scheduledPublishes.id })
  if (cancelled.length) return { state: 'cancelled' }
  const [row] = await db
    .select({ state: scheduledPublishes.state, eventIds: scheduledPublishes.eventIds })
    .from(scheduledPublishes)
    .where(and(ownedBy(caller), eq(scheduledPublishes.id, id)))
  if (!row) return { state: 'not-found' }
  if (row.state === 'published') return { state: 'published', eventIds: row.eventIds.map(Number) }
  // Cancelled before (or pending again, which cannot be): cancelling is idempotent.
  return { state: 'cancelled' }
}

/** Whether anything is due by `now`: a cheap look (the due index) before a claim's transaction is opened. */
export async function anyDue(database: Database, now: Date): Promise<boolean> {
  const rows = await database.query<{ id: unknown }>(sql`
    select id from scheduled_publishes where state = 'pending' and deliver_at <= ${now.toISOString()}::timestamptz limit 1`)
  return rows.length > 0
}

/** A due item, claimed (row-locked) in its publishing transaction. */
export interface DueItem {
  id: number
  caller: Caller
  kind: ScheduledKind
  events: AcceptedEvent[]
}

/**
 * Claims the earliest item due by `now`, leaving out `skip` (items whose publish the database refused in this
 * pass): locked `for update skip locked` in `tx`, so no other instance's claim takes it while `tx` is open, and
 * once `tx` has marked it published, none ever will.
 */
export async function claimDue(database: Database, tx: Db, now: Date, skip: number[]): Promise<DueItem | undefined> {
  const [row] = await database.query<{ id: string | number; caller: string; kind: ScheduledKind; events: string }>(
    sql`
      select id, caller, kind, events from scheduled_publishes
      where state = 'pending' and deliver_at <= ${now.toISOString()}::timestamptz
        and not id = any(array(select json_array_elements_text(${JSON.stringify(skip)}::json)::bigint))
      order by deliver_at, id
      limit 1
      for update skip locked`,
    tx,
  )
  if (!row) return undefined
  return { id: Number(row.id), caller: callerOf(row.caller), kind: row.kind, events: eventsOf(row.events) }
}

/** Marks a claimed item published with its events' ids, in its claim's transaction. */
export async function markPublished(tx: Db, id: number, eventIds: number[]): Promise<void> {
  await tx
    .update(scheduledPublishes)
    .set({ state: 'published', eventIds, settledAt: sql`now()` })
    .where(eq(scheduledPublishes.id, id))
}
