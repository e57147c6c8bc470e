import type { Agent } from 'node:https'
import type { AddressInfo } from 'node:net'
import supertest from 'supertest'
import { buildApp, type LogOptions } from '../../src/app.ts'
import { type Config, loadConfig } from '../../src/config.ts'
import { type Database, openDatabase } from '../../src/db/client.ts'
import { runMigrations } from '../../src/db/migrate.ts'
import { mintToken, type TokenClaims } from '../../src/tokens.ts'
import { type BackendName, freshDatabase } from './backends.ts'

export const TEST_JWT_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789'

export interface TestApp {
  /** http://127.0.0.1:<port> */
  url: string
  app: Awaited<ReturnType<typeof buildApp>>
  database: Database
  backend: BackendName
  /** supertest against the listening server */
  http: () => supertest.Agent
  /** An HS256 token for the test secret; defaults: tenant "t1", no roles, no scope. */
  token: (claims: Partial<TokenClaims> & { sub: string }, ttlSeconds?: number) => string
  close: () => Promise<void>
}

/** Environment variables as the service reads them (values may be numbers here). */
export type TestEnv = Record<string, string | number | boolean | undefined>

/**
 * The configuration tests run with: the test secret, and rate limits out of the way (suites hammer one IP with
 * thousands of requests, many with deliberately bad tokens; limits.test.ts sets them low to test the limits
 * themselves), then `env` over them.
 */
export function testConfig(env: TestEnv = {}): Config {
  const given = Object.fromEntries(
    Object.entries(env).map(([name, value]) => [name, value === undefined ? undefined : String(value)]),
  )
  return loadConfig({
    NODE_ENV: 'test',
    JWT_SECRET: TEST_JWT_SECRET,
    VAPID_SUBJECT: 'mailto:tests@example.com',
    RATE_LIMIT_PUBLISH_PER_MIN: '1000000',
    RATE_LIMIT_IP_PER_MIN: '1000000',
    RATE_LIMIT_AUTH_FAILURES_PER_MIN: '1000000',
    RATE_LIMIT_PUSH_PER_MIN: '1000000',
    RATE_LIMIT_PUSH_TEST_PER_MIN: '1000000',
    RATE_LIMIT_RECEIPTS_PER_MIN: '1000000',
    RATE_LIMIT_BULK_READ_PER_MIN: '1000000',
    ...given,
  })
}

export interface StartOptions {
  /** Environment variables over testConfig's. */
  config?: TestEnv
  log?: LogOptions
  /** https agent for push services (the test push service's, which trusts its CA). */
  pushAgent?: Agent
  /** Turn on the demo page's sign-in (as when the server generated its own secret). */
  demoSignIn?: boolean
  /** The scheduler's clock (test/helpers/clock.ts); real time otherwise. */
  clock?: () => Date
}

/** Builds the real app on a fresh database and listens on an ephemeral port of 127.0.0.1. */
export async function startApp(backend: BackendName, options: StartOptions = {}): Promise<TestApp> {
  const db = await freshDatabase(backend)
  const config = testConfig(options.config)
  const app = await buildApp(config, db.database, {
    log: options.log ?? false,
    pushAgent: options.pushAgent,
    demoSignIn: options.demoSignIn,
    clock: options.clock,
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  return {
    url,
    app,
    database: db.database,
    backend,
    http: () => supertest.agent(url),
    token: (claims, ttl) => mintToken(TEST_JWT_SECRET, { tenant: 't1', ...claims }, ttl),
    close: async () => {
      await app.close()
      await db.drop()
    },
  }
}

/** Scopes as a token's `scope` claim. */
export const PUBLISHER = 'events:publish events:broadcast'

/**
 * One more instance of the service on the PostgreSQL database at `url` (migrated here), listening on 127.0.0.1,
 * as a second server sharing the database would be. Close it with `close()` before dropping the database.
 */
export async function startInstanceOn(
  url: string,
  config: TestEnv = {},
  options: Pick<StartOptions, 'pushAgent'> = {},
) {
  const database = await openDatabase({ url, poolSize: 4 })
  await runMigrations(database)
  const app = await buildApp(testConfig(config), database, { pushAgent: options.pushAgent })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  return { app, url: base, http: () => supertest.agent(base), close: () => app.close() }
}
