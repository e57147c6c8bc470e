import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest'
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from './helpers/backends.ts'
import { type Child, ROOT, runToEnd, runTs } from './helpers/process.ts'
import { TcpProxy } from './helpers/tcp-proxy.ts'

// Starting the service the way operators do: one process per embedded data folder, and a PostgreSQL that may
// come up after the service (compose, systemd) or not at all.

// Each test starts the server (PGlite's first start runs initdb) once or twice, on a machine that may be busy.
vi.setConfig({ testTimeout: 240_000 })

const dirs: string[] = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})
function dataDir() {
  const dir = mkdtempSync(join(tmpdir(), 'herald-startup-'))
  dirs.push(dir)
  return dir
}

/** `npm start` on embedded PGlite in `dir`, on a free port of 127.0.0.1. */
async function startServer(dir: string): Promise<{ child: Child; url: string }> {
  const child = runTs('src/server.ts', [], { DATA_DIR: dir, PORT: '0', HOST: '127.0.0.1', DATABASE_URL: '' })
  onTestFinished(() => {
    child.proc.kill('SIGKILL')
  })
  const [, url] = await child.waitForOutput(/listening on (http:\/\/\S+)/, 90_000)
  return { child, url }
}

async function stop(child: Child) {
  child.proc.kill('SIGTERM')
  expect((await child.exited).code).toBe(0)
}

describe('the embedded data folder belongs to one process', () => {
  it('a second server on the same DATA_DIR exits 78 naming the folder and its holder; the first serves on', async () => {
    const dir = dataDir()
    const first = await startServer(dir)
    const second = runTs('src/server.ts', [], { DATA_DIR: dir, PORT: '0', HOST: '127.0.0.1', DATABASE_URL: '' })
    onTestFinished(() => {
      second.proc.kill('SIGKILL')
    })
    const { code } = await second.exited
    expect(code).toBe(78)
    expect(second.stderr).toContain(join(dir, 'pglite'))
    expect(second.stderr).toContain(`pid ${first.child.proc.pid}`)
    expect(second.stderr).not.toMatch(/\n\s+at /) // a sentence, not a stack trace
    expect(second.stdout).not.toMatch(/listening on/)
    expect((await fetch(`${first.url}/ready`)).status).toBe(200)
    await stop(first.child)
  })

  it('herald prune and migrate refuse (78) while a server holds the folder, and work once it has stopped', async () => {
    const dir = dataDir()
    const server = await startServer(dir)
    for (const command of ['prune', 'migrate']) {
      const refused = await runToEnd('src/cli.ts', [command], { DATA_DIR: dir, DATABASE_URL: '' })
      expect(refused.code, refused.stderr).toBe(78)
      expect(refused.stderr).toMatch(/in use by the server/)
    }
    await stop(server.child)
    const pruned = await runToEnd('src/cli.ts', ['prune'], { DATA_DIR: dir, DATABASE_URL: '' })
    expect(pruned.code, pruned.stderr).toBe(0)
    expect(JSON.parse(pruned.stdout)).toHaveProperty('pruned')
  })

  it('after kill -9 of the server, the next one starts on the same folder at once, with what was published', async () => {
    const dir = dataDir()
    const first = await startServer(dir)
    const token = (
      await runToEnd('src/cli.ts', ['token', '--sub', 'kim', '--tenant', 'demo', '--scope', 'events:publish'], {
        DATA_DIR: dir,
      })
    ).stdout.trim()
    const res = await fetch(`${first.url}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'school.closing', to: { users: ['kim'] }, title: 'Closing at noon' }),
    })
    expect(res.status).toBe(201)
    const { id } = (await res.json()) as { id: string }
    first.child.proc.kill('SIGKILL')
    await first.child.exited

    const started = Date.now()
    const next = await startServer(dir)
    expect(Date.now() - started).toBeLessThan(120_000) // not waiting out the stale-lock period (5 min)
    const got = await fetch(`${next.url}/v1/events/${id}`, { headers: { authorization: `Bearer ${token}` } })
    expect(got.status).toBe(200)
    await stop(next.child)
  })
})

describe('npm start', () => {
  beforeAll(async () => {
    // `npm start` runs the compiled service: compile the sources under test (npm install does it too).
    const built = spawnSync('npm', ['run', '-s', 'build'], { cwd: ROOT, encoding: 'utf8' })
    expect(built.status, built.stdout + built.stderr).toBe(0)
  }, 240_000)

  it('SIGTERM to the npm process itself reaches the server: it drains and exits 0, freeing its port and data folder', async () => {
    const dir = dataDir()
    const npm = spawn('npm', ['start'], {
      cwd: ROOT,
      env: { ...process.env, DATA_DIR: dir, PORT: '0', HOST: '127.0.0.1', DATABASE_URL: '', LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    onTestFinished(() => {
      npm.kill('SIGKILL')
    })
    let output = ''
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`npm start did not listen:\n${output}`)), 120_000)
      for (const stream of [npm.stdout, npm.stderr]) {
        stream.setEncoding('utf8').on('data', (d: string) => {
          output += d
          const m = /listening on (http:\/\/\S+)/.exec(output)
          if (m) {
            clearTimeout(timer)
            resolve(m[1])
          }
        })
      }
    })
    expect((await fetch(`${url}/health`)).status).toBe(200)
    const exited = new Promise<void>((resolve) => npm.on('exit', () => resolve()))
    npm.kill('SIGTERM')
    await exited // npm ends itself by the same signal once its child has gone
    await expect(fetch(`${url}/health`)).rejects.toThrow()
    // The server shut down cleanly, not just died: it closed the database and gave its lock back.
    expect(existsSync(join(dir, 'pglite.lock'))).toBe(false)
    const pruned = await runToEnd('src/cli.ts', ['prune'], { DATA_DIR: dir, DATABASE_URL: '' })
    expect(pruned.code, pruned.stderr).toBe(0)
  })
})

describePostgres('starting while PostgreSQL is down', () => {
  it('retries with one clear line per attempt, then exits 78 naming the host after DB_CONNECT_TIMEOUT_S', async () => {
    const closed = new TcpProxy('127.0.0.1', 9)
    await closed.start()
    const port = closed.port
    await closed.cut() // nothing listens on `port` now
    const child = runTs('src/server.ts', [], {
      DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/herald`,
      DB_CONNECT_TIMEOUT_S: '2',
      JWT_SECRET: 'a-secret-that-is-at-least-32-characters-long',
      PORT: '0',
      HOST: '127.0.0.1',
    })
    onTestFinished(() => {
      child.proc.kill('SIGKILL')
    })
    const { code } = await child.exited
    expect(code).toBe(78)
    expect(child.stderr).toMatch(
      new RegExp(`PostgreSQL at 127\\.0\\.0\\.1:${port}/herald is not reachable yet \\(ECONNREFUSED`),
    )
    expect(child.stderr).toMatch(/attempt 1, retrying in 0\.5 s/)
    expect(child.stderr).toMatch(/could not be reached within 2 s/)
    expect(child.stderr).not.toMatch(/\n\s+at /)
  })

  it('waits for a PostgreSQL that comes up after the service, then serves', async () => {
    const url = await createPostgresDatabase()
    onTestFinished(() => dropPostgresDatabase(url))
    const target = new URL(url)
    const proxy = new TcpProxy(target.hostname, Number(target.port || 5432))
    await proxy.start()
    await proxy.cut() // the database is "not up yet"
    const child = runTs('src/server.ts', [], {
      DATABASE_URL: proxy.urlFor(url),
      JWT_SECRET: 'a-secret-that-is-at-least-32-characters-long',
      PORT: '0',
      HOST: '127.0.0.1',
    })
    onTestFinished(async () => {
      child.proc.kill('SIGKILL')
      await proxy.cut()
    })
    await child.waitForOutput(/attempt 2, retrying/)
    await proxy.start() // the same port: the database is up
    const [, served] = await child.waitForOutput(/listening on (http:\/\/\S+)/)
    expect(child.stderr).toMatch(/answered \(attempt \d+\)/)
    expect((await fetch(`${served}/ready`)).status).toBe(200)
    child.proc.kill('SIGTERM')
    expect((await child.exited).code).toBe(0)
  })
})
