// nginx with the Nchan module, the second reference: started from bench/nchan.conf in a temp prefix of its own,
// on a free loopback port, in the foreground (`daemon off`), and stopped by its master's pid.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sparePort } from '../test/helpers/pg-cluster.ts'
import { cpuMsOf, ROOT, type RunningServer, rssKiBOf, spawnTracked, stopChild } from './processes.ts'
import type { Scope } from './scenarios/common.ts'

const NGINX = '/usr/sbin/nginx'
const NCHAN_MODULE = '/usr/lib/nginx/modules/ngx_nchan_module.so'
const START_TIMEOUT_MS = 10_000
const STOP_GRACE_MS = 5_000

/** nginx `worker_processes`: a count (`1` against the service's single process, `2`, ...) or `auto` (one per CPU). */
export type NchanWorkers = string

/** How the table and the logs name Nchan's worker setting. */
export const nchanWorkersLabel = (workers: NchanWorkers) =>
  workers === 'auto' ? 'auto workers' : `${workers} worker${workers === '1' ? '' : 's'}`

/** Why Nchan cannot run here, or undefined when it can. */
export function nchanMissing(): string | undefined {
  if (!existsSync(NGINX)) return `${NGINX} not found (apt-get install -y nginx libnginx-mod-nchan)`
  if (!existsSync(NCHAN_MODULE)) return `${NCHAN_MODULE} not found (apt-get install -y libnginx-mod-nchan)`
  return undefined
}

function workersOf(master: number): number[] {
  try {
    return readFileSync(`/proc/${master}/task/${master}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
  } catch {
    return []
  }
}

const get = (port: number, path: string) =>
  new Promise<number>((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      .on('error', () => resolve(0))
  })

/** Starts nginx + Nchan; its figures (RSS, CPU) are the master's and the workers' added up. */
export async function startNchan(workers: NchanWorkers, scope: Scope): Promise<RunningServer> {
  const prefix = mkdtempSync(join(tmpdir(), 'herald-bench-nchan-'))
  scope.defer(() => rmSync(prefix, { recursive: true, force: true }))
  const port = await sparePort()
  const conf = readFileSync(join(ROOT, 'bench/nchan.conf'), 'utf8')
    .replaceAll('{{MODULE}}', NCHAN_MODULE)
    .replaceAll('{{WORKERS}}', workers)
    .replaceAll('{{PREFIX}}', prefix)
    .replaceAll('{{PORT}}', String(port))
  const confFile = join(prefix, 'nginx.conf')
  writeFileSync(confFile, conf)
  const proc = spawnTracked(NGINX, ['-p', prefix, '-c', confFile])
  let output = ''
  proc.stdout?.on('data', (d: Buffer) => (output += d))
  proc.stderr?.on('data', (d: Buffer) => (output += d))
  const stop = async () => {
    const pids = workersOf(proc.pid!)
    // SIGTERM is nginx's fast shutdown: open streams are cut, not waited for.
    await stopChild(proc, STOP_GRACE_MS)
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // Already gone with its master, as it should be.
      }
    }
  }
  scope.defer(stop)

  const deadline = Date.now() + START_TIMEOUT_MS
  while ((await get(port, '/health')) !== 200) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      const log = existsSync(join(prefix, 'error.log')) ? readFileSync(join(prefix, 'error.log'), 'utf8') : ''
      await stop()
      throw new Error(`nginx + Nchan did not start (exit ${proc.exitCode}):\n${output}${log}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  const all = () => [proc.pid!, ...workersOf(proc.pid!)]
  const sum = (f: (pid: number) => number) => all().reduce((n, pid) => n + f(pid), 0)
  return {
    name: `nchan (${nchanWorkersLabel(workers)})`,
    host: '127.0.0.1',
    port,
    pid: proc.pid!,
    storage: undefined,
    rssKiB: () => sum(rssKiBOf),
    rssMiB: () => Math.round(sum(rssKiBOf) / 1024),
    cpuMs: () => sum(cpuMsOf),
    stop,
  }
}
