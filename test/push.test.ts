import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import { createSigner } from 'fast-jwt'
import postgres from 'postgres'
import supertest, { type Response } from 'supertest'
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest'
import webpush from 'web-push'
import { type AppConfig, buildApp } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import { type Database, openDatabase } from '../src/db/client.ts'
import { runMigrations } from '../src/db/migrate.ts'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import {
  type BackendName,
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import { type Child, runTs } from './helpers/process.ts'
import {
  type BrowserSubscription,
  type PushService,
  type ReceivedPush,
  startPushService,
} from './helpers/push-service.ts'
import { SseClient } from './helpers/sse.ts'

// SPEC section 6 (Web Push), with the ack/read/status routes of section 5 as the push path uses them.
// Every push goes through real HTTPS to a local push service that checks VAPID and decrypts like FCM would.

type Json = Record<string, unknown>
interface PushCounts {
  sent: number
  failed: number
  pending: number
}
interface Status {
  acked: number
  read: number
  push: PushCounts
}
interface Problem {
  type: string
  title: string
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

/** Config overrides that let the server reach and trust the local push service. */
const PUSH_CONFIG = { PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*' } as const
/** Seconds a streaming user has to ack a `high` event before it is pushed anyway (in the main suite's app). */
const HIGH_ACK_TIMEOUT_S = 3
const BASE64URL = /^[A-Za-z0-9_-]+$/
const TOPIC = /^[A-Za-z0-9_-]{1,32}$/

// Several waits of a few seconds each (retries, Retry-After, the high-priority timeout), on a machine that may be busy.
vi.setConfig({ testTimeout: 60_000 })

let service: PushService

beforeAll(async () => {
  service = await startPushService()
})
afterAll(async () => {
  await service?.close()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

/** Polls `check` until it returns something truthy; fails with `what` after `timeoutMs`. */
async function until<T>(
  check: () => T | Promise<T>,
  what: string | (() => string),
  timeoutMs = 20_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`)
    }
    await sleep(20)
  }
}

const payloadOf = (m: ReceivedPush) => m.json() as Json
/** Pushes of one event (by the id in its payload) that reached one device. */
const pushesOf = (endpoint: string, eventId: string) =>
  service.messagesFor(endpoint).filter((m) => payloadOf(m).id === eventId)
/** Event ids pushed to a device, sorted. */
const eventIdsAt = (endpoint: string) =>
  service
    .messagesFor(endpoint)
    .map((m) => String(payloadOf(m).id))
    .sort()
/** Every request the push service got for a device: status codes in order ('reset' for a dropped connection). */
const attemptsAt = (endpoint: string) => service.attempts.filter((a) => a.endpoint === endpoint)

function waitForPush(endpoint: string, eventId: string, timeoutMs = 20_000): Promise<ReceivedPush> {
  return until(() => pushesOf(endpoint, eventId)[0], `a push of event ${eventId} to ${endpoint}`, timeoutMs)
}

/** Asserts an RFC 9457 problem with this status and returns it. */
function expectProblem(res: Response, status: number): Problem {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  const body = JSON.parse(res.text) as Problem
  expect(body.status).toBe(status)
  expect(res.text).not.toMatch(/\bat .*\.(ts|js):\d+/)
  return body
}

/** A 400 whose errors name `field` (a path inside the body, `body.` prefix optional). */
function expectFieldError(res: Response, field: string) {
  const problem = expectProblem(res, 400)
  const paths = (problem.errors ?? []).map((e) => e.path.replace(/^body\./, ''))
  expect(paths, res.text).toContain(field)
}

/** The configuration a server started with this environment would have (every other setting at its default). */
function appConfig(env: Record<string, string> = {}): AppConfig {
  return loadConfig({
    JWT_SECRET: TEST_JWT_SECRET,
    VAPID_SUBJECT: 'mailto:tests@example.com',
    PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
    PUSH_RETRY_BASE_MS: '100',
    LOG_LEVEL: 'silent',
    ...env,
  })
}

function expectVapidPublicKey(key: unknown) {
  expect(typeof key).toBe('string')
  expect(key as string).toMatch(BASE64URL)
  const raw = Buffer.from(key as string, 'base64url')
  expect(raw).toHaveLength(65)
  expect(raw[0]).toBe(4) // an uncompressed P-256 point, what pushManager.subscribe() takes
}

/** Client calls against one running app (a started test app or one built by hand). */
function client(baseUrl: string) {
  const http = () => supertest(baseUrl)
  return {
    http,
    async publish(token: string, event: Json): Promise<string> {
      const res = await http()
        .post('/v1/events')
        .set(bearer(token))
        .send({ type: 'test.push', title: 'Hello', ...event })
      expect(res.status, res.text).toBe(201)
      return (res.body as { id: string }).id
    },
    async register(token: string, subscription: BrowserSubscription = service.createSubscription()) {
      const res = await http().post('/v1/push/subscriptions').set(bearer(token)).send(subscription)
      expect(res.status, res.text).toBe(201)
      const body = res.body as { id: string; renewToken: string }
      return { ...body, subscription, endpoint: subscription.endpoint }
    },
    async devices(token: string): Promise<Json[]> {
      const res = await http().get('/v1/push/subscriptions').set(bearer(token))
      expect(res.status, res.text).toBe(200)
      return (res.body as { subscriptions: Json[] }).subscriptions
    },
    async status(token: string, eventId: string): Promise<Status> {
      const res = await http().get(`/v1/events/${eventId}/status`).set(bearer(token))
      expect(res.status, res.text).toBe(200)
      return res.body as Status
    },
  }
}

describeEachBackend('Web Push', (backend) => {
  let t: TestApp
  let api: ReturnType<typeof client>
  let tenants = 0

  beforeAll(async () => {
    t = await startApp(backend, {
      pushAgent: service.agent,
      config: { ...PUSH_CONFIG, HIGH_ACK_TIMEOUT_S: HIGH_ACK_TIMEOUT_S, PUSH_RETRY_BASE_MS: 100, PUSH_MAX_ATTEMPTS: 3 },
    })
    api = client(t.url)
  })
  afterAll(async () => {
    await t?.close()
  })

  /** A tenant of its own per test: tenant-wide and role pushes of one test never reach another's devices. */
  function newTenant() {
    const tenant = `push-${backend}-${++tenants}`
    return {
      tenant,
      publisher: t.token({ sub: 'publisher', tenant, scope: PUBLISHER }),
      user: (sub: string, extra: { roles?: string[]; topics?: string[] } = {}) => t.token({ sub, tenant, ...extra }),
    }
  }

  /** Waits until no push of the event is pending, and returns its status. */
  async function settled(publisher: string, eventId: string, timeoutMs = 20_000): Promise<Status> {
    let last: Status | undefined
    await until(
      async () => {
        last = await api.status(publisher, eventId)
        return last.push.pending === 0
      },
      () => `no pending push of event ${eventId} (last status: ${JSON.stringify(last)})`,
      timeoutMs,
    )
    return last as Status
  }

  /** The event's push is pending, unless it has already arrived (a slow machine may take its time asking). */
  async function expectPendingUnlessArrived(publisher: string, eventId: string, endpoint: string) {
    const status = await api.status(publisher, eventId)
    if (pushesOf(endpoint, eventId).length === 0) expect(status.push).toEqual({ sent: 0, failed: 0, pending: 1 })
  }

  /**
   * Publishes an `urgent` marker (pushed whatever the user's presence) to a user and waits for it at the device:
   * whatever was due before it has had its chance to arrive.
   */
  async function marker(publisher: string, userId: string, endpoint: string): Promise<ReceivedPush> {
    const id = await api.publish(publisher, {
      type: 'test.marker',
      title: 'Marker',
      priority: 'urgent',
      to: { users: [userId] },
    })
    return waitForPush(endpoint, id)
  }

  async function openStream(token: string): Promise<SseClient> {
    const stream = await SseClient.open(t.url, { token })
    expect(stream.status, stream.body).toBe(200)
    onTestFinished(() => stream.close())
    return stream
  }

  describe('VAPID public key', () => {
    it('is served without a token as {publicKey}: a 65-byte uncompressed P-256 key in base64url', async () => {
      const res = await api.http().get('/v1/push/vapid-public-key')
      expect(res.status, res.text).toBe(200)
      expect(Object.keys(res.body)).toEqual(['publicKey'])
      expectVapidPublicKey(res.body.publicKey)
    })

    it('is the key the pushes are signed with, so subscriptions made with it accept them', async () => {
      const { body } = await api.http().get('/v1/push/vapid-public-key')
      const ten = newTenant()
      const device = await api.register(
        ten.user('alice'),
        service.createSubscription({ applicationServerKey: body.publicKey }),
      )
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, id)
      expect(push.vapid.publicKey).toBe(body.publicKey)
      expect(push.vapid.sub).toBe('mailto:tests@example.com')
      expect(push.vapid.aud).toBe(service.origin)
    })
  })

  describe('registering devices', () => {
    it('registers a browser subscription (201 {id, renewToken}) and lists it without its keys', async () => {
      const ten = newTenant()
      const subscription = service.createSubscription()
      const res = await api
        .http()
        .post('/v1/push/subscriptions')
        .set(bearer(ten.user('alice')))
        .send(subscription)
      expect(res.status, res.text).toBe(201)
      expect(res.body.id).toMatch(/^[1-9][0-9]*$/)
      expect(typeof res.body.renewToken).toBe('string')
      expect(res.body.renewToken.length).toBeGreaterThanOrEqual(20)

      const list = await api.devices(ten.user('alice'))
      expect(list).toHaveLength(1)
      expect(list[0]).toMatchObject({ id: res.body.id, endpoint: subscription.endpoint })
      const text = JSON.stringify(list)
      expect(text).not.toContain(subscription.keys.p256dh)
      expect(text).not.toContain(subscription.keys.auth)
      expect(text).not.toContain(res.body.renewToken)
      expect(list[0]).not.toHaveProperty('keys')

      // Another user of the tenant sees none of it.
      expect(await api.devices(ten.user('bob'))).toEqual([])
    })

    it('registering the same endpoint again (same user) keeps one device', async () => {
      const ten = newTenant()
      const subscription = service.createSubscription()
      const first = await api.register(ten.user('alice'), subscription)
      const second = await api.register(ten.user('alice'), subscription)
      expect(second.id).toBe(first.id)
      expect(await api.devices(ten.user('alice'))).toHaveLength(1)
    })

    it('an endpoint registered by another user moves to that user: pushes follow it', async () => {
      const ten = newTenant()
      const subscription = service.createSubscription()
      await api.register(ten.user('alice'), subscription)
      await api.register(ten.user('bob'), subscription)

      expect(await api.devices(ten.user('alice'))).toEqual([])
      expect((await api.devices(ten.user('bob'))).map((d) => d.endpoint)).toEqual([subscription.endpoint])

      const toAlice = await api.publish(ten.publisher, { title: 'For Alice', to: { users: ['alice'] } })
      const toBob = await api.publish(ten.publisher, { title: 'For Bob', to: { users: ['bob'] } })
      await waitForPush(subscription.endpoint, toBob)
      expect(await settled(ten.publisher, toAlice)).toMatchObject({ push: { sent: 0, failed: 0, pending: 0 } })
      await marker(ten.publisher, 'bob', subscription.endpoint)
      expect(pushesOf(subscription.endpoint, toAlice)).toEqual([])
      expect(pushesOf(subscription.endpoint, toBob)).toHaveLength(1)
    })

    it('DELETE removes one of my devices (204); another user gets 404 for it and it stays', async () => {
      const ten = newTenant()
      const mine = await api.register(ten.user('alice'))
      const kept = await api.register(ten.user('alice'))

      const foreign = await api
        .http()
        .delete(`/v1/push/subscriptions/${mine.id}`)
        .set(bearer(ten.user('bob')))
      expectProblem(foreign, 404)
      const otherTenant = await api
        .http()
        .delete(`/v1/push/subscriptions/${mine.id}`)
        .set(bearer(t.token({ sub: 'alice', tenant: `${ten.tenant}-other` })))
      expectProblem(otherTenant, 404)
      expect(await api.devices(ten.user('alice'))).toHaveLength(2)

      const res = await api
        .http()
        .delete(`/v1/push/subscriptions/${mine.id}`)
        .set(bearer(ten.user('alice')))
      expect(res.status, res.text).toBe(204)
      expect((await api.devices(ten.user('alice'))).map((d) => d.id)).toEqual([kept.id])
      expectProblem(
        await api
          .http()
          .delete(`/v1/push/subscriptions/${mine.id}`)
          .set(bearer(ten.user('alice'))),
        404,
      )

      // The deleted device gets nothing more; the kept one does.
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(kept.endpoint, id)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
      expect(service.messagesFor(mine.endpoint)).toEqual([])
    })

    it('refuses an endpoint that is not on the allowlist, not https, or carries credentials (400 naming endpoint)', async () => {
      const token = newTenant().user('alice')
      const good = service.createSubscription()
      const port = new URL(service.origin).port
      for (const endpoint of [
        'https://evil.example/x',
        `http://127.0.0.1:${port}/push/abc`,
        `https://user:secret@127.0.0.1:${port}/push/abc`,
        `https://127.0.0.1.evil.example/push/abc`,
        'not a url',
      ]) {
        const res = await api
          .http()
          .post('/v1/push/subscriptions')
          .set(bearer(token))
          .send({ ...good, endpoint })
        expectFieldError(res, 'endpoint')
      }
      expect(await api.devices(token)).toEqual([])
    })

    it('refuses keys that are not a P-256 point or a 16-byte auth secret (400 naming the field)', async () => {
      const token = newTenant().user('alice')
      const good = service.createSubscription()
      const point = Buffer.from(good.keys.p256dh, 'base64url')
      const offCurve = Buffer.from(point)
      offCurve[64] ^= 0x01 // 65 bytes, starts with 0x04, but y no longer matches x
      const send = (keys: Json) =>
        api
          .http()
          .post('/v1/push/subscriptions')
          .set(bearer(token))
          .send({ ...good, keys: { ...good.keys, ...keys } })

      expectFieldError(await send({ p256dh: point.subarray(0, 64).toString('base64url') }), 'keys.p256dh')
      expectFieldError(
        await send({ p256dh: Buffer.concat([point, Buffer.from([0])]).toString('base64url') }),
        'keys.p256dh',
      )
      expectFieldError(await send({ p256dh: offCurve.toString('base64url') }), 'keys.p256dh')
      expectFieldError(await send({ auth: Buffer.alloc(15, 7).toString('base64url') }), 'keys.auth')
      expectFieldError(await send({ auth: Buffer.alloc(17, 7).toString('base64url') }), 'keys.auth')
      expect(await api.devices(token)).toEqual([])
    })

    it('refuses a body that is not a PushSubscription (400) and a request without a token (401)', async () => {
      const token = newTenant().user('alice')
      expectProblem(
        await api
          .http()
          .post('/v1/push/subscriptions')
          .set(bearer(token))
          .send({ endpoint: service.createSubscription().endpoint }),
        400,
      )
      expectProblem(await api.http().post('/v1/push/subscriptions').send(service.createSubscription()), 401)
      expectProblem(await api.http().get('/v1/push/subscriptions'), 401)
      expectProblem(await api.http().delete('/v1/push/subscriptions/1'), 401)
      expectProblem(await api.http().post('/v1/push/test'), 401)
    })
  })

  describe('when to push', () => {
    it('an offline user gets exactly one push of a normal event: the event JSON plus an ackToken', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, {
        type: 'grade.updated',
        title: 'New grade',
        body: 'Maths: 18/20 — très bien ✓',
        data: { gradeId: 42, nested: { ok: true } },
        url: '/grades/42',
        collapseKey: 'grade-42',
        ttl: 3600,
        to: { users: ['alice'] },
      })
      const push = await waitForPush(device.endpoint, id)

      const seen = await api
        .http()
        .get(`/v1/events/${id}`)
        .set(bearer(ten.user('alice')))
      expect(seen.status).toBe(200)
      const { readAt: _r, ackedAt: _a, ...event } = seen.body as Json
      expect(payloadOf(push)).toEqual({ ...event, ackToken: expect.any(String) })
      expect(payloadOf(push)).toMatchObject({
        id,
        type: 'grade.updated',
        title: 'New grade',
        body: 'Maths: 18/20 — très bien ✓',
        data: { gradeId: 42, nested: { ok: true } },
        priority: 'normal',
        url: '/grades/42',
        collapseKey: 'grade-42',
        actor: 'publisher',
      })
      expect(payloadOf(push)).not.toHaveProperty('to')

      expect(push.headers.ttl).toBeGreaterThanOrEqual(3500)
      expect(push.headers.ttl).toBeLessThanOrEqual(3600)
      expect(push.headers.urgency).toBe('normal')
      expect(push.headers.topic).toBe('grade-42')

      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toHaveLength(1)
      expect(await api.status(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('Urgency follows priority (normal→normal, high→high, urgent→high); no collapseKey, no Topic', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const ids: Record<string, string> = {}
      for (const priority of ['normal', 'high', 'urgent']) {
        ids[priority] = await api.publish(ten.publisher, { priority, to: { users: ['alice'] } })
      }
      const urgency = async (p: string) => (await waitForPush(device.endpoint, ids[p])).headers.urgency
      expect(await urgency('normal')).toBe('normal')
      expect(await urgency('high')).toBe('high') // offline: at once, like normal
      expect(await urgency('urgent')).toBe('high')
      for (const p of Object.keys(ids))
        expect((await waitForPush(device.endpoint, ids[p])).headers.topic).toBeUndefined()
    })

    it('a collapseKey that is not a valid Topic (spaces, over 32 chars) still gives a valid, distinct Topic', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const keys = ['grade 42 / Élodie', 'x'.repeat(40), `${'x'.repeat(39)}y`, 'a:b.c']
      const ids = []
      for (const collapseKey of keys)
        ids.push(await api.publish(ten.publisher, { collapseKey, to: { users: ['alice'] } }))
      const topics = []
      for (const id of ids) {
        const push = await waitForPush(device.endpoint, id)
        expect(push.headers.topic).toMatch(TOPIC)
        topics.push(push.headers.topic)
        // The payload still carries the collapseKey as published (the service worker's notification tag).
        expect(payloadOf(push).collapseKey).toBe(keys[ids.indexOf(id)])
      }
      expect(new Set(topics).size).toBe(keys.length)
      // The push service refused nothing (it answers 400 to an invalid Topic).
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual(keys.map(() => 201))
    })

    it('a low event is never pushed (a later push to the same device arrives, the low one never does)', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const low = await api.publish(ten.publisher, { priority: 'low', to: { users: ['alice'] } })
      expect(await api.status(ten.publisher, low)).toMatchObject({ push: { sent: 0, failed: 0, pending: 0 } })
      const later = await api.publish(ten.publisher, { priority: 'normal', to: { users: ['alice'] } })
      await waitForPush(device.endpoint, later)
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, low)).toEqual([])
      expect(await api.status(ten.publisher, low)).toMatchObject({ push: { sent: 0, failed: 0, pending: 0 } })
    })

    it('a user with an open stream gets a normal event on the stream and no push; an urgent one is pushed too', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const stream = await openStream(ten.user('alice'))

      const normal = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await stream.waitFor((s) => s.notificationIds.includes(normal), 20_000, `event ${normal} on the stream`)

      const urgent = await api.publish(ten.publisher, { priority: 'urgent', to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, urgent)
      expect(push.headers.urgency).toBe('high')
      await stream.waitFor((s) => s.notificationIds.includes(urgent), 20_000, `event ${urgent} on the stream`)

      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, normal)).toEqual([])
      expect(pushesOf(device.endpoint, urgent)).toHaveLength(1)
      // (The service may hold a check back for a while, in case the stream's instance was dead: never sent, though.)
      expect(await api.status(ten.publisher, normal)).toMatchObject({ push: { sent: 0, failed: 0 } })
      expect(await api.status(ten.publisher, urgent)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('a high event a streaming user does not ack is pushed after HIGH_ACK_TIMEOUT_S', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const stream = await openStream(ten.user('alice'))
      const published = Date.now()
      const id = await api.publish(ten.publisher, { priority: 'high', to: { users: ['alice'] } })
      await stream.waitFor((s) => s.notificationIds.includes(id), 20_000, `event ${id} on the stream`)
      await expectPendingUnlessArrived(ten.publisher, id, device.endpoint)

      const push = await waitForPush(device.endpoint, id, 25_000)
      const after = push.receivedAt - published
      expect(after).toBeGreaterThanOrEqual(HIGH_ACK_TIMEOUT_S * 1000 - 50)
      expect(after).toBeLessThan(HIGH_ACK_TIMEOUT_S * 1000 + 10_000)
      expect(push.headers.urgency).toBe('high')
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('a high event the streaming user acks within the timeout is not pushed', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const stream = await openStream(ten.user('alice'))
      const acked = await api.publish(ten.publisher, { priority: 'high', to: { users: ['alice'] } })
      // Acked at once (a busy machine must not let the timeout pass first), then seen on the stream.
      const ack = await api
        .http()
        .post(`/v1/events/${acked}/ack`)
        .set(bearer(ten.user('alice')))
      expect(ack.status, ack.text).toBe(204)
      await stream.waitFor((s) => s.notificationIds.includes(acked), 20_000, `event ${acked} on the stream`)

      // A second high event, not acked, is due after the first: once it arrives, the first had its turn.
      const unacked = await api.publish(ten.publisher, { priority: 'high', to: { users: ['alice'] } })
      await waitForPush(device.endpoint, unacked, 25_000)
      const status = await settled(ten.publisher, acked, 10_000)
      expect(status).toMatchObject({ acked: 1, push: { sent: 0, failed: 0, pending: 0 } })
      expect(pushesOf(device.endpoint, acked)).toEqual([])
      expect(attemptsAt(device.endpoint)).toHaveLength(1)
    })

    it('role, topic and tenant audiences reach the devices of users whose current token claims hold that role/topic, and no others', async () => {
      const ten = newTenant()
      const other = { tenant: `${ten.tenant}-b` }
      const otherPublisher = t.token({ sub: 'publisher', tenant: other.tenant, scope: PUBLISHER })
      const teacher = await api.register(ten.user('teacher', { roles: ['teacher'] }))
      const parent = await api.register(ten.user('parent', { roles: ['parent'] }))
      const student7A = await api.register(ten.user('student-7a', { topics: ['class:7A'] }))
      const studentAll = await api.register(ten.user('student-all', { topics: ['class:*'] }))
      const student7B = await api.register(ten.user('student-7b', { topics: ['class:7B', 'clas'] }))
      const plain = await api.register(ten.user('plain'))
      const foreign = await api.register(
        t.token({ sub: 'teacher', tenant: other.tenant, roles: ['teacher'], topics: ['class:*'] }),
      )

      const toRole = await api.publish(ten.publisher, { to: { roles: ['teacher'] } })
      const toTopic = await api.publish(ten.publisher, { to: { topics: ['class:7A'] } })
      const toTenant = await api.publish(ten.publisher, { to: { tenant: true } })
      // One device named by two audiences (user and role) gets one push, not two.
      const toMixed = await api.publish(ten.publisher, {
        to: { users: ['teacher', 'student-7a'], roles: ['teacher'], topics: ['class:7A'] },
      })
      const foreignMarker = await api.publish(otherPublisher, { to: { users: ['teacher'] } })

      const everyone = [teacher, parent, student7A, studentAll, student7B, plain]
      await Promise.all(everyone.map((d) => waitForPush(d.endpoint, toTenant)))
      await waitForPush(foreign.endpoint, foreignMarker)
      await settled(ten.publisher, toRole)
      await settled(ten.publisher, toTopic)
      await settled(ten.publisher, toMixed)

      expect(eventIdsAt(teacher.endpoint)).toEqual([toRole, toTenant, toMixed].sort())
      expect(eventIdsAt(parent.endpoint)).toEqual([toTenant])
      expect(eventIdsAt(student7A.endpoint)).toEqual([toTopic, toTenant, toMixed].sort())
      expect(eventIdsAt(studentAll.endpoint)).toEqual([toTopic, toTenant, toMixed].sort())
      expect(eventIdsAt(student7B.endpoint)).toEqual([toTenant])
      expect(eventIdsAt(plain.endpoint)).toEqual([toTenant])
      expect(eventIdsAt(foreign.endpoint)).toEqual([foreignMarker])
      expect((await api.status(ten.publisher, toRole)).push).toEqual({ sent: 1, failed: 0, pending: 0 })
      expect((await api.status(ten.publisher, toTopic)).push).toEqual({ sent: 2, failed: 0, pending: 0 })
      expect((await api.status(ten.publisher, toTenant)).push).toEqual({ sent: 6, failed: 0, pending: 0 })
      expect((await api.status(ten.publisher, toMixed)).push).toEqual({ sent: 3, failed: 0, pending: 0 })
    })

    it('a user with several devices gets the push on each', async () => {
      const ten = newTenant()
      const phone = await api.register(ten.user('alice'))
      const laptop = await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(phone.endpoint, id)
      await waitForPush(laptop.endpoint, id)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 2, failed: 0, pending: 0 } })
    })

    it('an event too big for one push still arrives, cut to fit 4 KiB, with its title and ackToken', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, {
        title: 'Big one',
        body: 'é'.repeat(2000),
        data: { blob: 'x'.repeat(15_000) },
        to: { users: ['alice'] },
      })
      const push = await waitForPush(device.endpoint, id)
      const payload = payloadOf(push)
      expect(payload).toMatchObject({ id, title: 'Big one', ackToken: expect.any(String) })
      expect(JSON.stringify(payload.data ?? null).length).toBeLessThan(15_000)
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([201])
    })
  })

  describe('delivery', () => {
    it('a push service answering 410 removes the device; the status shows the push failed', async () => {
      const ten = newTenant()
      const gone = await api.register(ten.user('alice'))
      const kept = await api.register(ten.user('alice'))
      service.expire(gone.endpoint)
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(kept.endpoint, id)
      const status = await settled(ten.publisher, id)
      expect(status.push).toEqual({ sent: 1, failed: 1, pending: 0 })
      expect(attemptsAt(gone.endpoint).map((a) => a.status)).toEqual([410])
      expect((await api.devices(ten.user('alice'))).map((d) => d.endpoint)).toEqual([kept.endpoint])

      // Nothing is sent to the removed device any more.
      await marker(ten.publisher, 'alice', kept.endpoint)
      expect(attemptsAt(gone.endpoint)).toHaveLength(1)
    })

    it('a push service answering 404 removes the device too', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 404 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const status = await settled(ten.publisher, id)
      expect(status.push).toEqual({ sent: 0, failed: 1, pending: 0 })
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([404])
      expect(await api.devices(ten.user('alice'))).toEqual([])
    })

    it('two 503s then success: delivered exactly once, pending until then, then sent 1', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(2, { status: 503 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await until(() => attemptsAt(device.endpoint).length >= 1, 'the first attempt')
      await expectPendingUnlessArrived(ten.publisher, id, device.endpoint)

      await waitForPush(device.endpoint, id, 25_000)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toHaveLength(1)
      expect(
        attemptsAt(device.endpoint)
          .slice(0, 3)
          .map((a) => a.status),
      ).toEqual([503, 503, 201])
      expect(attemptsAt(device.endpoint)).toHaveLength(4) // the three above and the marker
    })

    it('429 with Retry-After: 2 delays the retry by at least 2 s', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 429, retryAfter: 2 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, id, 25_000)
      const [first, second] = attemptsAt(device.endpoint)
      expect(first.status).toBe(429)
      expect(second.status).toBe(201)
      expect(push.receivedAt - first.at).toBeGreaterThanOrEqual(1_950)
      expect(push.receivedAt - first.at).toBeLessThan(15_000)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('503 with Retry-After as an HTTP date is honoured too', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 503, retryAfter: new Date(Date.now() + 3_000).toUTCString() })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, id, 25_000)
      const [first] = attemptsAt(device.endpoint)
      // The date has a one-second resolution: at least ~2 s after the first attempt.
      expect(push.receivedAt - first.at).toBeGreaterThanOrEqual(1_900)
    })

    it('with PUSH_MAX_ATTEMPTS 3 and a push service that keeps answering 503, fails after exactly 3 attempts', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(3, { status: 503 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const status = await settled(ten.publisher, id, 25_000)
      expect(status.push).toEqual({ sent: 0, failed: 1, pending: 0 })
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([503, 503, 503])

      // The device is kept (5xx is the push service's trouble, not a dead subscription) and gets later pushes.
      expect(await api.devices(ten.user('alice'))).toHaveLength(1)
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toEqual([])
      expect(attemptsAt(device.endpoint)).toHaveLength(4)
    })

    it('a dropped connection (network error) is retried and delivered once', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, 'reset')
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(device.endpoint, id, 25_000)
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual(['reset', 201])
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('a 4xx other than 404/410/429 fails the push at once without removing the device', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 400 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      expect((await settled(ten.publisher, id)).push).toEqual({ sent: 0, failed: 1, pending: 0 })
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([400])
      expect(await api.devices(ten.user('alice'))).toHaveLength(1)
    })

    it('a push waiting for its retry is not sent once the user acked the event elsewhere', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 503, retryAfter: 5 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await until(() => attemptsAt(device.endpoint).length >= 1, 'the first attempt')
      const ack = await api
        .http()
        .post(`/v1/events/${id}/ack`)
        .set(bearer(ten.user('alice')))
      expect(ack.status, ack.text).toBe(204)

      const status = await settled(ten.publisher, id, 15_000)
      expect(status).toMatchObject({ acked: 1, push: { sent: 0, failed: 0, pending: 0 } })
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toEqual([])
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([503, 201]) // the 503, then the marker
    })

    it('a push claimed by an instance that stopped heart-beating is taken over at once; one claimed by a live instance waits', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const dead = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const live = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(device.endpoint, dead)
      await waitForPush(device.endpoint, live)
      await settled(ten.publisher, live)
      // Put both rows back as a crashed send would leave them: pending, claimed for another 60 s. One claimant
      // last beat an hour ago (killed), the other just now (alive, still sending).
      await t.database.query(sql`
        insert into instances (id, seen_at) values ('killed-instance', now() - interval '1 hour'), ('busy-instance', now())`)
      const reclaim = (eventId: string, instance: string) =>
        t.database.query(sql`
          update push_deliveries set state = 'pending', claimed_by = ${instance},
            claimed_until = now() + interval '60 seconds', next_attempt_at = now()
          where event_id = ${Number(eventId)}`)
      await reclaim(dead, 'killed-instance')
      await reclaim(live, 'busy-instance')
      t.app.pushDispatcher.wake()

      await until(() => pushesOf(device.endpoint, dead).length === 2, 'the dead instance’s claim taken over', 5_000)
      await sleep(2_500) // several claim rounds (POLL_MS is 1 s)
      expect(pushesOf(device.endpoint, live), 'a live instance’s claim is left alone').toHaveLength(1)
      await t.database.query(sql`delete from instances where id in ('killed-instance', 'busy-instance')`)
    })

    it('the status of an event is for its publisher (or an admin) only', async () => {
      const ten = newTenant()
      await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await settled(ten.publisher, id)
      expectProblem(
        await api
          .http()
          .get(`/v1/events/${id}/status`)
          .set(bearer(ten.user('alice'))),
        404,
      )
      const admin = t.token({ sub: 'root', tenant: ten.tenant, scope: 'admin' })
      expect((await api.status(admin, id)).push).toEqual({ sent: 1, failed: 0, pending: 0 })
      const foreignAdmin = t.token({ sub: 'root', tenant: `${ten.tenant}-x`, scope: 'admin' })
      expectProblem(await api.http().get(`/v1/events/${id}/status`).set(bearer(foreignAdmin)), 404)
    })
  })

  describe('ackToken', () => {
    /** Alice has a device and a stream open (another tab); two urgent events pushed to her. */
    async function pushedToAlice() {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const stream = await openStream(ten.user('alice'))
      const id = await api.publish(ten.publisher, { priority: 'urgent', to: { users: ['alice'] } })
      const otherId = await api.publish(ten.publisher, { priority: 'urgent', to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, id)
      await waitForPush(device.endpoint, otherId)
      const ackToken = payloadOf(push).ackToken as string
      expect(typeof ackToken).toBe('string')
      return { ten, device, stream, id, otherId, ackToken }
    }

    it('acks its event (204): the publisher sees acked 1, the user’s open streams get a receipt', async () => {
      const { ten, stream, id, otherId, ackToken } = await pushedToAlice()
      const res = await api.http().post(`/v1/events/${id}/ack`).set(bearer(ackToken))
      expect(res.status, res.text).toBe(204)
      expect(await api.status(ten.publisher, id)).toMatchObject({ acked: 1, read: 0 })
      expect(await api.status(ten.publisher, otherId)).toMatchObject({ acked: 0, read: 0 })

      await stream.waitForEvent('receipt')
      const receipt = stream.events.find((e) => e.event === 'receipt')
      expect(JSON.parse(receipt?.data ?? '{}')).toEqual({ ids: [id], state: 'acked' })

      const mine = await api
        .http()
        .get(`/v1/events/${id}`)
        .set(bearer(ten.user('alice')))
      expect(mine.body.ackedAt).toEqual(expect.any(String))
      expect(mine.body.readAt).toBeNull()
      // It lives as long as its event (within a few seconds), not longer.
      const claims = JSON.parse(Buffer.from(ackToken.split('.')[1], 'base64url').toString())
      expect(claims.exp).toBeCloseTo(Date.parse(mine.body.expiresAt) / 1000, -1)

      // Idempotent.
      expect((await api.http().post(`/v1/events/${id}/ack`).set(bearer(ackToken))).status).toBe(204)
      expect(await api.status(ten.publisher, id)).toMatchObject({ acked: 1 })
    })

    it('marks its event read (204)', async () => {
      const { ten, stream, id, ackToken } = await pushedToAlice()
      const res = await api.http().post(`/v1/events/${id}/read`).set(bearer(ackToken))
      expect(res.status, res.text).toBe(204)
      expect(await api.status(ten.publisher, id)).toMatchObject({ acked: 1, read: 1 })
      await stream.waitFor(
        (s) => s.events.some((e) => e.event === 'receipt' && JSON.parse(e.data).state === 'read'),
        10_000,
        'a read receipt',
      )
      const mine = await api
        .http()
        .get(`/v1/events/${id}`)
        .set(bearer(ten.user('alice')))
      expect(mine.body.readAt).toEqual(expect.any(String))
    })

    it('opens nothing else: another event (404), listing, reading, the stream, devices (401)', async () => {
      const { ten, id, otherId, ackToken } = await pushedToAlice()
      expectProblem(await api.http().post(`/v1/events/${otherId}/ack`).set(bearer(ackToken)), 404)
      expectProblem(await api.http().post(`/v1/events/${otherId}/read`).set(bearer(ackToken)), 404)
      expect(await api.status(ten.publisher, otherId)).toMatchObject({ acked: 0, read: 0 })

      expectProblem(await api.http().get('/v1/events').set(bearer(ackToken)), 401)
      expectProblem(await api.http().get(`/v1/events/${id}`).set(bearer(ackToken)), 401)
      expectProblem(await api.http().get('/v1/events/unread-count').set(bearer(ackToken)), 401)
      expectProblem(
        await api
          .http()
          .post('/v1/events/read')
          .set(bearer(ackToken))
          .send({ ids: [id] }),
        401,
      )
      expectProblem(await api.http().get('/v1/push/subscriptions').set(bearer(ackToken)), 401)
      expectProblem(
        await api
          .http()
          .post('/v1/events')
          .set(bearer(ackToken))
          .send({ type: 'a.b', title: 'x', to: { users: ['alice'] } }),
        401,
      )
      const stream = await SseClient.open(t.url, { token: ackToken })
      expect(stream.status).toBe(401)
      const inQuery = await SseClient.open(t.url, { token: ackToken, tokenInQuery: true })
      expect(inQuery.status).toBe(401)
    })

    it('a tampered or forged ackToken is 401', async () => {
      const { ten, id, otherId, ackToken } = await pushedToAlice()
      const [header, claims, signature] = ackToken.split('.')
      const decoded = JSON.parse(Buffer.from(claims, 'base64url').toString('utf8')) as Json
      const retargeted = Buffer.from(JSON.stringify({ ...decoded, evt: otherId })).toString('base64url')
      expectProblem(
        await api
          .http()
          .post(`/v1/events/${otherId}/ack`)
          .set(bearer(`${header}.${retargeted}.${signature}`)),
        401,
      )
      const flipped = `${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`
      expectProblem(
        await api
          .http()
          .post(`/v1/events/${id}/ack`)
          .set(bearer(`${header}.${claims}.${flipped}`)),
        401,
      )

      // The same claims signed with a key of the attacker's choosing.
      const forged = createSigner({ key: 'not-the-ack-secret-but-long-enough-0123456789', algorithm: 'HS256' })(decoded)
      expectProblem(await api.http().post(`/v1/events/${id}/ack`).set(bearer(forged)), 401)
      expect(await api.status(ten.publisher, id)).toMatchObject({ acked: 0 })
      expect(await api.status(ten.publisher, otherId)).toMatchObject({ acked: 0 })
    })
  })

  describe('test notification and renewal', () => {
    it('POST /v1/push/test sends a test notification to each of my devices: {sent: n}', async () => {
      const ten = newTenant()
      const phone = await api.register(ten.user('alice'))
      const laptop = await api.register(ten.user('alice'))
      const someoneElse = await api.register(ten.user('bob'))
      const res = await api
        .http()
        .post('/v1/push/test')
        .set(bearer(ten.user('alice')))
      expect(res.status, res.text).toBe(200)
      expect(res.body.sent).toBe(2)
      for (const device of [phone, laptop]) {
        const [push] = service.messagesFor(device.endpoint)
        expect(push, 'test push at each device').toBeDefined()
        expect(typeof payloadOf(push).title).toBe('string')
        expect(push.headers.ttl).toBeGreaterThan(0)
      }
      expect(service.messagesFor(someoneElse.endpoint)).toEqual([])
    })

    it('POST /v1/push/test with no device is 404', async () => {
      const res = await api
        .http()
        .post('/v1/push/test')
        .set(bearer(newTenant().user('nobody')))
      expectProblem(res, 404)
    })

    it('POST /v1/push/test to a device whose subscription is gone reports it and removes it', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.expire(device.endpoint)
      const res = await api
        .http()
        .post('/v1/push/test')
        .set(bearer(ten.user('alice')))
      expect(res.body.sent).toBe(0)
      expect(await api.devices(ten.user('alice'))).toEqual([])
    })

    it('renew with the renew token replaces the endpoint: pushes go to the new one only', async () => {
      const ten = newTenant()
      const old = await api.register(ten.user('alice'))
      const fresh = service.createSubscription()
      const res = await api.http().post('/v1/push/subscriptions/renew').set(bearer(old.renewToken)).send(fresh)
      expect([200, 201], res.text).toContain(res.status)
      expect(res.body.id).toBe(old.id)

      expect((await api.devices(ten.user('alice'))).map((d) => d.endpoint)).toEqual([fresh.endpoint])
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(fresh.endpoint, id)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
      expect(service.messagesFor(old.endpoint)).toEqual([])
    })

    it('renew with a wrong or missing renew token is 401 and changes nothing', async () => {
      const ten = newTenant()
      const old = await api.register(ten.user('alice'))
      const fresh = service.createSubscription()
      const wrong = `${old.renewToken[0] === 'A' ? 'B' : 'A'}${old.renewToken.slice(1)}`
      expectProblem(await api.http().post('/v1/push/subscriptions/renew').set(bearer(wrong)).send(fresh), 401)
      expectProblem(await api.http().post('/v1/push/subscriptions/renew').send(fresh), 401)
      // A user's JWT is not a renew token.
      expectProblem(
        await api
          .http()
          .post('/v1/push/subscriptions/renew')
          .set(bearer(ten.user('alice')))
          .send(fresh),
        401,
      )
      expect((await api.devices(ten.user('alice'))).map((d) => d.endpoint)).toEqual([old.endpoint])
    })

    it('renew refuses an endpoint off the allowlist (400)', async () => {
      const ten = newTenant()
      const old = await api.register(ten.user('alice'))
      const res = await api
        .http()
        .post('/v1/push/subscriptions/renew')
        .set(bearer(old.renewToken))
        .send({ ...service.createSubscription(), endpoint: 'https://evil.example/x' })
      expectFieldError(res, 'endpoint')
      expect((await api.devices(ten.user('alice'))).map((d) => d.endpoint)).toEqual([old.endpoint])
    })
  })
})

/** A database that can be closed and opened again, as a restarted server does. */
async function reopenableDatabase(backend: BackendName) {
  if (backend === 'pglite') {
    const dir = await mkdtemp(join(tmpdir(), 'herald-push-'))
    return {
      open: async (): Promise<Database> => {
        const database = await openDatabase({ pgliteDir: dir })
        await runMigrations(database)
        return database
      },
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  }
  const url = await createPostgresDatabase()
  return {
    open: async (): Promise<Database> => {
      const database = await openDatabase({ url, poolSize: 5 })
      await runMigrations(database)
      return database
    },
    cleanup: () => dropPostgresDatabase(url),
  }
}

async function listenApp(config: AppConfig, database: Database) {
  const app = await buildApp(config, database, { pushAgent: service.agent })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, api: client(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`) }
}

const token = (sub: string, tenant: string, scope?: string) => mintToken(TEST_JWT_SECRET, { sub, tenant, scope })

describeEachBackend('Web Push VAPID keys', (backend) => {
  it('without VAPID_* configured, the generated key is kept: the same key after a restart, old subscriptions still get pushes', async () => {
    const db = await reopenableDatabase(backend)
    onTestFinished(() => db.cleanup())
    const tenant = `vapid-${backend}`

    const first = await listenApp(appConfig(), await db.open())
    let key: string
    let endpoint: string
    try {
      const res = await first.api.http().get('/v1/push/vapid-public-key')
      expect(res.status).toBe(200)
      key = res.body.publicKey
      expectVapidPublicKey(key)
      // The browser subscribes with this key: its push service refuses pushes signed by any other (403).
      const device = await first.api.register(
        token('alice', tenant),
        service.createSubscription({ applicationServerKey: key }),
      )
      endpoint = device.endpoint
    } finally {
      await first.app.close()
    }

    const second = await listenApp(appConfig(), await db.open())
    try {
      const res = await second.api.http().get('/v1/push/vapid-public-key')
      expect(res.body).toEqual({ publicKey: key })
      const id = await second.api.publish(token('publisher', tenant, PUBLISHER), { to: { users: ['alice'] } })
      const push = await waitForPush(endpoint, id)
      expect(push.vapid.publicKey).toBe(key)
    } finally {
      await second.app.close()
    }
  })

  it('with VAPID_PUBLIC_KEY/VAPID_PRIVATE_KEY configured, that key is served and signs the pushes', async () => {
    const keys = webpush.generateVAPIDKeys()
    const t = await startApp(backend, {
      pushAgent: service.agent,
      config: {
        ...PUSH_CONFIG,
        VAPID_PUBLIC_KEY: keys.publicKey,
        VAPID_PRIVATE_KEY: keys.privateKey,
        VAPID_SUBJECT: 'https://school.example/contact',
      },
    })
    onTestFinished(() => t.close())
    const api = client(t.url)
    const res = await api.http().get('/v1/push/vapid-public-key')
    expect(res.body).toEqual({ publicKey: keys.publicKey })

    const tenant = 'vapid-configured'
    const device = await api.register(
      token('alice', tenant),
      service.createSubscription({ applicationServerKey: keys.publicKey }),
    )
    const id = await api.publish(token('publisher', tenant, PUBLISHER), { to: { users: ['alice'] } })
    const push = await waitForPush(device.endpoint, id)
    expect(push.vapid.publicKey).toBe(keys.publicKey)
    expect(push.vapid.sub).toBe('https://school.example/contact')
  })
})

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
