import type { AddressInfo } from 'node:net'
import { sql } from 'drizzle-orm'
import supertest, { type Response } from 'supertest'
import { afterAll, afterEach, beforeAll, expect, it, onTestFinished, vi } from 'vitest'
import { buildApp } from '../src/app.ts'
import { type Database, openDatabase } from '../src/db/client.ts'
import { runMigrations } from '../src/db/migrate.ts'
import { prune } from '../src/events/retention.ts'
import { scheduledItem, scheduledPage, scheduledReply } from '../src/routes/schemas.ts'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp, testConfig } from './helpers/app.ts'
import {
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
  refusePoisonEvents,
} from './helpers/backends.ts'
import { TestClock } from './helpers/clock.ts'
import {
  client,
  PUSH_CONFIG,
  reopenableDatabase,
  service,
  usePushService,
  waitForPush,
} from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 18, part 2: scheduled delivery. A publish with `deliverAt` is checked when it is accepted (202) and
// published at that time through the normal path, exactly once, whatever the instances and restarts. The
// scheduler's clock is the test's (TestClock): a test moves it past `deliverAt` and runs a pass itself; nothing
// here waits for real time to pass. `deliverAt` itself is checked against real time at acceptance.

vi.setConfig({ testTimeout: 60_000 })

usePushService()

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS

type Json = Record<string, unknown>
interface Problem {
  type: string
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

/** Asserts a problem+json reply with this status, and returns it. */
function expectProblem(res: Response, status: number): Problem {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  return JSON.parse(res.text) as Problem
}

/** `deliverAt` this far from real now, written with a +02:00 offset (RFC 3339 allows any offset). */
function inTwoHoursZone(fromNowMs: number): string {
  const at = new Date(Date.now() + fromNowMs + 2 * HOUR_MS)
  return at.toISOString().replace(/\.\d{3}Z$/, '+02:00')
}

const at = (fromNowMs: number) => new Date(Date.now() + fromNowMs).toISOString()

/** Calls of one running app, as a publisher and as readers. */
function api(http: () => supertest.Agent, tenant: string) {
  const publisher = (sub = 'office', scope = PUBLISHER) => mintToken(TEST_JWT_SECRET, { sub, tenant, scope })
  const user = (sub: string, scope?: string) => mintToken(TEST_JWT_SECRET, { sub, tenant, scope })
  const auth = (token: string) => ({ authorization: `Bearer ${token}` })
  return {
    publisher,
    user,
    publish: (body: object, opts: { token?: string; key?: string; path?: string } = {}) => {
      let req = http()
        .post(opts.path ?? '/v1/events')
        .set(auth(opts.token ?? publisher()))
      if (opts.key !== undefined) req = req.set('idempotency-key', opts.key)
      return req.send(body)
    },
    list: (token = publisher(), query = '') => http().get(`/v1/scheduled${query}`).set(auth(token)),
    show: (id: string, token = publisher()) => http().get(`/v1/scheduled/${id}`).set(auth(token)),
    cancel: (id: string, token = publisher()) => http().delete(`/v1/scheduled/${id}`).set(auth(token)),
    /** The user's events, newest first. */
    history: async (sub: string): Promise<Json[]> => {
      const res = await http()
        .get('/v1/events?limit=500')
        .set(auth(user(sub)))
      expect(res.status, res.text).toBe(200)
      return res.body.events
    },
  }
}

const event = (to: Json, extra: Json = {}) => ({ type: 'exam.reminder', title: 'Exam tomorrow', to, ...extra })

describeEachBackend('scheduled delivery', (backend) => {
  let t: TestApp
  const clock = new TestClock()
  let tenants = 0
  /** A tenant of its own per test: its items and events are the test's alone. */
  const newTenant = () => api(() => t.http(), `sched-${backend}-${++tenants}`)
  /**
   * A scheduler pass by the test's clock, as every instance runs one each second. Resolves once it is done, with
   * what it published; the instance's own poll may have published some of that before it (same clock), so tests
   * read what went out from the items themselves.
   */
  const pass = () => t.app.scheduler.runDue()
  /** Moves the scheduler's clock to just past `deliverAt` and runs a pass. */
  const dueAndPass = async (deliverAt: string) => {
    clock.setTo(Date.parse(deliverAt) + 1_000)
    await pass()
  }
  /** The published item's event ids (empty while it is not published). */
  const eventIdsOf = async (a: ReturnType<typeof newTenant>, scheduledId: string): Promise<string[]> =>
    (await a.show(scheduledId)).body.eventIds
  /** What a pass published of these items. */
  const of = (published: Array<{ scheduledId: number }>, ...ids: string[]) =>
    published.filter((p) => ids.includes(String(p.scheduledId)))

  beforeAll(async () => {
    t = await startApp(backend, { clock: clock.now, pushAgent: service.agent, config: PUSH_CONFIG })
  })
  afterAll(() => t?.close())
  afterEach(() => clock.reset())

  it('202 {scheduledId, deliverAt}; nothing before it is due; then published once, with an id taken then, to a live stream', async () => {
    const a = newTenant()
    const stream = await SseClient.open(t.url, { token: a.user('kim') })
    onTestFinished(() => stream.close())
    expect(stream.status).toBe(200)

    const deliverAt = inTwoHoursZone(HOUR_MS)
    const raw = `{"type":"exam.reminder","title":"Exam tomorrow","to":{"users":["kim"]},"data":{"z":1,"10":"ten","big":12345678901234567890},"deliverAt":"${deliverAt}","ttl":3600}`
    const accepted = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${a.publisher()}`)
      .set('content-type', 'application/json')
      .send(raw)
    expect(accepted.status, accepted.text).toBe(202)
    expect(Object.keys(accepted.body).sort()).toEqual(['deliverAt', 'scheduledId'])
    expect(accepted.body.scheduledId).toMatch(/^[1-9][0-9]*$/)
    // The same instant, in UTC.
    expect(accepted.body.deliverAt).toBe(new Date(Date.parse(deliverAt)).toISOString())
    const id: string = accepted.body.scheduledId
    expect(scheduledReply.parse(accepted.body)).toEqual(accepted.body)

    const pending = await a.show(id)
    expect(pending.status, pending.text).toBe(200)
    expect(pending.body).toMatchObject({
      id,
      state: 'pending',
      kind: 'single',
      actor: 'office',
      deliverAt: accepted.body.deliverAt,
      settledAt: null,
      eventIds: [],
    })
    expect(pending.body.events).toHaveLength(1)
    expect(pending.body.events[0]).toMatchObject({ type: 'exam.reminder', title: 'Exam tomorrow', priority: 'normal' })
    expect(pending.text).toContain('"data":{"z":1,"10":"ten","big":12345678901234567890}')
    // What GET /v1/scheduled/{id} sends as text fits what the document says of it.
    expect(scheduledItem.parse(pending.body)).toEqual(pending.body)
    const listed = await a.list()
    expect(scheduledPage.parse(listed.body)).toEqual(listed.body)

    // Not due by the scheduler's clock (real time): a pass publishes nothing.
    expect(of(await pass(), id)).toEqual([])
    expect(await a.history('kim')).toEqual([])

    // An immediate publish meanwhile: the scheduled event's id is taken when it is published, so it is larger.
    const before = await a.publish(event({ users: ['kim'] }, { title: 'Now' }))
    expect(before.status, before.text).toBe(201)
    await stream.waitForNotifications(1)

    await dueAndPass(deliverAt)
    const eventIds = await eventIdsOf(a, id)
    expect(eventIds).toHaveLength(1)
    const [eventId] = eventIds
    expect(BigInt(eventId)).toBeGreaterThan(BigInt(before.body.id))

    await stream.waitForNotifications(2)
    expect(stream.notificationIds).toEqual([before.body.id, eventId])
    const live = stream.notifications[1]
    expect(live).toMatchObject({ id: eventId, title: 'Exam tomorrow', actor: 'office' })
    expect(stream.raw).toContain('"data":{"z":1,"10":"ten","big":12345678901234567890}')
    // Created when it was published (after it was accepted); its ttl counts from then.
    expect(Date.parse(String(live.createdAt))).toBeGreaterThanOrEqual(Date.parse(before.body.createdAt))
    expect(Date.parse(String(live.expiresAt)) - Date.parse(String(live.createdAt))).toBe(3_600_000)

    const done = await a.show(id)
    expect(done.body).toMatchObject({ state: 'published', eventIds: [eventId] })
    expect(Date.parse(done.body.settledAt)).toBeGreaterThan(0)
    expect((await a.list()).body.scheduled).toEqual([])

    // More passes, later still: never again.
    expect(of(await pass(), id)).toEqual([])
    clock.setTo(Date.now() + 40 * DAY_MS)
    expect(of(await pass(), id)).toEqual([])
    expect((await a.history('kim')).map((e) => e.id)).toEqual([eventId, before.body.id])
    await new Promise((r) => setTimeout(r, 100))
    expect(stream.notificationIds).toEqual([before.body.id, eventId])
  })

  it('a batch with deliverAt: every event at that time, in order, all in one publish', async () => {
    const a = newTenant()
    const deliverAt = at(2 * HOUR_MS)
    const events = ['one', 'two', 'three'].map((title) => event({ users: ['lee'] }, { title }))
    const accepted = await a.publish({ events, deliverAt }, { path: '/v1/events/batch' })
    expect(accepted.status, accepted.text).toBe(202)
    const shown = await a.show(accepted.body.scheduledId)
    expect(shown.body).toMatchObject({ kind: 'batch', state: 'pending' })
    expect(shown.body.events.map((e: Json) => e.title)).toEqual(['one', 'two', 'three'])
    expect((await a.list()).body.scheduled).toEqual([
      expect.objectContaining({ id: accepted.body.scheduledId, kind: 'batch', eventCount: 3, title: 'one' }),
    ])

    await dueAndPass(deliverAt)
    const ids = await eventIdsOf(a, accepted.body.scheduledId)
    expect(ids).toHaveLength(3)
    expect([...ids].sort((x, y) => Number(x) - Number(y))).toEqual(ids)
    expect((await a.history('lee')).map((e) => [e.id, e.title])).toEqual([
      [ids[2], 'three'],
      [ids[1], 'two'],
      [ids[0], 'one'],
    ])
    expect((await a.show(accepted.body.scheduledId)).body.state).toBe('published')
  })

  // What each bad `deliverAt` gets: 400, problem+json naming the field, and nothing stored.
  const year = new Date().getUTCFullYear() + 1
  const badDeliverAt: Array<[string, () => unknown, RegExp]> = [
    ['in the past', () => at(-60_000), /must be in the future/],
    ['now, to the millisecond gone by', () => at(-1), /must be in the future/],
    ['more than 30 days ahead', () => at(30 * DAY_MS + 60_000), /at most 30 days ahead/],
    ['without an offset', () => at(HOUR_MS).replace(/Z$/, ''), /RFC 3339/],
    ['a date only', () => at(DAY_MS).slice(0, 10), /RFC 3339/],
    ['a space for the T, no offset', () => at(HOUR_MS).replace('T', ' ').replace(/Z$/, ''), /RFC 3339/],
    ['words', () => 'tomorrow at 8', /RFC 3339/],
    ['the 30th of February', () => `${year}-02-30T08:00:00Z`, /RFC 3339/],
    ['24:00', () => `${year}-01-10T24:00:00Z`, /RFC 3339/],
    ['an offset of +25:00', () => `${year}-01-10T08:00:00+25:00`, /RFC 3339/],
    ['a number (epoch ms)', () => Date.now() + HOUR_MS, /string/i],
    ['null', () => null, /string/i],
  ]

  it.each(badDeliverAt)('deliverAt %s: 400 naming deliverAt, on both publish routes', async (_, value, message) => {
    const a = newTenant()
    const single = expectProblem(await a.publish({ ...event({ users: ['kim'] }), deliverAt: value() }), 400)
    expect(single.type).toBe('urn:herald:problem:validation')
    expect(single.errors?.map((e) => e.path)).toEqual(['body.deliverAt'])
    expect(single.errors?.[0].message).toMatch(message)
    const batch = expectProblem(
      await a.publish({ events: [event({ users: ['kim'] })], deliverAt: value() }, { path: '/v1/events/batch' }),
      400,
    )
    expect(batch.errors?.map((e) => e.path)).toEqual(['body.deliverAt'])
    expect((await a.list()).body.scheduled).toEqual([])
    expect(await a.history('kim')).toEqual([])
  })

  it('deliverAt at the edges: 30 days ahead, and any offset, are taken; inside a batch’s event it is a 400', async () => {
    const a = newTenant()
    for (const deliverAt of [at(30 * DAY_MS - 60_000), inTwoHoursZone(HOUR_MS), at(HOUR_MS).replace('Z', '-09:30')]) {
      const res = await a.publish({ ...event({ users: ['kim'] }), deliverAt })
      expect(res.status, `${deliverAt}: ${res.text}`).toBe(202)
    }
    const inEvent = expectProblem(
      await a.publish(
        { events: [{ ...event({ users: ['kim'] }), deliverAt: at(HOUR_MS) }] },
        { path: '/v1/events/batch' },
      ),
      400,
    )
    expect(inEvent.errors?.map((e) => e.path)).toEqual(['body.events.0.deliverAt'])
    expect(inEvent.errors?.[0].message).toMatch(/whole batch/)
    expect((await a.list()).body.scheduled).toHaveLength(3)
  })

  it('checked when accepted, exactly as a publish: scopes (403), data size and fields (400); nothing stored', async () => {
    const a = newTenant()
    const deliverAt = at(HOUR_MS)
    const noScope = a.publisher('nobody', '')
    const publishOnly = a.publisher('teacher', 'events:publish')
    expectProblem(await a.publish({ ...event({ users: ['kim'] }), deliverAt }, { token: noScope }), 403)
    expectProblem(await a.publish({ ...event({ roles: ['parent'] }), deliverAt }, { token: publishOnly }), 403)
    expectProblem(await a.publish({ ...event({ tenant: true }), deliverAt }, { token: publishOnly }), 403)
    expectProblem(
      await a.publish(
        { events: [event({ users: ['kim'] }), event({ roles: ['x'] })], deliverAt },
        {
          path: '/v1/events/batch',
          token: publishOnly,
        },
      ),
      403,
    )
    const tooBig = expectProblem(
      await a.publish({ ...event({ users: ['kim'] }), data: { s: 'x'.repeat(16 * 1024) }, deliverAt }),
      400,
    )
    expect(tooBig.errors?.map((e) => e.path)).toEqual(['body.data'])
    const badTitle = expectProblem(await a.publish({ ...event({ users: ['kim'] }), title: '', deliverAt }), 400)
    expect(badTitle.errors?.map((e) => e.path)).toEqual(['body.title'])
    for (const token of [noScope, publishOnly, a.publisher()]) expect((await a.list(token)).body.scheduled).toEqual([])
  })

  it('list and show: the publisher’s own pending items; an admin sees the tenant’s; anyone else gets 404', async () => {
    const a = newTenant()
    const other = newTenant()
    const deliverAt = at(3 * HOUR_MS)
    const schedule = async (sub: string, title: string) => {
      const res = await a.publish({ ...event({ users: ['kim'] }, { title }), deliverAt }, { token: a.publisher(sub) })
      expect(res.status, res.text).toBe(202)
      return res.body.scheduledId as string
    }
    const first = await schedule('office', 'first')
    const second = await schedule('office', 'second')
    const theirs = await schedule('head', 'theirs')

    const mine = await a.list()
    expect(mine.status, mine.text).toBe(200)
    expect(mine.body).toEqual({
      scheduled: [
        {
          id: first,
          state: 'pending',
          kind: 'single',
          actor: 'office',
          deliverAt: new Date(deliverAt).toISOString(),
          createdAt: expect.any(String),
          eventCount: 1,
          title: 'first',
        },
        expect.objectContaining({ id: second, title: 'second' }),
      ],
      next: null,
    })
    // A page at a time.
    const page1 = await a.list(a.publisher(), '?limit=1')
    expect(page1.body.scheduled.map((s: Json) => s.id)).toEqual([first])
    expect(page1.body.next).toBe(first)
    const page2 = await a.list(a.publisher(), `?limit=1&after=${first}`)
    expect(page2.body.scheduled.map((s: Json) => s.id)).toEqual([second])
    expect((await a.list(a.publisher(), `?limit=1&after=${second}`)).body).toEqual({ scheduled: [], next: null })

    expect((await a.list(a.publisher('head'))).body.scheduled.map((s: Json) => s.id)).toEqual([theirs])
    const admin = a.user('principal', 'admin')
    expect((await a.list(admin)).body.scheduled.map((s: Json) => s.id)).toEqual([first, second, theirs])
    expect((await a.show(theirs, admin)).status).toBe(200)
    // The recipient, another publisher, another tenant's admin: nothing to see, 404 (existence does not leak).
    expect((await a.list(a.user('kim'))).body.scheduled).toEqual([])
    expect((await other.list(other.user('principal', 'admin'))).body.scheduled).toEqual([])
    expectProblem(await a.show(theirs), 404)
    expectProblem(await a.cancel(theirs), 404)
    expectProblem(await other.show(first, other.user('principal', 'admin')), 404)
    expectProblem(await other.cancel(first, other.user('principal', 'admin')), 404)
    expectProblem(await a.show('999999999'), 404)
    const badId = expectProblem(await a.show('abc'), 400)
    expect(badId.errors?.map((e) => e.path)).toEqual(['params.id'])
    expect((await a.show(theirs, a.publisher('head'))).body.state).toBe('pending')
  })

  it('cancel before it is due: 204, it leaves the list, nothing is published; cancelling again is 204', async () => {
    const a = newTenant()
    const deliverAt = at(HOUR_MS)
    const accepted = await a.publish({ ...event({ users: ['kim'] }), deliverAt })
    const id = accepted.body.scheduledId as string
    const cancelled = await a.cancel(id)
    expect(cancelled.status, cancelled.text).toBe(204)
    expect(cancelled.text).toBe('')
    const shown = await a.show(id)
    expect(shown.body).toMatchObject({ state: 'cancelled', eventIds: [] })
    expect(Date.parse(shown.body.settledAt)).toBeGreaterThan(0)
    expect((await a.list()).body.scheduled).toEqual([])

    await dueAndPass(deliverAt)
    expect((await a.show(id)).body.state).toBe('cancelled')
    expect(await a.history('kim')).toEqual([])
    expect((await a.cancel(id)).status).toBe(204)
    // An admin of the tenant may cancel a publisher's item too.
    const another = await a.publish({ ...event({ users: ['kim'] }), deliverAt: at(2 * HOUR_MS) })
    expect((await a.cancel(another.body.scheduledId, a.user('principal', 'admin'))).status).toBe(204)
    expect((await a.show(another.body.scheduledId)).body.state).toBe('cancelled')
  })

  it('cancel after it went out: 409 naming the event id(s); it stays published', async () => {
    const a = newTenant()
    const deliverAt = at(HOUR_MS)
    const single = await a.publish({ ...event({ users: ['kim'] }), deliverAt })
    const batch = await a.publish(
      { events: [event({ users: ['kim'] }, { title: 'a' }), event({ users: ['kim'] }, { title: 'b' })], deliverAt },
      { path: '/v1/events/batch' },
    )
    await dueAndPass(deliverAt)
    const [singleId] = await eventIdsOf(a, single.body.scheduledId)
    const batchIds = await eventIdsOf(a, batch.body.scheduledId)
    expect(singleId).toBeDefined()
    expect(batchIds).toHaveLength(2)

    const late = expectProblem(await a.cancel(single.body.scheduledId), 409)
    expect(late.type).toBe('urn:herald:problem:conflict')
    expect(late.detail).toMatch(new RegExp(`\\bevent ${singleId}\\b`))
    const lateBatch = expectProblem(await a.cancel(batch.body.scheduledId), 409)
    expect(lateBatch.detail).toContain(`events ${batchIds.join(', ')}`)
    expect((await a.show(single.body.scheduledId)).body).toMatchObject({ state: 'published', eventIds: [singleId] })
    expect((await a.history('kim')).map((e) => e.id).sort()).toEqual([singleId, ...batchIds].sort())
  })

  it('Idempotency-Key: a retry answers the same scheduledId (202) and adds nothing; another deliverAt is 422', async () => {
    const a = newTenant()
    const deliverAt = at(HOUR_MS)
    const body = { ...event({ users: ['kim'] }), deliverAt }
    const first = await a.publish(body, { key: 'remind-1' })
    expect(first.status, first.text).toBe(202)
    const again = await a.publish(body, { key: 'remind-1' })
    expect(again.status, again.text).toBe(202)
    expect(again.body).toEqual(first.body)
    // The same instant written with another offset is the same request.
    const elsewhere = new Date(Date.parse(deliverAt) + 2 * HOUR_MS).toISOString().replace('Z', '+02:00')
    const sameInstant = await a.publish({ ...body, deliverAt: elsewhere }, { key: 'remind-1' })
    expect(sameInstant.status, sameInstant.text).toBe(202)
    expect(sameInstant.body).toEqual(first.body)
    expect((await a.list()).body.scheduled).toHaveLength(1)

    expectProblem(await a.publish({ ...body, deliverAt: at(2 * HOUR_MS) }, { key: 'remind-1' }), 422)
    // Without deliverAt it is another request too, and the other route is a 409, as for any key.
    expectProblem(await a.publish(event({ users: ['kim'] }), { key: 'remind-1' }), 422)
    expectProblem(
      await a.publish(
        { events: [event({ users: ['kim'] })], deliverAt },
        { key: 'remind-1', path: '/v1/events/batch' },
      ),
      409,
    )
    // An immediate publish's key is not taken by a scheduled one either.
    expect((await a.publish(event({ users: ['kim'] }), { key: 'now-1' })).status).toBe(201)
    expectProblem(await a.publish(body, { key: 'now-1' }), 422)

    // Published, the key still answers with its item.
    await dueAndPass(deliverAt)
    const afterwards = await a.publish(body, { key: 'remind-1' })
    expect(afterwards.status).toBe(202)
    expect(afterwards.body).toEqual(first.body)
    expect((await a.history('kim')).filter((e) => e.title === 'Exam tomorrow')).toHaveLength(2) // now-1 and remind-1

    // A batch's key likewise.
    const batchBody = { events: [event({ users: ['lee'] })], deliverAt: at(2 * HOUR_MS) }
    const b1 = await a.publish(batchBody, { key: 'batch-1', path: '/v1/events/batch' })
    const b2 = await a.publish(batchBody, { key: 'batch-1', path: '/v1/events/batch' })
    expect([b1.status, b2.status]).toEqual([202, 202])
    expect(b2.body).toEqual(b1.body)
  })

  it('an urgent scheduled event is pushed when it is published, not before', async () => {
    const a = newTenant()
    const push = client(t.url)
    const device = await push.register(a.user('ana'))
    const deliverAt = at(HOUR_MS)
    const accepted = await a.publish({ ...event({ users: ['ana'] }), priority: 'urgent', deliverAt })
    expect(accepted.status, accepted.text).toBe(202)
    expect(of(await pass(), accepted.body.scheduledId)).toEqual([])
    // Let the dispatcher poll once: nothing is planned for an event that does not exist yet.
    await new Promise((r) => setTimeout(r, 1_200))
    expect(service.messagesFor(device.endpoint)).toEqual([])

    await dueAndPass(deliverAt)
    const [id] = await eventIdsOf(a, accepted.body.scheduledId)
    expect(id).toBeDefined()
    const received = await waitForPush(device.endpoint, id)
    expect(received.json()).toMatchObject({ id, title: 'Exam tomorrow', priority: 'urgent' })
    await expect
      .poll(() => push.status(a.publisher(), id), { timeout: 5_000 })
      .toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
  })

  it('an item the database refuses stays pending without holding up the others, and goes out once it can', async () => {
    const a = newTenant()
    const deliverAt = at(HOUR_MS)
    const drop = await refusePoisonEvents(t.database)
    onTestFinished(drop)
    // The poison is due first: it must not stop the one after it.
    const poison = await a.publish({ ...event({ users: ['kim'] }, { title: 'poison' }), deliverAt })
    const fine = await a.publish({ ...event({ users: ['kim'] }, { title: 'fine' }), deliverAt: at(HOUR_MS + 1_000) })
    await dueAndPass(at(HOUR_MS + 1_000))
    expect((await a.show(fine.body.scheduledId)).body.state).toBe('published')
    expect((await a.show(poison.body.scheduledId)).body.state).toBe('pending')
    expect((await a.history('kim')).map((e) => e.title)).toEqual(['fine'])

    await drop()
    await pass()
    expect((await a.show(poison.body.scheduledId)).body.state).toBe('published')
    expect((await a.history('kim')).map((e) => e.title).sort()).toEqual(['fine', 'poison'])
  })

  it('pruning forgets items settled more than RETENTION_DAYS ago, and never a pending one', async () => {
    const a = newTenant()
    const old = await a.publish({ ...event({ users: ['kim'] }), deliverAt: at(HOUR_MS) })
    const pending = await a.publish({ ...event({ users: ['kim'] }), deliverAt: at(2 * HOUR_MS) })
    expect((await a.cancel(old.body.scheduledId)).status).toBe(204)
    await t.database.query(
      sql`update scheduled_publishes set settled_at = now() - interval '31 days', created_at = now() - interval '32 days' where id = ${old.body.scheduledId}`,
    )
    await t.database.query(
      sql`update scheduled_publishes set created_at = now() - interval '32 days' where id = ${pending.body.scheduledId}`,
    )
    expect((await prune(t.database, 30)).scheduled).toBe(1)
    expectProblem(await a.show(old.body.scheduledId), 404)
    expect((await a.show(pending.body.scheduledId)).body.state).toBe('pending')
  })
})

/** An app on a database that outlives it, with the test's clock, as a restarted server is. */
async function appOn(database: Database, clock: TestClock) {
  const app = await buildApp(testConfig(), database, { clock: clock.now })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  return { app, url, http: () => supertest.agent(url) }
}

describeEachBackend('scheduled delivery across a restart', (backend) => {
  it('an item published before the restart is not published again; one due while the service was down goes out once after', async () => {
    const db = await reopenableDatabase(backend)
    onTestFinished(() => db.cleanup())
    const clock = new TestClock()
    const early = at(HOUR_MS)
    const late = at(2 * HOUR_MS)

    const first = await appOn(await db.open(), clock)
    const a = api(first.http, 'restart')
    let earlyId: string
    let lateId: string
    let earlyEvent: string
    try {
      earlyId = (await a.publish({ ...event({ users: ['kim'] }, { title: 'early' }), deliverAt: early })).body
        .scheduledId
      lateId = (await a.publish({ ...event({ users: ['kim'] }, { title: 'late' }), deliverAt: late })).body.scheduledId
      clock.setTo(Date.parse(early) + 1_000)
      await first.app.scheduler.runDue()
      const shown = await a.show(earlyId)
      expect(shown.body.state).toBe('published')
      earlyEvent = shown.body.eventIds[0]
      expect((await a.show(lateId)).body.state).toBe('pending')
    } finally {
      await first.app.close()
    }

    // Down past the second item's time: the next start publishes it (its first pass runs when it is ready).
    clock.setTo(Date.parse(late) + 60_000)
    const second = await appOn(await db.open(), clock)
    const b = api(second.http, 'restart')
    try {
      await second.app.scheduler.runDue()
      const titles = (await b.history('kim')).map((e) => e.title)
      expect(titles).toEqual(['late', 'early'])
      expect((await b.show(earlyId)).body).toMatchObject({ state: 'published', eventIds: [earlyEvent] })
      expect((await b.show(lateId)).body.state).toBe('published')
      // Passes later still add nothing.
      clock.setTo(Date.now() + 40 * DAY_MS)
      expect(await second.app.scheduler.runDue()).toEqual([])
      expect(await b.history('kim')).toHaveLength(2)
    } finally {
      await second.app.close()
    }
  })
})

describePostgres('scheduled delivery with two instances on one PostgreSQL database', () => {
  let url: string
  const databases: Database[] = []
  const clock = new TestClock()
  let a: Awaited<ReturnType<typeof appOn>>
  let b: Awaited<ReturnType<typeof appOn>>

  beforeAll(async () => {
    url = await createPostgresDatabase()
    const open = async () => {
      const database = await openDatabase({ url, poolSize: 5 })
      await runMigrations(database)
      databases.push(database)
      return database
    }
    a = await appOn(await open(), clock)
    b = await appOn(await open(), clock)
  })
  afterAll(async () => {
    await a?.app.close()
    await b?.app.close()
    if (url) await dropPostgresDatabase(url)
  })

  it('both schedulers run against the same due items: each is published exactly once, and streams on both get each once', async () => {
    const onA = api(a.http, 'pair')
    const onB = api(b.http, 'pair')
    const streams = await Promise.all([
      SseClient.open(a.url, { token: onA.user('kim') }),
      SseClient.open(b.url, { token: onB.user('kim') }),
    ])
    onTestFinished(() => {
      for (const s of streams) s.close()
    })
    const deliverAt = at(HOUR_MS)
    const scheduled: string[] = []
    let expectedEvents = 0
    for (let i = 0; i < 40; i++) {
      const on = i % 2 ? onA : onB
      const res =
        i % 5 === 0
          ? await on.publish(
              {
                events: [
                  event({ users: ['kim'] }, { title: `#${i}a` }),
                  event({ users: ['kim'] }, { title: `#${i}b` }),
                ],
                deliverAt,
              },
              { path: '/v1/events/batch' },
            )
          : await on.publish({ ...event({ users: ['kim'] }, { title: `#${i}` }), deliverAt })
      expect(res.status, res.text).toBe(202)
      scheduled.push(res.body.scheduledId)
      expectedEvents += i % 5 === 0 ? 2 : 1
    }

    clock.setTo(Date.parse(deliverAt) + 1_000)
    // Both instances' passes at once, twice each: they race for the same rows.
    const passes = await Promise.all([
      a.app.scheduler.runDue(),
      b.app.scheduler.runDue(),
      a.app.scheduler.runDue(),
      b.app.scheduler.runDue(),
    ])
    const byA = [...passes[0], ...passes[2]]
    const byB = [...passes[1], ...passes[3]]
    // Their polls may have taken some too; the database says what went out.
    console.log(`scheduled items published by the explicit passes: ${byA.length} on A, ${byB.length} on B`)
    const passed = [...byA, ...byB].map((p) => String(p.scheduledId))
    expect(new Set(passed).size).toBe(passed.length)

    const rows = await databases[0].query<{ id: string; state: string; event_ids: Array<string | number> }>(
      sql`select id::text as id, state, event_ids from scheduled_publishes where tenant = 'pair' order by scheduled_publishes.id`,
    )
    expect(rows.map((r) => r.id)).toEqual(scheduled.map(String).sort((x, y) => Number(x) - Number(y)))
    expect(rows.every((r) => r.state === 'published')).toBe(true)
    const eventIds = rows.flatMap((r) => r.event_ids.map(String))
    expect(eventIds).toHaveLength(expectedEvents)
    expect(new Set(eventIds).size).toBe(expectedEvents)
    const [{ n }] = await databases[0].query<{ n: string | number }>(
      sql`select count(*) as n from events where tenant = 'pair'`,
    )
    expect(Number(n)).toBe(expectedEvents)

    const inOrder = [...eventIds].sort((x, y) => Number(x) - Number(y))
    for (const s of streams) {
      await s.waitForNotifications(expectedEvents, 20_000)
      expect(s.notificationIds).toEqual(inOrder)
    }
  })
})
