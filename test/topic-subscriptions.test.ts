import { setTimeout as sleep } from 'node:timers/promises'
import type supertest from 'supertest'
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startApp, startInstanceOn, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import {
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import { PUSH_CONFIG, pushesOf, service, usePushService, waitForPush } from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 18, part 4: the topics users follow (the seeds' channels). A user subscribes within their token's topics
// claim, an admin manages a topic's members; a stream opened without ?topics= follows the subscriptions, live, on
// every instance; topic events are pushed to the topic's subscribers.

usePushService()

let tenants = 0

/** One tenant's people, over one app. */
function school(http: () => supertest.Agent, token: TestApp['token'], name: string, given?: string) {
  const tenant = given ?? `${name}-${process.pid}-${++tenants}`
  const user = (sub: string, topics: string[] = ['class:*'], scope?: string) =>
    token({ sub, tenant, topics, ...(scope ? { scope } : {}) })
  const auth = (t: string) => ({ authorization: `Bearer ${t}` })
  const admin = token({ sub: 'head', tenant, scope: `admin ${PUBLISHER}` })
  return {
    tenant,
    user,
    admin,
    mine: (t: string) => http().get('/v1/me/topics').set(auth(t)),
    subscribe: (t: string, topic: string) =>
      http()
        .put(`/v1/me/topics/${encodeURIComponent(topic)}`)
        .set(auth(t)),
    unsubscribe: (t: string, topic: string) =>
      http()
        .delete(`/v1/me/topics/${encodeURIComponent(topic)}`)
        .set(auth(t)),
    addMembers: (topic: string, users: string[], as = admin) =>
      http()
        .put(`/v1/topics/${encodeURIComponent(topic)}/members`)
        .set(auth(as))
        .send({ users }),
    removeMembers: (topic: string, users: string[], as = admin) =>
      http()
        .delete(`/v1/topics/${encodeURIComponent(topic)}/members`)
        .set(auth(as))
        .send({ users }),
    members: (topic: string, as = admin) =>
      http()
        .get(`/v1/topics/${encodeURIComponent(topic)}/members`)
        .set(auth(as)),
    async publish(to: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
      const res = await http()
        .post('/v1/events')
        .set(auth(admin))
        .send({ type: 'class.news', title: 'News', to, ...extra })
      expect(res.status, res.text).toBe(201)
      return res.body.id as string
    },
    async inbox(t: string): Promise<string[]> {
      const res = await http().get('/v1/events').set(auth(t))
      expect(res.status, res.text).toBe(200)
      return (res.body.events as Array<{ id: string }>).map((e) => e.id)
    },
  }
}

const topicsOf = (res: supertest.Response) => (res.body.topics as Array<{ topic: string }>).map((t) => t.topic)

describeEachBackend('topic subscriptions', (backend) => {
  let t: TestApp
  const newSchool = () => school(() => t.http(), t.token, `topics-${backend}`)

  beforeAll(async () => {
    t = await startApp(backend, { config: PUSH_CONFIG, pushAgent: service.agent })
  })
  afterAll(() => t?.close())

  const open = async (token: string, topics?: string[]) => {
    const stream = await SseClient.open(t.url, { token, topics })
    onTestFinished(() => stream.close())
    expect(stream.status, stream.body).toBe(200)
    await stream.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the stream to start')
    return stream
  }

  it('a user subscribes within their claim (204, idempotent), lists and unsubscribes; outside the claim is 403', async () => {
    const s = newSchool()
    const pupil = s.user('pupil', ['class:7*', 'club:chess'])
    expect((await s.mine(pupil)).body).toEqual({ topics: [] })
    expect((await s.subscribe(pupil, 'class:7A')).status).toBe(204)
    expect((await s.subscribe(pupil, 'class:7A')).status).toBe(204)
    expect((await s.subscribe(pupil, 'club:chess')).status).toBe(204)
    const listed = await s.mine(pupil)
    expect(topicsOf(listed)).toEqual(['class:7A', 'club:chess'])
    expect(listed.body.topics[0]).toMatchObject({ addedBy: 'self', createdAt: expect.stringMatching(/Z$/) })

    const refused = await s.subscribe(pupil, 'class:8A')
    expect(refused.status).toBe(403)
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(refused.body.detail).toContain('class:8A')
    expect((await s.subscribe(s.user('nobody', []), 'class:7A')).status).toBe(403)

    expect((await s.unsubscribe(pupil, 'class:7A')).status).toBe(204)
    expect((await s.unsubscribe(pupil, 'class:7A')).status).toBe(204)
    expect(topicsOf(await s.mine(pupil))).toEqual(['club:chess'])
  })

  it.each([
    ['a pattern', 'class:*'],
    ['a comma', 'a,b'],
    ['a space', 'a b'],
  ])('a topic with %s in its name is a 400 naming the parameter', async (_what, topic) => {
    const s = newSchool()
    const res = await s.subscribe(s.user('pupil', ['*']), topic)
    expect(res.status).toBe(400)
    expect(res.body.errors?.[0]?.path).toBe('params.topic')
  })

  it('admins manage members in bulk; others get 403; bad bodies get 400 naming the field', async () => {
    const s = newSchool()
    const added = await s.addMembers('class:7A', ['ann', 'bob', 'ann'])
    expect(added.status, added.text).toBe(200)
    expect(added.body).toEqual({ changed: 2 })
    expect((await s.addMembers('class:7A', ['bob', 'cat'])).body).toEqual({ changed: 1 })
    expect((await s.members('class:7A')).body).toEqual({ users: ['ann', 'bob', 'cat'] })
    // Admin membership does not depend on the user's claims; the user sees who added it.
    expect((await s.mine(s.user('ann', []))).body.topics).toEqual([
      expect.objectContaining({ topic: 'class:7A', addedBy: 'admin' }),
    ])
    expect((await s.removeMembers('class:7A', ['ann', 'zed'])).body).toEqual({ changed: 1 })
    expect((await s.members('class:7A')).body).toEqual({ users: ['bob', 'cat'] })

    const teacher = s.user('teacher', ['class:*'], PUBLISHER)
    expect((await s.addMembers('class:7A', ['dan'], teacher)).status).toBe(403)
    expect((await s.removeMembers('class:7A', ['bob'], teacher)).status).toBe(403)
    expect((await s.members('class:7A', teacher)).status).toBe(403)

    const empty = await s.addMembers('class:7A', [])
    expect(empty.status).toBe(400)
    expect(empty.body.errors[0].path).toBe('body.users')
    const tooMany = await s.addMembers(
      'class:7A',
      Array.from({ length: 1_001 }, (_, i) => `u${i}`),
    )
    expect(tooMany.status).toBe(400)
    expect(tooMany.body.errors[0].path).toBe('body.users')
    // Nothing of a refused request was stored.
    expect((await s.members('class:7A')).body).toEqual({ users: ['bob', 'cat'] })
  })

  it('a stream without ?topics= gets the subscribed topics’ events, and follows subscribing and unsubscribing live', async () => {
    const s = newSchool()
    const pupil = s.user('pupil')
    await s.subscribe(pupil, 'class:7A')
    const stream = await open(pupil)
    const asked = await open(pupil, ['class:7B']) // named its topics: keeps to them

    const to7A = await s.publish({ topics: ['class:7A'] })
    const to7B = await s.publish({ topics: ['class:7B'] })
    const marker = await s.publish({ users: ['pupil'] })
    await stream.waitFor((c) => c.notificationIds.includes(marker), 10_000, 'the marker')
    expect(stream.notificationIds).toEqual([to7A, marker])
    await asked.waitFor((c) => c.notificationIds.includes(marker), 10_000, 'the marker')
    expect(asked.notificationIds).toEqual([to7B, marker])

    // Subscribing while the stream is open: its next events come, without reconnecting.
    expect((await s.subscribe(pupil, 'class:7B')).status).toBe(204)
    const next7B = await s.publish({ topics: ['class:7B'] })
    await stream.waitFor((c) => c.notificationIds.includes(next7B), 10_000, 'the new topic’s event')
    // An admin removing the pupil from 7A ends 7A's events on the stream.
    await s.removeMembers('class:7A', ['pupil'])
    const after7A = await s.publish({ topics: ['class:7A'] })
    const marker2 = await s.publish({ users: ['pupil'] })
    await stream.waitFor((c) => c.notificationIds.includes(marker2), 10_000, 'the second marker')
    expect(stream.notificationIds).toEqual([to7A, marker, next7B, marker2])
    expect(stream.notificationIds).not.toContain(after7A)
    expect(stream.events.filter((e) => e.event === 'notification')).toHaveLength(4)
  })

  it('a resume replays the subscribed topics’ events it missed, and the inbox lists them', async () => {
    const s = newSchool()
    const pupil = s.user('pupil', [])
    await s.addMembers('club:chess', ['pupil'])
    const first = await s.publish({ topics: ['club:chess'] })
    const other = await s.publish({ topics: ['club:drama'] })
    const second = await s.publish({ topics: ['club:chess'] })
    const stream = await open(pupil)
    const resumed = await SseClient.open(t.url, { token: pupil, lastEventId: first })
    onTestFinished(() => resumed.close())
    await resumed.waitFor((c) => c.notificationIds.includes(second), 10_000, 'the replayed event')
    expect(resumed.notificationIds).toEqual([second])
    expect(stream.notificationIds).toEqual([])
    // REST reads show what the user follows, even outside their token's claim (an admin added them).
    expect(await s.inbox(pupil)).toEqual([second, first])
    expect(await s.inbox(pupil)).not.toContain(other)
  })

  it('topic events are pushed to the topic’s subscribers, and stop when they unsubscribe', async () => {
    const s = newSchool()
    const pupil = s.user('pupil', ['club:*'])
    const subscription = service.createSubscription()
    const res = await t
      .http()
      .post('/v1/push/subscriptions')
      .set({ authorization: `Bearer ${pupil}` })
      .send(subscription)
    expect(res.status, res.text).toBe(201)
    const { endpoint } = subscription
    await s.subscribe(pupil, 'club:chess')
    const followed = await s.publish({ topics: ['club:chess'] }, { priority: 'urgent' })
    await waitForPush(endpoint, followed)

    await s.unsubscribe(pupil, 'club:chess')
    const unfollowed = await s.publish({ topics: ['club:chess'] }, { priority: 'urgent' })
    const marker = await s.publish({ users: ['pupil'] }, { priority: 'urgent' })
    await waitForPush(endpoint, marker)
    expect(pushesOf(endpoint, unfollowed)).toEqual([])
    expect(pushesOf(endpoint, followed)).toHaveLength(1)
  })
})

describePostgres('topic subscriptions across two instances on one PostgreSQL database', () => {
  let url: string
  const apps: Array<{ close(): Promise<unknown>; url: string; http: () => supertest.Agent }> = []

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

  it('a subscription made on one instance updates the user’s open stream on the other', async () => {
    const a = await instance()
    const b = await instance()
    const token: TestApp['token'] = (claims, ttl) => mintToken(TEST_JWT_SECRET, { tenant: 't1', ...claims }, ttl)
    const onA = school(a.http, token, 'pair')
    const onB = school(b.http, token, 'pair', onA.tenant)
    const pupil = onA.user('pupil')
    const stream = await SseClient.open(b.url, { token: pupil })
    onTestFinished(() => stream.close())
    expect(stream.status).toBe(200)
    await stream.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the stream to start')

    expect((await onA.subscribe(pupil, 'class:7A')).status).toBe(204)
    // The change reaches instance B by NOTIFY; give it a moment, then publish on A.
    await sleep(500)
    const id = await onA.publish({ topics: ['class:7A'] })
    await stream.waitFor((c) => c.notificationIds.includes(id), 10_000, 'the event on the other instance')

    await onB.removeMembers('class:7A', ['pupil'], onB.admin)
    await sleep(500)
    const after = await onA.publish({ topics: ['class:7A'] })
    const marker = await onA.publish({ users: ['pupil'] })
    await stream.waitFor((c) => c.notificationIds.includes(marker), 10_000, 'the marker')
    expect(stream.notificationIds).toEqual([id, marker])
    expect(stream.notificationIds).not.toContain(after)
  })
})
