import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import postgres from 'postgres'
import { expect, it, onTestFinished, vi } from 'vitest'
import { PUBLISHER, TEST_JWT_SECRET } from './helpers/app.ts'
import {
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import { type Child, runTs } from './helpers/process.ts'
import {
  appConfig,
  attemptsAt,
  bearer,
  client,
  listenApp,
  payloadOf,
  pushesOf,
  reopenableDatabase,
  service,
  token,
  until,
  usePushService,
  waitForPush,
} from './helpers/push-fixtures.ts'

// SPEC section 6 (Web Push), with the ack/read/status routes of section 5 as the push path uses them.
// Every push goes through real HTTPS to a local push service that checks VAPID and decrypts like FCM would.
// Pushes across a graceful restart and across a crash (kill -9): each sent exactly once by the next server.

// Several waits of a few seconds each (retries, Retry-After, the high-priority timeout), on a machine that may be busy.
vi.setConfig({ testTimeout: 60_000 })

usePushService()

describeEachBackend('Web Push across a graceful restart', (backend) => {
  it('pushes claimed but not yet started are handed back uncounted on shutdown and sent once by the next server', async () => {
    const db = await reopenableDatabase(backend)
    onTestFinished(() => db.cleanup())
    const tenant = `restart-${backend}`
    const users = ['ann', 'ben', 'cat', 'dan']
    // Two slots, at most one per push service: the other three pushes wait in the dispatcher's queue.
    const config = appConfig({ PUSH_CONCURRENCY: '2' })

    const first = await listenApp(config, await db.open())
    let endpoints: string[]
    let id: string
    service.setDelay(1_500)
    try {
      const key = (await first.api.http().get('/v1/push/vapid-public-key')).body.publicKey as string
      endpoints = []
      for (const u of users) {
        const device = await first.api.register(
          token(u, tenant),
          service.createSubscription({ applicationServerKey: key }),
        )
        endpoints.push(device.endpoint)
      }
      id = await first.api.publish(token('publisher', tenant, PUBLISHER), { priority: 'urgent', to: { users } })
      await until(() => endpoints.some((e) => attemptsAt(e).length > 0), 'the first push to reach the push service')
    } finally {
      // Waits for the push in flight (1.5 s), then hands back the rest.
      await first.app.close()
      service.setDelay(0)
    }
    expect(endpoints.filter((e) => service.messagesFor(e).length === 1)).toHaveLength(1)

    const database = await db.open()
    const rows = await database.query<{ state: string; attempts: number; claimed_by: string | null }>(
      sql`select state, attempts, claimed_by from push_deliveries where event_id = ${id} order by state`,
    )
    expect(rows.map((r) => [r.state, Number(r.attempts), r.claimed_by])).toEqual([
      ['pending', 0, null],
      ['pending', 0, null],
      ['pending', 0, null],
      ['sent', 1, null],
    ])

    const second = await listenApp(config, database)
    try {
      for (const e of endpoints) await waitForPush(e, id)
      // A push reaches the push service before its answer is back and recorded: wait for the last outcome.
      await expect
        .poll(() => second.api.status(token('publisher', tenant, PUBLISHER), id), { timeout: 5_000 })
        .toMatchObject({ push: { sent: 4, failed: 0, pending: 0 } })
      expect(endpoints.map((e) => pushesOf(e, id).length)).toEqual([1, 1, 1, 1])
    } finally {
      await second.app.close()
    }
  })
})

describePostgres('Web Push across a server crash [postgres]', () => {
  it('a push pending its retry is delivered exactly once by the next server after kill -9', async () => {
    const url = await createPostgresDatabase()
    const dataDir = await mkdtemp(join(tmpdir(), 'herald-push-crash-'))
    const sql = postgres(url, { max: 1, onnotice: () => {} })
    const children: Child[] = []
    onTestFinished(async () => {
      for (const c of children) c.proc.kill('SIGKILL')
      await Promise.all(children.map((c) => c.exited))
      await sql.end()
      await dropPostgresDatabase(url)
      await rm(dataDir, { recursive: true, force: true })
    })
    const start = async () => {
      const child = runTs('src/server.ts', [], {
        DATABASE_URL: url,
        DATA_DIR: dataDir,
        JWT_SECRET: TEST_JWT_SECRET,
        PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
        NODE_EXTRA_CA_CERTS: service.caFile,
        PORT: '0',
        HOST: '127.0.0.1',
        // The first retry comes 4-8 s after a failure: time to kill the server in between.
        PUSH_RETRY_BASE_MS: '8000',
        VAPID_PUBLIC_KEY: '',
        VAPID_PRIVATE_KEY: '',
        LOG_LEVEL: 'warn',
      })
      children.push(child)
      const [, base] = await child.waitForOutput(/listening on (http:\/\/\S+)/)
      return { child, api: client(base) }
    }
    const tenant = 'crash'
    const publisher = token('publisher', tenant, PUBLISHER)

    const a = await start()
    const key = (await a.api.http().get('/v1/push/vapid-public-key')).body.publicKey as string
    const device = await a.api.register(
      token('alice', tenant),
      service.createSubscription({ applicationServerKey: key }),
    )
    service.failNext(1, { status: 503 })
    const id = await a.api.publish(publisher, { to: { users: ['alice'] } })
    await until(() => attemptsAt(device.endpoint).length >= 1, 'the first attempt')
    // Wait until the failure is recorded (retry planned, claim released), then crash the server.
    await until(async () => {
      const [row] = await sql`select state, last_status, claimed_by from push_deliveries where event_id = ${id}`
      return row && row.state === 'pending' && row.last_status === 503 && row.claimed_by === null
    }, 'the 503 to be recorded')
    a.child.proc.kill('SIGKILL')
    expect((await a.child.exited).signal).toBe('SIGKILL')
    const killedAt = Date.now()
    expect(service.messagesFor(device.endpoint)).toEqual([])

    const b = await start()
    expect((await b.api.http().get('/v1/push/vapid-public-key')).body.publicKey).toBe(key)
    const push = await waitForPush(device.endpoint, id, 40_000)
    expect(push.receivedAt).toBeGreaterThan(killedAt)
    expect(push.vapid.publicKey).toBe(key)
    // A push reaches the push service before its answer is back and recorded: wait for its outcome.
    await expect
      .poll(() => b.api.status(publisher, id), { timeout: 5_000 })
      .toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })

    // The ackToken signed before or after the restart is honoured by the new server.
    const ack = await b.api
      .http()
      .post(`/v1/events/${id}/ack`)
      .set(bearer(payloadOf(push).ackToken as string))
    expect(ack.status, ack.text).toBe(204)

    const later = await b.api.publish(publisher, { priority: 'urgent', to: { users: ['alice'] } })
    await waitForPush(device.endpoint, later)
    expect(pushesOf(device.endpoint, id)).toHaveLength(1)
    expect(attemptsAt(device.endpoint).map((x) => x.status)).toEqual([503, 201, 201])
  }, 120_000)
})
