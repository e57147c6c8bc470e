import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ackTokens } from '../src/push/ack-token.ts'
import { loadAckTokenSecret } from '../src/push/keys.ts'
import { PUBLISHER, startApp, type TestApp, type TestEnv } from './helpers/app.ts'
import { SseClient } from './helpers/sse.ts'

// Limits live in each instance's memory, whatever the database: PGlite is enough here.
describe('rate limits, stream caps and CORS', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp('pglite', {
      config: {
        RATE_LIMIT_WINDOW_MS: 2_000,
        RATE_LIMIT_PUBLISH_PER_MIN: 5,
        RATE_LIMIT_IP_PER_MIN: 3,
        RATE_LIMIT_AUTH_FAILURES_PER_MIN: 3,
        MAX_STREAMS: 2,
        CORS_ORIGINS: 'https://school.example',
      },
    })
  })
  afterAll(() => t.close())

  const publishAs = (sub: string) =>
    t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub, scope: PUBLISHER })}`)
      .send({ type: 'x.y', to: { users: ['u'] }, title: 'hi' })

  it('answers a publish burst over the per-user limit with 429 and Retry-After, spares other users, then recovers', async () => {
    for (let i = 0; i < 5; i++) expect((await publishAs('busy')).status).toBe(201)
    const refused = await publishAs('busy')
    expect(refused.status).toBe(429)
    expect(refused.headers['content-type']).toMatch(/application\/problem\+json/)
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0)
    expect(refused.body).toMatchObject({ status: 429, title: 'Too many requests' })
    // Another user of the same IP is not affected: the limit is per user.
    expect((await publishAs('calm')).status).toBe(201)
    await new Promise((r) => setTimeout(r, Number(refused.headers['retry-after']) * 1000 + 100))
    expect((await publishAs('busy')).status).toBe(201)
  })

  it('turns repeated failed authentication from one IP into 429, while valid tokens keep working', async () => {
    const bad = () => t.http().get('/v1/events').set('authorization', 'Bearer not-a-token')
    for (let i = 0; i < 3; i++) expect((await bad()).status).toBe(401)
    const refused = await bad()
    expect(refused.status).toBe(429)
    expect(refused.headers['retry-after']).toBeDefined()
    const good = await t
      .http()
      .get('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'fine' })}`)
    expect(good.status).toBe(200)
  })

  it('limits the routes that need no token per IP', async () => {
    const statuses = []
    for (let i = 0; i < 4; i++) statuses.push((await t.http().get('/v1/push/vapid-public-key')).status)
    expect(statuses).toEqual([200, 200, 200, 429])
  })

  it('refuses a stream past MAX_STREAMS with 503 and Retry-After, and accepts one again when a stream closes', async () => {
    const a = await SseClient.open(t.url, { token: t.token({ sub: 'cap-a' }) })
    const b = await SseClient.open(t.url, { token: t.token({ sub: 'cap-b' }) })
    const c = await SseClient.open(t.url, { token: t.token({ sub: 'cap-c' }) })
    expect([a.status, b.status, c.status]).toEqual([200, 200, 503])
    expect(c.headers['retry-after']).toBeDefined()
    expect(c.problem).toMatchObject({ status: 503 })
    a.close()
    await expect.poll(() => t.app.hub.size).toBe(1)
    const d = await SseClient.open(t.url, { token: t.token({ sub: 'cap-d' }) })
    expect(d.status).toBe(200)
    b.close()
    d.close()
    await expect.poll(() => t.app.hub.size).toBe(0)
  })

  it('allows the configured origin on REST (preflight included) and on the stream, and no other', async () => {
    const preflight = await t
      .http()
      .options('/v1/events')
      .set('origin', 'https://school.example')
      .set('access-control-request-method', 'POST')
      .set('access-control-request-headers', 'authorization,content-type')
    expect(preflight.status).toBe(204)
    expect(preflight.headers['access-control-allow-origin']).toBe('https://school.example')
    expect(preflight.headers['access-control-allow-headers']).toMatch(/authorization/)

    const token = `Bearer ${t.token({ sub: 'cors' })}`
    const allowed = await t.http().get('/v1/events').set('origin', 'https://school.example').set('authorization', token)
    expect(allowed.headers['access-control-allow-origin']).toBe('https://school.example')
    // A browser app may read a 429's wait, and send every method the API takes.
    expect(allowed.headers['access-control-expose-headers']).toMatch(/retry-after/)
    for (const method of ['PUT', 'PATCH', 'DELETE']) {
      expect(preflight.headers['access-control-allow-methods'], method).toContain(method)
    }
    const other = await t.http().get('/v1/events').set('origin', 'https://evil.example').set('authorization', token)
    expect(other.headers['access-control-allow-origin']).toBeUndefined()

    const stream = await SseClient.open(t.url, {
      token: t.token({ sub: 'cors-stream' }),
      headers: { origin: 'https://school.example' },
    })
    expect(stream.headers['access-control-allow-origin']).toBe('https://school.example')
    stream.close()
    const foreign = await SseClient.open(t.url, {
      token: t.token({ sub: 'cors-stream2' }),
      headers: { origin: 'https://evil.example' },
    })
    expect(foreign.headers['access-control-allow-origin']).toBeUndefined()
    foreign.close()
  })
})

/** An id no test publishes up to. */
const UNKNOWN_EVENT = '987654321'

describe('limits on acks, reads and bulk reads', () => {
  let t: TestApp
  beforeAll(async () => {
    // A minute's window: the counts cannot start over in the middle of a test.
    t = await startApp('pglite', {
      config: { RATE_LIMIT_WINDOW_MS: 60_000, RATE_LIMIT_RECEIPTS_PER_MIN: 3, RATE_LIMIT_BULK_READ_PER_MIN: 2 },
    })
  })
  afterAll(() => t.close())

  it('limits acks and reads per user, ackTokens in their user’s count, with 429 and Retry-After', async () => {
    const acks = ackTokens(await loadAckTokenSecret(t.database))
    const mark = (what: 'ack' | 'read', token: string) =>
      t.http().post(`/v1/events/${UNKNOWN_EVENT}/${what}`).set('authorization', `Bearer ${token}`)
    const user = (sub: string) => t.token({ sub })
    // @fastify/rate-limit counts each route apart: acks and reads each have their own count of 3.
    for (const what of ['ack', 'read'] as const) {
      // No such event: each answer is a 404, and each counts.
      const statuses = []
      for (let i = 0; i < 3; i++) statuses.push((await mark(what, user(`${what}-marker`))).status)
      expect(statuses).toEqual([404, 404, 404])
      const refused = await mark(what, user(`${what}-marker`))
      expect(refused.status).toBe(429)
      expect(refused.headers['content-type']).toMatch(/application\/problem\+json/)
      expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0)
      // The service worker's ackToken of the same user is in the same count.
      const grant = { tenant: 't1', userId: `${what}-marker`, eventId: Number(UNKNOWN_EVENT) }
      expect((await mark(what, acks.sign(grant, 60))).status).toBe(429)
      // Another user is not affected.
      expect((await mark(what, user(`${what}-other-marker`))).status).toBe(404)
    }
  })

  it('limits bulk reads per user, apart from single reads', async () => {
    const readAll = (sub: string) =>
      t
        .http()
        .post('/v1/events/read')
        .set('authorization', `Bearer ${t.token({ sub })}`)
        .send({ upTo: UNKNOWN_EVENT })
    expect([(await readAll('bulk-reader')).status, (await readAll('bulk-reader')).status]).toEqual([204, 204])
    const refused = await readAll('bulk-reader')
    expect(refused.status).toBe(429)
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0)
    expect((await readAll('other-bulk-reader')).status).toBe(204)
  })
})

// The test server listens on 127.0.0.1: requests come from there, as from a proxy on the same machine.
describe('per-IP limits behind a proxy (TRUST_PROXY)', () => {
  const limits: TestEnv = {
    RATE_LIMIT_WINDOW_MS: 60_000,
    RATE_LIMIT_IP_PER_MIN: 2,
    RATE_LIMIT_AUTH_FAILURES_PER_MIN: 2,
  }
  /** GET the VAPID key (needs no token: limited per IP) from a client behind `forwardedFor`. */
  const anonymous = (t: TestApp, forwardedFor: string) =>
    t.http().get('/v1/push/vapid-public-key').set('x-forwarded-for', forwardedFor)
  /** A failed authentication from a client behind `forwardedFor`. */
  const badToken = (t: TestApp, forwardedFor: string) =>
    t.http().get('/v1/events').set('authorization', 'Bearer not-a-token').set('x-forwarded-for', forwardedFor)
  const statuses = async (requests: Array<() => Promise<{ status: number }>>) => {
    const out = []
    for (const request of requests) out.push((await request()).status)
    return out
  }

  describe('TRUST_PROXY=127.0.0.1', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp('pglite', { config: { ...limits, TRUST_PROXY: '127.0.0.1' } })
    })
    afterAll(() => t.close())

    it('counts each forwarded client apart on the routes that need no token', async () => {
      const a = () => anonymous(t, '203.0.113.1')
      const b = () => anonymous(t, '203.0.113.2')
      expect(await statuses([a, a, a, b, b, b])).toEqual([200, 200, 429, 200, 200, 429])
    })

    it('counts each forwarded client apart on failed authentication', async () => {
      const a = () => badToken(t, '203.0.113.11')
      const b = () => badToken(t, '203.0.113.12')
      expect(await statuses([a, a, a, b, b])).toEqual([401, 401, 429, 401, 401])
    })
  })

  describe('TRUST_PROXY=1 (one hop)', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp('pglite', { config: { ...limits, TRUST_PROXY: '1' } })
    })
    afterAll(() => t.close())

    it('takes the address the proxy saw, not what a client wrote before it', async () => {
      // The proxy appends the address it saw; whatever the client sent itself comes first.
      const plain = () => anonymous(t, '203.0.113.21')
      const spoofing = () => anonymous(t, '198.51.100.1, 203.0.113.21')
      const other = () => anonymous(t, '198.51.100.1, 203.0.113.22')
      expect(await statuses([plain, spoofing, spoofing, other])).toEqual([200, 200, 429, 200])
    })
  })

  describe('TRUST_PROXY unset', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp('pglite', { config: limits })
    })
    afterAll(() => t.close())

    it('ignores X-Forwarded-For: one count for the address the request came from, however it is spoofed', async () => {
      const a = () => anonymous(t, '203.0.113.31')
      const b = () => anonymous(t, '203.0.113.32')
      expect(await statuses([a, b, () => anonymous(t, '203.0.113.33')])).toEqual([200, 200, 429])
    })

    it('ignores X-Forwarded-For on failed authentication too', async () => {
      const a = () => badToken(t, '203.0.113.41')
      const b = () => badToken(t, '203.0.113.42')
      expect(await statuses([a, b, () => badToken(t, '203.0.113.43')])).toEqual([401, 401, 429])
    })
  })
})

describe('with a configured JWT key (no generated secret): no CORS_ORIGINS, no demo sign-in', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp('pglite')
  })
  afterAll(() => t.close())

  it('sends no CORS headers at all', async () => {
    const res = await t
      .http()
      .get('/v1/events')
      .set('origin', 'https://school.example')
      .set('authorization', `Bearer ${t.token({ sub: 'x' })}`)
    expect(res.status).toBe(200)
    expect(res.headers['access-control-allow-origin']).toBeUndefined()
  })

  it('has no demo sign-in: nobody can mint a token through the service', async () => {
    expect((await t.http().get('/demo/config')).body).toEqual({ signIn: false })
    const res = await t.http().post('/demo/token').send({ sub: 'admin', tenant: 't1' })
    expect(res.status).toBe(404)
  })
})
