import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startApp, startInstanceOn, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import {
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import {
  PUSH_CONFIG,
  payloadOf,
  pushesOf,
  service,
  sleep,
  until,
  usePushService,
  waitForPush,
} from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 19, parts 1 and 2: who an event was for (resolved at publish time, through the directory, tokens seen and
// devices), the roll-call of who got, acked and read it, and the nudge that reminds only those who have not read it.

usePushService()

let tenants = 0

interface Recipient {
  userId: string
  displayName: string | null
  deliveredAt: string | null
  pushedAt: string | null
  ackedAt: string | null
  readAt: string | null
}

/** One school's people over one app: its admin, its teacher (a publisher), and helpers for the routes used here. */
function school(t: TestApp) {
  const tenant = `rollcall-${process.pid}-${++tenants}`
  const auth = (token: string) => ({ authorization: `Bearer ${token}` })
  const admin = t.token({ sub: 'head', tenant, scope: `admin ${PUBLISHER}` })
  const teacher = t.token({ sub: 'teacher', tenant, roles: ['teacher'], scope: PUBLISHER })
  const user = (sub: string, claims: { roles?: string[]; topics?: string[] } = {}) =>
    t.token({ sub, tenant, ...claims })
  const http = () => t.http()
  return {
    tenant,
    admin,
    teacher,
    user,
    auth,
    async listInDirectory(id: string, entry: { roles?: string[]; topics?: string[]; displayName?: string }) {
      const res = await http()
        .put(`/v1/directory/users/${encodeURIComponent(id)}`)
        .set(auth(admin))
        .send({ roles: [], topics: [], ...entry })
      expect(res.status, res.text).toBeLessThan(300)
    },
    /** A user the service has seen through a token (any authenticated request). */
    async seen(token: string) {
      const res = await http().get('/v1/events/unread-count').set(auth(token))
      expect(res.status, res.text).toBe(200)
      await t.app.userClaims.flush() // written within 50 ms anyway; now, so the next publish sees it
    },
    async registerDevice(token: string) {
      const subscription = service.createSubscription()
      const res = await http().post('/v1/push/subscriptions').set(auth(token)).send(subscription)
      expect(res.status, res.text).toBe(201)
      return subscription.endpoint
    },
    async publish(to: Record<string, unknown>, extra: Record<string, unknown> = {}, as = teacher): Promise<string> {
      const res = await http()
        .post('/v1/events')
        .set(auth(as))
        .send({ type: 'trip.cancelled', title: 'Trip cancelled tomorrow', to, ...extra })
      expect(res.status, res.text).toBe(201)
      return res.body.id as string
    },
    rollCall: (id: string, query: Record<string, string | number> = {}, as = teacher) =>
      http().get(`/v1/events/${id}/recipients`).query(query).set(auth(as)),
    async recipients(id: string, state = 'all'): Promise<Recipient[]> {
      const res = await http().get(`/v1/events/${id}/recipients`).query({ state, limit: 1000 }).set(auth(teacher))
      expect(res.status, res.text).toBe(200)
      return res.body.recipients
    },
    nudge: (id: string, as = teacher) => http().post(`/v1/events/${id}/nudge`).set(auth(as)),
    read: (id: string, token: string) => http().post(`/v1/events/${id}/read`).set(auth(token)),
    ack: (id: string, token: string) => http().post(`/v1/events/${id}/ack`).set(auth(token)),
    status: (id: string, as = teacher) => http().get(`/v1/events/${id}/status`).set(auth(as)),
    inbox: async (token: string) => {
      const res = await http().get('/v1/events').set(auth(token))
      expect(res.status, res.text).toBe(200)
      return (res.body.events as Array<{ id: string }>).map((e) => e.id)
    },
  }
}

const idsOf = (recipients: Recipient[]) => recipients.map((r) => r.userId)

describeEachBackend('recipients, roll-call and nudge', (backend) => {
  let t: TestApp
  const streams: SseClient[] = []
  const open = async (token: string) => {
    const c = await SseClient.open(t.url, { token })
    streams.push(c)
    expect(c.status, c.body).toBe(200)
    await c.waitFor((s) => s.raw.startsWith('retry:'), 5_000, 'the stream to open')
    return c
  }

  beforeAll(async () => {
    t = await startApp(backend, { config: { ...PUSH_CONFIG, NUDGE_MIN_INTERVAL_S: 600 }, pushAgent: service.agent })
  })
  afterAll(async () => {
    for (const c of streams) c.close()
    await t?.close()
  })

  describe('who an event is for', () => {
    it('a role broadcast is for the directory’s holders and for unlisted users whose current token holds the role; the directory decides for those it lists', async () => {
      const s = school(t)
      await s.listInDirectory('listed-parent', { roles: ['parent'], displayName: 'Ada Parent' })
      // Listed without the role: a token that still says parent does not make them a recipient.
      await s.listInDirectory('former-parent', { roles: ['staff'] })
      await s.seen(s.user('former-parent', { roles: ['parent'] }))
      await s.seen(s.user('token-parent', { roles: ['parent'] }))
      await s.seen(s.user('pupil', { roles: ['pupil'] }))
      const id = await s.publish({ roles: ['parent'] })
      const recipients = await s.recipients(id)
      expect(idsOf(recipients)).toEqual(['listed-parent', 'token-parent'])
      expect(recipients[0].displayName).toBe('Ada Parent')
      expect(recipients[1].displayName).toBeNull()
    })

    it('a topic event is for the directory’s members (names and prefix* patterns) and the topic’s followers', async () => {
      const s = school(t)
      await s.listInDirectory('member', { topics: ['class:7a'] })
      await s.listInDirectory('pattern-member', { topics: ['class:7*'] })
      await s.listInDirectory('other-class', { topics: ['class:8b'] })
      const follower = s.user('follower', { topics: ['class:*'] })
      const sub = await t.http().put('/v1/me/topics/class%3A7a').set(s.auth(follower))
      expect(sub.status, sub.text).toBeLessThan(300)
      await t.app.userClaims.flush()
      const id = await s.publish({ topics: ['class:7a'] })
      expect(idsOf(await s.recipients(id))).toEqual(['follower', 'member', 'pattern-member'])
    })

    it('a tenant broadcast is for everyone known in the tenant: the directory, tokens seen, devices; never another tenant’s', async () => {
      const s = school(t)
      const other = school(t)
      await s.listInDirectory('in-directory', {})
      await s.seen(s.user('seen-by-token'))
      await s.registerDevice(s.user('has-device'))
      await t.app.userClaims.flush()
      await other.listInDirectory('elsewhere', {})
      const id = await s.publish({ tenant: true }, {}, s.admin)
      const res = await s.rollCall(id, {}, s.admin)
      expect(res.status, res.text).toBe(200)
      expect(idsOf(res.body.recipients)).toEqual(['has-device', 'head', 'in-directory', 'seen-by-token'])
    })

    it('a tenant broadcast follows users as they come and go between broadcasts: directory, tokens, devices, a device moved', async () => {
      const s = school(t)
      const broadcast = async () => {
        await t.app.userClaims.flush()
        const id = await s.publish({ tenant: true }, {}, s.admin)
        const res = await s.rollCall(id, { limit: 1000 }, s.admin)
        expect(res.status, res.text).toBe(200)
        expect(res.body.totals.recipients).toBe(res.body.recipients.length)
        return idsOf(res.body.recipients)
      }
      await s.listInDirectory('listed', {})
      expect(await broadcast()).toEqual(['head', 'listed'])
      expect(await broadcast()).toEqual(['head', 'listed']) // nothing changed: the same recipients again

      await s.seen(s.user('seen'))
      expect(await broadcast()).toEqual(['head', 'listed', 'seen'])
      const endpoint = await s.registerDevice(s.user('device-owner'))
      expect(await broadcast()).toEqual(['device-owner', 'head', 'listed', 'seen'])
      const batch = await t
        .http()
        .post('/v1/directory/users/batch')
        .set(s.auth(s.admin))
        .send({
          operations: [
            { op: 'upsert', id: 'batch-1', roles: [], topics: [] },
            { op: 'upsert', id: 'batch-2', roles: [], topics: [] },
            { op: 'delete', id: 'listed' },
          ],
        })
      expect(batch.status, batch.text).toBeLessThan(300)
      expect(await broadcast()).toEqual(['batch-1', 'batch-2', 'device-owner', 'head', 'seen'])
      // An update that adds no one (the directory entry changed, a token seen again) leaves them as they were.
      await s.listInDirectory('batch-1', { displayName: 'Bea Batch' })
      await s.seen(s.user('seen', { roles: ['parent'] }))
      expect(await broadcast()).toEqual(['batch-1', 'batch-2', 'device-owner', 'head', 'seen'])

      // What the routes never do, an operator may: the device's owner is known by it alone once their claims are
      // gone, moves with it, and leaves when no table knows them.
      await t.database.query(sql`delete from user_claims where tenant = ${s.tenant} and user_id = 'device-owner'`)
      expect(await broadcast()).toEqual(['batch-1', 'batch-2', 'device-owner', 'head', 'seen'])
      await t.database.query(sql`update push_subscriptions set user_id = 'new-owner' where endpoint = ${endpoint}`)
      expect(await broadcast()).toEqual(['batch-1', 'batch-2', 'head', 'new-owner', 'seen'])
      await t.database.query(sql`delete from push_subscriptions where endpoint = ${endpoint}`)
      expect(await broadcast()).toEqual(['batch-1', 'batch-2', 'head', 'seen'])
    })

    it('broadcasts sent while users are being added each list everyone added before them, and the next lists all', async () => {
      const s = school(t)
      await s.listInDirectory('first', {})
      const added = new Set<string>()
      const sent: Array<{ before: string[]; id: Promise<string> }> = []
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          await s.listInDirectory(`user-${String(i).padStart(2, '0')}`, {})
          added.add(`user-${String(i).padStart(2, '0')}`)
          // Each addition is followed by a broadcast while others are still being added.
          sent.push({ before: [...added], id: s.publish({ tenant: true }, {}, s.admin) })
        }),
      )
      for (const { before, id } of sent) {
        const res = await s.rollCall(await id, { limit: 1000 }, s.admin)
        expect(res.status, res.text).toBe(200)
        expect(idsOf(res.body.recipients)).toEqual(expect.arrayContaining(['first', ...before]))
      }
      await t.app.userClaims.flush()
      const last = await s.rollCall(await s.publish({ tenant: true }, {}, s.admin), { limit: 1000 }, s.admin)
      expect(idsOf(last.body.recipients)).toEqual(['first', 'head', ...[...added].sort()])
    })

    it('new users registering devices all at once (their tokens’ claims written beside) are all registered, and the next broadcast lists them', async () => {
      const s = school(t)
      await s.seen(s.admin)
      const users = Array.from({ length: 30 }, (_, i) => `new-${String(i).padStart(2, '0')}`)
      // Each registration writes the device and the user's claims in one transaction, while the claims of the same
      // tokens, seen by the requests, are written apart: twice over, in both orders.
      for (let round = 0; round < 2; round++) {
        await Promise.all(
          users.map(async (user) => {
            await s.registerDevice(s.user(user))
            await t.app.userClaims.flush()
          }),
        )
      }
      await t.app.userClaims.flush()
      const res = await s.rollCall(await s.publish({ tenant: true }, {}, s.admin), { limit: 1000 }, s.admin)
      expect(idsOf(res.body.recipients)).toEqual(['head', ...users])
    })

    it('a tenant broadcast after a table of users is emptied (TRUNCATE) lists those still known', async () => {
      const s = school(t)
      const broadcast = async () => {
        await t.app.userClaims.flush()
        const res = await s.rollCall(await s.publish({ tenant: true }, {}, s.admin), {}, s.admin)
        expect(res.status, res.text).toBe(200)
        return idsOf(res.body.recipients)
      }
      await s.listInDirectory('listed', {})
      expect(await broadcast()).toEqual(['head', 'listed'])
      // Every tenant's directory goes: the tests before this one do not read theirs again.
      await t.database.query(sql`truncate directory_users`)
      expect(await broadcast()).toEqual(['head'])
    })

    it('named users are recipients as named, whether or not the service knows them', async () => {
      const s = school(t)
      const id = await s.publish({ users: ['zoe', 'amir', 'zoe'] })
      expect(idsOf(await s.recipients(id))).toEqual(['amir', 'zoe'])
    })

    it('pushes to a role follow the directory’s current roles, not the roles the device was registered with', async () => {
      const s = school(t)
      const endpoint = await s.registerDevice(s.user('moved', { roles: ['parent'] }))
      await s.listInDirectory('moved', { roles: ['staff'] })
      const toParents = await s.publish({ roles: ['parent'] }, { priority: 'urgent' })
      const toStaff = await s.publish({ roles: ['staff'] }, { priority: 'urgent' })
      await waitForPush(endpoint, toStaff)
      await sleep(300)
      expect(pushesOf(endpoint, toParents)).toEqual([])
    })
  })

  describe('roll-call', () => {
    it('says per recipient when the event reached an open stream, was pushed, acked and read, with totals', async () => {
      const s = school(t)
      const streamer = s.user('streamer')
      const phone = s.user('phone')
      const stream = await open(streamer)
      const endpoint = await s.registerDevice(phone)
      const id = await s.publish({ users: ['streamer', 'phone', 'absent'] }, { priority: 'high' })
      await stream.waitFor((c) => c.notificationIds.includes(id), 10_000, 'the event on the stream')
      await waitForPush(endpoint, id)
      expect((await s.ack(id, phone)).status).toBe(204)
      expect((await s.read(id, streamer)).status).toBe(204)

      // Stream deliveries are written about once a second.
      const recipients = await until(async () => {
        const r = await s.recipients(id)
        return r.find((x) => x.userId === 'streamer')?.deliveredAt && r.find((x) => x.userId === 'phone')?.pushedAt
          ? r
          : undefined
      }, 'the delivery and the push to show in the roll-call')
      const byUser = Object.fromEntries(recipients.map((r) => [r.userId, r]))
      expect(Object.keys(byUser).sort()).toEqual(['absent', 'phone', 'streamer'])
      expect(byUser.streamer.deliveredAt).not.toBeNull()
      expect(byUser.streamer.readAt).not.toBeNull()
      expect(byUser.streamer.ackedAt).not.toBeNull()
      expect(byUser.phone.pushedAt).not.toBeNull()
      expect(byUser.phone.ackedAt).not.toBeNull()
      expect(byUser.phone.readAt).toBeNull()
      expect(byUser.phone.deliveredAt).toBeNull()
      expect(byUser.absent).toMatchObject({ deliveredAt: null, pushedAt: null, ackedAt: null, readAt: null })

      const res = await s.rollCall(id, { state: 'unread' })
      expect(idsOf(res.body.recipients)).toEqual(['absent', 'phone'])
      expect(res.body.totals).toEqual({ recipients: 3, delivered: 1, pushed: 1, acked: 2, read: 1, unread: 2 })
      expect(idsOf((await s.rollCall(id, { state: 'read' })).body.recipients)).toEqual(['streamer'])
      expect(idsOf((await s.rollCall(id, { state: 'acked' })).body.recipients)).toEqual(['phone', 'streamer'])
      const status = await s.status(id)
      expect(status.body.recipients).toEqual(res.body.totals)
    })

    it('a replay after reconnecting counts as delivered', async () => {
      const s = school(t)
      const reader = s.user('reader')
      const first = await open(reader)
      const before = await s.publish({ users: ['reader'] })
      await first.waitFor((c) => c.notificationIds.includes(before), 10_000, 'the first event')
      first.close()
      const missed = await s.publish({ users: ['reader'] })
      const again = await SseClient.open(t.url, { token: reader, lastEventId: before })
      streams.push(again)
      await again.waitFor((c) => c.notificationIds.includes(missed), 10_000, 'the replayed event')
      await until(async () => (await s.recipients(missed))[0]?.deliveredAt, 'the replay recorded as delivered')
    })

    it('pages in user id order with an opaque cursor, and the totals cover everyone', async () => {
      const s = school(t)
      const users = Array.from({ length: 25 }, (_, i) => `user-${String(i).padStart(2, '0')}`)
      const id = await s.publish({ users })
      const seen: string[] = []
      let cursor: string | undefined
      for (let page = 0; page < 10; page++) {
        const res = await s.rollCall(id, { limit: 10, ...(cursor ? { cursor } : {}) })
        expect(res.status, res.text).toBe(200)
        expect(res.body.totals.recipients).toBe(25)
        seen.push(...idsOf(res.body.recipients))
        cursor = res.body.next ?? undefined
        if (!cursor) break
      }
      expect(seen).toEqual(users)
    })

    it('is for the publisher and the tenant’s admins: anyone else, or another tenant, gets 404', async () => {
      const s = school(t)
      const other = school(t)
      const id = await s.publish({ users: ['someone'] })
      expect((await s.rollCall(id, {}, s.admin)).status).toBe(200)
      const stranger = await s.rollCall(id, {}, s.user('someone'))
      expect(stranger.status).toBe(404)
      expect(stranger.headers['content-type']).toMatch(/problem\+json/)
      expect((await s.rollCall(id, {}, other.admin)).status).toBe(404)
      expect((await s.nudge(id, s.user('someone'))).status).toBe(404)
    })

    it('bad input gets a 400 that names it', async () => {
      const s = school(t)
      const id = await s.publish({ users: ['someone'] })
      const badState = await s.rollCall(id, { state: 'maybe' })
      expect(badState.status).toBe(400)
      expect(badState.body.detail).toMatch(/state/)
      const badCursor = await s.rollCall(id, { cursor: '!!!' })
      expect(badCursor.status).toBe(400)
      expect(badCursor.body.detail).toBe('querystring.cursor: is not a cursor this listing gave (pass `next` as it is)')
      expect((await s.rollCall(id, { limit: 0 })).status).toBe(400)
      expect((await s.rollCall('abc')).status).toBe(400)
    })

    it('the publisher’s open stream hears, live, when a recipient acks or reads', async () => {
      const s = school(t)
      const publisherStream = await open(s.teacher)
      const id = await s.publish({ users: ['kid'] })
      expect((await s.read(id, s.user('kid'))).status).toBe(204)
      await publisherStream.waitFor((c) => c.events.some((e) => e.event === 'roll-call'), 10_000, 'a roll-call frame')
      const frame = publisherStream.events.find((e) => e.event === 'roll-call')
      expect(frame?.id).toBeUndefined()
      expect(JSON.parse(frame?.data ?? '{}')).toEqual({ ids: [id], userId: 'kid', state: 'read' })
    })
  })

  describe('nudge', () => {
    it('reminds only the unread: their streams get a nudge, their devices the event again; no new inbox item', async () => {
      const s = school(t)
      const unreadToken = s.user('unread')
      const readerToken = s.user('reader')
      const unreadStream = await open(unreadToken)
      const readerStream = await open(readerToken)
      const unreadPhone = await s.registerDevice(s.user('unread-phone'))
      const readerPhone = await s.registerDevice(readerToken)
      const id = await s.publish({ users: ['unread', 'reader', 'unread-phone'] }, { priority: 'urgent' })
      await waitForPush(unreadPhone, id)
      await waitForPush(readerPhone, id)
      expect((await s.read(id, readerToken)).status).toBe(204)
      const inboxBefore = await s.inbox(unreadToken)

      const res = await s.nudge(id)
      expect(res.status, res.text).toBe(200)
      expect(res.body).toEqual({ nudged: 2, pushes: 1 })

      await unreadStream.waitFor((c) => c.events.some((e) => e.event === 'nudge'), 10_000, 'a nudge frame')
      const nudge = unreadStream.events.find((e) => e.event === 'nudge')
      expect(nudge?.id).toBeUndefined()
      expect(JSON.parse(nudge?.data ?? '{}')).toMatchObject({ id, title: 'Trip cancelled tomorrow' })
      const second = await until(() => pushesOf(unreadPhone, id)[1], 'the nudge push')
      expect(payloadOf(second)).toMatchObject({ id, nudge: true })

      await sleep(500)
      expect(readerStream.events.some((e) => e.event === 'nudge')).toBe(false)
      expect(pushesOf(readerPhone, id)).toHaveLength(1)
      expect(await s.inbox(unreadToken)).toEqual(inboxBefore)
    })

    it('at most once per NUDGE_MIN_INTERVAL_S per event: sooner is a 429 with Retry-After', async () => {
      const s = school(t)
      const id = await s.publish({ users: ['late'] })
      expect((await s.nudge(id)).body).toEqual({ nudged: 1, pushes: 0 })
      const again = await s.nudge(id)
      expect(again.status).toBe(429)
      expect(again.headers['content-type']).toMatch(/problem\+json/)
      const retryAfter = Number(again.headers['retry-after'])
      expect(retryAfter).toBeGreaterThan(590)
      expect(retryAfter).toBeLessThanOrEqual(600)
      expect(again.body.detail).toMatch(/nudged less than 600 s ago/)
      // Another event is nudged on its own schedule.
      const other = await s.publish({ users: ['late'] })
      expect((await s.nudge(other)).status).toBe(200)
    })

    it('nobody left unread: nobody is nudged', async () => {
      const s = school(t)
      const kid = s.user('kid')
      const id = await s.publish({ users: ['kid'] })
      expect((await s.read(id, kid)).status).toBe(204)
      expect((await s.nudge(id)).body).toEqual({ nudged: 0, pushes: 0 })
    })

    it('a recalled event cannot be nudged (409)', async () => {
      const s = school(t)
      const id = await s.publish({ users: ['kid'] })
      expect((await t.http().delete(`/v1/events/${id}`).set(s.auth(s.teacher))).status).toBe(204)
      const res = await s.nudge(id)
      expect(res.status).toBe(409)
      expect(res.body.detail).toMatch(/recalled/)
    })

    it('a nudge shows the event only to streams whose token lets them see it', async () => {
      const s = school(t)
      // The directory makes them a parent (a recipient), their token does not (they may not see it).
      await s.listInDirectory('unconfirmed', { roles: ['parent'] })
      const stream = await open(s.user('unconfirmed'))
      const id = await s.publish({ roles: ['parent'] })
      expect(idsOf(await s.recipients(id))).toContain('unconfirmed')
      expect((await s.nudge(id)).body.nudged).toBeGreaterThanOrEqual(1)
      await sleep(500)
      expect(stream.events.filter((e) => e.event === 'nudge' || e.event === 'notification')).toEqual([])
    })
  })
})

describePostgres('nudge and roll-call across two instances on one PostgreSQL database', () => {
  let url: string
  const apps: Array<Awaited<ReturnType<typeof startInstanceOn>>> = []
  const streams: SseClient[] = []
  const tenant = `across-${process.pid}`
  const token = (sub: string, scope?: string) =>
    mintToken(TEST_JWT_SECRET, { sub, tenant, ...(scope ? { scope } : {}) })
  const auth = (t: string) => ({ authorization: `Bearer ${t}` })

  beforeAll(async () => {
    url = await createPostgresDatabase()
    apps.push(await startInstanceOn(url), await startInstanceOn(url))
  })
  afterAll(async () => {
    for (const c of streams) c.close()
    for (const a of apps) await a.close()
    await dropPostgresDatabase(url)
  })

  it('a nudge made on one instance reaches the unread recipient’s stream on the other; a read there reaches the publisher’s stream here', async () => {
    const [a, b] = apps
    const teacher = token('teacher', PUBLISHER)
    const kidStream = await SseClient.open(b.url, { token: token('kid') })
    const teacherStream = await SseClient.open(a.url, { token: teacher })
    streams.push(kidStream, teacherStream)
    await kidStream.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the kid’s stream')
    await teacherStream.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the teacher’s stream')
    const res = await a
      .http()
      .post('/v1/events')
      .set(auth(teacher))
      .send({ type: 'trip.cancelled', title: 'Trip', to: { users: ['kid'] } })
    expect(res.status, res.text).toBe(201)
    const id = res.body.id as string
    await kidStream.waitFor((c) => c.notificationIds.includes(id), 10_000, 'the event on instance b')

    const nudged = await a.http().post(`/v1/events/${id}/nudge`).set(auth(teacher))
    expect(nudged.body).toEqual({ nudged: 1, pushes: 0 })
    await kidStream.waitFor((c) => c.events.some((e) => e.event === 'nudge'), 10_000, 'the nudge on instance b')

    expect(
      (
        await b
          .http()
          .post(`/v1/events/${id}/read`)
          .set(auth(token('kid')))
      ).status,
    ).toBe(204)
    await teacherStream.waitFor(
      (c) => c.events.some((e) => e.event === 'roll-call'),
      10_000,
      'the roll-call on instance a',
    )
    // The delivery recorded on b shows in the roll-call read on a.
    await until(async () => {
      const r = await a.http().get(`/v1/events/${id}/recipients`).set(auth(teacher))
      return r.body.recipients?.[0]?.deliveredAt && r.body.recipients[0].readAt
    }, 'the delivery on b and the read in the roll-call on a')
  })
})
