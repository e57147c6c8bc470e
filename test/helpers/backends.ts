import { randomBytes } from 'node:crypto'
import { sql } from 'drizzle-orm'
import postgres from 'postgres'
import { describe } from 'vitest'
import { type Database, openDatabase } from '../../src/db/client.ts'
import { runMigrations } from '../../src/db/migrate.ts'

export type BackendName = 'pglite' | 'postgres'

const pgUrl = process.env.TEST_DATABASE_URL
if (process.env.CI === 'true' && !pgUrl) {
  throw new Error('CI=true but TEST_DATABASE_URL is not set: the PostgreSQL suites must run in CI.')
}

/** True when the PostgreSQL suites run (TEST_DATABASE_URL is set). */
export const hasPostgres = Boolean(pgUrl)

/**
 * Defines the suite once per backend: always PGlite, and PostgreSQL when TEST_DATABASE_URL is set
 * (skipped with a message otherwise).
 */
export function describeEachBackend(title: string, suite: (backend: BackendName) => void) {
  describe(`${title} [pglite]`, () => suite('pglite'))
  describe.skipIf(!pgUrl)(`${title} [postgres${pgUrl ? '' : ': skipped, TEST_DATABASE_URL not set'}]`, () =>
    suite('postgres'),
  )
}

/** PostgreSQL only (scale-out, real concurrency): skipped with a message when TEST_DATABASE_URL is unset. */
export function describePostgres(title: string, suite: () => void) {
  describe.skipIf(!pgUrl)(`${title}${pgUrl ? '' : ' [skipped: TEST_DATABASE_URL not set]'}`, suite)
}

export interface TestDatabase {
  database: Database
  /** The connection string of the fresh PostgreSQL database, for child processes. */
  url?: string
  /** Drops the PostgreSQL database (after the app closed its connections). */
  drop(): Promise<void>
}

/** A fresh, migrated database: in-memory PGlite, or a new PostgreSQL database created for this test. */
export async function freshDatabase(backend: BackendName, poolSize = 10): Promise<TestDatabase> {
  if (backend === 'pglite') {
    const database = await openDatabase({ pgliteDir: 'memory://' })
    await runMigrations(database)
    return { database, drop: async () => {} }
  }
  const url = await createPostgresDatabase()
  const database = await openDatabase({ url, poolSize })
  await runMigrations(database)
  return { database, url, drop: () => dropPostgresDatabase(url) }
}

/** Creates an empty PostgreSQL database next to TEST_DATABASE_URL's and returns its URL. */
export async function createPostgresDatabase(): Promise<string> {
  if (!pgUrl) throw new Error('TEST_DATABASE_URL is not set')
  const name = `herald_test_${process.pid}_${randomBytes(4).toString('hex')}`
  const admin = postgres(pgUrl, { max: 1, onnotice: () => {} })
  try {
    await admin.unsafe(`create database ${name}`)
  } finally {
    await admin.end()
  }
  const url = new URL(pgUrl)
  url.pathname = `/${name}`
  return url.toString()
}

export async function dropPostgresDatabase(url: string) {
  if (!pgUrl) return
  const name = new URL(url).pathname.slice(1)
  const admin = postgres(pgUrl, { max: 1, onnotice: () => {} })
  try {
    await admin.unsafe(`drop database if exists ${name} with (force)`)
  } finally {
    await admin.end()
  }
}

/**
 * Makes the database refuse every event titled 'poison' (a trigger stands in for whatever could make it refuse
 * one row) and returns what lifts it. The lift locks `events` before dropping the trigger: DROP TRIGGER on a
 * partitioned table locks each partition before the parent, so beside a publish (parent, then partition) it can
 * deadlock.
 */
export async function refusePoisonEvents(database: Database): Promise<() => Promise<void>> {
  await database.query(sql`
    create or replace function refuse_poison() returns trigger language plpgsql as $$
    begin
      if new.title = 'poison' then raise exception 'refused by a test trigger'; end if;
      return new;
    end $$`)
  await database.query(
    sql`create trigger refuse_poison before insert on events for each row execute function refuse_poison()`,
  )
  let lifted = false
  return async () => {
    if (lifted) return
    await database.db.transaction(async (tx) => {
      await tx.execute(sql`lock table events in access exclusive mode`)
      await tx.execute(sql`drop trigger refuse_poison on events`)
    })
    lifted = true
  }
}
