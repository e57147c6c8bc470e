import { afterAll, beforeAll, expect, it } from 'vitest'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, TEST_JWT_SECRET } from './helpers/app.ts'
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from './helpers/backends.ts'
import { type Child, runTs } from './helpers/process.ts'
import { type PushService, startPushService } from './helpers/push-service.ts'
import { SseClient } from './helpers/sse.ts'

/** Short presence TTL so a killed instance's users stop counting as online within seconds. */
const PRESENCE_TTL_S = 3
/** The instances' safety poll of the log, long enough that an event arriving sooner was brought by a wake-up. */
const LOG_POLL_MS = 5_000

/** MAX_CONNECTIONS_PER_USER of the instances that test it across instances. */
const STREAM_CAP = 3
/** The stream's `retry:`: an EventSource reconnects this long after its stream ends. */
const STREAM_RETRY_MS = 3_000
const EVICTED = 'herald_streams_closed_total{reason="evicted"}'
const OPEN_STREAMS = 'herald_open_streams'

interface Instance {
  name: string
  url: string
  child: Child
}

const token = (sub: string, extra: Record<string, unknown> = {}) =>
  mintToken(TEST_JWT_SECRET, { sub, tenant: 'school', ...extra })
const teacher = token('teacher', { scope: PUBLISHER })

async function publish(instance: Instance, body: object): Promise<string> {
  const res = await fetch(`${instance.url}/v1/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${teacher}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  expect(res.status).toBe(201)
  return ((await res.json()) as { id: string }).id
}

/** One sample of an instance's /metrics, by its name and labels as written there. */
async function metricOf(instance: Instance, sample: string): Promise<number> {
  const text = await (await fetch(`${instance.url}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `))
  if (!line) throw new Error(`no ${sample} in /metrics of ${instance.name}`)
  return Number(line.slice(sample.length + 1))
}

describePostgres('several instances on one PostgreSQL behave as one service', () => {
  let dbUrl: string
  let push: PushService
  const running: Instance[] = []

  async function startInstance(name: string, env: Record<string, string> = {}): Promise<Instance> {
    const child = runTs('src/server.ts', [], {
      DATABASE_URL: dbUrl,
      JWT_SECRET: TEST_JWT_SECRET,
      PORT: '0',
      HOST: '127.0.0.1',
      PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
      NODE_EXTRA_CA_CERTS: push.caFile,
      PRESENCE_TTL_S: String(PRESENCE_TTL_S),
      PUSH_RETRY_BASE_MS: '200',
      DB_POOL_SIZE: '5',
      LOG_POLL_MS: String(LOG_POLL_MS),
      ...env,
    })
    const [, url] = await child.waitForOutput(/listening on (http:\/\/\S+)/)
    const instance = { name, url, child }
    running.push(instance)
    return instance
  }

  async function registerDevice(instance: Instance, user: string) {
    const subscription = push.createSubscription()
    const res = await fetch(`${instance.url}/v1/push/subscriptions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token(user)}`, 'content-type': 'application/json' },
      body: JSON.stringify(subscription),
    })
    expect(res.status).toBe(201)
    return subscription
  }

  let a: Instance
  let b: Instance

  beforeAll(async () => {
    dbUrl = await createPostgresDatabase()
    push = await startPushService()
    a = await startInstance('A')
    b = await startInstance('B')
  }, 90_000)

  afterAll(async () => {
    for (const i of running) {
      i.child.proc.kill('SIGKILL')
      await i.child.exited
    }
    await push?.close()
    if (dbUrl) await dropPostgresDatabase(dbUrl)
  })

  it("an event published on A reaches a stream on B at once, and a read on A reaches the reader's stream on B", async () => {
    const stream = await SseClient.open(b.url, { token: token('ana') })
    const sent = Date.now()
    const id = await publish(a, { type: 'grade.posted', to: { users: ['ana'] }, title: 'Maths 18/20' })
    await stream.waitForNotifications(1)
    expect(stream.notificationIds).toEqual([id])
    // A woke B (NOTIFY with the publish's commit); B's own poll would have taken up to LOG_POLL_MS.
    expect(Date.now() - sent).toBeLessThan(LOG_POLL_MS / 2)

    const read = await fetch(`${a.url}/v1/events/${id}/read`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token('ana')}` },
    })
    expect(read.status).toBe(204)
    await stream.waitForEvent('receipt')
    expect(JSON.parse(stream.events.find((e) => e.event === 'receipt')?.data ?? '')).toEqual({
      ids: [id],
      state: 'read',
    })
    stream.close()
  })

  it('an edit and a recall made on A reach a stream on B at once, as update and delete', async () => {
    const stream = await SseClient.open(b.url, { token: token('eva') })
    const id = await publish(a, { type: 'grade.posted', to: { users: ['eva'] }, title: 'Maths 18/20' })
    await stream.waitForNotifications(1)
    const change = (method: string, body?: object) =>
      fetch(`${a.url}/v1/events/${id}`, {
        method,
        headers: { authorization: `Bearer ${teacher}`, 'content-type': 'application/json' },
        body: body && JSON.stringify(body),
      })
    const sent = Date.now()
    expect((await change('PATCH', { title: 'Maths 19/20' })).status).toBe(200)
    expect((await change('DELETE')).status).toBe(204)
    await stream.waitFor((c) => c.events.length >= 3, 10_000, 'the edit and the recall')
    // A woke B with each change's commit: B's own poll would have taken up to LOG_POLL_MS.
    expect(Date.now() - sent).toBeLessThan(LOG_POLL_MS / 2)
    expect(stream.events.map((e) => [e.event, JSON.parse(e.data).id, JSON.parse(e.data).title])).toEqual([
      ['notification', id, 'Maths 18/20'],
      ['update', id, 'Maths 19/20'],
      ['delete', id, undefined],
    ])
    stream.close()
  })

  it('a stream on A that reconnects to B with Last-Event-ID loses nothing', async () => {
    const first = await SseClient.open(a.url, { token: token('ben') })
    const before = [await publish(a, { type: 'x.y', to: { users: ['ben'] }, title: '1' })]
    await first.waitForNotifications(1)
    first.close()
    const missed = [
      await publish(a, { type: 'x.y', to: { users: ['ben'] }, title: '2' }),
      await publish(b, { type: 'x.y', to: { users: ['ben'] }, title: '3' }),
    ]
    const second = await SseClient.open(b.url, { token: token('ben'), lastEventId: first.lastEventId })
    const live = await publish(a, { type: 'x.y', to: { users: ['ben'] }, title: '4' })
    await second.waitForNotifications(3)
    expect([...first.notificationIds, ...second.notificationIds]).toEqual([...before, ...missed, live])
    second.close()
  })

  it('a user streaming on B gets no push for a normal event published on A, and one for an urgent one', async () => {
    const device = await registerDevice(a, 'cleo')
    const stream = await SseClient.open(b.url, { token: token('cleo') })
    const normal = await publish(a, { type: 'x.y', to: { users: ['cleo'] }, title: 'normal', priority: 'normal' })
    const urgent = await publish(a, { type: 'x.y', to: { users: ['cleo'] }, title: 'urgent', priority: 'urgent' })
    await stream.waitForNotifications(2)
    await push.waitForMessages(1)
    // The urgent one came through; the normal one (published first) did not, and is not pending.
    expect(push.messagesFor(device.endpoint).map((m) => (m.json() as { id: string }).id)).toEqual([urgent])
    const status = await fetch(`${a.url}/v1/events/${normal}/status`, {
      headers: { authorization: `Bearer ${teacher}` },
    })
    expect(((await status.json()) as { push: unknown }).push).toEqual({ sent: 0, failed: 0, pending: 0 })
    stream.close()
  })

  it('after kill -9 of the instance holding a stream, a normal event is pushed once presence expires, exactly once', async () => {
    const c = await startInstance('C')
    const device = await registerDevice(a, 'dan')
    const stream = await SseClient.open(c.url, { token: token('dan') })
    expect(stream.status).toBe(200)
    c.child.proc.kill('SIGKILL')
    await c.child.exited
    const killedAt = Date.now()
    const id = await publish(a, { type: 'x.y', to: { users: ['dan'] }, title: 'for dan', priority: 'normal' })
    await expect
      .poll(() => push.messagesFor(device.endpoint).length, { timeout: 20_000, interval: 200 })
      .toBe(1)
      .catch(async (err) => {
        const pg = (await import('postgres')).default(dbUrl, { max: 1 })
        console.log(
          await pg`select * from push_deliveries where event_id = ${id}`,
          await pg`select * from instances`,
          await pg`select now()`,
        )
        await pg.end()
        throw err
      })
    const pushedAfterMs = push.messagesFor(device.endpoint)[0].receivedAt - killedAt
    console.log(`push to a user whose instance was killed arrived ${pushedAfterMs} ms after the kill`)
    expect((push.messagesFor(device.endpoint)[0].json() as { id: string }).id).toBe(id)
    // Not twice: give both dispatchers time to (wrongly) send again.
    await new Promise((r) => setTimeout(r, 1_500))
    expect(push.messagesFor(device.endpoint)).toHaveLength(1)
  }, 90_000)

  it('4 publishers over both instances and subscribers on both: every subscriber gets every event once, in order', async () => {
    const subscribers = await Promise.all(
      [a, a, b, b].map((i, n) => SseClient.open(i.url, { token: token(`fan${n}`, { roles: ['parent'] }) })),
    )
    const perPublisher = 60
    const ids = (
      await Promise.all(
        [a, b, a, b].map(async (instance, p) => {
          const mine: string[] = []
          for (let n = 0; n < perPublisher; n++) {
            mine.push(await publish(instance, { type: 'x.y', to: { roles: ['parent'] }, title: `p${p}-${n}` }))
          }
          return mine
        }),
      )
    ).flat()
    const expected = [...ids].sort((x, y) => Number(x) - Number(y))
    for (const s of subscribers) {
      await s.waitForNotifications(expected.length, 20_000).catch((err) => {
        const got = new Set(s.notificationIds)
        console.log(
          'missing',
          expected.filter((id) => !got.has(id)),
          'subscribers',
          subscribers.map((x) => x.notificationIds.length),
        )
        throw err
      })
      expect(s.notificationIds).toEqual(expected)
      s.close()
    }
    console.log(`${expected.length} events from 4 publishers on 2 instances reached 4 subscribers each, once, in order`)
  }, 90_000)

  it("caps one user's streams across instances: the oldest is evicted wherever it is, once, and it stays settled", async () => {
    const env = { MAX_CONNECTIONS_PER_USER: String(STREAM_CAP) }
    const [e, f] = await Promise.all([startInstance('E', env), startInstance('F', env)])
    const evictedFrame = `id: evicted\nevent: evicted\ndata: {"reason":"too-many-streams","max":${STREAM_CAP}}\n\n`
    /** Opens the user's streams one after another (each counted in the database before it answers). */
    const openAll = async (user: string, on: Instance[]) => {
      const streams: SseClient[] = []
      for (const instance of on) {
        const s = await SseClient.open(instance.url, { token: token(user) })
        expect(s.status, s.body).toBe(200)
        streams.push(s)
      }
      return streams
    }

    // 2 streams on E, then 2 on F: the oldest is on E, and F is where the limit is crossed.
    // Then F, E, E, F: the oldest is on F, which holds only 2 (under the limit by itself).
    /** Each user so far: one eviction, three streams left open. */
    let usersSoFar = 0
    const left: SseClient[] = []
    for (const [user, order] of [
      ['fay', [e, e, f, f]],
      ['gus', [f, e, e, f]],
    ] as const) {
      const [oldest, ...rest] = await openAll(user, [...order])
      await oldest.waitForEnd(5_000)
      expect(oldest.raw.endsWith(evictedFrame), oldest.raw).toBe(true)
      usersSoFar++
      left.push(...rest)
      // It comes back as EventSource does after `retry:`, and is turned away for good.
      const back = await SseClient.open(order[0].url, { token: token(user), lastEventId: oldest.lastEventId })
      expect(back.status).toBe(204)

      // Settled: past two retry periods, still the 3 newest and no other eviction.
      await new Promise((r) => setTimeout(r, 2 * STREAM_RETRY_MS))
      expect(rest.map((s) => s.ended)).toEqual([false, false, false])
      expect((await metricOf(e, EVICTED)) + (await metricOf(f, EVICTED))).toBe(usersSoFar)
      expect((await metricOf(e, OPEN_STREAMS)) + (await metricOf(f, OPEN_STREAMS))).toBe(STREAM_CAP * usersSoFar)
      const id = await publish(e, { type: 'x.y', to: { users: [user] }, title: 'still here' })
      for (const s of rest) await s.waitForNotifications(1)
      expect(rest.map((s) => s.notificationIds)).toEqual([[id], [id], [id]])
    }
    for (const s of left) s.close()
  }, 90_000)

  it('SIGTERM drains: streams end, the instance exits within 10 s, and clients resume on the other instance', async () => {
    const d = await startInstance('D')
    const stream = await SseClient.open(d.url, { token: token('eve') })
    const first = await publish(a, { type: 'x.y', to: { users: ['eve'] }, title: 'before' })
    await stream.waitForNotifications(1)
    const started = Date.now()
    d.child.proc.kill('SIGTERM')
    await stream.waitForEnd(10_000)
    const { code } = await d.child.exited
    expect(code).toBe(0)
    expect(Date.now() - started).toBeLessThan(10_000)
    const during = await publish(a, { type: 'x.y', to: { users: ['eve'] }, title: 'while away' })
    const resumed = await SseClient.open(b.url, { token: token('eve'), lastEventId: stream.lastEventId })
    await resumed.waitForNotifications(1)
    expect([...stream.notificationIds, ...resumed.notificationIds]).toEqual([first, during])
    resumed.close()
  }, 90_000)
})
