import { createHash } from 'node:crypto'
import { and, eq, type SQL, sql } from 'drizzle-orm'
import { type Caller, requireScope } from '../auth.ts'
import type { Database, Db } from '../db/client.ts'
import { refusedByDatabase } from '../db/errors.ts'
import { type EventRow, idempotencyKeys } from '../db/schema.ts'
import { ConflictError, type FieldError, InvalidFieldsError, UnprocessableError } from '../service-errors.ts'
import { enqueueWebhooks } from '../webhooks/outbox.ts'
import { eventJsonSql } from '../wire-format.ts'
import { eventRowOf, PUBLISH_LOCK, type TailRow } from './log-tail.ts'
import { MAX_BATCH_EVENTS, MAX_DATA_BYTES, type NewEvent } from './model.ts'
import { recipientStatementOf, recipientsSql, recipientsToPush, rosterCtes, toTenantOnly } from './recipients.ts'
import { type AcceptedEvent, deliveryTimeOf, insertScheduled, type ScheduledRef } from './scheduled.ts'

export interface Published {
  ids: number[]
  createdAt: Date
  /** True when an Idempotency-Key matched an earlier publish and nothing new was created. */
  replayed: boolean
  /** Pushes planned in the outbox (0: no dispatcher needs waking). */
  pushes: number
  /** Live-only events sent (`store: false`, events/live.ts): nothing was stored, and `ids` is empty. */
  live?: number
  /** The events as committed, in id order, for the log tail (LogTail.offer); none when replayed. */
  committed?: EventRow[]
}

/** A publish accepted for later (`deliverAt`): the scheduled item that will publish it (scheduler.ts). */
export interface Scheduled extends ScheduledRef {
  /** True when an Idempotency-Key matched an earlier scheduled publish and nothing new was created. */
  replayed: boolean
}

/** A publisher may address users and topics with `events:publish`, roles and the tenant with `events:broadcast`. */
function assertMayAddress(caller: Caller, to: NewEvent['to']) {
  if (to.users?.length || to.topics?.length) requireScope(caller, 'events:publish', 'Publishing to users or topics')
  if (to.roles?.length || to.tenant) requireScope(caller, 'events:broadcast', 'Publishing to roles or the whole tenant')
}

export interface PublishOptions {
  idempotencyKey?: string
  kind: 'single' | 'batch'
  /** Each event's `data` as the publisher wrote it (raw-json.ts); JSON.stringify of the parsed value otherwise. */
  rawData?: Array<string | undefined>
}

/** A publish to make later: accepted (checked) now, published by the scheduler at `deliverAt`. */
export interface ScheduleOptions extends PublishOptions {
  deliverAt: Date
}

/** An event to insert, with who publishes it (a coalesced statement holds several publishers' events). */
interface EventToInsert {
  caller: Caller
  /**
   * The tenant whose event the row is: the caller's, except in a platform broadcast (system-broadcasts.ts), whose
   * statement inserts one row per recipient tenant, each that tenant's own.
   */
  tenant: string
  event: NewEvent
  /** `data` as it is stored and sent (storedData), or null when the event has none. */
  dataJson: string | null
}

/**
 * Each event's `data` as it will be stored and sent: the publisher's text (whitespace outside strings
 * dropped), else JSON.stringify of the parsed value. MAX_DATA_BYTES applies to exactly these bytes; an event
 * over it is a 400 naming its field, as the schema's own checks do.
 */
function storedData(batch: NewEvent[], options: PublishOptions): Array<string | null> {
  const texts = batch.map((e, i) => (e.data === undefined ? null : (options.rawData?.[i] ?? JSON.stringify(e.data))))
  const errors: FieldError[] = []
  for (const [i, text] of texts.entries()) {
    const bytes = text === null ? 0 : Buffer.byteLength(text)
    if (bytes <= MAX_DATA_BYTES) continue
    errors.push({
      path: options.kind === 'single' ? 'body.data' : `body.events.${i}.data`,
      message: `must be at most ${MAX_DATA_BYTES} bytes of JSON as sent (whitespace outside strings not counted); it is ${bytes}`,
    })
  }
  if (errors.length) throw new InvalidFieldsError(errors)
  return texts
}

/**
 * Persists events and their planned pushes atomically and returns the ids in order. One statement does it
 * all (lock, events, outbox rows), so a publish is one round trip to the database; with an Idempotency-Key
 * it runs in a transaction with the key's bookkeeping. The caller wakes the log tail and the push dispatcher
 * afterwards; nothing is delivered from here, so what streams and devices get is always what was committed.
 *
 * Single publishes without a key are coalesced (see SinglePublishes): under load, one statement and one
 * commit carry many of them.
 */
export function createPublisher(database: Database, planPushes: PlanPushes, announce?: Announce) {
  const statementOf = (rows: EventToInsert[]) => insertEvents(rows, planPushes, announce)
  const singles = new SinglePublishes(database, statementOf)
  /** The events as they will be stored, once their sizes (400) and the caller's scopes (403) are checked. */
  const accept = (caller: Caller, batch: NewEvent[], options: PublishOptions): EventToInsert[] => {
    const data = storedData(batch, options)
    for (const e of batch) assertMayAddress(caller, e.to)
    return batch.map((event, i) => ({ caller, tenant: caller.tenant, event, dataJson: data[i] }))
  }

  async function publishEvents(caller: Caller, batch: NewEvent[], options: PublishOptions): Promise<Published> {
    const rows = accept(caller, batch, options)
    const key = options.idempotencyKey
    if (!key && batch.length === 1) return singles.publish(rows[0])
    const statement = statementOf(rows)
    if (!key) return published(await database.query<InsertedRow>(statement))

    const fingerprint = fingerprintOf(options.kind, rows)
    return database.db.transaction(async (tx) => {
      const earlier = await takeKey(database, tx, caller, key, options.kind, fingerprint)
      if (earlier) return replay(earlier)
      const result = published(await database.query<InsertedRow>(statement, tx))
      await tx.update(idempotencyKeys).set({ eventIds: result.ids }).where(keyIs(caller, key))
      return result
    })
  }

  /**
   * Accepts a publish for later: checked exactly as an immediate one (sizes, scopes), then stored as a scheduled
   * item, which the scheduler publishes at `deliverAt` through `publishAccepted`. An Idempotency-Key works as for
   * an immediate publish; a retry answers with the first request's item.
   */
  async function scheduleEvents(caller: Caller, batch: NewEvent[], options: ScheduleOptions): Promise<Scheduled> {
    const rows = accept(caller, batch, options)
    const item = {
      caller,
      kind: options.kind,
      deliverAt: options.deliverAt,
      events: rows.map(({ event, dataJson }) => ({ event, dataJson })),
    }
    const key = options.idempotencyKey
    if (!key) return { ...(await insertScheduled(database.db, item)), replayed: false }

    const fingerprint = fingerprintOf(options.kind, rows, options.deliverAt)
    return database.db.transaction(async (tx) => {
      const earlier = await takeKey(database, tx, caller, key, options.kind, fingerprint)
      if (earlier) return replayScheduled(tx, earlier)
      const scheduled = await insertScheduled(tx, item)
      await tx.update(idempotencyKeys).set({ scheduledId: scheduled.scheduledId }).where(keyIs(caller, key))
      return { ...scheduled, replayed: false }
    })
  }

  /**
   * Publishes events accepted earlier (a due scheduled item) as `caller`, in the caller's transaction `tx`: the
   * same statement as an immediate publish (events, push plan, NOTIFY), committed with whatever `tx` does.
   */
  async function publishAccepted(tx: Db, caller: Caller, events: AcceptedEvent[]): Promise<Published> {
    const rows = events.map(({ event, dataJson }) => ({ caller, tenant: caller.tenant, event, dataJson }))
    return published(await database.query<InsertedRow>(statementOf(rows), tx))
  }

  /**
   * A platform broadcast: one event, published as its own in each of the tenants `resolve` names (one row per
   * tenant, actor the caller), in one transaction: MAX_BATCH_EVENTS tenants a statement, so 1,000 tenants are
   * one statement and 5,000 are five, all committed together or none. Ids follow `resolve`'s order. `named` is
   * what the request said (a list, or "*"): an Idempotency-Key's fingerprint keeps that, so a retry of "*"
   * replays its first answer even if tenants appeared since; `resolve` runs only when something is published.
   * The caller's scope is the route's to check (system-broadcasts.ts); the event's `data` size is checked here.
   */
  async function publishInTenants(
    caller: Caller,
    named: readonly string[] | '*',
    resolve: (tx: Db) => Promise<readonly string[]>,
    event: NewEvent,
    options: { idempotencyKey?: string; rawData?: string },
  ): Promise<PublishedInTenants> {
    const [dataJson] = storedData([event], { kind: 'single', rawData: [options.rawData] })
    const key = options.idempotencyKey
    const kind = 'system'
    const fingerprint = createHash('sha256')
      .update(JSON.stringify(['system', named, storedFields({ caller, tenant: '', event, dataJson })]))
      .digest('hex')
    return database.db.transaction(async (tx) => {
      if (key) {
        const earlier = await takeKey(database, tx, caller, key, kind, fingerprint)
        if (earlier) return { ...replay(earlier), tenants: await tenantsOfEvents(database, tx, earlier.eventIds) }
      }
      const tenants = await resolve(tx)
      const inserted: InsertedRow[] = []
      for (let i = 0; i < tenants.length; i += MAX_BATCH_EVENTS) {
        const rows = tenants.slice(i, i + MAX_BATCH_EVENTS).map((tenant) => ({ caller, tenant, event, dataJson }))
        inserted.push(...(await database.query<InsertedRow>(statementOf(rows), tx)))
      }
      const result = inserted.length
        ? published(inserted)
        : { ids: [], createdAt: new Date(), replayed: false, pushes: 0 }
      if (key) await tx.update(idempotencyKeys).set({ eventIds: result.ids }).where(keyIs(caller, key))
      return { ...result, tenants: [...tenants] }
    })
  }

  /**
   * Live-only events (`store: false`, events/live.ts), checked exactly as a publish (sizes: 400, scopes: 403) and
   * returned with `data` as a stored event's would be; nothing is inserted. The caller sends them.
   */
  function acceptLive(caller: Caller, batch: NewEvent[], options: PublishOptions): AcceptedEvent[] {
    return accept(caller, batch, options).map(({ event, dataJson }) => ({ event, dataJson }))
  }

  return { publishEvents, scheduleEvents, publishAccepted, publishInTenants, acceptLive }
}

/** A platform broadcast published: `tenants[i]` is the tenant of event `ids[i]`. */
export interface PublishedInTenants extends Published {
  tenants: string[]
}

/** The tenant of each event, in the order of `ids` (a replayed platform broadcast's answer). */
async function tenantsOfEvents(database: Database, tx: Db, ids: readonly number[]): Promise<string[]> {
  if (!ids.length) return []
  const rows = await database.query<{ id: string | number; tenant: string }>(
    sql`select id, tenant from events where id in (select unnest(${`{${ids.join(',')}}`}::bigint[]))`,
    tx,
  )
  const tenantOf = new Map(rows.map((r) => [Number(r.id), r.tenant]))
  // An event pruned since (past its ttl) has no row: its tenant is no longer known.
  return ids.map((id) => tenantOf.get(id) ?? '')
}

export type Publisher = ReturnType<typeof createPublisher>

const keyIs = (caller: Caller, key: string) =>
  and(eq(idempotencyKeys.tenant, caller.tenant), eq(idempotencyKeys.actor, caller.userId), eq(idempotencyKeys.key, key))

/**
 * What an Idempotency-Key remembers of the request it was first used with: SHA-256 of the route kind and of
 * each event as it would be stored, that is the event as validated (defaults applied, audiences deduplicated)
 * with `data` as its stored text (the publisher's raw text, whitespace outside strings dropped). So the same
 * request sent again with other whitespace or another key order outside `data` is the same request, while
 * another `data` spelling (1.0 for 1, keys reordered inside it) is not: it would store other bytes. The
 * tenant and publisher are left out: they scope the key itself.
 */
function fingerprintOf(kind: PublishOptions['kind'], rows: EventToInsert[], deliverAt?: Date): string {
  // A scheduled request's delivery time is part of it; an immediate request's fingerprint is as it always was.
  const when = deliverAt ? [{ deliverAt: deliverAt.toISOString() }] : []
  return createHash('sha256')
    .update(JSON.stringify([kind, ...when, ...rows.map(storedFields)]))
    .digest('hex')
}

/**
 * The advisory lock a request holds on its Idempotency-Key until its transaction ends: 64 bits of SHA-256 of
 * (tenant, publisher, key), signed as PostgreSQL's bigint. Locks of the one-bigint form (objsubid 1) are apart
 * from the two-int PUBLISH_LOCK's (objsubid 2), so the two never collide; two keys sharing a lock (1 in 2^64)
 * would only give one a 409 while the other is in flight.
 */
function keyLockId(caller: Caller, key: string): string {
  const digest = createHash('sha256')
    .update(JSON.stringify([caller.tenant, caller.userId, key]))
    .digest()
  return digest.readBigInt64BE(0).toString()
}

/**
 * Takes the key's lock, before its row is touched, or refuses with 409 while another request with the key
 * is in flight (its transaction still open): the client retries once that one has answered, and then gets
 * its result. Without the lock the second request would wait on the first one's row and then replay it,
 * holding a connection all the while. On PGlite (one connection, transactions one after another) the lock
 * is always free: a second request waits for the first to commit and then replays it (200).
 */
async function holdKey(database: Database, tx: Db, caller: Caller, key: string) {
  const [{ locked }] = await database.query<{ locked: boolean }>(
    sql`select pg_try_advisory_xact_lock(${keyLockId(caller, key)}::bigint) as locked`,
    tx,
  )
  if (!locked) {
    throw new ConflictError(
      `A request with Idempotency-Key "${key}" is still in flight; retry once it has been answered.`,
    )
  }
}

type KeyRow = typeof idempotencyKeys.$inferSelect

/**
 * Takes the Idempotency-Key for this request in `tx` (holdKey, then its row), and returns undefined; or, when
 * the key was used before (within 24 h), returns that earlier use, unless it was on the other route (409) or
 * for another request (422). A key stored before fingerprints were kept has none, and replays.
 */
async function takeKey(
  database: Database,
  tx: Db,
  caller: Caller,
  key: string,
  kind: KeyRow['kind'],
  fingerprint: string,
): Promise<KeyRow | undefined> {
  await holdKey(database, tx, caller, key)
  const claimed = await tx
    .insert(idempotencyKeys)
    .values({ tenant: caller.tenant, actor: caller.userId, key, kind, fingerprint })
    .onConflictDoUpdate({
      target: [idempotencyKeys.tenant, idempotencyKeys.actor, idempotencyKeys.key],
      set: { kind, fingerprint, eventIds: [], scheduledId: null, createdAt: sql`now()` },
      setWhere: sql`${idempotencyKeys.createdAt} < now() - interval '24 hours'`,
    })
    .returning({ key: idempotencyKeys.key })
  if (claimed.length) return undefined
  const [earlier] = await tx.select().from(idempotencyKeys).where(keyIs(caller, key))
  if (earlier.kind !== kind) {
    throw new ConflictError(`Idempotency-Key "${key}" was used for a ${earlier.kind} publish.`)
  }
  if (earlier.fingerprint !== null && earlier.fingerprint !== fingerprint) throw keyReused(key)
  return earlier
}

const keyReused = (key: string) =>
  new UnprocessableError(`Idempotency-Key "${key}" was used for another request; send a new key for a new request.`)

/** The answer to a key used before for an immediate publish: its first publish's ids (200). */
function replay(earlier: KeyRow): Published {
  return { ids: earlier.eventIds.map(Number), createdAt: earlier.createdAt, replayed: true, pushes: 0 }
}

/** The answer to a key used before for a scheduled publish: the first request's item (its fingerprint matched). */
async function replayScheduled(tx: Db, earlier: KeyRow): Promise<Scheduled> {
  const deliverAt = earlier.scheduledId === null ? undefined : await deliveryTimeOf(tx, earlier.scheduledId)
  // A key without an item (stored before fingerprints, for an immediate publish) is another request.
  if (earlier.scheduledId === null || deliverAt === undefined) throw keyReused(earlier.key)
  return { scheduledId: earlier.scheduledId, deliverAt, replayed: true }
}

/**
 * Statements of coalesced single publishes that may run at once. One gives as many publishes /s (bench scenario
 * 4); two keep one slow statement (a broadcast to a very large tenant) from holding up every other publish.
 */
const SINGLE_STATEMENTS = 2
/** At most this many publishes in one statement, as in a batch. */
const MAX_COALESCED = 1_000

/**
 * Single publishes, coalesced the way a database coalesces commits: while SINGLE_STATEMENTS statements are
 * running, new publishes queue, and the next statement inserts all of them (in arrival order) with one
 * commit. Each request still answers only after its own event is committed. Idle, a publish runs at once,
 * alone. If a statement of several fails, each of its publishes is retried alone, so one cannot fail another.
 */
class SinglePublishes {
  private running = 0
  private readonly queue: Array<{
    row: EventToInsert
    resolve: (p: Published) => void
    reject: (err: unknown) => void
  }> = []

  constructor(
    private readonly database: Database,
    private readonly statementOf: (rows: EventToInsert[]) => SQL,
  ) {}

  publish(row: EventToInsert): Promise<Published> {
    return new Promise((resolve, reject) => {
      this.queue.push({ row, resolve, reject })
      if (this.running < SINGLE_STATEMENTS) void this.runQueued()
    })
  }

  private async runQueued() {
    this.running++
    try {
      while (this.queue.length) {
        const taken = this.queue.splice(0, MAX_COALESCED)
        let rows: InsertedRow[]
        try {
          rows = await this.insert(taken.map((t) => t.row))
        } catch (err) {
          // Retried alone only when the database refused the statement (it then committed nothing); a lost
          // connection may have committed it, so those publishes fail as they would have alone.
          if (taken.length > 1 && refusedByDatabase(err)) await Promise.all(taken.map((t) => this.alone(t)))
          else for (const t of taken) t.reject(err)
          continue
        }
        // Ids follow the statement's row order, which is the queue's.
        for (const [i, t] of taken.entries()) t.resolve(published([rows[i]]))
      }
    } finally {
      this.running--
    }
  }

  private insert(rows: EventToInsert[]) {
    return this.database.query<InsertedRow>(this.statementOf(rows))
  }

  private async alone(t: (typeof this.queue)[number]) {
    try {
      t.resolve(published(await this.insert([t.row])))
    } catch (err) {
      t.reject(err)
    }
  }
}

/**
 * A statement of at most this many events returns their rows whole, for the log tail to take (LogTail.offer); a
 * bigger one (a batch) returns their ids, and the tail reads them. The tail takes an offer only while it is idle,
 * which a stream of batches seldom leaves it: 1,000 rows returned and then read again cost about 20 % more CPU per
 * event (bench scenario 4, batches of 1,000).
 */
const OFFERED_ROWS = 100

/** An inserted event's id, time and pushes planned; its other columns too from a statement of OFFERED_ROWS or fewer. */
type InsertedRow = Pick<TailRow, 'id' | 'created_at'> & Partial<TailRow> & { pushes: string | number }

const isWhole = (row: InsertedRow): row is TailRow & InsertedRow => row.tenant !== undefined

function published(rows: InsertedRow[]): Published {
  return {
    ids: rows.map((r) => Number(r.id)),
    createdAt: new Date(rows[0].created_at),
    replayed: false,
    pushes: rows.reduce((sum, r) => sum + Number(r.pushes), 0),
    committed: rows.every(isWhole) ? rows.map(eventRowOf) : undefined,
  }
}

/** SQL that tells other instances of a publish, given its largest event id (ClusterBus.announcePublish). */
export type Announce = (newestId: SQL) => SQL

/**
 * SQL that plans the pushes of the events in `inserted` (a relation with their id, tenant, type, priority and
 * audience) to their `recipients` (rows of event_id, tenant, user_id) and returns the event id of each push
 * planned (push/outbox.ts). Injected: publishing knows that pushes are planned in its statement, not how.
 */
export type PlanPushes = (inserted: SQL, recipients: SQL) => SQL

/**
 * The publish statement. The batch travels as one JSON parameter (a batch of 1,000 is not 14,000 bind
 * parameters). PUBLISH_LOCK is taken, in a CTE the insert reads from, before any id is: the log tail tells an
 * in-flight publish's gap from a rolled-back one by this lock's holders (see log-tail.ts). Ids follow the
 * batch order. The same statement resolves each event's recipients and records them (recipients.ts) with its
 * escalation, plans the pushes to them, enqueues the `event.published` webhooks, and, with `announce`, wakes
 * the other instances.
 */
function insertEvents(rows: EventToInsert[], planPushes: PlanPushes, announce: Announce | undefined): SQL {
  const json = JSON.stringify(
    rows.map((row) => ({ tenant: row.tenant, actor: row.caller.userId, ...storedFields(row) })),
  )
  // Escalations are not event columns: matched to the inserted rows by batch position (ids follow it).
  const escalations = rows.some((r) => r.event.escalate)
    ? JSON.stringify(
        rows.map((r, i) => ({ n: i + 1, after: r.event.escalate?.after, unless: r.event.escalate?.unless })),
      )
    : undefined
  const statement = recipientStatementOf(rows)
  const rosters = statement.audiences.has('roster')
  return sql`
    with publish_lock as materialized (
      select pg_advisory_xact_lock_shared(${sql.raw(`${PUBLISH_LOCK.classId}, ${PUBLISH_LOCK.objId}`)})
    ), inserted as (
      insert into events (tenant, type, title, body, data_json, priority, url, collapse_key, actions_json, icon,
        image, badge, actor, to_users, to_roles, to_topics, to_tenant, expires_at, localized_json, in_inbox, may_push)
      select e.tenant, e.type, e.title, e.body, e.data_json, e.priority, e.url, e.collapse_key, e.actions_json, e.icon,
        e.image, e.badge, e.actor, e.to_users, e.to_roles, e.to_topics, e.to_tenant, now() + make_interval(secs => e.ttl),
        e.localized_json, coalesce(e.in_inbox, true), coalesce(e.may_push, true)
      from publish_lock, rows from (json_to_recordset(${json}::json) as (tenant text, actor text, type text, title text, body text,
        data_json text, priority text, url text, collapse_key text, actions_json text, icon text, image text,
        badge text, to_users text[], to_roles text[], to_topics text[], to_tenant boolean, ttl integer,
        localized_json text, in_inbox boolean, may_push boolean)) with ordinality as e
      order by e.ordinality
      returning *
    ), recipients as materialized (${recipientsSql(sql`inserted`, statement)}
    )${rosters ? sql`, ${rosterCtes(sql`inserted`)}` : sql``}, recorded as (
      insert into event_recipients (event_id, tenant, user_ids, escalate_at, escalate_unless, escalation)
      select i.id, i.tenant, coalesce(r.user_ids, ${rosters ? sql`roster.user_ids, ` : sql``}'{}'),
        i.created_at + make_interval(secs => x.after), x.unless, case when x.after is not null then 'pending' end
      from inserted i
      left join (select event_id, array_agg(user_id order by user_id collate "C") as user_ids from recipients group by event_id) r
        on r.event_id = i.id
      ${rosters ? sql`left join roster on roster.tenant = i.tenant and ${toTenantOnly(sql`i`)}` : sql``}
      ${
        escalations
          ? sql`left join (select row_number() over (order by id) as n, id from inserted) position on position.id = i.id
        left join json_to_recordset(${escalations}::json) as x(n bigint, after integer, unless text) on x.n = position.n`
          : sql`left join (select null::integer as after, null::text as unless) x on true`
      }
      -- An event to named users only keeps none: its recipients are its to_users (recipients.ts recipientsOf).
      where cardinality(i.to_roles) > 0 or cardinality(i.to_topics) > 0 or i.to_tenant or x.after is not null
      returning event_id, cardinality(user_ids) as recipients
    ), planned as (${planPushes(sql`inserted`, recipientsToPush(sql`inserted`, sql`recipients`, statement))}
    ), published_hooks as (${enqueueWebhooks(
      'event.published',
      // eventJsonSql names the events table: here the inserted rows go by that name.
      sql`select events.tenant, events.id::text as msg_key,
        json_build_object('event', (${eventJsonSql})::json,
          'recipients', coalesce(recorded.recipients, cardinality(events.to_users))) as data
        from inserted as events left join recorded on recorded.event_id = events.id`,
    )})
    ${announce ? sql`, announced as materialized (${announce(sql`(select max(id) from inserted)`)})` : sql``}
    select ${rows.length <= OFFERED_ROWS ? sql`i.*` : sql`i.id, i.created_at`}, coalesce(p.pushes, 0) as pushes
    from inserted i left join (select event_id, count(*) as pushes from planned group by event_id) p on p.event_id = i.id
    ${announce ? sql`cross join announced` : sql``}
    order by i.id`
}

/** The columns an event is stored with, but for its tenant (the row's) and actor (the caller's). */
function storedFields({ event: e, dataJson }: EventToInsert) {
  return {
    type: e.type,
    title: e.title,
    body: e.body ?? null,
    data_json: dataJson,
    priority: e.priority,
    url: e.url ?? null,
    collapse_key: e.collapseKey ?? null,
    ...notificationExtras(e),
    to_users: dedupe(e.to.users),
    to_roles: dedupe(e.to.roles),
    to_topics: dedupe(e.to.topics),
    to_tenant: e.to.tenant ?? false,
    ttl: e.ttl,
    // Only when given: a publish without one keeps the Idempotency-Key fingerprint it had before escalations.
    ...(e.escalate && { escalate: e.escalate }),
    ...typeExtras(e),
  }
}

/**
 * What the event's registered type gave it beyond the fields of a publish (event-types/): its text per locale, and
 * its inbox and push switches when off. Only those given, as notificationExtras: an event of no type (or of a type
 * that sets none of them) keeps the Idempotency-Key fingerprint it had before types existed.
 */
const typeExtras = (e: NewEvent) => ({
  ...(e.localizedJson !== undefined && { localized_json: e.localizedJson }),
  ...(e.inInbox === false && { in_inbox: false }),
  ...(e.mayPush === false && { may_push: false }),
})

const dedupe = (values: string[] | undefined) => [...new Set(values ?? [])]

/**
 * The event's action buttons and pictures, as stored: `actions_json` is the JSON text sent to clients, each
 * `{action, title, url}` in that order with `url` null when the action has none (an empty list is none). Only
 * those given are listed (json_to_recordset makes the others null), so an event without any has the
 * Idempotency-Key fingerprint it had before these columns existed: a retry across the upgrade still replays.
 */
function notificationExtras(e: NewEvent) {
  const actions = e.actions?.length
    ? JSON.stringify(e.actions.map((a) => ({ action: a.action, title: a.title, url: a.url ?? null })))
    : null
  return {
    ...(actions !== null && { actions_json: actions }),
    ...(e.icon != null && { icon: e.icon }),
    ...(e.image != null && { image: e.image }),
    ...(e.badge != null && { badge: e.badge }),
  }
}
