import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import type { SQL } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import postgres from 'postgres'
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
  poolSize?: number
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.url) {
    const pg = postgres(options.url, {
      max: options.poolSize ?? 20,
      onnotice: () => {},
      // Fail fast when the server is down so publishes get a 503 rather than hanging.
      connect_timeout: 5,
      // Retry a lost server every 200 ms, not with postgres.js's growing backoff (up to 20 s, one counter
      // for the whole pool): the service is back within a moment of the database.
      backoff: () => 0.2,
      idle_timeout: 60,
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
  const dir = options.pgliteDir ?? 'memory://'
  if (!dir.startsWith('memory://')) mkdirSync(dir, { recursive: true })
  const pglite = await PGlite.create(dir)
  const db = drizzlePglite(pglite, { schema }) as unknown as Db
  return {
    kind: 'pglite',
    db,
    pglite,
    async query<Row>(statement: SQL, on: Db = db) {
      return ((await on.execute(statement)) as unknown as { rows: Row[] }).rows
    },
    close: () => pglite.close(),
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

/** Where PGlite keeps its files inside DATA_DIR. */
export const pgliteDirIn = (dataDir: string) => join(dataDir, 'pglite')
