import { and, eq, type SQL, sql } from 'drizzle-orm'
import { type Caller, requireScope } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { idempotencyKeys } from '../db/schema.ts'
import { HttpProblem } from '../errors.ts'
import { type PushPolicy, planPushes } from '../push/outbox.ts'
import { PUBLISH_LOCK } from './log-tail.ts'
import type { NewEvent } from './model.ts'

export interface Published {
  ids: number[]
  createdAt: Date
  /** True when an Idempotency-Key matched an earlier publish and nothing new was created. */
  replayed: boolean
  /** Pushes planned in the outbox (0: no dispatcher needs waking). */
  pushes: number
}

/** A publisher may address users and topics with `events:publish`, roles and the tenant with `events:broadcast`. */
function assertMayAddress(caller: Caller, to: NewEvent['to']) {
  if (to.users?.length || to.topics?.length) requireScope(caller, 'events:publish', 'Publishing to users or topics')
  if (to.roles?.length || to.tenant) requireScope(caller, 'events:broadcast', 'Publishing to roles or the whole tenant')
}

/**
 * Persists events and their planned pushes atomically and returns the ids in order. One statement does it
 * all (lock, events, outbox rows), so a publish is one round trip to the database; with an Idempotency-Key
 * it runs in a transaction with the key's bookkeeping. The caller wakes the log tail and the push dispatcher
 * afterwards; nothing is delivered from here, so what streams and devices get is always what was committed.
 */
export async function publishEvents(
  database: Database,
  caller: Caller,
  batch: NewEvent[],
  options: {
    idempotencyKey?: string
    kind: 'single' | 'batch'
    push: PushPolicy
    /** Each event's `data` as the publisher wrote it (raw-json.ts); JSON.stringify of the parsed value otherwise. */
    rawData?: Array<string | undefined>
  },
): Promise<Published> {
  for (const e of batch) assertMayAddress(caller, e.to)
  const statement = insertEvents(caller, batch, options.rawData, options.push)
  const key = options.idempotencyKey
  if (!key) return inserted(await database.query<InsertedRow>(statement))

  return database.db.transaction(async (tx) => {
    const claimed = await tx
      .insert(idempotencyKeys)
      .values({ tenant: caller.tenant, key, kind: options.kind })
      .onConflictDoUpdate({
        target: [idempotencyKeys.tenant, idempotencyKeys.key],
        set: { kind: options.kind, eventIds: [], createdAt: sql`now()` },
        setWhere: sql`${idempotencyKeys.createdAt} < now() - interval '24 hours'`,
      })
      .returning({ key: idempotencyKeys.key })
    if (claimed.length === 0) {
      const [earlier] = await tx
        .select()
        .from(idempotencyKeys)
        .where(and(eq(idempotencyKeys.tenant, caller.tenant), eq(idempotencyKeys.key, key)))
      if (earlier.kind !== options.kind) {
        throw new HttpProblem('conflict', `Idempotency-Key "${key}" was used for a ${earlier.kind} publish.`)
      }
      return { ids: earlier.eventIds.map(Number), createdAt: earlier.createdAt, replayed: true, pushes: 0 }
    }
    const result = inserted(await database.query<InsertedRow>(statement, tx))
    await tx
      .update(idempotencyKeys)
      .set({ eventIds: result.ids })
      .where(and(eq(idempotencyKeys.tenant, caller.tenant), eq(idempotencyKeys.key, key)))
    return result
  })
}

interface InsertedRow {
  id: string | number
  created_at: Date | string
  pushes: string | number
}

function inserted(rows: InsertedRow[]): Published {
  return {
    ids: rows.map((r) => Number(r.id)),
    createdAt: new Date(rows[0].created_at),
    replayed: false,
    pushes: Number(rows[0].pushes),
  }
}

/**
 * The publish statement. The batch travels as one JSON parameter (a batch of 1,000 is not 14,000 bind
 * parameters). PUBLISH_LOCK is taken, in a CTE the insert reads from, before any id is: the log tail tells an
 * in-flight publish's gap from a rolled-back one by this lock's holders (see log-tail.ts). Ids follow the
 * batch order.
 */
function insertEvents(
  caller: Caller,
  batch: NewEvent[],
  rawData: Array<string | undefined> | undefined,
  policy: PushPolicy,
): SQL {
  const json = JSON.stringify(
    batch.map((e, i) => ({
      type: e.type,
      title: e.title,
      body: e.body ?? null,
      data_json: e.data === undefined ? null : (rawData?.[i] ?? JSON.stringify(e.data)),
      priority: e.priority,
      url: e.url ?? null,
      collapse_key: e.collapseKey ?? null,
      to_users: dedupe(e.to.users),
      to_roles: dedupe(e.to.roles),
      to_topics: dedupe(e.to.topics),
      to_tenant: e.to.tenant ?? false,
      ttl: e.ttl,
    })),
  )
  return sql`
    with publish_lock as materialized (
      select pg_advisory_xact_lock_shared(${sql.raw(`${PUBLISH_LOCK.classId}, ${PUBLISH_LOCK.objId}`)})
    ), inserted as (
      insert into events (tenant, type, title, body, data_json, priority, url, collapse_key, actor,
        to_users, to_roles, to_topics, to_tenant, expires_at)
      select ${caller.tenant}, e.type, e.title, e.body, e.data_json, e.priority, e.url, e.collapse_key, ${caller.userId},
        e.to_users, e.to_roles, e.to_topics, e.to_tenant, now() + make_interval(secs => e.ttl)
      from publish_lock, rows from (json_to_recordset(${json}::json) as (type text, title text, body text,
        data_json text, priority text, url text, collapse_key text, to_users text[], to_roles text[],
        to_topics text[], to_tenant boolean, ttl integer)) with ordinality as e
      order by e.ordinality
      returning id, created_at, tenant, priority, to_users, to_roles, to_topics, to_tenant
    ), planned as (${planPushes(sql`inserted`, policy)})
    select id, created_at, (select count(*) from planned) as pushes from inserted order by id`
}

const dedupe = (values: string[] | undefined) => [...new Set(values ?? [])]
