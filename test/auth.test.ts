import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import type { Response } from 'supertest'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

// SPEC section 2: every /v1 route needs a verified JWT; only the stream also takes ?access_token=.

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
const nowS = () => Math.floor(Date.now() / 1000)

/** An HS256 token signed by hand, so tests can sign with any secret (even a PEM) and any claims. */
function hs256(secret: string, payload: Record<string, unknown>, header: Record<string, unknown> = {}) {
  const input = `${b64url({ alg: 'HS256', typ: 'JWT', ...header })}.${b64url(payload)}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}

/** An unsigned token (`alg: none`) with the given claims. */
const unsigned = (payload: Record<string, unknown>, alg = 'none') =>
  `${b64url({ alg, typ: 'JWT' })}.${b64url(payload)}.`

const claims = (sub: string, extra: Record<string, unknown> = {}) => ({
  sub,
  tenant: 't1',
  iat: nowS(),
  exp: nowS() + 3600,
  ...extra,
})

/** Asserts a 401 as the SPEC describes it: application/problem+json with type, title, status and detail. */
function expectUnauthorized(res: { status: number; headers: Record<string, string>; text: string }) {
  expect(res.status, res.text).toBe(401)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  const body = JSON.parse(res.text)
  expect(body).toMatchObject({ status: 401 })
  expect(typeof body.type).toBe('string')
  expect(body.type.length).toBeGreaterThan(0)
  expect(typeof body.title).toBe('string')
  expect(body.title.length).toBeGreaterThan(0)
  expect(typeof body.detail).toBe('string')
  expect(body.detail.length).toBeGreaterThan(0)
  expect(res.text).not.toMatch(/\bat .*\.(ts|js):\d+/) // no stack trace
  // RFC 9110: a 401 carries WWW-Authenticate.
  expect(res.headers['www-authenticate']).toMatch(/^Bearer/i)
}

const asStreamResponse = (s: SseClient) => ({
  status: s.status,
  headers: s.headers as Record<string, string>,
  text: s.body,
})

/** A stream refused before it opened: 401 problem+json, and nothing streamed. */
async function expectStreamUnauthorized(url: string, token: string | undefined, tokenInQuery: boolean) {
  const stream = await SseClient.open(url, { token, tokenInQuery })
  try {
    expect(stream.headers['content-type']).not.toMatch(/text\/event-stream/)
    expectUnauthorized(asStreamResponse(stream))
  } finally {
    stream.close()
  }
}

describeEachBackend('auth: HS256 (JWT_SECRET)', (backend) => {
  // Every log line of this app is kept: the access_token test checks none of them carries a token. Trace
  // level logs the most, so a token that stays out of it stays out of every level.
  const lines: string[] = []
  let t: TestApp
  beforeAll(async () => {
    t = await startApp(backend, {
      log: {
        level: 'trace',
        stream: {
          write(line: string) {
            lines.push(line)
          },
        },
      },
    })
  })
  afterAll(() => t.close())

  const getEvents = (authorization?: string) => {
    const req = t.http().get('/v1/events')
    return authorization === undefined ? req : req.set('authorization', authorization)
  }

  it('a valid HS256 token reads, publishes and opens a stream', async () => {
    const reader = t.token({ sub: 'hs-valid-reader' })
    const list = await getEvents(`Bearer ${reader}`)
    expect(list.status, list.text).toBe(200)
    expect(list.body.events).toEqual([])

    const stream = await SseClient.open(t.url, { token: reader })
    expect(stream.status).toBe(200)
    expect(stream.headers['content-type']).toMatch(/^text\/event-stream/)

    const pub = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'hs-valid-publisher', scope: PUBLISHER })}`)
      .send({ type: 'auth.checked', to: { users: ['hs-valid-reader'] }, title: 'hello' })
    expect(pub.status, pub.text).toBe(201)
    await stream.waitForNotifications(1)
    expect(stream.notifications[0]).toMatchObject({ id: pub.body.id, actor: 'hs-valid-publisher' })
    stream.close()

    // A hand-signed token with the same secret and claims is as good as a minted one.
    const manual = await getEvents(`Bearer ${hs256(TEST_JWT_SECRET, claims('hs-valid-reader'))}`)
    expect(manual.status, manual.text).toBe(200)
    expect(manual.body.events.map((e: { id: string }) => e.id)).toEqual([pub.body.id])
  })

  it('the auth scheme is case-insensitive ("bearer")', async () => {
    const res = await getEvents(`bearer ${t.token({ sub: 'hs-lower-scheme' })}`)
    expect(res.status, res.text).toBe(200)
  })

  const validPayload = () => claims('hs-bad-token-user')
  const badTokens: Array<[string, () => string]> = [
    ['an expired token', () => hs256(TEST_JWT_SECRET, claims('u-expired', { iat: nowS() - 7200, exp: nowS() - 3600 }))],
    ['an alg: none token', () => unsigned(validPayload())],
    ['an alg: None token', () => unsigned(validPayload(), 'None')],
    [
      'an alg: none token carrying a valid signature',
      () => {
        const valid = hs256(TEST_JWT_SECRET, validPayload())
        const [, payload, signature] = valid.split('.')
        return `${b64url({ alg: 'none', typ: 'JWT' })}.${payload}.${signature}`
      },
    ],
    ['a token signed with a wrong key', () => hs256('another-secret-that-is-long-enough-for-hs256-xx', validPayload())],
    [
      'a token whose payload was changed after signing',
      () => {
        const [header, , signature] = hs256(TEST_JWT_SECRET, claims('hs-victim')).split('.')
        return `${header}.${b64url(claims('hs-attacker', { scope: 'admin' }))}.${signature}`
      },
    ],
    ['a token missing sub', () => hs256(TEST_JWT_SECRET, { tenant: 't1', exp: nowS() + 3600 })],
    ['a token with an empty sub', () => hs256(TEST_JWT_SECRET, { sub: '', tenant: 't1', exp: nowS() + 3600 })],
    ['a token missing tenant', () => hs256(TEST_JWT_SECRET, { sub: 'u-no-tenant', exp: nowS() + 3600 })],
    [
      'a token with an empty tenant',
      () => hs256(TEST_JWT_SECRET, { sub: 'u-empty-tenant', tenant: '', exp: nowS() + 3600 }),
    ],
    ['a token that is not a JWT', () => 'not-a-jwt'],
    ['a token with garbage segments', () => 'aaa.bbb.ccc'],
  ]

  it.each(badTokens)('%s gets 401 problem+json on REST and on the stream (header and query)', async (_, make) => {
    const token = make()
    expectUnauthorized(await getEvents(`Bearer ${token}`))
    expectUnauthorized(
      await t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${token}`)
        .send({ type: 'auth.bad', to: { users: ['hs-bad-token-user'] }, title: 'x' }),
    )
    await expectStreamUnauthorized(t.url, token, false)
    await expectStreamUnauthorized(t.url, token, true)
  })

  it('a token that expires is refused once expired', async () => {
    const exp = nowS() + 2
    const token = hs256(TEST_JWT_SECRET, claims('u-expiring', { exp }))
    expect((await getEvents(`Bearer ${token}`)).status).toBe(200)
    await new Promise((r) => setTimeout(r, exp * 1000 + 200 - Date.now()))
    expectUnauthorized(await getEvents(`Bearer ${token}`))
  })

  it('nothing signed badly was published', async () => {
    // The 401 publishes above addressed this user; none of them may have landed.
    const res = await getEvents(`Bearer ${t.token({ sub: 'hs-bad-token-user' })}`)
    expect(res.status).toBe(200)
    expect(res.body.events).toEqual([])
  })

  const malformedHeaders: Array<[string, () => string]> = [
    ['Basic credentials', () => `Basic ${Buffer.from('user:pass').toString('base64')}`],
    ['"Bearer" without a token', () => 'Bearer'],
    ['"Bearer " with only spaces', () => 'Bearer    '],
    ['a valid token without the scheme', () => t.token({ sub: 'hs-malformed' })],
    ['another scheme with a valid token', () => `Token ${t.token({ sub: 'hs-malformed' })}`],
    ['two tokens', () => `Bearer ${t.token({ sub: 'hs-malformed' })} ${t.token({ sub: 'hs-malformed' })}`],
  ]

  it.each(malformedHeaders)('a malformed Authorization header (%s) gets 401 problem+json', async (_, make) => {
    expectUnauthorized(await getEvents(make()))
  })

  it('no token at all gets 401 problem+json on every /v1 route', async () => {
    expectUnauthorized(await getEvents())
    expectUnauthorized(await t.http().get('/v1/events/unread-count'))
    expectUnauthorized(await t.http().get('/v1/events/1'))
    expectUnauthorized(await t.http().post('/v1/events/1/ack'))
    expectUnauthorized(await t.http().post('/v1/events/read').send({ upTo: '1' }))
    expectUnauthorized(
      await t
        .http()
        .post('/v1/events')
        .send({ type: 'auth.none', to: { users: ['x'] }, title: 'x' }),
    )
    expectUnauthorized(
      await t
        .http()
        .post('/v1/events/batch')
        .send({ events: [{ type: 'auth.none', to: { users: ['x'] }, title: 'x' }] }),
    )
    await expectStreamUnauthorized(t.url, undefined, false)
  })

  it('?access_token= opens the stream', async () => {
    const token = t.token({ sub: 'hs-query-stream' })
    const stream = await SseClient.open(t.url, { token, tokenInQuery: true })
    expect(stream.status).toBe(200)
    expect(stream.headers['content-type']).toMatch(/^text\/event-stream/)
    const pub = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'hs-query-publisher', scope: PUBLISHER })}`)
      .send({ type: 'auth.query', to: { users: ['hs-query-stream'] }, title: 'via query' })
    expect(pub.status).toBe(201)
    await stream.waitForNotifications(1)
    expect(stream.notificationIds).toEqual([pub.body.id])
    stream.close()
  })

  it('?access_token= is not accepted on REST routes', async () => {
    const reader = t.token({ sub: 'hs-query-rest' })
    expectUnauthorized(await t.http().get(`/v1/events?access_token=${reader}`))
    expectUnauthorized(await t.http().get(`/v1/events/unread-count?access_token=${reader}`))
    expectUnauthorized(await t.http().get(`/v1/events/1?access_token=${reader}`))

    const publisher = t.token({ sub: 'hs-query-rest-publisher', scope: PUBLISHER })
    expectUnauthorized(
      await t
        .http()
        .post(`/v1/events?access_token=${publisher}`)
        .send({ type: 'auth.query', to: { users: ['hs-query-rest'] }, title: 'should not exist' }),
    )
    // And the refused publish created nothing.
    const list = await t.http().get('/v1/events').set('authorization', `Bearer ${reader}`)
    expect(list.status).toBe(200)
    expect(list.body.events).toEqual([])
  })

  it('the token is redacted from the logged stream URL, for good and bad tokens', async () => {
    const token = t.token({ sub: 'log-user' })
    const signature = token.split('.')[2]
    const stream = await SseClient.open(t.url, { token, tokenInQuery: true })
    expect(stream.status).toBe(200)
    stream.close()
    await stream.waitForEnd()

    // A refused stream and a REST call with the token in the query must not leak it either.
    const expired = hs256(TEST_JWT_SECRET, claims('log-expired', { iat: nowS() - 7200, exp: nowS() - 3600 }))
    await expectStreamUnauthorized(t.url, expired, true)
    const rest: Response = await t.http().get(`/v1/events?limit=5&access_token=${token}`)
    expect(rest.status).toBe(401)

    // Let the close of the stream be logged.
    const deadline = Date.now() + 3_000
    while (Date.now() < deadline && !lines.some((l) => l.includes('stream closed'))) {
      await new Promise((r) => setTimeout(r, 50))
    }

    const log = lines.join('\n')
    expect(lines.length).toBeGreaterThan(0)
    expect(log).not.toContain(token)
    expect(log).not.toContain(signature)
    expect(log).not.toContain(expired)
    expect(log).not.toContain(expired.split('.')[2])
    // The request URL is still logged, with the token cut out.
    expect(lines.some((l) => l.includes('/v1/stream') && l.includes('access_token=[redacted]'))).toBe(true)
    expect(lines.some((l) => l.includes('/v1/events') && l.includes('access_token=[redacted]'))).toBe(true)
  })
})

type Alg = 'RS256' | 'ES256'

function keyPair(alg: Alg) {
  const pair =
    alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const pem = (k: KeyObject, type: 'spki' | 'pkcs8') => k.export({ type, format: 'pem' }).toString()
  return { publicPem: pem(pair.publicKey, 'spki'), privatePem: pem(pair.privateKey, 'pkcs8') }
}

for (const alg of ['RS256', 'ES256'] as const) {
  describeEachBackend(`auth: ${alg} (JWT_PUBLIC_KEY)`, (backend) => {
    let keys: ReturnType<typeof keyPair>
    let otherKeys: ReturnType<typeof keyPair>
    let otherAlgKeys: ReturnType<typeof keyPair>
    const otherAlg = alg === 'RS256' ? 'ES256' : 'RS256'
    const sign = (privatePem: string, payload: Record<string, unknown>, algorithm: string = alg) =>
      createSigner({ key: privatePem, algorithm: algorithm as Alg })(payload)

    let t: TestApp
    beforeAll(async () => {
      keys = keyPair(alg)
      otherKeys = keyPair(alg)
      otherAlgKeys = keyPair(otherAlg)
      t = await startApp(backend, { config: { JWT_SECRET: undefined, JWT_PUBLIC_KEY: keys.publicPem } })
    })
    afterAll(() => t.close())

    const getEvents = (token: string) => t.http().get('/v1/events').set('authorization', `Bearer ${token}`)

    it(`a token signed with the configured ${alg} key works on REST, publish and the stream`, async () => {
      const reader = sign(keys.privatePem, claims(`${alg}-reader`))
      const list = await getEvents(reader)
      expect(list.status, list.text).toBe(200)
      expect(list.body.events).toEqual([])

      const stream = await SseClient.open(t.url, { token: reader, tokenInQuery: true })
      expect(stream.status).toBe(200)
      const pub = await t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${sign(keys.privatePem, claims(`${alg}-publisher`, { scope: PUBLISHER }))}`)
        .send({ type: 'auth.asymmetric', to: { users: [`${alg}-reader`] }, title: alg })
      expect(pub.status, pub.text).toBe(201)
      await stream.waitForNotifications(1)
      expect(stream.notifications[0]).toMatchObject({ id: pub.body.id, actor: `${alg}-publisher` })
      stream.close()
    })

    const bad: Array<[string, () => string]> = [
      ['a token signed by another key pair', () => sign(otherKeys.privatePem, claims(`${alg}-x`))],
      [
        `a ${otherAlg} token (the other asymmetric algorithm)`,
        () => sign(otherAlgKeys.privatePem, claims(`${alg}-x`), otherAlg),
      ],
      ['an HS256 token made with the public key as the secret', () => hs256(keys.publicPem, claims(`${alg}-x`))],
      [
        'an HS256 token made with the trimmed public key as the secret',
        () => hs256(keys.publicPem.trim(), claims(`${alg}-x`)),
      ],
      ['an HS256 token made with the test secret', () => hs256(TEST_JWT_SECRET, claims(`${alg}-x`))],
      ['an alg: none token', () => unsigned(claims(`${alg}-x`))],
      ['an expired token', () => sign(keys.privatePem, claims(`${alg}-x`, { iat: nowS() - 7200, exp: nowS() - 3600 }))],
      ['a token missing tenant', () => sign(keys.privatePem, { sub: `${alg}-x`, exp: nowS() + 3600 })],
      ['a token missing sub', () => sign(keys.privatePem, { tenant: 't1', exp: nowS() + 3600 })],
    ]

    it.each(bad)('%s gets 401 problem+json', async (_, make) => {
      const token = make()
      expectUnauthorized(await getEvents(token))
      await expectStreamUnauthorized(t.url, token, true)
    })
  })
}
