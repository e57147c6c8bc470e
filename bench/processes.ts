import { type ChildProcess, fork, spawn, spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildSync } from 'esbuild'

export const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Every child this run started, so that a timeout or Ctrl-C kills exactly those and nothing else. */
const children = new Set<ChildProcess>()

function track(proc: ChildProcess): ChildProcess {
  children.add(proc)
  proc.once('exit', () => children.delete(proc))
  return proc
}

/** Spawns a program (nginx) tracked like every other child: killed by its pid at the time limit or Ctrl-C. */
export function spawnTracked(command: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  return track(spawn(command, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }))
}

/** Resident memory of a process now, KiB (from /proc); NaN once it is gone. */
export function rssKiBOf(pid: number): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/)
    return m ? Number(m[1]) : Number.NaN
  } catch {
    return Number.NaN
  }
}

/** SIGKILLs every child still running (by its own pid). */
export function killChildren(): void {
  for (const proc of children) if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
}

/** Clock ticks per second of /proc's CPU times (100 on Linux almost everywhere). */
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100

/**
 * CPU time a process has used so far (user + system), in ms, from /proc: the figure that other load on the
 * machine distorts least, unlike wall-clock rates. NaN once the process is gone.
 */
export function cpuMsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may hold spaces: state is field 3, utime 14.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
  } catch {
    return Number.NaN
  }
}

/**
 * A process and all its descendants (node:cluster workers, say), from /proc/<pid>/task/<tid>/children: a child
 * started by any thread counts. Just the pid when /proc says nothing more (or once it is gone).
 */
export function processTree(pid: number): number[] {
  const out = [pid]
  for (let i = 0; i < out.length; i++) {
    let tasks: string[] = []
    try {
      tasks = readdirSync(`/proc/${out[i]}/task`)
    } catch {
      continue
    }
    for (const tid of tasks) {
      try {
        for (const child of readFileSync(`/proc/${out[i]}/task/${tid}/children`, 'utf8').trim().split(/\s+/)) {
          if (child && !out.includes(Number(child))) out.push(Number(child))
        }
      } catch {
        // The thread ended meanwhile.
      }
    }
  }
  return out
}

/** CPU time (user + system, ms) of a process and its descendants now alive, added up; NaN once the root is gone. */
export function treeCpuMsOf(pid: number): number {
  const tree = processTree(pid)
  const root = cpuMsOf(pid)
  return tree.slice(1).reduce((n, p) => n + (cpuMsOf(p) || 0), root)
}

/** Resident memory of a process and its descendants now alive, KiB, added up; NaN once the root is gone. */
export function treeRssKiBOf(pid: number): number {
  const tree = processTree(pid)
  return tree.slice(1).reduce((n, p) => n + (rssKiBOf(p) || 0), rssKiBOf(pid))
}

/** The open-files limits of a process started here, as a shell reports them. */
export function fileLimits(): { soft: number; hard: number } {
  const out = spawnSync('sh', ['-c', 'ulimit -Sn; ulimit -Hn'], { encoding: 'utf8' }).stdout.trim().split('\n')
  const parse = (s: string | undefined) => (s === undefined || s === 'unlimited' ? Number.POSITIVE_INFINITY : Number(s))
  return { soft: parse(out[0]), hard: parse(out[1]) }
}

export interface RunningServer {
  name: string
  host: string
  port: number
  pid: number
  /** The storage the service says it started on ("embedded PGlite in ...", "PostgreSQL"), when it says. */
  storage: string | undefined
  /** Resident memory now, in MiB (from /proc). */
  rssMiB(): number
  /** Resident memory now, in KiB (from /proc; for nginx, master and workers added up). */
  rssKiB(): number
  /** CPU time used so far, ms (the process and its descendants alive now: cluster workers count). */
  cpuMs(): number
  /** SIGTERM, then SIGKILL if it has not exited within the grace period. */
  stop(graceMs?: number): Promise<void>
}

/**
 * The node flags `npm start` runs the service with (package.json's start script: `node <flags> dist/server.js`), so
 * that the bench measures the service as users run it.
 */
export const START_FLAGS: readonly string[] = (() => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }
  const m = /\bnode((?:\s+--\S+)*)\s+dist\/server\.js/.exec(pkg.scripts.start)
  if (!m) throw new Error(`package.json's start script does not run node dist/server.js: ${pkg.scripts.start}`)
  return m[1].split(/\s+/).filter(Boolean)
})()

/**
 * A TypeScript reference server (bench/*.ts) built to one JavaScript file, as the service is built to dist/: the
 * packages stay in node_modules, anything it takes from src/ is bundled in. Its path. Run through tsx, or through
 * Node's own type stripping (a WebAssembly compiler), a reference would hold tens of MB that the service does not.
 */
export function builtReference(entry: string): string {
  // Built once a run: scenario 8 starts each reference several times.
  const known = built.get(entry)
  if (known) return known
  const outfile = join(ROOT, 'node_modules/.cache/herald-bench', `${basename(entry, '.ts')}.mjs`)
  buildSync({
    absWorkingDir: ROOT,
    entryPoints: [entry],
    outfile,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node22.12',
    logLevel: 'warning',
  })
  built.set(entry, outfile)
  return outfile
}
const built = new Map<string, string>()

/** Long enough for PGlite to create its files and migrate on a busy machine. */
const START_TIMEOUT_MS = 60_000
/** The service exits within 10 s of SIGTERM by contract; a little more before we stop asking. */
const STOP_GRACE_MS = 12_000

/**
 * Runs an entry point with node itself (so signals reach it): a TypeScript reference (bench/*.ts) built first
 * (builtReference), the service's dist/ as it is. Waits for its "listening on http://host:port" line.
 */
export async function startServer(
  name: string,
  entry: string,
  env: Record<string, string>,
  nodeFlags: string[] = [],
): Promise<RunningServer> {
  const proc = track(
    spawn(process.execPath, [...nodeFlags, entry.endsWith('.ts') ? builtReference(entry) : entry], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  )
  let output = ''
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => fail(new Error(`${name}: no "listening on" line within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    )
    const fail = (err: Error) => {
      clearTimeout(timer)
      proc.kill('SIGKILL')
      reject(new Error(`${err.message}\n${output}`))
    }
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
    proc.once('exit', (code, signal) => fail(new Error(`${name} exited (${code ?? signal}) before listening`)))
  })
  // Keep draining its output (warnings) so a full pipe never blocks it; show it, it is rare and useful.
  proc.stdout?.removeAllListeners('data')
  proc.stderr?.removeAllListeners('data')
  proc.stdout?.on('data', (d: Buffer) => process.stderr.write(`[${name}] ${d}`))
  proc.stderr?.on('data', (d: Buffer) => process.stderr.write(`[${name}] ${d}`))

  const url = new URL(line.match(/http:\/\/\S+/)![0])
  const pid = proc.pid!
  return {
    name,
    host: url.hostname,
    port: Number(url.port),
    pid,
    storage: line.match(/[(;] ?(embedded PGlite|PostgreSQL)/)?.[1],
    // The whole process tree: with WORKERS > 1 the service is a primary and its node:cluster workers.
    rssMiB: () => Math.round(treeRssKiBOf(pid) / 1024),
    rssKiB: () => treeRssKiBOf(pid),
    cpuMs: () => treeCpuMsOf(pid),
    stop: (graceMs = STOP_GRACE_MS) => stopChild(proc, graceMs),
  }
}

export async function stopChild(proc: ChildProcess, graceMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  proc.kill('SIGTERM')
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

/** A forked TypeScript module with a request/reply channel over IPC (structured clone: typed arrays pass as such). */
export class Worker {
  private readonly proc: ChildProcess
  private seq = 0
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()

  constructor(entry: string) {
    this.proc = track(
      fork(fileURLToPath(new URL(entry, import.meta.url)), [], {
        cwd: ROOT,
        execArgv: ['--import', 'tsx'],
        serialization: 'advanced',
      }),
    )
    this.proc.on('message', (m: { seq: number; value: unknown }) => {
      this.waiting.get(m.seq)?.resolve(m.value)
      this.waiting.delete(m.seq)
    })
    this.proc.once('exit', (code, signal) => {
      for (const w of this.waiting.values()) w.reject(new Error(`worker exited (${code ?? signal})`))
      this.waiting.clear()
    })
  }

  get pid(): number {
    return this.proc.pid!
  }

  /** CPU time it has used so far, ms. */
  cpuMs(): number {
    return cpuMsOf(this.proc.pid!)
  }

  call<T>(cmd: string, fields: Record<string, unknown> = {}): Promise<T> {
    const seq = ++this.seq
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(seq, { resolve: resolve as (v: unknown) => void, reject })
      this.proc.send({ seq, cmd, ...fields })
    })
  }

  /** Asks it to close its sockets and exit; kills it if it does not within a few seconds. */
  async close(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return
    const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()))
    this.call('close').catch(() => {})
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(timer)
  }
}
