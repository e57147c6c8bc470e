import { join } from 'node:path'
import type { PGlite } from '@electric-sql/pglite'
import { type SQL, sql } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
import { ConfigError, DEFAULT_DB_POOL_SIZE } from '../config.ts'
import { lockDataDir } from './data-lock.ts'
import { innermostError } from './errors.ts'
import * as schema from './schema.ts'

export type Db = PgDatabase<PgQueryResultHKT, typeof schema>

/** One database handle, whichever backend is under it. App code uses `db` and, for raw SQL, `query`. */
export interface Database {
  kind: 'pglite' | 'postgres'
  db: Db
  /** Raw SQL that the query builder cannot express; rows come back the same shape on both drivers. */
  query<Row = Record<string, unknown>>(statement: SQL, on?: Db): Promise<Row[]>
  close(): Promise<void>
  /** The postgres.js client, for LISTEN/NOTIFY and advisory locks; undefined on PGlite. */
  pg?: postgres.Sql
  pglite?: PGlite
}

export interface DatabaseOptions {
  /** PostgreSQL connection string. Unset: embedded PGlite. */
  url?: string
  /** PGlite's directory; `memory://` keeps it in memory (tests). */
  pgliteDir?: string
  /** Who takes PGlite's folder (`server`, `herald prune`): named to a second process that finds it taken. */
  role?: string
  /** PostgreSQL connections; DB_POOL_SIZE's default unless given. */
  poolSize?: number
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.url) {
    const pg = postgres(options.url, {
      max: options.poolSize ?? DEFAULT_DB_POOL_SIZE,
      onnotice: () => {},
      // Fail fast when the server is down so publishes get a 503 rather than hanging.
      connect_timeout: 5,
      // Retry a lost server every 200 ms, not with postgres.js's growing backoff (up to 20 s, one counter
      // for the whole pool): the service is back within a moment of the database.
      backoff: () => 0.2,
      idle_timeout: 60,
      // No JIT: its estimates grow with tables the publish statement joins (the directory, across every tenant),
      // and past jit_above_cost a publish to one user was compiled for 2-4 s (bench scenario 10 found it). Our
      // statements are short; JIT only ever cost them.
      connection: { jit: 'off' },
    })
    const db = drizzlePostgres(preparing(pg), { schema }) as unknown as Db
    return {
      kind: 'postgres',
      db,
      pg,
      async query<Row>(statement: SQL, on: Db = db) {
        return [...((await on.execute(statement)) as unknown as Row[])]
      },
      close: () => pg.end({ timeout: 5 }),
    }
  }
  // Loaded only for the embedded database: a service on PostgreSQL never holds PGlite's code.
  const [{ createDatabaseInChild, createPglite }, { drizzle: drizzlePglite }] = await Promise.all([
    import('./pglite-setup.ts'),
    import('drizzle-orm/pglite'),
  ])
  const dir = options.pgliteDir ?? 'memory://'
  const inMemory = dir.startsWith('memory://')
  const role = options.role ?? 'herald'
  // A new folder's database is made by a child process, so that this one never holds initdb's memory.
  if (!inMemory) await createDatabaseInChild(dir, role)
  // One process per folder, for as long as it has the database open (see data-lock.ts).
  const unlock = inMemory ? async () => {} : await lockDataDir(dir, role)
  let pglite: PGlite
  try {
    pglite = await createPglite(dir)
  } catch (err) {
    await unlock()
    throw err
  }
  const db = drizzlePglite(pglite, { schema }) as unknown as Db
  return {
    kind: 'pglite',
    db,
    pglite,
    async query<Row>(statement: SQL, on: Db = db) {
      return ((await on.execute(statement)) as unknown as { rows: Row[] }).rows
    },
    close: async () => {
      try {
        await pglite.close()
      } finally {
        await unlock()
      }
    },
  }
}

/**
 * The client drizzle runs queries through, with every statement prepared (named, parsed and planned once per
 * connection). drizzle asks postgres.js for unnamed statements unless a query is given a name, and postgres.js
 * then describes each one first: two round trips and a fresh parse and plan per query, most of a publish's cost.
 * Our statements are few and fixed, so the per-connection cache stays small. (Transactions run on a reserved
 * connection drizzle gets from `begin`, unprepared: only the rare Idempotency-Key path uses one.)
 */
function preparing(pg: postgres.Sql): postgres.Sql {
  return new Proxy(pg, {
    get(target, property, receiver) {
      if (property !== 'unsafe') return Reflect.get(target, property, receiver)
      return (query: string, params?: unknown[], options?: postgres.UnsafeQueryOptions) =>
        target.unsafe(query, params as postgres.ParameterOrJSON<never>[], { ...options, prepare: true })
    },
  })
}

/** PostgreSQL did not answer within DB_CONNECT_TIMEOUT_S at start: exit 78, naming the host. */
export class DatabaseUnreachableError extends ConfigError {
  override name = 'DatabaseUnreachableError'
}

/** First wait between attempts to reach PostgreSQL at start; doubles up to MAX_CONNECT_RETRY_MS. */
const FIRST_CONNECT_RETRY_MS = 500
const MAX_CONNECT_RETRY_MS = 5_000

/**
 * Waits for PostgreSQL to answer, retrying with backoff for `timeoutS` and saying so once per attempt
 * (`report`): a service started beside its database (compose, systemd) simply waits for it. PGlite is
 * always there.
 */
export async function waitUntilReachable(
  database: Database,
  url: string | undefined,
  timeoutS: number,
  report: (line: string) => void,
): Promise<void> {
  if (database.kind !== 'postgres' || !url) return
  const where = hostOf(url)
  const giveUpAt = Date.now() + timeoutS * 1000
  let wait = FIRST_CONNECT_RETRY_MS
  for (let attempt = 1; ; attempt++) {
    try {
      await database.query(sql`select 1`)
      if (attempt > 1) report(`PostgreSQL at ${where} answered (attempt ${attempt}).`)
      return
    } catch (err) {
      const why = causeOf(err)
      if (Date.now() + wait > giveUpAt) {
        await database.close().catch(() => {})
        throw new DatabaseUnreachableError(
          `PostgreSQL at ${where} could not be reached within ${timeoutS} s (${why}). Check DATABASE_URL and that the database is up; DB_CONNECT_TIMEOUT_S sets how long to wait.`,
        )
      }
      report(`PostgreSQL at ${where} is not reachable yet (${why}); attempt ${attempt}, retrying in ${wait / 1000} s.`)
      await new Promise((resolve) => setTimeout(resolve, wait))
      wait = Math.min(wait * 2, MAX_CONNECT_RETRY_MS)
    }
  }
}

/** host:port/database of a connection string, without its credentials. */
function hostOf(url: string): string {
  try {
    const u = new URL(url)
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`
  } catch {
    return 'DATABASE_URL'
  }
}

/** The innermost error's code and message (drizzle wraps the driver's error). */
function causeOf(err: unknown): string {
  const e = innermostError(err) as { code?: unknown; message?: string } | undefined
  return [e?.code, e?.message].filter(Boolean).join(': ') || String(err)
}

/** Where PGlite keeps its files inside DATA_DIR. */
export const pgliteDirIn = (dataDir: string) => join(dataDir, 'pglite')
