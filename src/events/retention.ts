import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import { pruneConnections } from '../audit/connections.ts'
import { DEFAULT_AUDIT_RETENTION_DAYS } from '../config.ts'
import type { Database } from '../db/client.ts'

/** Rows deleted per statement: short transactions that never hold up publishing for long. */
const PRUNE_BATCH = 5_000
/** Idempotency keys answer repeats for 24 h; after that they are only weight. */
const IDEMPOTENCY_WINDOW = '24 hours'

export interface PruneResult {
  events: number
  idempotencyKeys: number
  /** Scheduled publishes published or cancelled more than `retentionDays` ago. */
  scheduled: number
  /** Audited stream connections opened more than `auditRetentionDays` ago. */
  connections: number
}

/**
 * Deletes expired events (their own ttl) and events older than `retentionDays`, with their receipts and
 * push records (foreign keys cascade), idempotency keys past their 24 h window, and scheduled publishes settled
 * (published or cancelled) more than `retentionDays` ago: their events are gone by then; and audited stream
 * connections opened more than `auditRetentionDays` ago. In batches, each its
 * own short transaction. A stream resuming from a pruned id then gets `reset` (stream/open-stream.ts).
 */
export async function prune(
  database: Database,
  retentionDays: number,
  auditRetentionDays = DEFAULT_AUDIT_RETENTION_DAYS,
): Promise<PruneResult> {
  const result: PruneResult = { events: 0, idempotencyKeys: 0, scheduled: 0, connections: 0 }
  for (;;) {
    const rows = await database.query<{ id: unknown }>(sql`
      delete from events where id in (
        select id from events
        where expires_at <= now() or created_at < now() - make_interval(days => ${retentionDays})
        limit ${PRUNE_BATCH})
      returning id`)
    result.events += rows.length
    if (rows.length < PRUNE_BATCH) break
  }
  for (;;) {
    const rows = await database.query<{ key: unknown }>(sql`
      delete from idempotency_keys where (tenant, key) in (
        select tenant, key from idempotency_keys
        where created_at < now() - interval '${sql.raw(IDEMPOTENCY_WINDOW)}'
        limit ${PRUNE_BATCH})
      returning key`)
    result.idempotencyKeys += rows.length
    if (rows.length < PRUNE_BATCH) break
  }
  for (;;) {
    const rows = await database.query<{ id: unknown }>(sql`
      delete from scheduled_publishes where id in (
        select id from scheduled_publishes
        where state <> 'pending' and settled_at < now() - make_interval(days => ${retentionDays})
        limit ${PRUNE_BATCH})
      returning id`)
    result.scheduled += rows.length
    if (rows.length < PRUNE_BATCH) break
  }
  result.connections = await pruneConnections(database, auditRetentionDays)
  return result
}

/** Runs `prune` every `intervalS` seconds; failures are logged and retried at the next turn. */
export function schedulePruning(
  database: Database,
  retentionDays: number,
  intervalS: number,
  log: FastifyBaseLogger,
  auditRetentionDays = DEFAULT_AUDIT_RETENTION_DAYS,
) {
  let running = false
  const timer = setInterval(async () => {
    if (running) return
    running = true
    try {
      const pruned = await prune(database, retentionDays, auditRetentionDays)
      if (pruned.events || pruned.idempotencyKeys || pruned.scheduled || pruned.connections)
        log.info({ pruned }, 'pruned expired events')
    } catch (err) {
      log.warn({ err }, 'pruning failed; retrying at the next turn')
    } finally {
      running = false
    }
  }, intervalS * 1000)
  timer.unref()
  return () => clearInterval(timer)
}
