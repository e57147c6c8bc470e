// `npm run bench`: runs the load scenarios against the service and a raw-Node reference, prints one JSON line
// per scenario on stdout, then a table. Progress goes to stderr. See bench/README.md.
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { type NchanWorkers, nchanMissing } from './nchan.ts'
import { fileLimits, killChildren } from './processes.ts'
import { bigLog } from './scenarios/big-log.ts'
import { type BenchContext, type Row, type ScenarioResult, Scope } from './scenarios/common.ts'
import { directoryImport } from './scenarios/directory.ts'
import { fanout } from './scenarios/fanout.ts'
import { idle, idleScaleout } from './scenarios/idle.ts'
import { liveVersusStored } from './scenarios/live.ts'
import { preferences } from './scenarios/preferences.ts'
import { publishThroughput } from './scenarios/publish.ts'
import { pushThroughput } from './scenarios/push.ts'
import { recipientsCost } from './scenarios/recipients.ts'
import { reconnectStorm } from './scenarios/reconnect-storm.ts'
import { replay } from './scenarios/replay.ts'
import { startupMemory } from './scenarios/startup-memory.ts'
import { statsCost } from './scenarios/stats.ts'
import { targeted } from './scenarios/targeted.ts'
import { referenceLabel } from './targets.ts'

/** Every scenario ends within this, measured or not; its processes are killed at the limit. */
const SCENARIO_LIMIT_MS = 150_000
/** Scenario 3: four servers one after the other (ours, raw Node, Nchan, the stack's floor), 19,000 streams each. */
const IDLE_LIMIT_MS = 240_000
/** Scenario 1: three servers at 10,000 streams, each with 3 rounds of a burst and a one-in-flight phase. */
const FANOUT_10K_LIMIT_MS = 300_000
/** Scenario 2: three servers, 5 rounds of two phases each, then a paced phase of 10 s each. */
const FANOUT_1K_LIMIT_MS = 240_000
/** Scenario 14: two servers at two sizes (1,000 and 10,000 streams), 3 storms each. */
const RECONNECT_STORM_LIMIT_MS = 300_000
/** Scenario 8 builds the service and starts it up to nine times, PGlite's first starts running initdb. */
const STARTUP_MEMORY_LIMIT_MS = 360_000
/** Scenario 9 registers 10,000 devices and stores 10,000 users' preferences through the API around its phases. */
const PREFERENCES_LIMIT_MS = 300_000
/** Scenario 13 fills a database with 10 million events in bulk (minutes on two cores) before it measures. */
const STATS_LIMIT_MS = 1_800_000
/** Scenario 15 fills a database with 10 million events in bulk, as 13 does, then measures an empty log and it. */
const BIG_LOG_LIMIT_MS = 1_800_000
/** Scenario 12 opens 10,000 streams, then runs 12 measured phases on them (stored and live, 3 rounds). */
const LIVE_LIMIT_MS = 300_000
/** Sockets per load-generator process: under the 20,000 open-file limit with room for everything else. */
const MAX_STREAMS_PER_WORKER = 18_000

interface Scenario {
  id: string
  name: string
  run: (ctx: BenchContext, scope: Scope) => Promise<ScenarioResult>
  /** Its own time limit, when not SCENARIO_LIMIT_MS. */
  limitMs?: number
}

const SCENARIOS: Scenario[] = [
  {
    id: '1',
    name: 'fanout-10k',
    run: (ctx, scope) =>
      fanout(
        'fanout-10k',
        ctx,
        scope,
        ctx.quick
          ? { streams: 1_000, events: 20, steady: 5, rounds: 2 }
          : { streams: 10_000, events: 50, steady: 10, rounds: 3 },
      ),
    limitMs: FANOUT_10K_LIMIT_MS,
  },
  {
    id: '2',
    name: 'fanout-1k',
    run: (ctx, scope) =>
      fanout(
        'fanout-1k',
        ctx,
        scope,
        ctx.quick
          ? { streams: 200, events: 20, steady: 5, rounds: 2, paced: { ratePerSec: 20, durationMs: 2_000 } }
          : { streams: 1_000, events: 100, steady: 20, rounds: 5, paced: { ratePerSec: 20, durationMs: 10_000 } },
      ),
    limitMs: FANOUT_1K_LIMIT_MS,
  },
  { id: '3', name: 'idle', run: idle, limitMs: IDLE_LIMIT_MS },
  { id: '3s', name: 'idle-scaleout', run: idleScaleout },
  { id: '4', name: 'publish', run: publishThroughput },
  { id: '5', name: 'replay', run: replay },
  { id: '6', name: 'push', run: pushThroughput },
  { id: '7', name: 'targeted', run: targeted },
  { id: '8', name: 'startup-memory', run: startupMemory, limitMs: STARTUP_MEMORY_LIMIT_MS },
  { id: '9', name: 'preferences', run: preferences, limitMs: PREFERENCES_LIMIT_MS },
  { id: '10', name: 'recipients', run: recipientsCost },
  { id: '11', name: 'directory', run: directoryImport },
  {
    id: '12',
    name: 'live',
    run: (ctx, scope) =>
      liveVersusStored(
        ctx,
        scope,
        ctx.quick
          ? { streams: 500, events: 10, sequential: 5, rounds: 2 }
          : { streams: 10_000, events: 50, sequential: 10, rounds: 3 },
      ),
    limitMs: LIVE_LIMIT_MS,
  },
  { id: '13', name: 'stats', run: statsCost, limitMs: STATS_LIMIT_MS },
  {
    id: '14',
    name: 'reconnect-storm',
    run: (ctx, scope) =>
      reconnectStorm(
        ctx,
        scope,
        ctx.quick
          ? { streams: [200, 1_000], missed: 20, rounds: 2, reconnectConcurrency: 500 }
          : { streams: [1_000, 10_000], missed: 20, rounds: 3, reconnectConcurrency: 500 },
      ),
    limitMs: RECONNECT_STORM_LIMIT_MS,
  },
  { id: '15', name: 'big-log', run: bigLog, limitMs: BIG_LOG_LIMIT_MS },
]

const { values } = parseArgs({
  options: {
    only: { type: 'string' },
    quick: { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    'service-node-flags': { type: 'string' },
    'no-nchan': { type: 'boolean', default: false },
    'nchan-workers': { type: 'string', default: '1' },
    workers: { type: 'string', default: '1' },
    'push-concurrency': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
})

if (values.help) {
  console.log(`npm run bench [-- --only 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15] [--quick] [--cpu-prof] [--no-nchan] [--nchan-workers 1|2|auto] [--workers N]
  --only           scenarios to run, by number or name: 1 fanout-10k, 2 fanout-1k, 3 idle (and 3s idle-scaleout),
                   4 publish, 5 replay, 6 push, 7 targeted, 8 startup-memory, 9 preferences,
                   10 recipients, 11 directory, 12 live, 13 stats (PostgreSQL only; BENCH_STATS_EVENTS=n for another size),
                   14 reconnect-storm, 15 big-log (PostgreSQL only; BENCH_BIG_LOG_EVENTS=n for another size)
  --quick          small sizes and short durations: checks the harness, measures nothing
  --cpu-prof       write a V8 CPU profile of the service under test (one per scenario) to a temp directory
  --service-node-flags="F ..."  node flags for the service under test (a diagnostic: --service-node-flags=--max-semi-space-size=4)
  --no-nchan       leave out the nginx + Nchan reference (scenarios 1, 2, 3)
  --nchan-workers  nginx worker_processes for Nchan: 1 (default, against our one process), a count (2), or auto (one per CPU)
  --workers N      WORKERS=N for the service under test (default 1; above 1 needs DATABASE_URL: node:cluster, one
                   port); its CPU and RSS are the primary's and the workers' added up
  --push-concurrency N  scenario 6 with PUSH_CONCURRENCY=N (a diagnostic; default: the service's own default)
DATABASE_URL set: the service runs on that PostgreSQL database; unset: embedded PGlite in a temp directory.
idle-scaleout (3 instances on one database) runs only with DATABASE_URL.`)
  process.exit(0)
}

const log = (message: string) => process.stderr.write(`${message}\n`)

async function main() {
  // The service runs as `npm start` runs it, from dist/: built from the sources as they are now.
  execFileSync(process.execPath, ['scripts/build.mjs'], { stdio: 'inherit' })
  const limits = fileLimits()
  const profileDir = values['cpu-prof'] ? mkdtempSync(join(tmpdir(), 'herald-bench-prof-')) : undefined
  const nchanWorkers = values['nchan-workers']
  if (nchanWorkers !== 'auto' && !/^[1-9]\d*$/.test(nchanWorkers)) throw new Error('--nchan-workers is a count or auto')
  const serviceWorkers = values.workers
  if (!/^[1-9]\d*$/.test(serviceWorkers)) throw new Error('--workers is a count (1, 2, ...)')
  if (serviceWorkers !== '1' && !process.env.DATABASE_URL) throw new Error('--workers above 1 needs DATABASE_URL')
  const ctx: BenchContext = {
    backend: process.env.DATABASE_URL ? 'postgres' : 'pglite',
    secret: randomBytes(48).toString('base64url'),
    // Node raises its soft limit to the hard one at start, so the hard limit is what a worker gets.
    streamsPerWorker: Math.min(MAX_STREAMS_PER_WORKER, limits.hard - 1_000),
    quick: values.quick,
    serviceNodeFlags: [
      ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
      ...(values['service-node-flags']?.split(' ').filter(Boolean) ?? []),
    ],
    nchanMissing: values['no-nchan'] ? '--no-nchan' : nchanMissing(),
    nchanWorkers: nchanWorkers as NchanWorkers,
    serviceWorkers,
    pushConcurrency: values['push-concurrency'] ? Number(values['push-concurrency']) : undefined,
    log,
  }
  const only = values.only?.split(',').map((s) => s.trim())
  // `3` runs both halves of scenario 3 (one process; several instances).
  const chosen = SCENARIOS.filter(
    (s) => !only || only.includes(s.id) || only.includes(s.name) || only.includes(s.id.replace(/\D+$/, '')),
  )
  log(
    `herald bench: node ${process.version}, ${cpus().length} CPUs, open files soft ${limits.soft} hard ${limits.hard}` +
      ` (${ctx.streamsPerWorker} streams per generator process), backend ${ctx.backend}` +
      `, service WORKERS=${ctx.serviceWorkers}` +
      (ctx.quick ? ', QUICK (not a measurement)' : '') +
      (ctx.nchanMissing ? `; nchan: not measured (${ctx.nchanMissing})` : `; nchan: ${ctx.nchanWorkers} worker(s)`),
  )

  const machine = { node: process.version, cpus: cpus().length, openFiles: limits }
  const rows: Row[] = []
  for (const scenario of chosen) {
    const result = await withinLimit(scenario, ctx, { ...machine, serviceWorkers: Number(ctx.serviceWorkers) })
    console.log(JSON.stringify(result.line))
    rows.push(...result.rows)
  }
  console.log(`\n${table(rows, ctx)}`)
  if (profileDir) log(`CPU profiles of the service: ${profileDir}`)
}

/** Runs a scenario with its hard time limit; whatever happens, its processes are gone afterwards. */
async function withinLimit(scenario: Scenario, ctx: BenchContext, machine: object): Promise<ScenarioResult> {
  const scope = new Scope()
  // Other work on the machine skews everything: recorded with each result so a noisy run shows as such.
  const load = Math.round(loadavg()[0] * 100) / 100
  const started = Date.now()
  const machineNow = () => ({
    ...machine,
    loadAvg1mAtStart: load,
    elapsedSec: Math.round((Date.now() - started) / 100) / 10,
  })
  if (load > cpus().length) log(`${scenario.name}: load average ${load} on ${cpus().length} CPUs: expect noise`)
  let timer: NodeJS.Timeout | undefined
  const limitMs = scenario.limitMs ?? SCENARIO_LIMIT_MS
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      scope.aborted = true
      reject(new Error(`time limit of ${limitMs / 1000} s reached`))
    }, limitMs)
  })
  try {
    const result = await Promise.race([scenario.run(ctx, scope), limit])
    result.line.machine = machineNow()
    return result
  } catch (err) {
    log(`${scenario.name} failed: ${(err as Error).stack ?? err}`)
    return {
      line: {
        scenario: scenario.name,
        backend: ctx.backend,
        error: (err as Error).message,
        machine: machineNow(),
      },
      rows: [[scenario.name, 'error', (err as Error).message.split('\n')[0], null, null]],
    }
  } finally {
    clearTimeout(timer)
    scope.aborted = true
    await scope.cleanup()
  }
}

function table(rows: Row[], ctx: BenchContext): string {
  const show = (v: Row[number]) =>
    v === null || v === undefined
      ? '-'
      : typeof v === 'number'
        ? v.toLocaleString('en-US', { maximumFractionDigits: 2 })
        : v
  // Nchan's columns only when some scenario measured it; the stack floor's only when some scenario measured that.
  const withFloor = rows.some((r) => r.length > 7)
  const withNchan = withFloor || rows.some((r) => r.length > 5)
  const workers = ctx.serviceWorkers === '1' ? '' : `, ${ctx.serviceWorkers} workers`
  const header = ['scenario', 'figure', `herald (${ctx.backend}${workers})`, 'raw node', 'ratio']
  if (withNchan) header.push(referenceLabel('nchan', ctx.nchanWorkers), 'ratio')
  if (withFloor) header.push(referenceLabel('stackFloor', ctx.nchanWorkers), 'ratio')
  const cells = [header, ...rows.map((r) => header.map((_, i) => show(r[i])))]
  const widths = header.map((_, i) => Math.max(...cells.map((c) => c[i].length)))
  const line = (c: string[]) => c.map((s, i) => (i < 2 ? s.padEnd(widths[i]) : s.padStart(widths[i]))).join('  ')
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n')
}

// Ctrl-C or a crash: kill the children we started (by their pids), nothing else.
process.on('SIGINT', () => {
  killChildren()
  process.exit(130)
})
process.on('exit', killChildren)

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
