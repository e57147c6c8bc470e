import type postgres from 'postgres'
import { BLOCK_IDS, blockStatements } from '../src/events/log-blocks.ts'
import { nowMs } from './stats.ts'

// What the scenarios that fill a log in bulk (13 stats, 15 big-log) share: the log in daily blocks as the
// service would have written it day after day, and indexes dropped for the fill and built again after it.

const SECONDS_PER_DAY = 86_400

/**
 * Adds the log's blocks 1 to `days` (block 0 is the migration's): a log written over `days` days has one block
 * a day, and the service keeps one ready after the newest.
 */
export async function makeDayBlocks(db: postgres.Sql, days: number): Promise<void> {
  for (let block = 1; block <= days; block++) for (const statement of blockStatements(block)) await db.unsafe(statement)
}

/**
 * The SQL of the id of the fill's `i`th event (`i` below 2^32, increasing with time), created `ageSeconds` (SQL)
 * before the fill, in a log of `days` daily blocks: the block of its day (0 the oldest), then `i`.
 */
export function dayBlockIdSql(i: string, ageSeconds: string, days: number): string {
  return `(${days - 1} - floor((${ageSeconds}) / ${SECONDS_PER_DAY}))::bigint * ${BLOCK_IDS} + ${i}`
}

/** The SQL of the fill's `i` of an event id made by dayBlockIdSql: what spreads its dependents evenly. */
export const fillIndexSql = (id: string) => `(${id} % ${BLOCK_IDS})`

/** After a fill with explicit ids: the service's next event follows the newest. */
export async function continueIdsAfterFill(db: postgres.Sql): Promise<void> {
  await db.unsafe(`select setval(pg_get_serial_sequence('events', 'id'), (select max(id) from events))`)
}

export interface IndexesRebuilt {
  /** How many indexes (the receipts' key among them) were dropped and built again. */
  count: number
  buildMs: number
}

/**
 * Runs `fill` with the indexes of `tables` dropped (but primary keys, which the fill's inserts do not check
 * twice, except the receipts' wide one), then builds them again: a bulk load's way, several times faster than
 * inserting through the indexes. On partitioned tables an index is dropped and built on every block at once.
 */
export async function withoutIndexes(
  db: postgres.Sql,
  tables: string[],
  fill: () => Promise<void>,
): Promise<IndexesRebuilt> {
  const indexes = await db<{ indexname: string; indexdef: string }[]>`
    select indexname, indexdef from pg_indexes
    where schemaname = 'public' and tablename = any(${tables})
      and indexname not in (select conname from pg_constraint)`
  for (const i of indexes) await db.unsafe(`drop index ${i.indexname}`)
  const receipts = tables.includes('receipts')
  if (receipts) await db.unsafe('alter table receipts drop constraint receipts_tenant_user_id_event_id_pk')
  await fill()
  const started = nowMs()
  if (receipts)
    await db.unsafe(
      'alter table receipts add constraint receipts_tenant_user_id_event_id_pk primary key (tenant, user_id, event_id)',
    )
  // A partitioned table's index reads `on only <table>` here: built like that it would cover no block.
  for (const i of indexes) await db.unsafe(i.indexdef.replace(' ON ONLY ', ' ON '))
  return { count: indexes.length + (receipts ? 1 : 0), buildMs: nowMs() - started }
}
