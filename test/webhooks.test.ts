import https from 'node:https'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest'
import { createHeraldServerClient, HeraldError } from '../src/client/index.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { TestClock } from './helpers/clock.ts'
import { runToEnd } from './helpers/process.ts'
import { type PushService, startPushService } from './helpers/push-service.ts'
import { SseClient } from './helpers/sse.ts'
import { startWebhookReceiver, type WebhookReceiver } from './helpers/webhook-receiver.ts'

// Webhooks as a tenant's admin and their receiving server see them: registering endpoints (the URL rules, admins
// only, each tenant its own), deliveries signed per Standard Webhooks that the receiver verifies with the
// `standardwebhooks` package itself, retries with backoff, Retry-After, redirects not followed, an endpoint
// disabled after failing for long and enabled again, the deliveries listing, and the events reported: a push that
// failed for good, a user coming online and going offline. Real HTTPS to a local receiver on 127.0.0.1 (the
// allowlist names its port), real streams, the real push dispatcher and a local push service.

const RETRY_BASE_MS = 200
const MAX_ATTEMPTS = 4
/** A public address: registrations to it need no DNS (nothing is ever sent there). */
const PUBLIC_URL = 'https://93.184.215.14/hooks/herald'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` until it returns something other than undefined or false. */
async function until<T>(check: () => Promise<T | undefined | false>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(50)
  }
}
let tenants = 0
const newTenant = () => `wh${++tenants}-${Math.random().toString(36).slice(2, 8)}`

interface Endpoint {
  id: string
  url: string
  secret: string
  events: string[]
}

describeEachBackend('webhooks', (backend) => {
  let t: TestApp
  let receiver: WebhookReceiver
  let push: PushService

  beforeAll(async () => {
    receiver = await startWebhookReceiver()
    push = await startPushService()
    t = await startApp(backend, {
      // One agent trusts both local CAs: the push service's and the receiver's.
      pushAgent: new https.Agent({ ca: [push.ca, receiver.ca] }),
      config: {
        WEBHOOK_URL_ALLOWLIST: receiver.allowlistEntry,
        WEBHOOK_RETRY_BASE_MS: RETRY_BASE_MS,
        WEBHOOK_MAX_ATTEMPTS: MAX_ATTEMPTS,
        WEBHOOK_TIMEOUT_MS: 3_000,
        PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
        PUSH_MAX_ATTEMPTS: 1,
      },
    })
  })
  afterAll(async () => {
    await t?.close()
    await receiver?.close()
    await push?.close()
  })

  const admin = (tenant: string) => t.token({ sub: 'boss', tenant, scope: 'admin' })
  const auth = (token: string) => ({ authorization: `Bearer ${token}` })

  /** Registers an endpoint on the receiver for `events`; the receiver verifies its deliveries with its secret. */
  async function register(tenant: string, events: string[], path?: string): Promise<Endpoint> {
    const url = receiver.url(path)
    const res = await t
      .http()
      .post('/v1/webhooks')
      .set(auth(admin(tenant)))
      .send({ url, events })
    expect(res.status, res.text).toBe(201)
    receiver.expect(url, res.body.secret)
    return { id: res.body.id, url, secret: res.body.secret, events }
  }

  const deliveries = async (tenant: string, id: string, query = '') => {
    const res = await t
      .http()
      .get(`/v1/webhooks/${id}/deliveries${query}`)
      .set(auth(admin(tenant)))
    expect(res.status, res.text).toBe(200)
    return res.body as { deliveries: Array<Record<string, unknown>>; next: string | null }
  }

  /** Opens a stream for the user (they come online), returning it to close later (they go offline). */
  async function online(tenant: string, userId: string) {
    const stream = await SseClient.open(t.url, { token: t.token({ sub: userId, tenant }) })
    expect(stream.status).toBe(200)
    onTestFinished(() => stream.close())
    return stream
  }

  const typesAt = (url: string) => receiver.receivedAt(url).map((r) => r.payload.type)

  it('registers an https endpoint of a public host, or one the allowlist names; any other URL is a 400 naming body.url', async () => {
    const tenant = newTenant()
    const post = (body: Record<string, unknown>) =>
      t
        .http()
        .post('/v1/webhooks')
        .set(auth(admin(tenant)))
        .send(body)

    const created = await post({ url: PUBLIC_URL, events: ['event.read', 'user.online'], description: 'CRM' })
    expect(created.status, created.text).toBe(201)
    expect(created.body).toMatchObject({
      id: expect.stringMatching(/^\d+$/),
      url: PUBLIC_URL,
      events: ['event.read', 'user.online'],
      description: 'CRM',
      createdBy: 'boss',
      failingSince: null,
      disabledAt: null,
      disabledReason: null,
    })
    expect(created.body.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/)
    expect(Buffer.from(created.body.secret.slice('whsec_'.length), 'base64')).toHaveLength(32)

    // The allowlist names 127.0.0.1:<receiver port>: https and http there, loopback or not.
    expect((await post({ url: receiver.url(), events: ['user.online'] })).status).toBe(201)
    expect((await post({ url: `http://${receiver.allowlistEntry}/plain`, events: ['user.online'] })).status).toBe(201)

    const refused: Array<[Record<string, unknown>, string, RegExp]> = [
      [
        { url: 'http://93.184.215.14/hook' },
        'body.url',
        /^must be https \(http only for a host WEBHOOK_URL_ALLOWLIST names/,
      ],
      [{ url: 'ftp://93.184.215.14/hook' }, 'body.url', /^must be an absolute https URL$/],
      [{ url: 'not a url' }, 'body.url', /^must be an absolute https URL$/],
      [{ url: 'https://me:secret@93.184.215.14/' }, 'body.url', /^must not contain a user name or password$/],
      [{ url: 'https://10.0.0.1/hook' }, 'body.url', /^must not point at a private address \(10\.0\.0\.1\)/],
      [{ url: 'https://192.168.1.20/hook' }, 'body.url', /private address/],
      [{ url: 'https://127.0.0.1:1/hook' }, 'body.url', /^must not point at a loopback address \(127\.0\.0\.1\)/],
      [{ url: 'https://[::1]:8443/hook' }, 'body.url', /loopback address \(::1\)/],
      [{ url: 'https://169.254.169.254/latest/meta-data' }, 'body.url', /link-local address \(169\.254\.169\.254\)/],
      [{ url: 'https://[fe80::1]/hook' }, 'body.url', /link-local address/],
      [{ url: 'https://[::ffff:192.168.0.1]/hook' }, 'body.url', /private address/],
      // Resolved by DNS (the hosts file): localhost is 127.0.0.1.
      [{ url: 'https://localhost:8443/hook' }, 'body.url', /loopback address \(localhost resolves to 127\.0\.0\.1\)/],
      [{ url: 'https://nowhere.invalid/hook' }, 'body.url', /^has a host that does not resolve \(nowhere\.invalid/],
      [{ events: ['event.read', 'event.deleted'] }, 'body.events.1', /expected one of/],
      [{ events: [] }, 'body.events', /.+/],
      [{ events: 'user.online' }, 'body.events', /.+/],
      [{ extra: true }, 'body', /extra/],
    ]
    for (const [change, path, message] of refused) {
      const res = await post({ url: PUBLIC_URL, events: ['user.online'], ...change })
      expect(res.status, JSON.stringify(change)).toBe(400)
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
      const error = res.body.errors.find((e: { path: string }) => e.path === path)
      expect(error, `${JSON.stringify(change)}: ${res.text}`).toBeDefined()
      expect(error.message, JSON.stringify(change)).toMatch(message)
    }
    const listed = await t
      .http()
      .get('/v1/webhooks')
      .set(auth(admin(tenant)))
    expect(listed.body.webhooks, 'nothing refused was registered').toHaveLength(3)
  })

  it('is for admins only, each tenant its own: another tenant’s endpoint is a 404, and the secret is never shown again', async () => {
    const tenant = newTenant()
    const other = newTenant()
    const mine = await register(tenant, ['user.online'])
    const user = t.token({ sub: 'pupil', tenant })
    const routes: Array<['get' | 'post' | 'delete', string]> = [
      ['post', '/v1/webhooks'],
      ['get', '/v1/webhooks'],
      ['get', `/v1/webhooks/${mine.id}`],
      ['delete', `/v1/webhooks/${mine.id}`],
      ['post', `/v1/webhooks/${mine.id}/enable`],
      ['get', `/v1/webhooks/${mine.id}/deliveries`],
    ]
    const call = (method: 'get' | 'post' | 'delete', path: string, token: string) => {
      const body = path === '/v1/webhooks' && method === 'post' ? { url: PUBLIC_URL, events: ['user.online'] } : {}
      const request = t.http()[method](path).set(auth(token))
      return method === 'post' ? request.send(body) : request
    }
    for (const [method, path] of routes) {
      const res = await call(method, path, user)
      expect(res.status, `${method} ${path}`).toBe(403)
      expect(res.body.detail).toBe('Managing webhooks needs the "admin" scope.')
      expect((await call(method, path, 'nonsense')).status, `${method} ${path} without a valid token`).toBe(401)
    }
    for (const [method, path] of routes.slice(2)) {
      const res = await call(method, path, admin(other))
      expect(res.status, `${method} ${path} from another tenant`).toBe(404)
      expect(res.body.detail).toBe(`No webhook endpoint ${mine.id} in your tenant.`)
    }
    expect(
      (
        await t
          .http()
          .get('/v1/webhooks')
          .set(auth(admin(other)))
      ).body,
    ).toEqual({ webhooks: [] })
    const list = await t
      .http()
      .get('/v1/webhooks')
      .set(auth(admin(tenant)))
    expect(list.body.webhooks.map((w: Endpoint) => w.id)).toEqual([mine.id])
    const one = await t
      .http()
      .get(`/v1/webhooks/${mine.id}`)
      .set(auth(admin(tenant)))
    expect(one.status).toBe(200)
    expect(JSON.stringify([list.body, one.body])).not.toContain(mine.secret)
    expect(
      (
        await t
          .http()
          .get('/v1/webhooks/abc')
          .set(auth(admin(tenant)))
      ).status,
    ).toBe(400)

    // Removed: gone for good, and nothing more is delivered to it.
    expect(
      (
        await t
          .http()
          .delete(`/v1/webhooks/${mine.id}`)
          .set(auth(admin(tenant)))
      ).status,
    ).toBe(204)
    expect(
      (
        await t
          .http()
          .get(`/v1/webhooks/${mine.id}`)
          .set(auth(admin(tenant)))
      ).status,
    ).toBe(404)
    expect(
      (
        await t
          .http()
          .delete(`/v1/webhooks/${mine.id}`)
          .set(auth(admin(tenant)))
      ).status,
    ).toBe(404)
    await online(tenant, 'kim')
    await sleep(1_000)
    expect(receiver.attemptsAt(mine.url)).toEqual([])
  })

  it('delivers user.online and user.offline as the user’s first stream opens and last one closes, signed so that standardwebhooks verifies them', async () => {
    const tenant = newTenant()
    const hook = await register(tenant, ['user.online', 'user.offline'])
    const first = await online(tenant, 'ana')
    const [came] = await receiver.waitFor(
      () => receiver.receivedAt(hook.url).length >= 1 && receiver.receivedAt(hook.url),
      'user.online',
    )
    expect(came.payload).toEqual({
      type: 'user.online',
      timestamp: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      data: { tenant, userId: 'ana', at: came.payload.timestamp },
    })
    expect(came.contentType).toBe('application/json')
    expect(came.id).toMatch(/^msg_[0-9a-f]{32}$/)
    expect(Math.abs(Number(came.timestamp) - Date.now() / 1000)).toBeLessThan(10)
    expect(came.signature).toMatch(/^v1,[A-Za-z0-9+/]+=*$/)
    // The body is the outbox row's payload, byte for byte.
    const [row] = await t.database.query<{ payload: string }>(
      sql`select payload from webhook_deliveries where msg_id = ${came.id}`,
    )
    expect(came.body).toBe(row.payload)

    // A second stream of the same user: still online, nothing new. Closing one of two: still online.
    const second = await online(tenant, 'ana')
    first.close()
    await sleep(1_000)
    expect(typesAt(hook.url)).toEqual(['user.online'])
    second.close()
    await receiver.waitFor(() => typesAt(hook.url).length === 2, 'user.offline')
    const gone = receiver.receivedAt(hook.url)[1]
    expect(gone.payload).toMatchObject({ type: 'user.offline', data: { tenant, userId: 'ana' } })
    expect(gone.id, 'each transition is its own message').not.toBe(came.id)

    // Online again later: a new message, not a repeat of the first.
    await online(tenant, 'ana')
    await receiver.waitFor(() => typesAt(hook.url).length === 3, 'user.online again')
    expect(typesAt(hook.url)).toEqual(['user.online', 'user.offline', 'user.online'])
    expect(new Set(receiver.receivedAt(hook.url).map((r) => r.id)).size).toBe(3)
    // Outcomes are written a moment after the answer: wait for the last one.
    const listed = await until(async () => {
      const page = await deliveries(tenant, hook.id)
      return page.deliveries.every((d) => d.state === 'sent') && page
    }, 'the three recorded as sent')
    expect(listed.deliveries.map((d) => [d.type, d.state, d.attempts, d.lastStatus])).toEqual([
      ['user.online', 'sent', 1, 200],
      ['user.offline', 'sent', 1, 200],
      ['user.online', 'sent', 1, 200],
    ])
  })

  it('retries after 500s with a growing backoff, under the same webhook-id, until the endpoint takes it', async () => {
    const tenant = newTenant()
    const hook = await register(tenant, ['user.online'])
    receiver.failNext(hook.url, 2, { status: 500, body: 'database is down' })
    await online(tenant, 'ben')
    await receiver.waitFor(() => receiver.attemptsAt(hook.url).length === 3 && true, 'three attempts')
    const attempts = receiver.attemptsAt(hook.url)
    expect(attempts.map((a) => a.status)).toEqual([500, 500, 200])
    expect(new Set(attempts.map((a) => a.id)).size, 'one webhook-id for every attempt').toBe(1)
    // Full jitter: the n-th retry comes within RETRY_BASE_MS × 2^(n-1) (and a poll of the dispatcher).
    expect(attempts[2].at - attempts[1].at).toBeLessThan(2 * RETRY_BASE_MS + 2_500)
    const sent = await until(async () => {
      const [d] = (await deliveries(tenant, hook.id)).deliveries
      return d.state === 'sent' && d
    }, 'the delivery to be recorded as sent')
    expect(sent).toMatchObject({ state: 'sent', attempts: 3, lastStatus: 200, lastError: null, nextAttemptAt: null })
    // The endpoint is healthy again.
    const endpoint = await t
      .http()
      .get(`/v1/webhooks/${hook.id}`)
      .set(auth(admin(tenant)))
    expect(endpoint.body.failingSince).toBeNull()
  })

  it('gives a delivery up as failed after WEBHOOK_MAX_ATTEMPTS; the endpoint shows since when it fails', async () => {
    const tenant = newTenant()
    const hook = await register(tenant, ['user.online'])
    receiver.failNext(hook.url, MAX_ATTEMPTS, { status: 502 })
    const before = Date.now()
    await online(tenant, 'cem')
    const last = await until(async () => {
      const [d] = (await deliveries(tenant, hook.id)).deliveries
      return d.state === 'failed' && d
    }, 'the delivery to fail')
    expect(last).toMatchObject({
      state: 'failed',
      attempts: MAX_ATTEMPTS,
      lastStatus: 502,
      lastError: `endpoint answered 502: ok (gave up after ${MAX_ATTEMPTS} attempts)`,
      nextAttemptAt: null,
    })
    expect(receiver.attemptsAt(hook.url)).toHaveLength(MAX_ATTEMPTS)
    const endpoint = (
      await t
        .http()
        .get(`/v1/webhooks/${hook.id}`)
        .set(auth(admin(tenant)))
    ).body
    expect(Date.parse(endpoint.failingSince)).toBeGreaterThanOrEqual(before - 1_000)
    expect(endpoint.disabledAt, 'failing for seconds, not days: still enabled').toBeNull()
  })

  it('honours Retry-After on 503 (seconds) and 429 (an HTTP date): the next attempt does not come sooner', async () => {
    const tenant = newTenant()
    const hook = await register(tenant, ['user.online', 'user.offline'])
    receiver.failNext(hook.url, 1, { status: 503, headers: { 'retry-after': '2' } })
    const stream = await online(tenant, 'dan')
    // While it waits: pending, with the endpoint's answer and when it comes again.
    const waiting = await until(async () => {
      const [d] = (await deliveries(tenant, hook.id)).deliveries
      return d?.lastStatus === 503 && d
    }, 'the first attempt to be recorded')
    expect(waiting).toMatchObject({ state: 'pending', attempts: 1, lastError: 'endpoint answered 503: ok' })
    await receiver.waitFor(() => receiver.attemptsAt(hook.url).length === 2 && true, 'the retry', 10_000)
    const [first, second] = receiver.attemptsAt(hook.url)
    expect(Date.parse(waiting.nextAttemptAt as string)).toBeGreaterThanOrEqual(first.at + 2_000 - 50)
    expect(second.at - first.at).toBeGreaterThanOrEqual(2_000)

    const retryAt = new Date(Math.ceil((Date.now() + 3_000) / 1000) * 1000)
    receiver.failNext(hook.url, 1, { status: 429, headers: { 'retry-after': retryAt.toUTCString() } })
    stream.close()
    await receiver.waitFor(() => receiver.attemptsAt(hook.url).length === 4 && true, 'the retry after the date', 10_000)
    const [, , third, fourth] = receiver.attemptsAt(hook.url)
    expect(third.status).toBe(429)
    expect(fourth.status).toBe(200)
    expect(fourth.at).toBeGreaterThanOrEqual(retryAt.getTime())
    expect(typesAt(hook.url)).toEqual(['user.online', 'user.online', 'user.offline', 'user.offline'])
  })

  it('does not follow a redirect: a 3xx counts as a failed attempt', async () => {
    const tenant = newTenant()
    const hook = await register(tenant, ['user.online'])
    const elsewhere = receiver.url()
    receiver.expect(elsewhere, hook.secret)
    receiver.failNext(hook.url, 1, { status: 307, headers: { location: elsewhere } })
    await online(tenant, 'eva')
    await receiver.waitFor(() => receiver.attemptsAt(hook.url).length === 2 && true, 'the retry')
    expect(receiver.attemptsAt(hook.url).map((a) => a.status)).toEqual([307, 200])
    expect(receiver.attemptsAt(elsewhere), 'nothing went where the redirect pointed').toEqual([])
    const sent = await until(async () => {
      const [d] = (await deliveries(tenant, hook.id)).deliveries
      return d.state === 'sent' && d
    }, 'the delivery to be recorded as sent')
    expect(sent).toMatchObject({ state: 'sent', attempts: 2 })
  })

  it('lists an endpoint’s deliveries newest first, a page at a time, with their payloads', async () => {
    const tenant = newTenant()
    const hook = await register(tenant, ['user.online', 'user.offline'])
    const stream = await online(tenant, 'fay')
    await receiver.waitFor(() => typesAt(hook.url).length === 1, 'online')
    stream.close()
    await receiver.waitFor(() => typesAt(hook.url).length === 2, 'offline')
    await online(tenant, 'fay')
    await receiver.waitFor(() => typesAt(hook.url).length === 3, 'online again')
    await until(async () => (await deliveries(tenant, hook.id)).deliveries.every((d) => d.state === 'sent'), 'all sent')
    const page1 = await deliveries(tenant, hook.id, '?limit=2')
    expect(page1.deliveries.map((d) => d.type)).toEqual(['user.online', 'user.offline'])
    expect(page1.next).toBe(page1.deliveries[1].id)
    const page2 = await deliveries(tenant, hook.id, `?limit=2&cursor=${page1.next}`)
    expect(page2.deliveries.map((d) => d.type)).toEqual(['user.online'])
    expect(page2.next).toBeNull()
    const newest = page1.deliveries[0]
    expect(Object.keys(newest).sort()).toEqual(
      [
        'attempts',
        'createdAt',
        'id',
        'lastError',
        'lastStatus',
        'msgId',
        'nextAttemptAt',
        'payload',
        'state',
        'type',
      ].sort(),
    )
    const delivered = receiver.receivedAt(hook.url)[2]
    expect(newest.msgId).toBe(delivered.id)
    expect(newest.payload).toEqual(delivered.payload)
    const bad = await t
      .http()
      .get(`/v1/webhooks/${hook.id}/deliveries?limit=0`)
      .set(auth(admin(tenant)))
    expect(bad.status).toBe(400)
    expect(bad.body.errors[0].path).toBe('querystring.limit')
  })

  it('is managed from a backend with the typed client, and from the command line', async () => {
    const tenant = newTenant()
    const client = createHeraldServerClient({ baseUrl: t.url, token: admin(tenant) })
    const url = receiver.url()
    const created = await client.createWebhook({ url, events: ['user.online'], description: 'from the client' })
    expect(created).toMatchObject({ url, events: ['user.online'], description: 'from the client', disabledAt: null })
    receiver.expect(url, created.secret)
    const refused = await client
      .createWebhook({ url: 'http://93.184.215.14/x', events: ['user.online'] })
      .catch((e) => e)
    expect(refused).toBeInstanceOf(HeraldError)
    expect((refused as HeraldError).status).toBe(400)
    expect((refused as HeraldError).problem?.errors?.[0].path).toBe('body.url')
    expect((await client.listWebhooks()).map((w) => w.id)).toEqual([created.id])
    await online(tenant, 'ida')
    await receiver.waitFor(() => receiver.receivedAt(url).length === 1, 'user.online')
    const page = await until(async () => {
      const p = await client.webhookDeliveries(created.id, { limit: 5 })
      return p.deliveries[0]?.state === 'sent' && p
    }, 'the delivery to be sent')
    expect(page.deliveries.map((d) => [d.type, d.msgId])).toEqual([['user.online', receiver.receivedAt(url)[0].id]])
    expect((await client.enableWebhook(created.id)).disabledAt).toBeNull()

    const cli = (...args: string[]) =>
      runToEnd('src/cli.ts', ['webhooks', ...args, '--server', t.url, '--token', admin(tenant)], {
        JWT_SECRET: TEST_JWT_SECRET,
      })
    const added = await cli('add', PUBLIC_URL, '--events', 'event.read,user.offline')
    expect(added.code, added.stderr).toBe(0)
    const addedJson = JSON.parse(added.stdout)
    expect(addedJson).toMatchObject({ url: PUBLIC_URL, events: ['event.read', 'user.offline'] })
    expect(addedJson.secret).toMatch(/^whsec_/)
    const listed = await cli('list')
    expect(JSON.parse(listed.stdout).webhooks.map((w: Endpoint) => w.id)).toEqual([created.id, addedJson.id])
    const history = await cli('deliveries', created.id, '--limit', '1')
    expect(JSON.parse(history.stdout).deliveries[0].type).toBe('user.online')
    const bad = await cli('add', 'https://10.1.2.3/x', '--events', 'user.online')
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/HTTP 400 .*body\.url: must not point at a private address/)
    const usage = await cli('remove', 'abc')
    expect(usage.code).toBe(2)
    const removed = await cli('remove', addedJson.id)
    expect(removed.code, removed.stderr).toBe(0)
    await client.deleteWebhook(created.id)
    expect(await client.listWebhooks()).toEqual([])
  })

  it('reports push.failed when a push fails for good, with the push service’s status and error', async () => {
    const tenant = newTenant()
    const hook = await register(tenant, ['push.failed'])
    const key = (await t.http().get('/v1/push/vapid-public-key')).body.publicKey as string
    const device = push.createSubscription({ applicationServerKey: key })
    const registered = await t
      .http()
      .post('/v1/push/subscriptions')
      .set(auth(t.token({ sub: 'gus', tenant })))
      .send(device)
    expect(registered.status, registered.text).toBe(201)
    push.failNext(1, { status: 400 })
    const published = await t
      .http()
      .post('/v1/events')
      .set(auth(t.token({ sub: 'office', tenant, scope: PUBLISHER })))
      .send({ type: 'grade.posted', title: 'New grade', to: { users: ['gus'] }, priority: 'urgent' })
    expect(published.status, published.text).toBe(201)
    const [failed] = await receiver.waitFor(
      () => receiver.receivedAt(hook.url).length === 1 && receiver.receivedAt(hook.url),
      'push.failed',
    )
    const [row] = await t.database.query<{ id: string | number }>(
      sql`select id from push_deliveries where event_id = ${Number(published.body.id)}`,
    )
    expect(failed.payload).toEqual({
      type: 'push.failed',
      timestamp: expect.any(String),
      data: { eventId: published.body.id, tenant, userId: 'gus', status: 400, error: 'push service refused: 400' },
    })
    // One message per push: its id is keyed by the push_deliveries row.
    const [delivery] = await t.database.query<{ msg_id: string }>(
      sql`select msg_id from webhook_deliveries where endpoint_id = ${Number(hook.id)}`,
    )
    expect(delivery.msg_id).toBe(failed.id)
    expect(row).toBeDefined()
  })
})

describeEachBackend('webhook endpoints that keep failing', (backend) => {
  let t: TestApp
  let receiver: WebhookReceiver
  const clock = new TestClock()

  beforeAll(async () => {
    receiver = await startWebhookReceiver()
    t = await startApp(backend, {
      pushAgent: new https.Agent({ ca: receiver.ca }),
      clock: clock.now,
      // WEBHOOK_DISABLE_AFTER_H as configured by default (72 h): the clock is moved past it.
      config: { WEBHOOK_URL_ALLOWLIST: receiver.allowlistEntry, WEBHOOK_RETRY_BASE_MS: 100, WEBHOOK_MAX_ATTEMPTS: 50 },
    })
  })
  afterAll(async () => {
    await t?.close()
    await receiver?.close()
  })

  it('are disabled once every delivery has failed for WEBHOOK_DISABLE_AFTER_H, and go on where they stopped once enabled', async () => {
    const tenant = 'failing'
    const headers = { authorization: `Bearer ${t.token({ sub: 'boss', tenant, scope: 'admin' })}` }
    const url = receiver.url()
    const created = await t
      .http()
      .post('/v1/webhooks')
      .set(headers)
      .send({ url, events: ['user.online', 'user.offline'] })
    expect(created.status, created.text).toBe(201)
    receiver.expect(url, created.body.secret)
    const id = created.body.id as string
    receiver.failNext(url, 1_000, { status: 500 })
    const stream = await SseClient.open(t.url, { token: t.token({ sub: 'hal', tenant }) })
    await receiver.waitFor(() => receiver.attemptsAt(url).length >= 2 && true, 'failing attempts')
    const failing = (await t.http().get(`/v1/webhooks/${id}`).set(headers)).body
    expect(failing.failingSince).not.toBeNull()
    expect(failing.disabledAt).toBeNull()

    // Three days and an hour later, the endpoint still fails: it is disabled.
    clock.setTo(Date.parse(failing.failingSince) + 73 * 3_600_000)
    const disabled = await until(async () => {
      const body = (await t.http().get(`/v1/webhooks/${id}`).set(headers)).body
      return body.disabledAt !== null && body
    }, 'the endpoint to be disabled')
    expect(disabled.failingSince).toBe(failing.failingSince)
    expect(disabled.disabledReason).toMatch(
      /^Every delivery failed for more than 72 h \(WEBHOOK_DISABLE_AFTER_H\); the last: endpoint answered 500/,
    )
    expect((await t.http().get('/v1/webhooks').set(headers)).body.webhooks[0].disabledAt).toBe(disabled.disabledAt)

    // Disabled: nothing is attempted, and nothing new is enqueued for it.
    await sleep(500)
    const attemptsWhenDisabled = receiver.attemptsAt(url).length
    stream.close()
    await sleep(1_500)
    expect(receiver.attemptsAt(url)).toHaveLength(attemptsWhenDisabled)
    const listed = (await t.http().get(`/v1/webhooks/${id}/deliveries`).set(headers)).body.deliveries
    expect(listed.map((d: { type: string; state: string }) => [d.type, d.state])).toEqual([['user.online', 'pending']])

    // The receiver is fixed; an admin enables the endpoint: the pending delivery goes out at once.
    receiver.heal(url)
    clock.reset()
    const enabled = await t.http().post(`/v1/webhooks/${id}/enable`).set(headers)
    expect(enabled.status, enabled.text).toBe(200)
    expect(enabled.body).toMatchObject({ id, disabledAt: null, disabledReason: null, failingSince: null })
    await receiver.waitFor(() => receiver.attemptsAt(url).at(-1)?.status === 200 && true, 'the delivery after enabling')
    const verified = receiver.receivedAt(url).at(-1)
    expect(verified?.payload).toMatchObject({ type: 'user.online', data: { tenant, userId: 'hal' } })
    const after = (await t.http().get(`/v1/webhooks/${id}`).set(headers)).body
    expect(after).toMatchObject({ disabledAt: null, failingSince: null })
    // New changes are delivered again.
    const again = await SseClient.open(t.url, { token: t.token({ sub: 'hal', tenant }) })
    onTestFinished(() => again.close())
    await receiver.waitFor(
      () => receiver.receivedAt(url).filter((r) => r.payload.type === 'user.online').length >= 2 && true,
      'online after enabling',
    )
  })
})
