import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { Overview } from '../src/audit/overview.ts'
import { PUBLISHER, startApp, startInstanceOn, type TestApp } from './helpers/app.ts'
import {
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import { PUSH_CONFIG, service, until, usePushService } from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 20, part 5: GET /v1/stats counts, per UTC day and event type, what became of a tenant's events (published,
// delivered on streams, pushed, push failures, acked, read, median time to read) and who is online now; and the
// admin overview, the live `herald.overview` events on the `herald:admin` topic that the /admin page shows.

usePushService()

interface DayStats {
  day: string
  type: string
  published: number
  deliveredOnStreams: number
  pushed: number
  pushFailures: number
  acked: number
  read: number
  medianTimeToReadS: number | null
}

let tenants = 0
const auth = (token: string) => ({ authorization: `Bearer ${token}` })
const today = () => new Date().toISOString().slice(0, 10)

describeEachBackend('statistics', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp(backend, { config: PUSH_CONFIG, pushAgent: service.agent })
  })
  afterAll(() => t.close())

  const school = () => {
    const tenant = `stats-${process.pid}-${++tenants}`
    const admin = t.token({ sub: 'head', tenant, scope: `admin ${PUBLISHER}` })
    const user = (sub: string) => t.token({ sub, tenant })
    const stats = (query: Record<string, string> = {}, as = admin) =>
      t.http().get('/v1/stats').query(query).set(auth(as))
    return {
      tenant,
      admin,
      user,
      stats,
      async days(query: Record<string, string> = {}): Promise<DayStats[]> {
        const res = await stats(query)
        expect(res.status, res.text).toBe(200)
        return res.body.days
      },
      async publish(type: string, users: string[]): Promise<string> {
        const res = await t.http().post('/v1/events').set(auth(admin)).send({ type, title: type, to: { users } })
        expect(res.status, res.text).toBe(201)
        return res.body.id
      },
      async device(token: string) {
        const subscription = service.createSubscription()
        const res = await t.http().post('/v1/push/subscriptions').set(auth(token)).send(subscription)
        expect(res.status, res.text).toBe(201)
        return subscription.endpoint
      },
    }
  }

  it('counts what became of each type of event: published, streamed, pushed, failed, acked, read, and who is online', async () => {
    const s = school()
    const reader = s.user('reader')
    const stream = await SseClient.open(t.url, { token: reader })
    await s.device(s.user('pushy'))
    service.expire(await s.device(s.user('gone'))) // its push service answers 410: the push fails for good
    const grade = await s.publish('grade', ['reader', 'pushy', 'gone'])
    const news = await s.publish('news', ['reader'])
    await stream.waitForNotifications(2)
    expect((await t.http().post(`/v1/events/${grade}/read`).set(auth(reader))).status).toBeLessThan(300)
    expect((await t.http().post(`/v1/events/${news}/ack`).set(auth(reader))).status).toBeLessThan(300)

    // Deliveries are recorded within a second, pushes once sent or failed.
    const days = await until(async () => {
      const d = await s.days()
      const g = d.find((x) => x.type === 'grade')
      return g && g.deliveredOnStreams === 1 && g.pushed === 1 && g.pushFailures === 1 ? d : undefined
    }, 'the stream delivery and both pushes in the statistics')
    expect(days).toEqual([
      {
        day: today(),
        type: 'grade',
        published: 1,
        deliveredOnStreams: 1,
        pushed: 1,
        pushFailures: 1,
        acked: 1, // a read is an ack too
        read: 1,
        medianTimeToReadS: expect.any(Number),
      },
      {
        day: today(),
        type: 'news',
        published: 1,
        deliveredOnStreams: 1,
        pushed: 0,
        pushFailures: 0,
        acked: 1,
        read: 0,
        medianTimeToReadS: null,
      },
    ])
    expect(days[0].medianTimeToReadS).toBeGreaterThanOrEqual(0)
    expect(days[0].medianTimeToReadS).toBeLessThan(60)

    const res = await s.stats({ type: 'news' })
    expect(res.body.days.map((d: DayStats) => d.type)).toEqual(['news'])
    expect(res.body.now).toEqual({ openStreams: 1, onlineUsers: 1 })
    stream.close()
    await until(async () => (await s.stats()).body.now.openStreams === 0, 'the closed stream to leave `now`')
  })

  it('groups by UTC day and takes the median time to read', async () => {
    const s = school()
    const yesterday = await s.publish('exam', ['a'])
    const todays = await s.publish('exam', ['a', 'b', 'c'])
    // Yesterday's event, and reads 10, 20 and 60 s after today's (written as the service would have).
    await t.database.query(sql`
      update events set created_at = date_trunc('day', now() at time zone 'UTC') at time zone 'UTC' - interval '14 hours'
      where id = ${yesterday}`)
    await t.database.query(sql`
      insert into receipts (tenant, user_id, event_id, acked_at, read_at)
      select ${s.tenant}, 'a', id, created_at + interval '5 seconds', created_at + interval '5 seconds'
      from events where id = ${yesterday}
      union all
      select ${s.tenant}, u, id, created_at + d, created_at + d
      from events, unnest(array['a', 'b', 'c'], array[interval '10 s', interval '20 s', interval '60 s']) as x(u, d)
      where id = ${todays}`)
    const yesterdayDay = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10)
    const days = await s.days()
    expect(days.map((d) => [d.day, d.type, d.published, d.read, d.medianTimeToReadS])).toEqual([
      [yesterdayDay, 'exam', 1, 1, 5],
      [today(), 'exam', 1, 3, 20],
    ])
    // A period that starts today leaves yesterday out.
    expect((await s.days({ from: today() })).map((d) => d.day)).toEqual([today()])
    // The period asked is the one answered; by default, the last 7 UTC days.
    const res = await s.stats()
    expect(Date.parse(res.body.to) - Date.parse(res.body.from)).toBeGreaterThan(6 * 86_400_000)
    expect(res.body.from).toMatch(/T00:00:00\.000Z$/)
  })

  it('is for admins, and answers a bad period with a 400 naming the field', async () => {
    const s = school()
    const forbidden = await s.stats({}, s.user('pupil'))
    expect(forbidden.status).toBe(403)
    expect(forbidden.body.detail).toContain('admin')
    const cases: Array<[Record<string, string>, string]> = [
      [{ from: 'last week' }, 'querystring.from'],
      [{ to: '2025-02-30T25:00:00Z' }, 'querystring.to'],
      [{ from: '2025-03-02', to: '2025-03-01' }, 'querystring.from'],
      [{ from: '2025-01-01', to: '2025-04-04' }, 'querystring.to'], // 93 days
    ]
    for (const [query, field] of cases) {
      const res = await s.stats(query)
      expect(res.status, JSON.stringify(query)).toBe(400)
      expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(field)
    }
    expect((await s.stats({ from: '2025-01-01', to: '2025-04-03' })).status).toBe(200) // 92 days
  })

  it('sends the live overview to admin streams on herald:admin, and refuses that topic to others', async () => {
    const s = school()
    for (const topics of [['herald:admin'], ['herald:*']]) {
      const refused = await SseClient.open(t.url, {
        token: t.token({ sub: 'pupil', tenant: s.tenant, topics }),
        topics,
      })
      expect(refused.status, topics.join()).toBe(403)
      expect(refused.problem.detail).toContain('herald:admin')
    }
    const admin = await SseClient.open(t.url, { token: s.admin, topics: ['herald:admin'] })
    expect(admin.status).toBe(200)
    const overviews = () =>
      admin.events.filter((e) => e.event === 'live').map((e) => JSON.parse(e.data) as { type: string; data: Overview })
    await admin.waitFor(() => overviews().length > 0, 10_000, 'an overview')
    const first = overviews()[0]
    expect(first.type).toBe('herald.overview')
    expect(first.data.online).toEqual({ openStreams: 1, onlineUsers: 1 })
    expect(first.data.latest).toEqual([])
    expect(admin.events.find((e) => e.event === 'live')?.id).toBeUndefined() // live: no id, Last-Event-ID stays

    const id = await s.publish('grade', ['x', 'y'])
    await admin.waitFor(
      () => overviews().some((o) => o.data.latest[0]?.id === id),
      10_000,
      'an overview with the new event',
    )
    const latest = overviews().find((o) => o.data.latest[0]?.id === id) as { data: Overview }
    expect(latest.data.latest[0]).toMatchObject({ id, type: 'grade', recipients: 2, read: 0 })
    expect(latest.data.lastMinute.published).toBe(1)
    admin.close()
  })
})

describePostgres('statistics across instances', () => {
  let url: string
  let a: Awaited<ReturnType<typeof startInstanceOn>>
  let b: Awaited<ReturnType<typeof startInstanceOn>>
  beforeAll(async () => {
    url = await createPostgresDatabase()
    a = await startInstanceOn(url)
    b = await startInstanceOn(url)
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await dropPostgresDatabase(url)
  })

  it('counts open streams and online users on every instance in `now`', async () => {
    const { mintToken } = await import('../src/tokens.ts')
    const { TEST_JWT_SECRET } = await import('./helpers/app.ts')
    const token = (sub: string, scope?: string) => mintToken(TEST_JWT_SECRET, { sub, tenant: 'across', scope })
    const streams = [
      await SseClient.open(a.url, { token: token('ana') }),
      await SseClient.open(b.url, { token: token('ana') }),
      await SseClient.open(b.url, { token: token('bo') }),
    ]
    for (const s of streams) expect(s.status).toBe(200)
    const admin = token('head', 'admin')
    for (const instance of [a, b]) {
      const res = await instance.http().get('/v1/stats').set(auth(admin))
      expect(res.status, res.text).toBe(200)
      expect(res.body.now).toEqual({ openStreams: 3, onlineUsers: 2 })
    }
    for (const s of streams) s.close()
  })
})
