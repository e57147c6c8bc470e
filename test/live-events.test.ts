import { sql } from 'drizzle-orm'
import type { Response } from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { PUSH_CONFIG, service, sleep, usePushService, waitForPush } from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 20, part 2: live-only events (`store: false`). Dashboards' updates reach the matching open streams as
// `event: live` frames without an id, by the audience rules of stored events, and are never stored: not in
// history, unread counts or pushes, not replayed on resume.

usePushService()

interface Problem {
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

function expectProblem(res: Response, status: number): Problem {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  return JSON.parse(res.text) as Problem
}

const auth = (token: string) => ({ authorization: `Bearer ${token}` })
/** The `event: live` frames a stream got, parsed. */
const livesOf = (c: SseClient) => c.events.filter((e) => e.event === 'live').map((e) => JSON.parse(e.data))

let tenants = 0

describeEachBackend('live-only events', (backend) => {
  let t: TestApp
  const streams: SseClient[] = []

  beforeAll(async () => {
    t = await startApp(backend, { config: PUSH_CONFIG, pushAgent: service.agent })
  })
  afterAll(async () => {
    for (const c of streams) c.close()
    await t?.close()
  })

  /** A school of its own per test, with a publisher and helpers. */
  function school() {
    const tenant = `live-${process.pid}-${++tenants}`
    const publisher = t.token({ sub: 'office', tenant, scope: PUBLISHER })
    const user = (sub: string, claims: { roles?: string[]; topics?: string[]; scope?: string } = {}) =>
      t.token({ sub, tenant, ...claims })
    const open = async (token: string, options: { topics?: string[]; lastEventId?: string } = {}) => {
      const c = await SseClient.open(t.url, { token, ...options })
      streams.push(c)
      expect(c.status, c.body).toBe(200)
      await c.waitFor((s) => s.raw.startsWith('retry:'), 5_000, 'the stream to open')
      return c
    }
    const send = (event: Record<string, unknown>, as = publisher, headers: Record<string, string> = {}) =>
      t
        .http()
        .post('/v1/events')
        .set({ ...auth(as), ...headers })
        .send({ type: 'upload.progress', title: 'Uploading', ...event })
    const live = async (event: Record<string, unknown>, as = publisher) => {
      const res = await send({ store: false, ...event }, as)
      expect(res.status, res.text).toBe(202)
      expect(res.body).toEqual({ live: true })
    }
    /** A stored tenant broadcast every stream waits for: what was sent live before it has arrived by then. */
    const marker = async (waitOn: SseClient[]) => {
      const res = await send({ type: 'marker', title: 'Marker', to: { tenant: true } })
      expect(res.status, res.text).toBe(201)
      const id = res.body.id as string
      for (const c of waitOn) await c.waitFor((s) => s.notificationIds.includes(id), 10_000, `marker ${id}`)
      return id
    }
    return { tenant, publisher, user, open, send, live, marker }
  }

  it('reaches exactly its audience (user, role, topic, topic pattern, tenant) as `event: live` without an id, and no other tenant', async () => {
    const s = school()
    const other = school()
    const ada = await s.open(s.user('ada'))
    const bob = await s.open(s.user('bob'))
    const teacher = await s.open(s.user('tess', { roles: ['teacher'] }))
    const follower = await s.open(s.user('finn', { topics: ['class:7a'] }), { topics: ['class:7a'] })
    const patterned = await s.open(s.user('pat', { topics: ['class:*'] }), { topics: ['class:*'] })
    const elsewhere = await other.open(other.user('ada', { roles: ['teacher'], topics: ['class:7a'] }), {
      topics: ['class:7a'],
    })
    const everyone = [ada, bob, teacher, follower, patterned]

    // The data is spliced as sent: 1.0 stays 1.0, key order kept.
    await t
      .http()
      .post('/v1/events')
      .set({ ...auth(s.publisher), 'content-type': 'application/json' })
      .send(
        '{"type":"upload.progress","title":"Uploading","to":{"users":["ada"]},"store":false,"data":{"z":1.0,"a":"x"}}',
      )
      .expect(202)
    await s.live({ type: 'exam.submitted', to: { roles: ['teacher'] }, data: { n: 2 } })
    await s.live({ type: 'counter.changed', to: { topics: ['class:7a'] }, data: { n: 3 } })
    await s.live({ type: 'dashboard.tick', to: { tenant: true }, priority: 'low', data: { n: 4 } })
    await s.marker(everyone)
    await other.marker([elsewhere])

    expect(livesOf(ada).map((e) => e.type)).toEqual(['upload.progress', 'dashboard.tick'])
    expect(livesOf(bob).map((e) => e.type)).toEqual(['dashboard.tick'])
    expect(livesOf(teacher).map((e) => e.type)).toEqual(['exam.submitted', 'dashboard.tick'])
    expect(livesOf(follower).map((e) => e.type)).toEqual(['counter.changed', 'dashboard.tick'])
    expect(livesOf(patterned).map((e) => e.type)).toEqual(['counter.changed', 'dashboard.tick'])
    expect(livesOf(elsewhere)).toEqual([])

    // No id line: the frame is exactly `event: live` and `data:`, and Last-Event-ID stays the stored events'.
    const frame = ada.raw.slice(ada.raw.indexOf('event: live'))
    expect(ada.raw).not.toMatch(/id: [^\n]*\nevent: live/)
    expect(frame).toMatch(/^event: live\ndata: \{"type":"upload\.progress","tenant":"[^"]+","title":"Uploading",/)
    expect(frame).toContain('"data":{"z":1.0,"a":"x"}')
    expect(ada.events.filter((e) => e.event === 'live').every((e) => e.id === undefined)).toBe(true)
    const [first] = livesOf(ada)
    expect(first).toMatchObject({ tenant: s.tenant, title: 'Uploading', priority: 'normal', actor: 'office' })
    expect(first).not.toHaveProperty('id')
    expect(Date.parse(first.at)).toBeGreaterThan(Date.now() - 60_000)
  })

  it('is never stored: not in history, unread counts or the events table, and a stream that resumes gets the stored events but not the live ones', async () => {
    const s = school()
    const kim = s.user('kim')
    const stream = await s.open(kim)
    const before = await t.database.query<{ n: number }>(sql`select count(*)::int as n from events`)
    await s.live({ to: { users: ['kim'] }, data: { percent: 10 } })
    const stored = await s.marker([stream])
    await s.live({ to: { users: ['kim'] }, data: { percent: 50 } })
    const second = await s.marker([stream])
    expect(livesOf(stream).map((e) => e.data.percent)).toEqual([10, 50])
    expect(stream.lastEventId).toBe(second)
    const after = await t.database.query<{ n: number }>(sql`select count(*)::int as n from events`)
    expect(after[0].n - before[0].n).toBe(2) // the two markers only
    const live = await t.database.query<{ n: number }>(sql`select count(*)::int as n from live_events`)
    expect(live[0].n).toBe(0) // one process or a small payload: nothing goes through the table

    const inbox = await t.http().get('/v1/events').set(auth(kim))
    expect(inbox.status).toBe(200)
    expect(inbox.body.events.map((e: { type: string }) => e.type)).toEqual(['marker', 'marker'])
    const unread = await t.http().get('/v1/events/unread-count').set(auth(kim))
    expect(unread.body).toEqual({ unread: 2 })

    // Resumed from before the first marker: both markers again, none of the live updates.
    stream.close()
    const resumed = await s.open(kim, { lastEventId: String(Number(stored) - 1) })
    await resumed.waitFor((c) => c.notificationIds.includes(second), 10_000, 'the replay')
    await s.marker([resumed])
    expect(resumed.notificationIds.slice(0, 2)).toEqual([stored, second])
    expect(livesOf(resumed)).toEqual([])
  })

  it('is never pushed, whatever its priority, while a stored event to the same device is', async () => {
    const s = school()
    const lee = s.user('lee')
    const subscription = service.createSubscription()
    const registered = await t.http().post('/v1/push/subscriptions').set(auth(lee)).send(subscription)
    expect(registered.status, registered.text).toBe(201)
    await s.live({ to: { users: ['lee'] }, priority: 'urgent', title: 'Live only' })
    const res = await s.send({ to: { users: ['lee'] }, priority: 'urgent', title: 'Stored' })
    expect(res.status, res.text).toBe(201)
    await waitForPush(subscription.endpoint, res.body.id)
    await sleep(300)
    const titles = service.messagesFor(subscription.endpoint).map((m) => (m.json() as { title: string }).title)
    expect(titles).toEqual(['Stored'])
  })

  it('a batch of live-only events goes out in order; an Idempotency-Key is ignored (each request sends again)', async () => {
    const s = school()
    const stream = await s.open(s.user('mia'))
    const batch = await t
      .http()
      .post('/v1/events/batch')
      .set(auth(s.publisher))
      .send({
        events: [1, 2, 3].map((n) => ({
          type: 'upload.progress',
          title: 'Uploading',
          to: { users: ['mia'] },
          store: false,
          data: { n },
        })),
      })
    expect(batch.status, batch.text).toBe(202)
    expect(batch.body).toEqual({ live: true })
    for (let i = 0; i < 2; i++) {
      const res = await s.send({ store: false, to: { users: ['mia'] }, data: { n: 4 } }, s.publisher, {
        'idempotency-key': 'same-key',
      })
      expect(res.status, res.text).toBe(202)
    }
    await s.marker([stream])
    expect(livesOf(stream).map((e) => e.data.n)).toEqual([1, 2, 3, 4, 4])
  })

  it('follows the user’s in-app preferences as stored events do', async () => {
    const s = school()
    const noa = s.user('noa')
    const put = await t
      .http()
      .put('/v1/me/preferences')
      .set(auth(noa))
      .send({ rules: [{ type: 'upload.*', inApp: false }] })
    expect(put.status, put.text).toBe(200)
    const stream = await s.open(noa)
    const other = await s.open(s.user('oli'))
    await s.live({ type: 'upload.progress', to: { users: ['noa'] } })
    await s.live({ type: 'exam.submitted', to: { users: ['noa'] } })
    // Tenant broadcasts sent together go to each stream in one write; Noa's leaves out what she turned off.
    const batch = await t
      .http()
      .post('/v1/events/batch')
      .set(auth(s.publisher))
      .send({
        events: ['upload.progress', 'exam.submitted', 'upload.done'].map((type) => ({
          type,
          title: type,
          to: { tenant: true },
          store: false,
        })),
      })
    expect(batch.status, batch.text).toBe(202)
    await s.marker([stream, other])
    expect(livesOf(stream).map((e) => e.type)).toEqual(['exam.submitted', 'exam.submitted'])
    expect(livesOf(other).map((e) => e.type)).toEqual(['upload.progress', 'exam.submitted', 'upload.done'])
    expect(other.raw).toContain('"title":"upload.progress"')
  })

  describe('what is refused', () => {
    it('with deliverAt: 400 naming body.deliverAt (a live update cannot wait for later)', async () => {
      const s = school()
      const deliverAt = new Date(Date.now() + 3_600_000).toISOString()
      const single = expectProblem(await s.send({ store: false, to: { users: ['a'] }, deliverAt }), 400)
      expect(single.errors?.map((e) => e.path)).toEqual(['body.deliverAt'])
      const batch = expectProblem(
        await t
          .http()
          .post('/v1/events/batch')
          .set(auth(s.publisher))
          .send({ deliverAt, events: [{ type: 'a.b', title: 'x', to: { users: ['a'] }, store: false }] }),
        400,
      )
      expect(batch.errors?.map((e) => e.path)).toEqual(['body.deliverAt'])
    })

    it('with escalate: 400 naming body.escalate (nobody reads a live update)', async () => {
      const s = school()
      const res = expectProblem(await s.send({ store: false, to: { users: ['a'] }, escalate: { after: 60 } }), 400)
      expect(res.errors?.map((e) => e.path)).toEqual(['body.escalate'])
      expect(res.detail).toMatch(/live-only/)
    })

    it('a batch mixing live-only and stored events: 400 naming each stored one’s store', async () => {
      const s = school()
      const stream = await s.open(s.user('a'))
      const res = expectProblem(
        await t
          .http()
          .post('/v1/events/batch')
          .set(auth(s.publisher))
          .send({
            events: [
              { type: 'a.b', title: 'live', to: { users: ['a'] }, store: false },
              { type: 'a.b', title: 'stored', to: { users: ['a'] } },
            ],
          }),
        400,
      )
      expect(res.errors?.map((e) => e.path)).toEqual(['body.events.1.store'])
      await s.marker([stream])
      expect(livesOf(stream)).toEqual([])
      expect(stream.notifications.map((n) => n.title)).toEqual(['Marker'])
    })

    it('store that is not a boolean: 400 naming body.store; data over the limit: 400 naming body.data', async () => {
      const s = school()
      const bad = expectProblem(await s.send({ store: 'no', to: { users: ['a'] } }), 400)
      expect(bad.errors?.map((e) => e.path)).toEqual(['body.store'])
      const big = expectProblem(await s.send({ store: false, to: { users: ['a'] }, data: 'x'.repeat(17_000) }), 400)
      expect(big.errors?.map((e) => e.path)).toEqual(['body.data'])
    })

    it('scopes as for stored events: 403 to roles or the tenant without events:broadcast, and without any scope', async () => {
      const s = school()
      const stream = await s.open(s.user('a', { roles: ['parent'] }))
      const publishOnly = s.user('app', { scope: 'events:publish' })
      const nothing = s.user('pupil')
      expectProblem(await s.send({ store: false, to: { tenant: true } }, publishOnly), 403)
      expectProblem(await s.send({ store: false, to: { roles: ['parent'] } }, publishOnly), 403)
      expectProblem(await s.send({ store: false, to: { users: ['a'] } }, nothing), 403)
      expect((await s.send({ store: false, to: { users: ['a'] }, title: 'allowed' }, publishOnly)).status).toBe(202)
      await s.marker([stream])
      expect(livesOf(stream).map((e) => e.title)).toEqual(['allowed'])
    })
  })
})
