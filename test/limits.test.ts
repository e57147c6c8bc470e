import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
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
