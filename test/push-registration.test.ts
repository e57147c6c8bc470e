import { sql } from 'drizzle-orm'
import supertest, { type Response } from 'supertest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { commaList, DEFAULT_PUSH_ENDPOINT_ALLOWLIST } from '../src/config.ts'
import { endpointAllowed } from '../src/push/subscriptions.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { type BrowserSubscription, type PushService, startPushService } from './helpers/push-service.ts'

// Who may hold a push device, for how long, and how many: the abuse and takeover findings of the security
// review (device cap, registration rate limit, claims that expire, renew tokens that expire, endpoints that
// cannot be taken over by their URL alone).

vi.setConfig({ testTimeout: 60_000 })

const MAX_DEVICES = 3
const REGISTRATIONS_PER_MIN = 8

let service: PushService
beforeAll(async () => {
  service = await startPushService()
})
afterAll(async () => {
  await service?.close()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

async function until<T>(check: () => T | Promise<T>, what: string, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(20)
  }
}

function expectProblem(res: Response, status: number) {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  return JSON.parse(res.text) as { detail: string; errors?: Array<{ path: string }> }
}

/** Event ids a device received, in arrival order. */
const idsAt = (endpoint: string) => service.messagesFor(endpoint).map((m) => String((m.json() as { id: unknown }).id))

describeEachBackend('Push registrations', (backend) => {
  let t: TestApp
  let tenants = 0

  beforeAll(async () => {
    t = await startApp(backend, {
      pushAgent: service.agent,
      config: {
        PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
        MAX_DEVICES_PER_USER: MAX_DEVICES,
        RATE_LIMIT_PUSH_PER_MIN: REGISTRATIONS_PER_MIN,
      },
    })
  })
  afterAll(async () => {
    await t?.close()
  })

  const http = () => supertest(t.url)
  function newTenant() {
    const tenant = `reg-${backend}-${++tenants}`
    return {
      tenant,
      publisher: t.token({ sub: 'publisher', tenant, scope: PUBLISHER }),
      user: (sub: string, extra: { roles?: string[]; topics?: string[] } = {}, ttl?: number) =>
        t.token({ sub, tenant, ...extra }, ttl),
    }
  }
  const register = (token: string, subscription: BrowserSubscription = service.createSubscription()) =>
    http().post('/v1/push/subscriptions').set(bearer(token)).send(subscription)
  async function registered(token: string, subscription: BrowserSubscription = service.createSubscription()) {
    const res = await register(token, subscription)
    expect(res.status, res.text).toBe(201)
    return { ...(res.body as { id: string; renewToken: string }), endpoint: subscription.endpoint, subscription }
  }
  async function devices(token: string): Promise<string[]> {
    const res = await http().get('/v1/push/subscriptions').set(bearer(token))
    expect(res.status, res.text).toBe(200)
    return (res.body as { subscriptions: Array<{ endpoint: string }> }).subscriptions.map((d) => d.endpoint)
  }
  async function publish(token: string, body: Record<string, unknown>): Promise<string> {
    const res = await http()
      .post('/v1/events')
      .set(bearer(token))
      .send({ type: 'test.push', title: 'Hello', priority: 'urgent', ...body })
    expect(res.status, res.text).toBe(201)
    return (res.body as { id: string }).id
  }
  /** An urgent event to the user by name: once it arrives, whatever was published before it had its chance. */
  async function marker(publisher: string, userId: string, endpoint: string) {
    const id = await publish(publisher, { to: { users: [userId] } })
    await until(() => idsAt(endpoint).includes(id), `marker ${id} at ${endpoint}`)
    return id
  }

  describe('devices per user', () => {
    it(`keeps at most MAX_DEVICES_PER_USER (${MAX_DEVICES}): one more drops the least recently registered, which gets nothing more`, async () => {
      const ten = newTenant()
      const alice = ten.user('alice')
      const first = await registered(alice)
      const second = await registered(alice)
      const third = await registered(alice)
      // Registering the first again makes it the most recent: the second is now the oldest.
      await sleep(5)
      await registered(alice, first.subscription)
      const fourth = await registered(alice)

      expect((await devices(alice)).sort()).toEqual([first.endpoint, third.endpoint, fourth.endpoint].sort())
      const id = await marker(ten.publisher, 'alice', fourth.endpoint)
      await until(() => idsAt(first.endpoint).includes(id) && idsAt(third.endpoint).includes(id), 'pushes to kept')
      expect(idsAt(second.endpoint)).toEqual([])
    })

    it('the cap is per user: another user of the tenant keeps their own devices', async () => {
      const ten = newTenant()
      for (let i = 0; i < MAX_DEVICES + 2; i++) await registered(ten.user('alice'))
      const bobs = await registered(ten.user('bob'))
      expect(await devices(ten.user('alice'))).toHaveLength(MAX_DEVICES)
      expect(await devices(ten.user('bob'))).toEqual([bobs.endpoint])
    })
  })

  describe('registration rate limit', () => {
    it(`the registration past RATE_LIMIT_PUSH_PER_MIN (${REGISTRATIONS_PER_MIN}) is 429 with Retry-After and stores nothing; another user is unaffected`, async () => {
      const ten = newTenant()
      const mallory = ten.user('mallory')
      for (let i = 0; i < REGISTRATIONS_PER_MIN; i++) {
        const res = await register(mallory)
        expect(res.status, res.text).toBe(201)
      }
      const refused = service.createSubscription()
      const res = await register(mallory, refused)
      expectProblem(res, 429)
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0)
      expect(await devices(mallory)).not.toContain(refused.endpoint)
      await registered(ten.user('carol'))
    })
  })

  describe('role and topic pushes follow the user’s current claims', () => {
    /** Follows a topic (PUT /v1/me/topics/...): topic pushes go to a topic's subscribers, within their claims. */
    const follow = async (token: string, topic: string) => {
      const res = await http()
        .put(`/v1/me/topics/${encodeURIComponent(topic)}`)
        .set(bearer(token))
      expect(res.status, res.text).toBe(204)
    }

    it('a device registered with a short token stops getting role and topic pushes when that token expires; pushes to the user go on', async () => {
      const ten = newTenant()
      const shortToken = ten.user('teacher', { roles: ['teacher'], topics: ['class:7A'] }, 2)
      const device = await registered(shortToken)
      await follow(shortToken, 'class:7A')
      const before = await publish(ten.publisher, { to: { roles: ['teacher'] } })
      await until(() => idsAt(device.endpoint).includes(before), 'the role push while the token is valid')

      await sleep(2_500) // the token (and so the claims it brought) has expired
      const toRole = await publish(ten.publisher, { to: { roles: ['teacher'] } })
      const toTopic = await publish(ten.publisher, { to: { topics: ['class:7A'] } })
      const direct = await marker(ten.publisher, 'teacher', device.endpoint)
      expect(idsAt(device.endpoint)).toEqual([before, direct])
      expect(idsAt(device.endpoint)).not.toContain(toRole)
      expect(idsAt(device.endpoint)).not.toContain(toTopic)
    })

    it('claims are refreshed whenever the user authenticates: a new token with the role brings role pushes back, one without it ends them', async () => {
      const ten = newTenant()
      const first = ten.user('pupil', { topics: ['class:7A'] })
      const device = await registered(first)
      await follow(first, 'class:7A')
      // The pupil moves to 7B: their next token says so, and any authenticated request tells the service. Their
      // subscription to 7A stays stored, but no longer counts: their claims do not allow it any more.
      const moved = ten.user('pupil', { topics: ['class:7B'] })
      expect((await http().get('/v1/events/unread-count').set(bearer(moved))).status).toBe(200)
      const stored = async () =>
        (
          await t.database.query<{ topics: string[] }>(
            sql`select topics from user_claims where tenant = ${ten.tenant} and user_id = 'pupil'`,
          )
        )[0]?.topics.join(',')
      await until(async () => (await stored()) === 'class:7B', 'the refreshed claims')
      await follow(moved, 'class:7B')

      const to7A = await publish(ten.publisher, { to: { topics: ['class:7A'] } })
      const to7B = await publish(ten.publisher, { to: { topics: ['class:7B'] } })
      await until(() => idsAt(device.endpoint).includes(to7B), 'the push for the new class')
      await marker(ten.publisher, 'pupil', device.endpoint)
      expect(idsAt(device.endpoint)).not.toContain(to7A)
    })
  })

  describe('endpoints cannot be taken over by their URL', () => {
    it('a user of another tenant registering my endpoint with other keys gets 409; my device stays mine and keeps getting pushes', async () => {
      const a = newTenant()
      const b = newTenant()
      const mine = await registered(a.user('alice'))
      const attacker = { ...service.createSubscription(), endpoint: mine.endpoint }
      expectProblem(await register(b.user('mallory'), attacker), 409)
      expectProblem(await register(a.user('bob'), attacker), 409)
      expect(await devices(a.user('alice'))).toEqual([mine.endpoint])
      expect(await devices(b.user('mallory'))).toEqual([])
      await marker(a.publisher, 'alice', mine.endpoint)
    })

    it('the same browser (same endpoint and keys) signing in as another user moves to them, across tenants too', async () => {
      const a = newTenant()
      const b = newTenant()
      const browser = service.createSubscription()
      await registered(a.user('alice'), browser)
      await registered(b.user('alice-at-b'), browser)
      expect(await devices(a.user('alice'))).toEqual([])
      expect(await devices(b.user('alice-at-b'))).toEqual([browser.endpoint])
    })

    it('renew with my renew token and someone else’s endpoint is 409 and deletes nothing of theirs', async () => {
      const a = newTenant()
      const b = newTenant()
      const victim = await registered(a.user('alice'))
      const mine = await registered(b.user('mallory'))
      const res = await http()
        .post('/v1/push/subscriptions/renew')
        .set(bearer(mine.renewToken))
        .send({ ...service.createSubscription(), endpoint: victim.endpoint })
      expectProblem(res, 409)
      expect(await devices(a.user('alice'))).toEqual([victim.endpoint])
      expect(await devices(b.user('mallory'))).toEqual([mine.endpoint])
    })

    it('an endpoint in another spelling (upper-case scheme and host, explicit port) is the same device', async () => {
      const ten = newTenant()
      const browser = service.createSubscription()
      const first = await registered(ten.user('alice'), browser)
      const url = new URL(browser.endpoint)
      const shouted = `HTTPS://${url.host.toUpperCase()}${url.pathname}`
      const again = await registered(ten.user('alice'), { ...browser, endpoint: shouted })
      expect(again.id).toBe(first.id)
      expect(await devices(ten.user('alice'))).toEqual([browser.endpoint])
    })
  })

  describe('renew tokens expire', () => {
    it('a renew token past its lifetime is 401 and changes nothing; a fresh one works and is replaced', async () => {
      const ten = newTenant()
      const device = await registered(ten.user('alice'))
      const stale = await registered(ten.user('bob'))
      const expiresAt = await t.database.query<{ in_days: number }>(
        sql`select extract(epoch from renew_token_expires_at - now()) / 86400 as in_days
            from push_subscriptions where id = ${Number(device.id)}`,
      )
      expect(Number(expiresAt[0].in_days)).toBeGreaterThan(29)
      expect(Number(expiresAt[0].in_days)).toBeLessThanOrEqual(30)

      // Bob's browser last registered long ago: its renew token has run out.
      await t.database.query(
        sql`update push_subscriptions set renew_token_expires_at = now() - interval '1 second' where id = ${Number(stale.id)}`,
      )
      const refused = await http()
        .post('/v1/push/subscriptions/renew')
        .set(bearer(stale.renewToken))
        .send(service.createSubscription())
      expectProblem(refused, 401)
      expect(await devices(ten.user('bob'))).toEqual([stale.endpoint])

      const fresh = service.createSubscription()
      const renewed = await http().post('/v1/push/subscriptions/renew').set(bearer(device.renewToken)).send(fresh)
      expect(renewed.status, renewed.text).toBe(200)
      expect(renewed.body.renewToken).not.toBe(device.renewToken)
      expect(await devices(ten.user('alice'))).toEqual([fresh.endpoint])
    })
  })
})

describe('push endpoint allowlist', () => {
  const defaults = commaList(DEFAULT_PUSH_ENDPOINT_ALLOWLIST)
  it.each([
    ['https://fcm.googleapis.com/fcm/send/abc', true],
    ['https://fcm.googleapis.com/wp/abc', true],
    ['https://updates.push.services.mozilla.com/wpush/v2/abc', true],
    ['https://web.push.apple.com/abc', true],
    ['https://wns2-par02p.notify.windows.com/w/?token=abc', true],
    ['https://fcm.googleapis.com:443/fcm/send/abc', true],
    ['https://fcm.googleapis.com:22/fcm/send/abc', false],
    ['https://storage.googleapis.com/bucket/x', false],
    ['https://evil.example/fcm.googleapis.com', false],
    ['http://fcm.googleapis.com/fcm/send/abc', false],
  ])('by default, %s is %s', (endpoint, allowed) => {
    expect(endpointAllowed(endpoint, defaults)).toBe(allowed)
  })

  it('a pattern without a port allows 443 only; host:port that port; host:* any port', () => {
    expect(endpointAllowed('https://127.0.0.1/x', ['127.0.0.1'])).toBe(true)
    expect(endpointAllowed('https://127.0.0.1:8443/x', ['127.0.0.1'])).toBe(false)
    expect(endpointAllowed('https://127.0.0.1:8443/x', ['127.0.0.1:8443'])).toBe(true)
    expect(endpointAllowed('https://127.0.0.1:8444/x', ['127.0.0.1:8443'])).toBe(false)
    expect(endpointAllowed('https://127.0.0.1:8444/x', ['127.0.0.1:*'])).toBe(true)
    expect(endpointAllowed('https://a.push.example:8443/x', ['*.push.example'])).toBe(false)
    expect(endpointAllowed('https://a.push.example:8443/x', ['*.push.example:8443'])).toBe(true)
    expect(endpointAllowed('https://[::1]:8443/x', ['[::1]:8443'])).toBe(true)
  })
})
