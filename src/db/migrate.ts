import { sql } from 'drizzle-orm'
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator'
import { MIGRATIONS_FOLDER } from '../package-files.ts'
import type { Database } from './client.ts'

/** Arbitrary constant: instances starting together on one PostgreSQL take turns migrating. */
const MIGRATION_LOCK_KEY = 727_140_001

/**
 * Applies drizzle-kit's migrations from `drizzle/` (tests may name another folder: an older installation's).
 * Safe to run from several instances at once.
 */
export async function runMigrations(database: Database, migrationsFolder = MIGRATIONS_FOLDER): Promise<void> {
  if (database.kind === 'pglite') {
    const { migrate: migratePglite } = await import('drizzle-orm/pglite/migrator')
    // biome-ignore lint/suspicious/noExplicitAny: the migrator wants the concrete driver type
    await migratePglite(database.db as any, { migrationsFolder })
    return
  }
  const pg = database.pg
  if (!pg) throw new Error('postgres client missing')
  const lock = await pg.reserve()
  try {
    await lock`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`
    // biome-ignore lint/suspicious/noExplicitAny: the migrator wants the concrete driver type
    await migratePostgres(database.db as any, { migrationsFolder })
  } finally {
    await lock`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.catch(() => {})
    lock.release()
  }
}

/** True when the database answers. */
export async function ping(database: Database): Promise<boolean> {
  try {
    await database.query(sql`select 1`)
    return true
  } catch {
    return false
  }
}
