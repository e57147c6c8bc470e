import { execFileSync } from 'node:child_process'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.ts'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, TEST_JWT_SECRET } from './helpers/app.ts'
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from './helpers/backends.ts'
import { sparePort } from './helpers/pg-cluster.ts'
import { type Child, runTs } from './helpers/process.ts'
import { SseClient } from './helpers/sse.ts'

const token = (sub: string, extra: Record<string, unknown> = {}) =>
  mintToken(TEST_JWT_SECRET, { sub, tenant: 'school', ...extra })
const teacher = token('teacher', { scope: PUBLISHER })

/** The pids of a process's workers: its children that run node (tsx also starts an esbuild child), from ps. */
function childrenOf(pid: number): number[] {
  const out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(pid)], { encoding: 'utf8' })
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter(([, command]) => command === process.execPath)
    .map(([child]) => Number(child))
}

/** The pids of the processes with a socket listening on `port` (`ss`, from iproute2), one entry per socket. */
function listenersOn(port: number): number[] {
  const out = execFileSync('ss', ['-Hltnp', `sport = :${port}`], { encoding: 'utf8' })
  return [...out.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1]))
}

/** One sample of /metrics, by its name as written there. */
async function metricOf(url: string, sample: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `))
  if (!line) throw new Error(`no ${sample} in /metrics`)
  return Number(line.slice(sample.length + 1))
}

describe('WORKERS', () => {
  it('defaults to one per core with DATABASE_URL and to 1 on the embedded database; more than 1 there is refused', () => {
    expect(loadConfig({}).workers).toBe(1)
    expect(loadConfig({ DATABASE_URL: 'postgres://db/herald' }).workers).toBeGreaterThanOrEqual(1)
    expect(loadConfig({ DATABASE_URL: 'postgres://db/herald', WORKERS: '3' }).workers).toBe(3)
    expect(() => loadConfig({ WORKERS: '2' })).toThrow(/WORKERS=2 needs DATABASE_URL/)
    expect(() => loadConfig({ WORKERS: 'many' })).toThrow(/WORKERS/)
    expect(() => loadConfig({ DATABASE_URL: 'postgres://db/herald', WORKERS: '0' })).toThrow(/WORKERS/)
  })
})

/** Workers listen on sockets of their own on Linux only; who listens is read with Linux's `ss`. */
const LINUX = process.platform === 'linux'

/**
 * With a port set (on Linux), each worker listens on it with a socket of its own and the kernel spreads the
 * connections; with PORT=0 the primary holds the one socket and hands each connection to a worker.
 */
for (const sharing of LINUX
  ? (['sockets of their own', 'the primary hands connections'] as const)
  : (['the primary hands connections'] as const)) {
  describePostgres(`WORKERS=2: one service, one port, two worker processes (${sharing})`, () => {
    let dbUrl: string
    let service: Child
    let url: string
    let port: number

    beforeAll(async () => {
      dbUrl = await createPostgresDatabase()
      service = runTs('src/server.ts', [], {
        DATABASE_URL: dbUrl,
        JWT_SECRET: TEST_JWT_SECRET,
        PORT: sharing === 'sockets of their own' ? String(await sparePort()) : '0',
        HOST: '127.0.0.1',
        DB_POOL_SIZE: '4',
        WORKERS: '2',
      })
      ;[, url] = await service.waitForOutput(/listening on (http:\/\/\S+)/, 60_000)
      port = Number(new URL(url).port)
    }, 90_000)

    afterAll(async () => {
      if (service && service.proc.exitCode === null) {
        for (const pid of childrenOf(service.proc.pid as number)) process.kill(pid, 'SIGKILL')
        service.proc.kill('SIGKILL')
        await service.exited
      }
      if (dbUrl) await dropPostgresDatabase(dbUrl)
    })

    it('says once that it listens, with its two workers, which are its children', () => {
      expect(service.stdout.match(/listening on/g)).toHaveLength(1)
      expect(service.stdout).toMatch(/PostgreSQL; 2 workers\)/)
      expect(childrenOf(service.proc.pid as number)).toHaveLength(2)
    })

    it.runIf(LINUX)(
      `listens on the port through ${sharing === 'sockets of their own' ? "each worker's own socket" : "the primary's one socket"}`,
      () => {
        const primary = service.proc.pid as number
        const workers = childrenOf(primary)
        if (sharing === 'sockets of their own') expect(listenersOn(port).sort()).toEqual([...workers].sort())
        else expect(listenersOn(port)).toEqual([primary])
      },
    )

    it('shares streams between the workers; each gets events published on either, and /metrics counts all of them', async () => {
      // 24: the kernel spreads connections by their addresses, so 8 would all land on one worker now and then (1 in 128).
      const users = Array.from({ length: 24 }, (_, i) => `pupil-${i}`)
      const streams = await Promise.all(users.map((u) => SseClient.open(url, { token: token(u) })))
      // Both workers hold some of them.
      const sql = postgres(dbUrl, { max: 1 })
      try {
        await expect
          .poll(async () => (await sql`select count(distinct instance_id)::int as n from stream_presence`)[0].n, {
            timeout: 10_000,
          })
          .toBe(2)
      } finally {
        await sql.end()
      }
      // Whichever worker answers a scrape, it answers for the whole service.
      for (let i = 0; i < 6; i++) expect(await metricOf(url, 'herald_open_streams')).toBe(24)

      const res = await fetch(`${url}/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${teacher}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'school.closing', to: { users }, title: 'Closing at noon' }),
      })
      expect(res.status).toBe(201)
      const { id } = (await res.json()) as { id: string }
      await Promise.all(streams.map((s) => s.waitForNotifications(1)))
      for (const s of streams) expect(s.notificationIds).toEqual([id])
      for (const s of streams) s.close()
    })

    if (sharing === 'sockets of their own')
      it('a second service started on the same port refuses to start (EADDRINUSE) instead of taking a share of its connections', async () => {
        const second = runTs('src/server.ts', [], {
          DATABASE_URL: dbUrl,
          JWT_SECRET: TEST_JWT_SECRET,
          PORT: String(port),
          HOST: '127.0.0.1',
          WORKERS: '2',
        })
        try {
          const exit = await Promise.race([second.exited, new Promise((resolve) => setTimeout(resolve, 15_000))])
          expect(exit, second.stderr).toEqual({ code: 1, signal: null })
          expect(second.stderr).toMatch(/EADDRINUSE/)
          expect(listenersOn(port).sort()).toEqual(childrenOf(service.proc.pid as number).sort())
        } finally {
          // Still running (it started after all): its workers go with it, or they would share the port on.
          if (second.proc.exitCode === null) {
            for (const pid of childrenOf(second.proc.pid as number)) process.kill(pid, 'SIGKILL')
            second.proc.kill('SIGKILL')
          }
        }
      }, 30_000)

    it('starts another worker when one dies, and keeps serving meanwhile', async () => {
      const primary = service.proc.pid as number
      const [victim] = childrenOf(primary)
      process.kill(victim, 'SIGKILL')
      await service.waitForOutput(new RegExp(`worker ${victim} ended \\(SIGKILL\\); starting another`), 10_000)
      for (let i = 0; i < 4; i++) expect((await fetch(`${url}/health`)).status).toBe(200)
      await expect.poll(() => childrenOf(primary).filter((pid) => pid !== victim).length, { timeout: 20_000 }).toBe(2)
      // The new worker listens too, once it has started (its own socket, or the primary's still).
      const expected = sharing === 'sockets of their own' ? childrenOf(primary).sort() : [primary]
      if (LINUX) await expect.poll(() => listenersOn(port).sort(), { timeout: 30_000 }).toEqual(expected)
      for (let i = 0; i < 4; i++) expect((await fetch(`${url}/health`)).status).toBe(200)
    })

    it('SIGTERM drains every worker: streams end, and the service exits 0 with no worker left', async () => {
      const primary = service.proc.pid as number
      // A stream on each worker, very likely: both must end.
      const streams = await Promise.all([0, 1, 2, 3].map((i) => SseClient.open(url, { token: token(`late-${i}`) })))
      const workers = childrenOf(primary)
      service.proc.kill('SIGTERM')
      await Promise.all(streams.map((s) => s.waitForEnd(15_000)))
      expect(await service.exited, service.stdout + service.stderr).toEqual({ code: 0, signal: null })
      for (const pid of workers) expect(() => process.kill(pid, 0)).toThrow()
    })
  })
}
