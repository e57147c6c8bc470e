import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import type supertest from 'supertest'
import { afterAll, afterEach, beforeAll, expect, it, onTestFinished } from 'vitest'
import type { Database } from '../src/db/client.ts'
import { REPLACED_BY_LATER, WAITING_FOR_QUIET_HOURS } from '../src/push/quiet-hours.ts'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startApp, startInstanceOn, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import {
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import { TestClock } from './helpers/clock.ts'
import {
  client,
  expectProblem,
  PUSH_CONFIG,
  pushesOf,
  service,
  until,
  usePushService,
  waitForPush,
} from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 18, part 1: notification preferences and quiet hours. A user's rules (by event type pattern or topic) say
// whether an event shows in the app and whether it may push; a push switch with a minimum priority; quiet hours in
// the user's time zone; a tenant's defaults under them; `urgent` through all of it unless the tenant says not.
// Over the real service: SSE streams read by a real client, pushes received and decrypted by the local HTTPS push
// service, quiet hours judged by a clock the test moves.

usePushService()

let tenants = 0
type Json = Record<string, unknown>
const auth = (token: string) => ({ authorization: `Bearer ${token}` })

/** One tenant's people over one running service. */
function school(http: () => supertest.Agent, token: TestApp['token'], name: string, given?: string) {
  const tenant = given ?? `${name}-${process.pid}-${++tenants}`
  const user = (sub: string, extra: { topics?: string[]; scope?: string } = {}) => token({ sub, tenant, ...extra })
  const admin = token({ sub: 'head', tenant, scope: `admin ${PUBLISHER}` })
  const publisher = token({ sub: 'office', tenant, scope: PUBLISHER })
  return {
    tenant,
    user,
    admin,
    publisher,
    getMine: (t: string) => http().get('/v1/me/preferences').set(auth(t)),
    setMine: (t: string, body: unknown) =>
      http()
        .put('/v1/me/preferences')
        .set(auth(t))
        .send(body as object),
    getTenant: (t = admin) => http().get('/v1/tenant/preferences').set(auth(t)),
    setTenant: (body: unknown, t = admin) =>
      http()
        .put('/v1/tenant/preferences')
        .set(auth(t))
        .send(body as object),
    /** Sets a user's preferences, expecting 200. */
    async prefer(t: string, body: Json) {
      const res = await http().put('/v1/me/preferences').set(auth(t)).send(body)
      expect(res.status, res.text).toBe(200)
      return res.body as Json
    },
    async defaults(body: Json) {
      const res = await http().put('/v1/tenant/preferences').set(auth(admin)).send(body)
      expect(res.status, res.text).toBe(200)
      return res.body as Json
    },
    async publish(to: Json, extra: Json = {}): Promise<string> {
      const res = await http()
        .post('/v1/events')
        .set(auth(publisher))
        .send({ type: 'school.notice', title: 'Notice', to, ...extra })
      expect(res.status, res.text).toBe(201)
      return res.body.id as string
    },
    async inbox(t: string): Promise<string[]> {
      const res = await http().get('/v1/events').set(auth(t))
      expect(res.status, res.text).toBe(200)
      return (res.body.events as Array<{ id: string }>).map((e) => e.id)
    },
    async unread(t: string): Promise<number> {
      const res = await http().get('/v1/events/unread-count').set(auth(t))
      expect(res.status, res.text).toBe(200)
      return res.body.unread as number
    },
  }
}

/** How many outbox rows (pushes planned) an event has: none at all for a push the preferences rule out. */
async function outboxRows(database: Database, eventId: string): Promise<number> {
  const [row] = await database.query<{ n: number }>(
    sql`select count(*)::int as n from push_deliveries where event_id = ${eventId}`,
  )
  return row.n
}

describeEachBackend('notification preferences', (backend) => {
  let t: TestApp
  const clock = new TestClock()
  const newSchool = () => school(() => t.http(), t.token, `prefs-${backend}`)

  beforeAll(async () => {
    t = await startApp(backend, { config: PUSH_CONFIG, pushAgent: service.agent, clock: clock.now })
  })
  afterAll(() => t?.close())
  afterEach(() => clock.reset())

  const open = async (token: string, lastEventId?: string) => {
    const stream = await SseClient.open(t.url, { token, lastEventId })
    onTestFinished(() => stream.close())
    expect(stream.status, stream.body).toBe(200)
    await stream.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the stream to start')
    return stream
  }

  it('GET /v1/me/preferences: nothing at first; PUT stores them with their defaults; {} removes them', async () => {
    const s = newSchool()
    const ann = s.user('ann')
    expect((await s.getMine(ann)).body).toEqual({ rules: [], updatedAt: null })
    const set = await s.setMine(ann, {
      rules: [
        { type: 'grades.*', push: false },
        { topic: 'club:*', inApp: false },
      ],
      push: { minPriority: 'high' },
      quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' },
    })
    expect(set.status, set.text).toBe(200)
    const stored = {
      rules: [
        { type: 'grades.*', push: false },
        { topic: 'club:*', inApp: false },
      ],
      push: { enabled: true, minPriority: 'high' },
      quietHours: {
        start: '22:00',
        end: '07:00',
        timeZone: 'Europe/Paris',
        days: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'],
      },
      updatedAt: expect.stringMatching(/Z$/),
    }
    expect(set.body).toEqual(stored)
    expect((await s.getMine(ann)).body).toEqual({ ...stored, updatedAt: set.body.updatedAt })
    // Another user of the tenant, and the same user id in another tenant, have none.
    expect((await s.getMine(s.user('bob'))).body).toEqual({ rules: [], updatedAt: null })
    expect((await s.getMine(t.token({ sub: 'ann', tenant: `${s.tenant}-other` }))).body.rules).toEqual([])
    // null quiet hours: none of her own, whatever the tenant's.
    expect((await s.setMine(ann, { quietHours: null })).body).toEqual({
      rules: [],
      quietHours: null,
      updatedAt: expect.any(String),
    })
    expect((await s.setMine(ann, {})).body).toEqual({ rules: [], updatedAt: null })
    expect((await s.getMine(ann)).body).toEqual({ rules: [], updatedAt: null })
  })

  it('the tenant’s defaults are its admins’: 403 for anyone else; an admin reads and sets them', async () => {
    const s = newSchool()
    expect((await s.getTenant()).body).toEqual({ rules: [], urgentBypass: true, updatedAt: null })
    for (const res of [await s.getTenant(s.publisher), await s.setTenant({ rules: [] }, s.user('ann'))]) {
      expect(expectProblem(res, 403).detail).toMatch(/admin/)
    }
    const set = await s.setTenant({ rules: [{ type: 'lunch.*', inApp: false }], urgentBypass: false })
    expect(set.status, set.text).toBe(200)
    expect(set.body).toEqual({
      rules: [{ type: 'lunch.*', inApp: false }],
      urgentBypass: false,
      updatedAt: expect.stringMatching(/Z$/),
    })
    expect((await s.getTenant()).body).toEqual(set.body)
    // A user's own preferences are not the tenant's: they stay empty.
    expect((await s.getMine(s.user('ann'))).body).toEqual({ rules: [], updatedAt: null })
  })

  const quiet = { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' }
  it.each([
    ['an unknown time zone', { quietHours: { ...quiet, timeZone: 'Mars/Olympus' } }, 'body.quietHours.timeZone'],
    ['an offset instead of a zone', { quietHours: { ...quiet, timeZone: '+01:00' } }, 'body.quietHours.timeZone'],
    ['end equal to start', { quietHours: { ...quiet, end: '22:00' } }, 'body.quietHours.end'],
    ['a time that is not HH:MM', { quietHours: { ...quiet, start: '24:00' } }, 'body.quietHours.start'],
    ['an unknown day', { quietHours: { ...quiet, days: ['mon', 'funday'] } }, 'body.quietHours.days.1'],
    ['an unknown priority', { push: { minPriority: 'critical' } }, 'body.push.minPriority'],
    ['an upper-case type pattern', { rules: [{ type: 'Grades.*', push: false }] }, 'body.rules.0.type'],
    ['a pattern with two stars', { rules: [{ type: 'grades.**', push: false }] }, 'body.rules.0.type'],
    ['a star inside a pattern', { rules: [{ type: '*.posted', push: false }] }, 'body.rules.0.type'],
    ['a topic pattern with a comma', { rules: [{ topic: 'a,b', inApp: false }] }, 'body.rules.0.topic'],
    ['a star inside a topic pattern', { rules: [{ topic: 'cl*ss:7A', inApp: false }] }, 'body.rules.0.topic'],
    ['a rule with both a type and a topic', { rules: [{ type: 'a.b', topic: 'c', push: false }] }, 'body.rules.0.type'],
    ['a rule with neither', { rules: [{ push: false }] }, 'body.rules.0.type'],
    ['a rule that says nothing', { rules: [{ type: 'a.b' }] }, 'body.rules.0.inApp'],
    ['a rule with an unknown field', { rules: [{ type: 'a.b', push: false, sms: true }] }, 'body.rules.0'],
    ['51 rules', { rules: Array.from({ length: 51 }, () => ({ type: 'a.b', push: false })) }, 'body.rules'],
    ['urgentBypass, which is the tenant’s', { urgentBypass: false }, 'body.urgentBypass'],
  ])('%s is a 400 naming the field, and changes nothing', async (_what, body, path) => {
    const s = newSchool()
    const ann = s.user('ann')
    await s.prefer(ann, { rules: [{ type: 'kept.rule', push: false }] })
    const res = await s.setMine(ann, body)
    const problem = expectProblem(res, 400)
    expect(problem.errors?.map((e) => e.path)).toContain(path)
    expect(problem.detail).toContain(path)
    expect((await s.getMine(ann)).body.rules).toEqual([{ type: 'kept.rule', push: false }])
  })

  it('the tenant’s defaults are checked alike: an unknown time zone is a 400 naming the field', async () => {
    const s = newSchool()
    const res = await s.setTenant({ quietHours: { ...quiet, timeZone: 'Europe/Atlantis' } })
    expect(expectProblem(res, 400).errors?.map((e) => e.path)).toEqual(['body.quietHours.timeZone'])
    expect((await s.getTenant()).body.updatedAt).toBeNull()
  })

  it('an inApp:false event is neither streamed, replayed, listed, fetched nor counted as unread, and is still stored', async () => {
    const s = newSchool()
    const alice = s.user('alice')
    const bob = s.user('bob')
    await s.defaults({ rules: [{ type: 'lunch.*', inApp: false }] })
    await s.prefer(alice, {
      rules: [
        { type: 'grades.*', inApp: false },
        { topic: 'club:*', inApp: false },
      ],
    })
    await s.prefer(bob, { rules: [{ type: 'lunch.menu', inApp: true }] })
    const aliceStream = await open(alice)
    const bobStream = await open(bob)

    const grade = await s.publish({ users: ['alice'] }, { type: 'grades.posted' })
    const absent = await s.publish({ users: ['alice'] }, { type: 'attendance.absent' })
    const club = await s.publish({ users: ['alice'], topics: ['club:chess'] }, { type: 'club.news' })
    const lunch = await s.publish({ tenant: true }, { type: 'lunch.menu' })
    const closure = await s.publish({ users: ['alice'] }, { type: 'grades.closure', priority: 'urgent' })
    const marker = await s.publish({ users: ['alice', 'bob'] })

    await aliceStream.waitFor((c) => c.notificationIds.includes(marker), 10_000, 'alice’s marker')
    expect(aliceStream.notificationIds).toEqual([absent, closure, marker])
    await bobStream.waitFor((c) => c.notificationIds.includes(marker), 10_000, 'bob’s marker')
    expect(bobStream.notificationIds).toEqual([lunch, marker]) // his own rule overrides the tenant's

    // A replay from the start of the log leaves them out too.
    const replayed = await open(alice, '0')
    await replayed.waitFor((c) => c.notificationIds.includes(marker), 10_000, 'the replay')
    expect(replayed.notificationIds).toEqual([absent, closure, marker])

    expect(await s.inbox(alice)).toEqual([marker, closure, absent])
    expect(await s.unread(alice)).toBe(3)
    const polled = await t.http().get('/v1/events?after=0').set(auth(alice))
    expect(polled.body.events.map((e: { id: string }) => e.id)).toEqual([absent, closure, marker])
    for (const hidden of [grade, club, lunch]) {
      expect((await t.http().get(`/v1/events/${hidden}`).set(auth(alice))).status, hidden).toBe(404)
      // Still stored: its publisher follows it, and a user without the rule sees it.
      expect((await t.http().get(`/v1/events/${hidden}/status`).set(auth(s.publisher))).status).toBe(200)
    }
    expect(await s.inbox(bob)).toEqual([marker, lunch])
    expect(await s.inbox(s.user('carol'))).toEqual([]) // the tenant's rule hides lunch from her
    expect(await s.unread(s.user('carol'))).toBe(0)
  })

  it('a preference change reaches an open stream at once, and a removed rule brings its events back', async () => {
    const s = newSchool()
    const alice = s.user('alice')
    const stream = await open(alice)
    const first = await s.publish({ users: ['alice'] }, { type: 'grades.posted' })
    await stream.waitFor((c) => c.notificationIds.includes(first), 10_000, 'the first grade')

    await s.prefer(alice, { rules: [{ type: 'grades.*', inApp: false }] })
    const hidden = await s.publish({ users: ['alice'] }, { type: 'grades.posted' })
    const marker = await s.publish({ users: ['alice'] })
    await stream.waitFor((c) => c.notificationIds.includes(marker), 10_000, 'the marker')
    expect(stream.notificationIds).toEqual([first, marker])
    // The rule applies to what she sees now, older events of that kind included.
    expect(await s.inbox(alice)).toEqual([marker])

    await s.prefer(alice, {})
    const shown = await s.publish({ users: ['alice'] }, { type: 'grades.posted' })
    await stream.waitFor((c) => c.notificationIds.includes(shown), 10_000, 'the grade once the rule is gone')
    expect(stream.notificationIds).toEqual([first, marker, shown])
    expect(await s.inbox(alice)).toEqual([shown, marker, hidden, first])

    // The tenant's defaults reach every stream of the tenant.
    await s.defaults({ rules: [{ type: 'lunch.*', inApp: false }] })
    const lunch = await s.publish({ tenant: true }, { type: 'lunch.menu' })
    const marker2 = await s.publish({ users: ['alice'] })
    await stream.waitFor((c) => c.notificationIds.includes(marker2), 10_000, 'the second marker')
    expect(stream.notificationIds).not.toContain(lunch)
    await s.defaults({})
    const lunch2 = await s.publish({ tenant: true }, { type: 'lunch.menu' })
    await stream.waitFor((c) => c.notificationIds.includes(lunch2), 10_000, 'lunch once the default is gone')
    expect(stream.notificationIds).toEqual([first, marker, shown, marker2, lunch2])
  })

  it('push:false, the push switch off and a priority under the minimum write no push at all; urgent gets through', async () => {
    const s = newSchool()
    const api = client(t.url)
    const muted = s.user('muted')
    const off = s.user('off')
    const picky = s.user('picky')
    const devices = {
      muted: await api.register(muted),
      off: await api.register(off),
      picky: await api.register(picky),
    }
    await s.prefer(muted, { rules: [{ type: 'grades.*', push: false }] })
    await s.prefer(off, { push: { enabled: false } })
    await s.prefer(picky, { push: { minPriority: 'high' } })

    const mutedGrade = await s.publish({ users: ['muted'] }, { type: 'grades.posted' })
    const mutedOther = await s.publish({ users: ['muted'] }, { type: 'attendance.absent' })
    const offHigh = await s.publish({ users: ['off'] }, { priority: 'high' })
    const pickyNormal = await s.publish({ users: ['picky'] })
    const pickyHigh = await s.publish({ users: ['picky'] }, { priority: 'high' })
    const urgent = await s.publish(
      { users: ['muted', 'off', 'picky'] },
      { type: 'grades.closure', priority: 'urgent', title: 'School closed' },
    )

    await waitForPush(devices.muted.endpoint, mutedOther)
    await waitForPush(devices.picky.endpoint, pickyHigh)
    for (const d of Object.values(devices)) await waitForPush(d.endpoint, urgent)
    for (const id of [mutedGrade, offHigh, pickyNormal]) {
      expect(await outboxRows(t.database, id), id).toBe(0)
      expect((await api.status(s.publisher, id)).push, id).toEqual({ sent: 0, failed: 0, pending: 0 })
    }
    expect(pushesOf(devices.muted.endpoint, mutedGrade)).toEqual([])
    expect(pushesOf(devices.off.endpoint, offHigh)).toEqual([])
    expect(pushesOf(devices.picky.endpoint, pickyNormal)).toEqual([])
    expect((await api.status(s.publisher, urgent)).push.sent).toBe(3)
  })

  it('with the tenant’s urgentBypass false, urgent events follow preferences like any other', async () => {
    const s = newSchool()
    const api = client(t.url)
    const off = s.user('off')
    const device = await api.register(off)
    await s.defaults({ urgentBypass: false })
    await s.prefer(off, { rules: [{ type: 'drill.*', inApp: false }], push: { enabled: false } })
    const drill = await s.publish({ users: ['off'] }, { type: 'drill.fire', priority: 'urgent' })
    expect(await outboxRows(t.database, drill)).toBe(0)
    expect(await s.inbox(off)).toEqual([])
    expect(pushesOf(device.endpoint, drill)).toEqual([])
    // Back to the default: urgent gets through again.
    await s.defaults({})
    const again = await s.publish({ users: ['off'] }, { type: 'drill.fire', priority: 'urgent' })
    await waitForPush(device.endpoint, again)
    // Preferences decide what is seen now: the first drill shows again too.
    expect(await s.inbox(off)).toEqual([again, drill])
  })

  it('quiet hours hold normal and high pushes until the window ends, then send the unread ones, collapsed by collapseKey', async () => {
    const s = newSchool()
    const api = client(t.url)
    const night = s.user('night')
    const day = s.user('day')
    const nightDevice = await api.register(night)
    const dayDevice = await api.register(day)
    await s.prefer(night, { quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' } })
    // Monday 2026-12-07, 22:30 in Paris (UTC+1): inside her window.
    clock.setTo('2026-12-07T21:30:00Z')

    const first = await s.publish({ users: ['night'] }, { title: 'Grade 1', collapseKey: 'grades' })
    const second = await s.publish({ users: ['night'] }, { title: 'Grade 2', collapseKey: 'grades' })
    const high = await s.publish({ users: ['night'] }, { title: 'High', priority: 'high' })
    const readMeanwhile = await s.publish({ users: ['night'] }, { title: 'Read in the app' })
    const forDay = await s.publish({ users: ['day'] }, { title: 'No quiet hours' })
    const urgent = await s.publish({ users: ['night'] }, { title: 'Closure', priority: 'urgent' })

    // Urgent, and the pushes of a user without quiet hours, go out at once.
    await waitForPush(nightDevice.endpoint, urgent)
    await waitForPush(dayDevice.endpoint, forDay)
    // The others wait (the dispatcher has seen them: each waits for the window's end, or was replaced).
    const waiting = [first, second, high, readMeanwhile]
    const rows = () =>
      t.database.query<{ event_id: string | number; state: string; last_error: string | null }>(
        sql`select event_id, state, last_error from push_deliveries where event_id in (${sql.join(
          waiting.map((id) => sql`${id}`),
          sql`, `,
        )}) order by event_id`,
      )
    await until(
      async () => (await rows()).every((r) => r.last_error === WAITING_FOR_QUIET_HOURS || r.state === 'skipped'),
      'the dispatcher to put the quiet pushes back',
    )
    expect((await rows()).map((r) => [String(r.event_id), r.state, r.last_error])).toEqual([
      [first, 'skipped', REPLACED_BY_LATER],
      [second, 'pending', WAITING_FOR_QUIET_HOURS],
      [high, 'pending', WAITING_FOR_QUIET_HOURS],
      [readMeanwhile, 'pending', WAITING_FOR_QUIET_HOURS],
    ])
    await sleep(1_500) // a dispatcher poll or more: still nothing
    for (const id of waiting) expect(pushesOf(nightDevice.endpoint, id), id).toEqual([])
    expect((await api.status(s.publisher, second)).push).toEqual({ sent: 0, failed: 0, pending: 1 })
    expect((await api.status(s.publisher, first)).push).toEqual({ sent: 0, failed: 0, pending: 0 })
    expect((await t.http().post(`/v1/events/${readMeanwhile}/read`).set(auth(night))).status).toBe(204)

    // 07:00:30 in Paris: the window is over.
    clock.setTo('2026-12-08T06:00:30Z')
    t.app.pushDispatcher.wake()
    const secondPush = await waitForPush(nightDevice.endpoint, second)
    expect(secondPush.json()).toMatchObject({ title: 'Grade 2' })
    await waitForPush(nightDevice.endpoint, high)
    const marker = await s.publish({ users: ['night'] }, { priority: 'urgent' })
    await waitForPush(nightDevice.endpoint, marker)
    expect(pushesOf(nightDevice.endpoint, first)).toEqual([]) // replaced by the later one with its collapseKey
    expect(pushesOf(nightDevice.endpoint, readMeanwhile)).toEqual([]) // read during the night: not pushed
    expect(pushesOf(nightDevice.endpoint, second)).toHaveLength(1)
    await until(
      async () => (await api.status(s.publisher, readMeanwhile)).push.pending === 0,
      'the read event’s push to be skipped',
    )
    expect((await api.status(s.publisher, readMeanwhile)).push).toEqual({ sent: 0, failed: 0, pending: 0 })
  })

  it('a publish planned in quiet hours and sent after them, at the tenant’s quiet hours when the user has none of their own', async () => {
    const s = newSchool()
    const api = client(t.url)
    const pupil = s.user('pupil')
    const device = await api.register(pupil)
    await s.defaults({ quietHours: { start: '20:00', end: '06:30', timeZone: 'America/New_York', days: ['fri'] } })
    // Friday 2026-12-11, 21:00 in New York (UTC-5): the tenant's Friday window.
    clock.setTo('2026-12-12T02:00:00Z')
    const held = await s.publish({ users: ['pupil'] }, { title: 'Homework' })
    const marker = await s.publish({ users: ['pupil'] }, { priority: 'urgent' })
    await waitForPush(device.endpoint, marker)
    await until(async () => {
      const [row] = await t.database.query<{ last_error: string | null }>(
        sql`select last_error from push_deliveries where event_id = ${held}`,
      )
      return row?.last_error === WAITING_FOR_QUIET_HOURS
    }, 'the push to wait')
    expect(pushesOf(device.endpoint, held)).toEqual([])
    // Saturday 06:31 in New York.
    clock.setTo('2026-12-12T11:31:00Z')
    t.app.pushDispatcher.wake()
    await waitForPush(device.endpoint, held)
  })
})

describePostgres('preferences across two instances on one PostgreSQL database', () => {
  let url: string
  const apps: Array<{ close(): Promise<unknown> }> = []

  async function instance() {
    const started = await startInstanceOn(url)
    apps.push(started)
    return started
  }

  beforeAll(async () => {
    url = await createPostgresDatabase()
  })
  afterAll(async () => {
    for (const app of apps) await app.close()
    if (url) await dropPostgresDatabase(url)
  })

  it('a change of a user’s preferences, or of the tenant’s defaults, on one instance reaches the open stream on the other', async () => {
    const a = await instance()
    const b = await instance()
    const token: TestApp['token'] = (claims, ttl) => mintToken(TEST_JWT_SECRET, { tenant: 't1', ...claims }, ttl)
    const onA = school(a.http, token, 'pair')
    const alice = onA.user('alice')
    const stream = await SseClient.open(b.url, { token: alice })
    onTestFinished(() => stream.close())
    expect(stream.status).toBe(200)
    await stream.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the stream to start')

    await onA.prefer(alice, { rules: [{ type: 'grades.*', inApp: false }] })
    await onA.defaults({ rules: [{ type: 'lunch.*', inApp: false }] })
    // The changes reach instance B by NOTIFY; give them a moment, then publish on A.
    await sleep(500)
    const grade = await onA.publish({ users: ['alice'] }, { type: 'grades.posted' })
    const lunch = await onA.publish({ tenant: true }, { type: 'lunch.menu' })
    const marker = await onA.publish({ users: ['alice'] })
    await stream.waitFor((c) => c.notificationIds.includes(marker), 10_000, 'the marker')
    expect(stream.notificationIds).toEqual([marker])

    await onA.prefer(alice, {})
    await onA.defaults({})
    await sleep(500)
    const shown = await onA.publish({ users: ['alice'] }, { type: 'grades.posted' })
    const lunch2 = await onA.publish({ tenant: true }, { type: 'lunch.menu' })
    await stream.waitFor((c) => c.notificationIds.includes(lunch2), 10_000, 'the events once the rules are gone')
    expect(stream.notificationIds).toEqual([marker, shown, lunch2])
    expect(stream.notificationIds).not.toContain(grade)
    expect(stream.notificationIds).not.toContain(lunch)
  })
})
