import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { mintToken } from '../../src/tokens.ts'
import { sparePort } from '../../test/helpers/pg-cluster.ts'
import type { NchanWorkers } from '../nchan.ts'
import { type RunningServer, START_FLAGS, startServer } from '../processes.ts'
import { Publisher } from '../publisher.ts'

export type Backend = 'pglite' | 'postgres'

/** What every scenario gets from the run. */
export interface BenchContext {
  backend: Backend
  /** HS256 secret shared by the service, the reference and the token minting here. */
  secret: string
  /** Streams one load-generator process may hold (from the open-file limit). */
  streamsPerWorker: number
  /** Smaller numbers and shorter durations: a smoke test of the harness, not a measurement. */
  quick: boolean
  /** Extra node flags for the service under test (--cpu-prof ...). */
  serviceNodeFlags: string[]
  /** Why nginx + Nchan is not measured (not installed, or --no-nchan); undefined: it is. */
  nchanMissing: string | undefined
  nchanWorkers: NchanWorkers
  /** WORKERS for the service under test (`--workers`, default 1): node:cluster workers behind one port. */
  serviceWorkers: string
  /** Scenario 6: PUSH_CONCURRENCY for the service (a diagnostic); undefined: the service's default. */
  pushConcurrency: number | undefined
  log: (message: string) => void
}

export type Cell = number | string | null

/**
 * A table row: scenario, figure, ours, raw-Node reference, ratio to it; then, when measured, Nchan and ratio to it,
 * and the stack's floor and ratio to it (Nchan's cells null where only the floor was measured).
 */
export type Row = [string, string, Cell, Cell, number | null, Cell?, (number | null)?, Cell?, (number | null)?]

export interface ScenarioResult {
  /** The JSON line. */
  line: Record<string, unknown>
  rows: Row[]
}

/**
 * Lets a scenario register its cleanups and stop early. After the time limit every registered cleanup runs,
 * and a cleanup registered later (a server that finished starting after the deadline) runs at once.
 */
export class Scope {
  private readonly cleanups: Array<() => unknown> = []
  aborted = false

  defer(cleanup: () => unknown): void {
    if (this.aborted)
      void Promise.resolve()
        .then(cleanup)
        .catch(() => {})
    else this.cleanups.push(cleanup)
  }

  /** Throws once the time limit has passed, so a late scenario stops at its next step. */
  check(): void {
    if (this.aborted) throw new Error('aborted')
  }

  async cleanup(): Promise<void> {
    for (const c of this.cleanups.splice(0).reverse()) {
      try {
        await c()
      } catch {
        // Best effort: the next cleanup (killing a server) matters more than this one's failure.
      }
    }
  }
}

/** Keeps the benchmark from being throttled (the config's ceiling is 10,000,000 per window). */
const UNTHROTTLED = '10000000'

/** Starts the service under test on a fresh temporary DATA_DIR (and DATABASE_URL from the environment, if set). */
export async function startService(ctx: BenchContext, scope: Scope, env: Record<string, string> = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'herald-bench-'))
  scope.defer(() => rmSync(dataDir, { recursive: true, force: true }))
  const server = await startServer(
    'service',
    // As `npm start` runs it: built to JavaScript (bench/run.ts builds it first), no TypeScript loader in memory.
    'dist/server.js',
    {
      // Workers listen each on a socket of their own only on a port set beforehand, as a deployment sets PORT.
      PORT: ctx.serviceWorkers === '1' ? '0' : String(await sparePort()),
      HOST: '127.0.0.1',
      DATA_DIR: dataDir,
      JWT_SECRET: ctx.secret,
      LOG_LEVEL: 'warn',
      RATE_LIMIT_PUBLISH_PER_MIN: UNTHROTTLED,
      RATE_LIMIT_IP_PER_MIN: UNTHROTTLED,
      RATE_LIMIT_AUTH_FAILURES_PER_MIN: UNTHROTTLED,
      MAX_STREAMS: '100000',
      // One process per instance unless `--workers N` (WORKERS defaults to one per core on PostgreSQL).
      WORKERS: ctx.serviceWorkers,
      ...env,
    },
    [...START_FLAGS, ...ctx.serviceNodeFlags],
  )
  scope.defer(() => server.stop())
  const expected = ctx.backend === 'postgres' ? 'PostgreSQL' : 'embedded PGlite'
  if (server.storage !== expected) throw new Error(`the service says it runs on ${server.storage}, not ${expected}`)
  return server
}

/** Several instances of the service on one PostgreSQL database (DATABASE_URL), started one after the other. */
export async function startInstances(ctx: BenchContext, scope: Scope, count: number): Promise<RunningServer[]> {
  const servers: RunningServer[] = []
  for (let i = 0; i < count; i++) servers.push(await startService(ctx, scope))
  return servers
}

/**
 * Resident memory once it has stopped moving: sampled every 500 ms until three samples in a row lie within
 * 1 MiB of each other (at least `minMs`, at most `maxMs`). KiB; the last sample.
 */
export async function settledRssKiB(rssKiB: () => number, minMs = 3_000, maxMs = 15_000): Promise<number> {
  const started = Date.now()
  const samples: number[] = []
  for (;;) {
    samples.push(rssKiB())
    const last = samples.slice(-3)
    const elapsed = Date.now() - started
    if (elapsed >= maxMs) break
    if (elapsed >= minMs && last.length === 3 && Math.max(...last) - Math.min(...last) <= 1024) break
    await new Promise((r) => setTimeout(r, 500))
  }
  return samples[samples.length - 1]
}

/** Busy and total CPU time of the whole machine so far (all CPUs, clock ticks), from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/)
  const ticks = fields.map(Number)
  const total = ticks.reduce((a, b) => a + b, 0)
  // idle and iowait are not busy.
  return { busy: total - ticks[3] - (ticks[4] ?? 0), total }
}

/**
 * Waits until the whole machine is quiet (under `quietPct` % busy over 500 ms: the service, PostgreSQL's
 * autovacuum, everything), at most `maxMs`; how long it took, ms. For scenarios whose setup leaves work behind
 * that the measurement must not pay for.
 */
export async function machineQuiet(quietPct = 15, maxMs = 20_000): Promise<number> {
  const started = Date.now()
  let before = machineTicks()
  while (Date.now() - started < maxMs) {
    await new Promise((r) => setTimeout(r, 500))
    const now = machineTicks()
    const busyPct = (100 * (now.busy - before.busy)) / Math.max(1, now.total - before.total)
    before = now
    if (busyPct < quietPct) break
  }
  return Date.now() - started
}

/** The references' sources (built before they run: builtReference). */
export const RAW_NODE_ENTRY = 'bench/reference-server.ts'
export const STACK_FLOOR_ENTRY = 'bench/stack-floor-server.ts'

/** Starts the raw-Node reference server. */
export async function startReference(ctx: BenchContext, scope: Scope): Promise<RunningServer> {
  const server = await startServer('reference', RAW_NODE_ENTRY, {
    PORT: '0',
    HOST: '127.0.0.1',
    JWT_SECRET: ctx.secret,
  })
  scope.defer(() => server.stop())
  return server
}

/**
 * The stack's floor (bench/stack-floor-server.ts) with the service's node flags, on the service's database:
 * DATABASE_URL's PostgreSQL, or PGlite in a temp directory. On PGlite it is started once to make its database
 * (initdb runs in its own process, which the service does in a child) and measured from its second start.
 */
export async function startStackFloor(ctx: BenchContext, scope: Scope): Promise<RunningServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'herald-bench-floor-'))
  scope.defer(() => rmSync(dataDir, { recursive: true, force: true }))
  const start = () =>
    startServer(
      'stack floor',
      STACK_FLOOR_ENTRY,
      {
        PORT: '0',
        HOST: '127.0.0.1',
        JWT_SECRET: ctx.secret,
        DATA_DIR: dataDir,
        DATABASE_URL: process.env.DATABASE_URL ?? '',
      },
      [...START_FLAGS],
    )
  if (!process.env.DATABASE_URL) await (await start()).stop()
  const server = await start()
  scope.defer(() => server.stop())
  return server
}

/** A tenant no other scenario or run has used: a PostgreSQL database outlives runs. */
export const freshTenant = (name: string) => `bench-${name}-${Date.now().toString(36)}`

/** A publisher of `tenant` on `server` with `sockets` keep-alive connections, open, and closed with the scope. */
export async function tenantPublisher(
  ctx: BenchContext,
  scope: Scope,
  server: { host: string; port: number },
  tenant: string,
  sockets: number,
  scopes = 'events:publish events:broadcast',
): Promise<Publisher> {
  const token = mintToken(ctx.secret, { sub: 'bench-publisher', tenant, scope: scopes })
  const publisher = new Publisher(server.host, server.port, token, sockets)
  scope.defer(() => publisher.close())
  await publisher.warm()
  return publisher
}
