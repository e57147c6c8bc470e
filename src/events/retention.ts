import { type SQL, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import { pruneConnections } from '../audit/connections.ts'
import { DEFAULT_AUDIT_RETENTION_DAYS } from '../config.ts'
import { DELETE_BATCH, deleteInBatches, repeatBatches } from '../db/batched-delete.ts'
import type { Database } from '../db/client.ts'
import { BLOCK_IDS, dropExpiredBlocks, existingBlocks, inBlock, retentionBoundary, rollBlock } from './log-blocks.ts'

/** Idempotency keys answer repeats for 24 h; after that they are only weight. */
const IDEMPOTENCY_WINDOW = '24 hours'

export interface PruneResult {
  /** Events deleted, those of dropped blocks included. */
  events: number
  /** Blocks of the log dropped whole (log-blocks.ts), their events expired. */
  blocks: number
  idempotencyKeys: number
  /** Scheduled publishes published or cancelled more than `retentionDays` ago. */
  scheduled: number
  /** Audited stream connections opened more than `auditRetentionDays` ago. */
  connections: number
}

/**
 * Deletes expired events (their own ttl) and events older than `retentionDays`, with their receipts, recipients,
 * stream deliveries and push records; idempotency keys past their 24 h window; scheduled publishes settled
 * (published or cancelled) more than `retentionDays` ago (their events are gone by then); and audited stream
 * connections opened more than `auditRetentionDays` ago. First it keeps the log's blocks in order (log-blocks.ts):
 * ids move on to a new block once a day, and a block whose events have all expired is dropped whole, in
 * milliseconds; the rest goes in batches, each its own short transaction. A stream resuming from a pruned id then
 * gets `reset` (stream/open-stream.ts).
 */
export async function prune(
  database: Database,
  retentionDays: number,
  auditRetentionDays = DEFAULT_AUDIT_RETENTION_DAYS,
  /**
   * Whether ids move on to a new block each day. On PostgreSQL, yes. On PGlite, no: it plans every statement
   * afresh (PostgreSQL plans a prepared statement once), and each block adds to that; the embedded database's
   * log stays in one block and is pruned row by row.
   */
  rollBlocks = database.kind === 'postgres',
): Promise<PruneResult> {
  if (rollBlocks) await rollBlock(database)
  const dropped = await dropExpiredBlocks(database, retentionDays)
  const result: PruneResult = {
    events: dropped.events,
    blocks: dropped.blocks.length,
    idempotencyKeys: 0,
    scheduled: 0,
    connections: 0,
  }
  // Block by block, so that each statement reads one block through its indexes: expired events by their expiry,
  // and events older than retentionDays in the blocks below the boundary only (in the whole log when it is one block).
  const oldBelow = rollBlocks ? await retentionBoundary(database, retentionDays) : Number.MAX_SAFE_INTEGER
  for (const block of await blocksToPrune(database, oldBelow)) {
    result.events += await repeatBatches(
      database,
      expiredEventsBatch(retentionDays, block, block * BLOCK_IDS < oldBelow),
    )
  }
  // Keyed by (tenant, key): a batch names its rows by ctid.
  result.idempotencyKeys = await deleteInBatches(
    database,
    'idempotency_keys',
    sql`created_at < now() - interval '${sql.raw(IDEMPOTENCY_WINDOW)}'`,
    'ctid',
  )
  result.scheduled = await deleteInBatches(
    database,
    'scheduled_publishes',
    sql`state <> 'pending' and settled_at < now() - make_interval(days => ${retentionDays})`,
  )
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

/**
 * The blocks that may hold something to prune row by row: those below `oldBelow` (old events are looked for
 * there), and those with an expired event, found in one statement (one look at each block's expiry index)
 * rather than one a block.
 */
async function blocksToPrune(database: Database, oldBelow: number): Promise<number[]> {
  const blocks = await existingBlocks(database)
  if (blocks.length === 0) return []
  const rows = await database.query<{ block: string | number }>(sql`
    select b.block from unnest(${`{${blocks.join(',')}}`}::bigint[]) as b(block)
    where b.block * ${BLOCK_IDS} < ${oldBelow} or exists (
      select 1 from events
      where id >= b.block * ${BLOCK_IDS} and id < (b.block + 1) * ${BLOCK_IDS} and expires_at <= now())`)
  return rows.map((r) => Number(r.block))
}

/**
 * The statement of one batch of the row-by-row prune in one block of the log: up to DELETE_BATCH of its events
 * that expired (their ttl) or, with `old`, are older than `retentionDays`, deleted with their rows in the tables
 * keyed by event id (no foreign keys cascade: log-blocks.ts says why). Answers how many.
 */
export function expiredEventsBatch(retentionDays: number, block: number, old: boolean): SQL {
  const expired = old
    ? sql`(expires_at <= now() or created_at < now() - make_interval(days => ${retentionDays}))`
    : sql`expires_at <= now()`
  return sql`
    with gone as (
      delete from events where ${inBlock(sql`id`, block)} and id = any(array(
        select id from events where ${inBlock(sql`id`, block)} and ${expired} limit ${DELETE_BATCH}))
      returning id
    ), receipts_gone as (
      delete from receipts where ${inBlock(sql`event_id`, block)} and event_id in (select id from gone)
    ), recipients_gone as (
      delete from event_recipients where ${inBlock(sql`event_id`, block)} and event_id in (select id from gone)
    ), deliveries_gone as (
      delete from stream_deliveries where ${inBlock(sql`event_id`, block)} and event_id in (select id from gone)
    ), pushes_gone as (
      delete from push_deliveries where event_id in (select id from gone)
    )
    select count(*) as n from gone`
}
