import { type ChildProcess, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { builtReference, ROOT, START_FLAGS, spawnTracked, stopChild } from '../processes.ts'
import { ratio, round } from '../stats.ts'
import {
  type BenchContext,
  RAW_NODE_ENTRY,
  type Row,
  type ScenarioResult,
  type Scope,
  STACK_FLOOR_ENTRY,
} from './common.ts'

const NAME = 'startup-memory'
/** How long a started service idles before its RSS is read: started, migrated, no streams, 5 s. */
const IDLE_MS = 5_000
/** Starts measured per kind; the line gives their median and range. */
const RUNS = 3
/** A first start runs initdb on a busy machine: give it time. */
const START_TIMEOUT_MS = 120_000
/** The service exits within 10 s of SIGTERM by contract; a little more before it is killed. */
const STOP_GRACE_MS = 12_000
/** The compiled service, as `npm start` runs it. */
const ENTRY = 'dist/server.js'

interface Start {
  rssMiB: number
  peakMiB: number
  startSec: number
}

interface Spread {
  median: number
  min: number
  max: number
  samples: number[]
}

/** A line of /proc/<pid>/status, MiB. */
function statusMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`${field}:\\s+(\\d+) kB`))
  if (!m) throw new Error(`no ${field} for pid ${pid}`)
  return round(Number(m[1]) / 1024)
}

/** Waits for the "listening on" line; rejects if the process exits first or takes too long. */
function listening(proc: ChildProcess): Promise<string> {
  let output = ''
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error(`no "listening on" line within ${START_TIMEOUT_MS} ms:\n${output}`))
    }, START_TIMEOUT_MS)
    const onData = (d: Buffer) => {
      output += d.toString()
      const m = output.match(/listening on http:\/\/[^\n]*/)
      if (m) {
        clearTimeout(timer)
        resolve(m[0])
      }
    }
    proc.stdout?.on('data', onData)
    proc.stderr?.on('data', onData)
    proc.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`exited (${code ?? signal}) before listening:\n${output}`))
    })
  })
}

/**
 * Starts `node <START_FLAGS> <entry>` with `env`, lets it idle IDLE_MS once listening, reads its RSS and peak, and
 * stops it with SIGTERM. `storage`, when given, is what the service's "listening on" line must name.
 */
async function measureStart(
  scope: Scope,
  entry: string,
  env: Record<string, string>,
  storage?: string,
): Promise<Start> {
  scope.check()
  const started = Date.now()
  const proc = spawnTracked(process.execPath, [...START_FLAGS, entry.endsWith('.ts') ? builtReference(entry) : entry], {
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    ...env,
  })
  scope.defer(() => stopChild(proc, STOP_GRACE_MS))
  const line = await listening(proc)
  const startSec = round((Date.now() - started) / 1000, 1)
  if (storage && !line.includes(storage)) throw new Error(`the service says "${line}", not ${storage}`)
  // Keep draining its output (warnings) so that a full pipe never blocks it.
  proc.stdout?.resume()
  proc.stderr?.resume()
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS))
  const start = { rssMiB: statusMiB(proc.pid!, 'VmRSS'), peakMiB: statusMiB(proc.pid!, 'VmHWM'), startSec }
  await stopChild(proc, STOP_GRACE_MS)
  if (proc.exitCode !== 0) throw new Error(`${entry} exited ${proc.exitCode ?? proc.signalCode} on SIGTERM`)
  return start
}

/** The service with no configuration but DATA_DIR (and DATABASE_URL: empty for PGlite). */
const serviceStart = (scope: Scope, dataDir: string, databaseUrl: string, storage: string) =>
  measureStart(
    scope,
    ENTRY,
    {
      DATA_DIR: dataDir,
      DATABASE_URL: databaseUrl,
      // Zero configuration: whatever the shell has, the service generates its secret in DATA_DIR.
      JWT_SECRET: '',
      JWT_PUBLIC_KEY: '',
      // The RSS read is this process's: one instance, not a primary and its workers.
      WORKERS: '1',
    },
    storage,
  )

/** The references, with the same node flags: raw Node's http (no database), and the stack's floor. */
const REFERENCE_SECRET = 'bench-startup-memory-reference-secret-000000'
const rawNodeStart = (scope: Scope) => measureStart(scope, RAW_NODE_ENTRY, { JWT_SECRET: REFERENCE_SECRET })
const stackFloorStart = (scope: Scope, dataDir: string, databaseUrl: string) =>
  measureStart(scope, STACK_FLOOR_ENTRY, { JWT_SECRET: REFERENCE_SECRET, DATA_DIR: dataDir, DATABASE_URL: databaseUrl })

function spread(values: number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b)
  return {
    median: sorted[Math.floor(sorted.length / 2)],
    min: sorted[0],
    max: sorted[sorted.length - 1],
    samples: values,
  }
}

function summary(starts: Start[]) {
  return {
    rssMiB: spread(starts.map((s) => s.rssMiB)),
    peakMiB: spread(starts.map((s) => s.peakMiB)),
    startSec: spread(starts.map((s) => s.startSec)),
  }
}

const cell = (s: Spread) => (s.min === s.max ? `${s.median}` : `${s.median} (${s.min}-${s.max})`)

function rows(label: string, s: ReturnType<typeof summary>): Row[] {
  return [
    [NAME, `${label}: idle RSS MiB, median (range)`, cell(s.rssMiB), null, null],
    [NAME, `${label}: peak RSS MiB / s to listen`, `${cell(s.peakMiB)} / ${cell(s.startSec)}`, null, null],
  ]
}

/**
 * Idle RSS of a zero-configuration start, as `npm start` runs the service (compiled; built here first): on
 * PGlite a first start (empty DATA_DIR: initdb and migrations) and a later start on the same folder, RUNS times
 * each; with DATABASE_URL, also RUNS starts on that PostgreSQL. Then the references as many times: raw Node, and
 * the stack's floor on the same databases, to which the service's idle RSS is given as a ratio.
 */
export async function startupMemory(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const runs = ctx.quick ? 1 : RUNS
  const alsoPostgres = process.env.DATABASE_URL ? ' and PostgreSQL' : ''
  ctx.log(`${NAME}: npm run build, then ${runs} first and later starts on PGlite${alsoPostgres}, then the references`)
  // The build's tsc step reports type errors after esbuild has written the bundle: measured all the same, and said so.
  const build = spawnSync('npm', ['run', '-s', 'build'], { cwd: ROOT, encoding: 'utf8' })
  const buildErrors = build.status !== 0
  if (buildErrors)
    ctx.log(`${NAME}: npm run build reported errors (measuring what it wrote):\n${build.stdout}${build.stderr}`)
  if (!existsSync(join(ROOT, ENTRY))) throw new Error(`${ENTRY} is missing after npm run build`)

  const first: Start[] = []
  const later: Start[] = []
  for (let i = 0; i < runs; i++) {
    const dataDir = mkdtempSync(join(tmpdir(), 'herald-bench-memory-'))
    scope.defer(() => rmSync(dataDir, { recursive: true, force: true }))
    first.push(await serviceStart(scope, dataDir, '', 'embedded PGlite'))
    later.push(await serviceStart(scope, dataDir, '', 'embedded PGlite'))
    ctx.log(`  PGlite run ${i + 1}: first start ${first[i].rssMiB} MiB, later start ${later[i].rssMiB} MiB`)
  }
  const postgres: Start[] = []
  if (process.env.DATABASE_URL) {
    for (let i = 0; i < runs; i++) {
      const dataDir = mkdtempSync(join(tmpdir(), 'herald-bench-memory-'))
      scope.defer(() => rmSync(dataDir, { recursive: true, force: true }))
      postgres.push(await serviceStart(scope, dataDir, process.env.DATABASE_URL, 'PostgreSQL'))
      ctx.log(`  PostgreSQL run ${i + 1}: ${postgres[i].rssMiB} MiB`)
    }
  }

  // The references, as many starts each. The stack's floor on PGlite is read at its second start on a folder, as
  // the service's later start is.
  const rawNode: Start[] = []
  const floorPglite: Start[] = []
  const floorPostgres: Start[] = []
  for (let i = 0; i < runs; i++) {
    rawNode.push(await rawNodeStart(scope))
    const dataDir = mkdtempSync(join(tmpdir(), 'herald-bench-memory-'))
    scope.defer(() => rmSync(dataDir, { recursive: true, force: true }))
    await stackFloorStart(scope, dataDir, '')
    floorPglite.push(await stackFloorStart(scope, dataDir, ''))
    if (process.env.DATABASE_URL) floorPostgres.push(await stackFloorStart(scope, dataDir, process.env.DATABASE_URL))
    ctx.log(
      `  references run ${i + 1}: raw node ${rawNode[i].rssMiB} MiB, stack floor on PGlite ${floorPglite[i].rssMiB} MiB` +
        (floorPostgres[i] ? `, on PostgreSQL ${floorPostgres[i].rssMiB} MiB` : ''),
    )
  }

  const pgliteFirst = summary(first)
  const pgliteLater = summary(later)
  const onPostgres = postgres.length ? summary(postgres) : undefined
  const references = {
    rawNode: summary(rawNode),
    stackFloor: {
      pglite: summary(floorPglite),
      postgres: floorPostgres.length ? summary(floorPostgres) : { skipped: 'DATABASE_URL not set' },
    },
  }
  const toFloorPglite = ratio(pgliteLater.rssMiB.median, references.stackFloor.pglite.rssMiB.median)
  const toFloorPostgres =
    onPostgres && floorPostgres.length ? ratio(onPostgres.rssMiB.median, summary(floorPostgres).rssMiB.median) : null
  return {
    line: {
      scenario: NAME,
      backend: ctx.backend,
      command: `node ${ENTRY}`,
      idleSec: IDLE_MS / 1000,
      runs,
      buildErrors,
      pglite: { firstStart: pgliteFirst, laterStart: pgliteLater },
      postgres: onPostgres ?? { skipped: 'DATABASE_URL not set' },
      references: { command: `node ${RAW_NODE_ENTRY}, node ${STACK_FLOOR_ENTRY}`, ...references },
      ratios: { stackFloor: { pgliteLaterStart: toFloorPglite, postgres: toFloorPostgres } },
    },
    rows: [
      ...rows('PGlite first start', pgliteFirst),
      ...rows('PGlite later start', pgliteLater),
      ...(onPostgres ? rows('PostgreSQL', onPostgres) : []),
      ...rows('raw node reference (no database)', references.rawNode),
      ...rows('stack floor on PGlite, later start', references.stackFloor.pglite),
      ...(floorPostgres.length ? rows('stack floor on PostgreSQL', summary(floorPostgres)) : []),
      [NAME, 'idle RSS: herald / stack floor, PGlite later start', toFloorPglite, null, null],
      ...(toFloorPostgres === null
        ? []
        : [[NAME, 'idle RSS: herald / stack floor, PostgreSQL', toFloorPostgres, null, null] as Row]),
    ],
  }
}
