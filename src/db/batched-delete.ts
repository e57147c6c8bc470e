import { type SQL, sql } from 'drizzle-orm'
import type { Database } from './client.ts'

/** Rows deleted per statement: short transactions that never hold up other writers for long. */
export const DELETE_BATCH = 5_000

/**
 * How a batch names its rows: by primary key `id`, or by `ctid` (where a table's key spans columns; each row's
 * place in its table, read and used within one statement).
 */
export type BatchKey = 'id' | 'ctid'

/**
 * The statement that deletes up to DELETE_BATCH rows of `table` matching `where`, answering how many (`n`).
 * The batch is an array of keys (`key = any(array(select ...))`), which the delete finds through the key's
 * index, or directly by ctid. Written as `key in (select ... limit n)`, the planner joins the whole table to the
 * batch instead, and once the table is large it reads all of it for every batch: 0.3 s a batch on a million push
 * records, against 0.02 s this way.
 */
export function deleteBatch(table: string, where: SQL, key: BatchKey = 'id'): SQL {
  const name = sql.raw(table)
  const by = sql.raw(key)
  return sql`
    with gone as (
      delete from ${name} where ${by} = any(array(select ${by} from ${name} where ${where} limit ${DELETE_BATCH}))
      returning 1
    )
    select count(*) as n from gone`
}

/** Deletes every row of `table` matching `where`, DELETE_BATCH per statement (each its own transaction); how many. */
export function deleteInBatches(database: Database, table: string, where: SQL, key: BatchKey = 'id') {
  return repeatBatches(database, deleteBatch(table, where, key))
}

/**
 * Runs `batch`, a statement that deletes up to DELETE_BATCH rows and answers how many (`n`), until a batch comes
 * back short; how many in all.
 */
export async function repeatBatches(database: Database, batch: SQL): Promise<number> {
  let deleted = 0
  for (;;) {
    const [row] = await database.query<{ n: string | number }>(batch)
    const n = Number(row?.n ?? 0)
    deleted += n
    if (n < DELETE_BATCH) return deleted
  }
}
