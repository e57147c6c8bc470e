import { and, eq, sql } from 'drizzle-orm'
import { type Caller, requireScope } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { events, idempotencyKeys } from '../db/schema.ts'
import { HttpProblem } from '../errors.ts'
import { enqueuePushes, type PushPolicy } from '../push/outbox.ts'
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
 * Persists events and their planned pushes in one transaction (all or nothing) and returns the ids in order.
 * The caller wakes the log tail and the push dispatcher afterwards; nothing is delivered from here, so what
 * streams and devices get is always what was committed.
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
  const { db } = database
  const key = options.idempotencyKey
  return db.transaction(async (tx) => {
    // Announce this publish before taking any event id: the log tail tells an in-flight publish's gap
    // from a rolled-back one by this lock's holders (see log-tail.ts).
    await database.query(
      sql`select pg_advisory_xact_lock_shared(${sql.raw(`${PUBLISH_LOCK.classId}, ${PUBLISH_LOCK.objId}`)})`,
      tx,
    )
    if (key) {
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
    }
    const rows = await tx
      .insert(events)
      .values(
        batch.map((e, i) => ({
          tenant: caller.tenant,
          type: e.type,
          title: e.title,
          body: e.body ?? null,
          dataJson: e.data === undefined ? null : (options.rawData?.[i] ?? JSON.stringify(e.data)),
          priority: e.priority,
          url: e.url ?? null,
          collapseKey: e.collapseKey ?? null,
          actor: caller.userId,
          toUsers: dedupe(e.to.users),
          toRoles: dedupe(e.to.roles),
          toTopics: dedupe(e.to.topics),
          toTenant: e.to.tenant ?? false,
          expiresAt: sql`now() + make_interval(secs => ${e.ttl})`,
        })),
      )
      .returning({ id: events.id, createdAt: events.createdAt })
    const ids = rows.map((r) => Number(r.id))
    const pushable = ids.filter((_, i) => batch[i].priority !== 'low')
    const pushes = await enqueuePushes(database, tx, pushable, options.push)
    if (key) {
      await tx
        .update(idempotencyKeys)
        .set({ eventIds: ids })
        .where(and(eq(idempotencyKeys.tenant, caller.tenant), eq(idempotencyKeys.key, key)))
    }
    return { ids, createdAt: rows[0].createdAt, replayed: false, pushes }
  })
}

const dedupe = (values: string[] | undefined) => [...new Set(values ?? [])]
