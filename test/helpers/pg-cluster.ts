import { execFile, execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { chown, mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import postgres from 'postgres'

/**
 * A private PostgreSQL cluster that a test owns outright: its own data directory under a temp dir, its own
 * port on 127.0.0.1, trust auth, so the test can stop it (`pg_ctl stop -m fast`) and start it again to see
 * what the service does through a real database outage. Uses the distribution's binaries
 * (/usr/lib/postgresql/<version>/bin, or PG_BIN); as root they run as the `postgres` user.
 */

const execFileAsync = promisify(execFile)

/** The directory holding initdb and pg_ctl (newest version first), or undefined when there is none. */
export function findPgBin(): string | undefined {
  const candidates: string[] = []
  if (process.env.PG_BIN) candidates.push(process.env.PG_BIN)
  const base = '/usr/lib/postgresql'
  if (existsSync(base)) {
    const versions = readdirSync(base)
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => Number(b) - Number(a))
    for (const v of versions) candidates.push(path.join(base, v, 'bin'))
  }
  return candidates.find((dir) => existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl')))
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0

function postgresUserIds(): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim())
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim())
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined
  } catch {
    return undefined
  }
}

/** Why a private cluster cannot be made here, or undefined when it can. */
export function pgClusterUnavailable(): string | undefined {
  if (!findPgBin()) return 'PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin'
  if (isRoot() && !postgresUserIds()) return 'running as root and there is no `postgres` user to run initdb as'
  if (isRoot() && !['/usr/sbin/runuser', '/sbin/runuser', '/usr/bin/runuser'].some((f) => existsSync(f))) {
    return 'running as root and runuser is missing'
  }
  return undefined
}

/** A free TCP port on 127.0.0.1 (free when asked; the cluster takes it a moment later). */
export async function sparePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export interface PgCluster {
  port: number
  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database?: string): string
  /** Starts the server (waits until it accepts connections). */
  start(): Promise<void>
  /** `pg_ctl stop -m fast`: open sessions are terminated, their transactions rolled back; waits until down. */
  stop(): Promise<void>
  /** Creates an empty database and returns its URL. */
  createDatabase(name: string): Promise<string>
  /** The server's own log, for failure messages. */
  log(): string
  /** Stops it (immediate) and deletes the data directory. Safe to call twice. */
  destroy(): Promise<void>
}

export async function startPgCluster(): Promise<PgCluster> {
  const bin = findPgBin()
  if (!bin) throw new Error('PostgreSQL binaries not found')
  const root = await mkdtemp(path.join(os.tmpdir(), 'herald-pg-'))
  const data = path.join(root, 'data')
  const logFile = path.join(root, 'server.log')
  const asRoot = isRoot()
  if (asRoot) {
    const ids = postgresUserIds()
    if (!ids) throw new Error('no postgres user')
    await chown(root, ids.uid, ids.gid)
  }
  const port = await sparePort()

  /** Runs a PostgreSQL binary as the postgres user (as root) or as ourselves. */
  const run = async (tool: string, args: string[], timeoutMs = 60_000) => {
    const file = asRoot ? 'runuser' : path.join(bin, tool)
    const argv = asRoot ? ['-u', 'postgres', '--', path.join(bin, tool), ...args] : args
    try {
      return await execFileAsync(file, argv, { cwd: root, timeout: timeoutMs })
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string }
      throw new Error(`${tool} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`)
    }
  }
  const runSync = (tool: string, args: string[]) => {
    const file = asRoot ? 'runuser' : path.join(bin, tool)
    const argv = asRoot ? ['-u', 'postgres', '--', path.join(bin, tool), ...args] : args
    execFileSync(file, argv, { cwd: root, stdio: 'ignore', timeout: 30_000 })
  }

  await run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--no-sync'])
  // pg_ctl hands -o to the postmaster through a shell: one string.
  const serverOptions = [
    `-p ${port}`,
    '-c listen_addresses=127.0.0.1',
    `-c unix_socket_directories=${root}`,
    // A test database: durability across an OS crash is not what is under test (a clean stop is).
    '-c fsync=off',
    '-c full_page_writes=off',
    '-c max_connections=100',
  ].join(' ')

  let running = false
  let destroyed = false
  // If the test process dies without afterAll, do not leave a server behind.
  const onExit = () => {
    if (!running) return
    try {
      runSync('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop'])
    } catch {}
  }
  process.once('exit', onExit)

  const cluster: PgCluster = {
    port,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async start() {
      await run('pg_ctl', ['-D', data, '-l', logFile, '-o', serverOptions, '-w', '-t', '60', 'start'])
      running = true
    },
    async stop() {
      await run('pg_ctl', ['-D', data, '-m', 'fast', '-w', '-t', '60', 'stop'])
      running = false
    },
    async createDatabase(name) {
      const admin = postgres(cluster.url('postgres'), { max: 1, onnotice: () => {} })
      try {
        await admin.unsafe(`create database ${name}`)
      } finally {
        await admin.end()
      }
      return cluster.url(name)
    },
    log() {
      try {
        return readFileSync(logFile, 'utf8')
      } catch {
        return ''
      }
    },
    async destroy() {
      if (destroyed) return
      destroyed = true
      process.off('exit', onExit)
      if (running || existsSync(path.join(data, 'postmaster.pid'))) {
        await run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', '-t', '30', 'stop']).catch(() => {})
        running = false
      }
      await rm(root, { recursive: true, force: true })
    },
  }
  try {
    await cluster.start()
  } catch (err) {
    await cluster.destroy()
    throw err
  }
  return cluster
}
