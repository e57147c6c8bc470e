import { afterAll, beforeAll, expect, it } from 'vitest'
import { buildApp } from '../src/app.ts'
import { openDatabase } from '../src/db/client.ts'
import { runMigrations } from '../src/db/migrate.ts'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, TEST_JWT_SECRET, testConfig } from './helpers/app.ts'
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'
import { TcpProxy } from './helpers/tcp-proxy.ts'

describePostgres('when PostgreSQL cannot be reached', () => {
  let dbUrl: string
  let proxy: TcpProxy
  let app: Awaited<ReturnType<typeof buildApp>>
  let url: string
  const token = (sub: string, scope = '') => mintToken(TEST_JWT_SECRET, { sub, tenant: 'school', scope })
  const publish = (title: string) =>
    fetch(`${url}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token('office', PUBLISHER)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'school.notice', to: { users: ['lea'] }, title }),
    })

  beforeAll(async () => {
    dbUrl = await createPostgresDatabase()
    const target = new URL(dbUrl)
    proxy = new TcpProxy(target.hostname, Number(target.port || 5432))
    await proxy.start()
    const database = await openDatabase({ url: proxy.urlFor(dbUrl), poolSize: 4 })
    await runMigrations(database)
    app = await buildApp(testConfig({ LOG_POLL_MS: 200 }), database)
    await app.listen({ port: 0, host: '127.0.0.1' })
    url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  })

  afterAll(async () => {
    await proxy.start().catch(() => {})
    await app?.close()
    if (dbUrl) await dropPostgresDatabase(dbUrl)
  })

  it('answers 503 with Retry-After (never 500), says not ready, and recovers by itself when it is back', async () => {
    const stream = await SseClient.open(url, { token: token('lea') })
    const first = await publish('before')
    expect(first.status).toBe(201)
    const before = ((await first.json()) as { id: string; detail?: string }).id
    await stream.waitForNotifications(1)

    await proxy.cut()
    const during = await Promise.all([publish('during 1'), publish('during 2'), publish('during 3')])
    for (const res of during) {
      expect(res.status).toBe(503)
      expect(res.headers.get('retry-after')).toBeTruthy()
      expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/)
    }
    const ready = await fetch(`${url}/ready`)
    expect(ready.status).toBe(503)
    expect((await fetch(`${url}/health`)).status).toBe(200)
    const refusedStream = await SseClient.open(url, { token: token('max') })
    expect(refusedStream.status).toBe(503)

    await proxy.start()
    // No restart: the pool reconnects on its own.
    await expect.poll(async () => (await fetch(`${url}/ready`)).status, { timeout: 15_000, interval: 250 }).toBe(200)
    const after = await publish('after')
    expect(after.status).toBe(201)
    const afterId = ((await after.json()) as { id: string }).id

    // The open stream either stayed open or ended cleanly; resuming it gets exactly what was accepted.
    const resumed = stream.ended ? await SseClient.open(url, { token: token('lea'), lastEventId: before }) : stream
    await resumed.waitFor((c) => c.notificationIds.includes(afterId), 15_000)
    const seen = stream === resumed ? stream.notificationIds : [...stream.notificationIds, ...resumed.notificationIds]
    expect(seen).toEqual([before, afterId])
    resumed.close()
    stream.close()
  })
})
