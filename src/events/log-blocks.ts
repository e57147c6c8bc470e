import { setTimeout as sleep } from 'node:timers/promises'
import { type SQL, sql } from 'drizzle-orm'
import { deleteInBatches } from '../db/batched-delete.ts'
import type { Database } from '../db/client.ts'
import { sqlStateOf } from '../db/errors.ts'

/**
 * The event log is partitioned by event id into blocks of BLOCK_IDS ids: `events` and the tables keyed by an
 * event's id each have one partition per block (`events_b0`, `receipts_b0`, ...; block 0 also holds every id
 * below it). A block holds about a day of events: once the first event of the block being written is a day old,
 * the id sequence jumps to the next block's start (`rollBlock`). Pruning drops a block whose events have all
 * expired, with its receipts, recipients and deliveries, with a TRUNCATE and a DROP TABLE (`dropExpiredBlocks`),
 * instead of deleting its rows one by one.
 *
 * Ids still only increase; the jump is a gap the log tail settles as it settles a rolled-back publish's. With
 * 2^32 ids a block, ids stay below 2^53 (JavaScript's exact integers) for over 5,000 years of daily blocks.
 * The migration that made these tables partitioned is drizzle/0014_partitioned_event_log.sql.
 */
export const BLOCK_IDS = 2 ** 32

/** The partitioned tables and the column each is partitioned by. `events` last: the others follow it. */
export const BLOCK_TABLES = [
  { table: 'receipts', key: 'event_id' },
  { table: 'event_recipients', key: 'event_id' },
  { table: 'stream_deliveries', key: 'event_id' },
  { table: 'events', key: 'id' },
] as const

/** How old the first event of the block being written may get before ids move on to the next block. */
export const BLOCK_SPAN = '1 day'

/** Held by whoever rolls or drops blocks: one instance at a time (PUBLISH_LOCK is objId 2). */
const BLOCKS_LOCK = { classId: 727_140, objId: 3 } as const

/**
 * A block's truncate or drop waits at most this long for its tables' locks (a query reading the block holds them;
 * a publish waits behind the drop meanwhile, not behind the truncate), DROP_ATTEMPTS times DROP_RETRY_MS apart; if
 * it never has them, the next pass tries again.
 */
const DROP_LOCK_TIMEOUT = '50ms'
const DROP_ATTEMPTS = 3
const DROP_RETRY_MS = 500

/**
 * An event's created_at is when its transaction began, so one with a lower id may be newer than the block's last
 * by the length of a publish transaction (seconds): a block whose last event is older than the cutoff by this
 * much holds nothing newer.
 */
const CREATED_AT_SLACK = '1 minute'

export const blockOf = (id: number) => Math.floor(id / BLOCK_IDS)
const partitionName = (table: string, block: number) => `${table}_b${block}`

/** SQL: `column` (an event id) is in block `block`. */
export const inBlock = (column: SQL, block: number) =>
  sql`${column} >= ${block * BLOCK_IDS} and ${column} < ${(block + 1) * BLOCK_IDS}`

/** Whether the first event of `block` is older than `age` (SQL, an interval); undefined for an empty block. */
async function firstEventOlderThan(
  database: Database,
  block: number,
  age: SQL,
  on?: Parameters<Database['query']>[1],
): Promise<boolean | undefined> {
  // Through the parent, by the block's ids: a block another instance has just dropped reads as empty.
  const [first] = await database.query<{ old: boolean }>(
    sql`select created_at < now() - ${age} as old from events where ${inBlock(sql`id`, block)} order by id limit 1`,
    on,
  )
  return first?.old
}

/** Takes BLOCKS_LOCK for the transaction `tx` if it is free. */
async function tryBlocksLock(database: Database, tx: Parameters<Database['query']>[1]): Promise<boolean> {
  const [lock] = await database.query<{ locked: boolean }>(
    sql.raw(`select pg_try_advisory_xact_lock(${BLOCKS_LOCK.classId}, ${BLOCKS_LOCK.objId}) as locked`),
    tx,
  )
  return lock?.locked === true
}

/**
 * The statements that add block `block` to every partitioned table: each partition is made apart and then
 * attached, which locks the parent only against other schema changes (CREATE TABLE ... PARTITION OF would lock
 * out publishing). Attaching an empty table gives it the parent's indexes at once.
 */
export function blockStatements(block: number): string[] {
  const from = block === 0 ? 'minvalue' : String(block * BLOCK_IDS)
  const to = String((block + 1) * BLOCK_IDS)
  return BLOCK_TABLES.flatMap(({ table }) => {
    const partition = partitionName(table, block)
    return [
      `create table if not exists ${partition} (like ${table} including defaults)`,
      `alter table ${table} attach partition ${partition} for values from (${from}) to (${to})`,
    ]
  })
}

/** The blocks that exist now (those of `events`), oldest first. */
export async function existingBlocks(database: Database, on?: Parameters<Database['query']>[1]): Promise<number[]> {
  const rows = await database.query<{ name: string }>(
    sql`select c.relname as name from pg_inherits i
      join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'events'::regclass`,
    on,
  )
  return rows
    .map((r) => /^events_b(\d+)$/.exec(r.name))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b)
}

/**
 * The block the next event goes to. pg_sequence_last_value is the last id given (null before the first), and a
 * roll sets it to the id before its block's start, so the next is the start.
 */
async function currentBlock(database: Database, on?: Parameters<Database['query']>[1]): Promise<number> {
  const [row] = await database.query<{ last: string | number | null }>(
    sql`select pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass) as last`,
    on,
  )
  return blockOf(Number(row?.last ?? 0) + 1)
}

/**
 * Keeps a block ready after the current one, and moves the id sequence on to it once the current block's
 * first event is older than BLOCK_SPAN. Returns the block new events now go to, or null when another
 * instance was doing this at the same moment.
 */
export async function rollBlock(database: Database): Promise<number | null> {
  const plan = await database.db.transaction(async (tx) => {
    if (!(await tryBlocksLock(database, tx))) return null
    const current = await currentBlock(database, tx)
    const old = await firstEventOlderThan(database, current, sql.raw(`interval '${BLOCK_SPAN}'`), tx)
    const next = old ? current + 1 : current
    // The blocks are committed before the sequence points into them: an insert must always find its block.
    await ensureBlocks(database, next + 1, tx)
    return next
  })
  if (plan === null) return null
  // Under the lock (another instance may be here too), and forward only: ids handed out are never handed again.
  await database.db.transaction(async (tx) => {
    await database.query(sql.raw(`select pg_advisory_xact_lock(${BLOCKS_LOCK.classId}, ${BLOCKS_LOCK.objId})`), tx)
    await database.query(
      sql`select setval(pg_get_serial_sequence('events', 'id'), ${plan * BLOCK_IDS - 1})
        where coalesce(pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass), 0) < ${plan * BLOCK_IDS - 1}`,
      tx,
    )
  })
  return plan
}

/** Adds every block up to `through` that is missing (none below the oldest that exists: those were dropped). */
async function ensureBlocks(database: Database, through: number, on: Parameters<Database['query']>[1]) {
  const have = await existingBlocks(database, on)
  const newest = have.length ? have[have.length - 1] : -1
  for (let block = newest + 1; block <= through; block++)
    for (const statement of blockStatements(block)) await database.query(sql.raw(statement), on)
}

export interface DroppedBlocks {
  blocks: number[]
  /** The events they held. */
  events: number
}

/**
 * Drops every block before the current one whose events have all expired (their ttl passed, or they are older
 * than `retentionDays`), with the partitions of the tables keyed by event id and their push records.
 * A block that still holds one event to keep stays; pruning deletes its expired rows one by one meanwhile.
 */
export async function dropExpiredBlocks(database: Database, retentionDays: number): Promise<DroppedBlocks> {
  const dropped: DroppedBlocks = { blocks: [], events: 0 }
  const current = await currentBlock(database)
  const older = (await existingBlocks(database)).filter((block) => block < current)
  for (const block of await expiredBlocks(database, older, retentionDays)) {
    // 'gone': another instance dropped it meanwhile; 'busy': the next pass looks again.
    const outcome = await dropBlock(database, block)
    if (outcome === 'busy') break
    if (outcome === 'gone') continue
    dropped.events += outcome.events
    if (!outcome.dropped) break
    dropped.blocks.push(block)
  }
  return dropped
}

/**
 * Of `blocks`, those whose events have all expired, in one statement (two index lookups a block): the latest
 * expiry has passed, or the newest event (by id) is older than the cutoff by more than CREATED_AT_SLACK; an
 * empty block too. A block whose events expired in part by ttl and in part by age is not found here: pruning
 * deletes its rows one by one, and the block, empty then, goes at the next pass.
 */
async function expiredBlocks(database: Database, blocks: readonly number[], retentionDays: number) {
  if (blocks.length === 0) return []
  const rows = await database.query<{ block: string | number }>(sql`
    select b.block from unnest(${`{${blocks.join(',')}}`}::bigint[]) as b(block)
    where coalesce((select max(expires_at) <= now() from events
        where id >= b.block * ${BLOCK_IDS} and id < (b.block + 1) * ${BLOCK_IDS}), true)
      or (select created_at < now() - make_interval(days => ${retentionDays}) - interval '${sql.raw(CREATED_AT_SLACK)}'
        from events where id >= b.block * ${BLOCK_IDS} and id < (b.block + 1) * ${BLOCK_IDS}
        order by id desc limit 1)
    order by b.block`)
  return rows.map((r) => Number(r.block))
}

/**
 * Drops `block`, whose events have all expired, and its push records first: the events it held, and whether this
 * instance dropped the block (another may drop it once this one has emptied it); 'busy' or 'gone' if it was left
 * as it was (underBlocksLock).
 */
async function dropBlock(
  database: Database,
  block: number,
): Promise<{ events: number; dropped: boolean } | 'busy' | 'gone'> {
  // Its push records first, in batches (that table is not partitioned).
  await deleteInBatches(database, 'push_deliveries', inBlock(sql`event_id`, block))
  // Emptied, then dropped, each in a transaction of its own. TRUNCATE locks the block's partitions only (a publish
  // writes through the parent tables to the current block), and their files are given back as it commits. DROP
  // then also locks the parent tables, which publishing waits for, but only for a change to the catalog: 15-40 ms,
  // where dropping the full partitions held them 90-210 ms (bench/HISTORY.md, Session 14).
  let events = 0
  const emptied = await underBlocksLock(database, async (tx) => {
    const [{ n }] = await database.query<{ n: string | number }>(
      sql`select count(*) as n from ${sql.raw(partitionName('events', block))}`,
      tx,
    )
    events = Number(n)
    await database.query(tablesStatement('truncate', block), tx)
  })
  if (emptied !== 'done') return emptied
  // Its events are gone now, whoever drops the empty block: if not this instance, the next pass or another one.
  const dropped = await underBlocksLock(database, (tx) => database.query(tablesStatement('drop table', block), tx))
  return { events, dropped: dropped === 'done' }
}

/**
 * Runs `work` in a transaction holding BLOCKS_LOCK, waiting at most DROP_LOCK_TIMEOUT for its tables' locks, up to
 * DROP_ATTEMPTS times DROP_RETRY_MS apart. 'busy': another instance holds BLOCKS_LOCK, or the tables' locks were
 * never free; 'gone': the block's tables are not there (42P01: another instance dropped them).
 */
async function underBlocksLock(
  database: Database,
  work: (tx: Parameters<Database['query']>[1]) => Promise<unknown>,
): Promise<'done' | 'busy' | 'gone'> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await database.db.transaction(async (tx) => {
        if (!(await tryBlocksLock(database, tx))) return 'busy' as const
        await database.query(sql.raw(`set local lock_timeout = '${DROP_LOCK_TIMEOUT}'`), tx)
        await work(tx)
        return 'done' as const
      })
    } catch (err) {
      if (sqlStateOf(err) === '42P01') return 'gone'
      if (sqlStateOf(err) !== '55P03') throw err
      if (attempt === DROP_ATTEMPTS) return 'busy'
      await sleep(DROP_RETRY_MS)
    }
  }
}

/** `truncate` or `drop table` of block `block`'s partition of every partitioned table. */
function tablesStatement(verb: 'truncate' | 'drop table', block: number): SQL {
  return sql.raw(`${verb} ${BLOCK_TABLES.map(({ table }) => partitionName(table, block)).join(', ')}`)
}

/**
 * Ids below this may be of events older than `retentionDays`: the start of the oldest block whose first event
 * is newer (the row-by-row prune looks for old events there only, through the primary key, not in every block).
 * An event a few seconds older than the first of a block after it (created_at is when its transaction began)
 * leaves with its block, a day later at most. Only for a log whose blocks roll daily: the block being written
 * holds nothing older than a day then.
 */
export async function retentionBoundary(database: Database, retentionDays: number): Promise<number> {
  const blocks = await existingBlocks(database)
  for (const block of blocks) {
    const old = await firstEventOlderThan(database, block, sql`make_interval(days => ${retentionDays})`)
    if (old === false) return block * BLOCK_IDS
  }
  return ((blocks.at(-1) ?? 0) + 1) * BLOCK_IDS
}
