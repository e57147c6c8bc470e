import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto'
import http from 'node:http'
import { createSigner } from 'fast-jwt'
import type { Response } from 'supertest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { CLOCK_SKEW_S } from '../src/auth.ts'
import { DEFAULT_JWT_MAX_TTL_S } from '../src/config.ts'
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

/** The detail of a 401 problem+json (after expectUnauthorized). */
const detailOf = (res: { text: string }) => (JSON.parse(res.text) as { detail: string }).detail

/** Every character percent-encoded: what a URL parser decodes back to the text. */
const percentEncoded = (text: string) =>
  [...text].map((c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`).join('')

/**
 * GETs a path exactly as written (`#`, `;` and percent-escapes included: fetch and supertest would normalize
 * it), and hangs up once the status is known, so an opened stream does not stay open.
 */
function rawGet(base: string, path: string): Promise<number> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const request = http.get({ hostname, port, path, agent: false }, (res) => {
      resolve(res.statusCode ?? 0)
      request.destroy()
    })
    request.on('error', reject)
  })
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

  it('a token accepted before (and kept as verified) is refused once it has expired, past the clock tolerance, as a first use would be', async () => {
    const token = hs256(TEST_JWT_SECRET, claims('hs-expiring-kept', { exp: nowS() + 60 }))
    expect((await getEvents(`Bearer ${token}`)).status).toBe(200)
    expect((await getEvents(`Bearer ${token}`)).status).toBe(200) // from what was kept
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + (60 + CLOCK_SKEW_S + 5) * 1000 })
    try {
      const res = await getEvents(`Bearer ${token}`)
      expectUnauthorized(res)
      expect(detailOf(res)).toBe('The token has expired.')
    } finally {
      vi.useRealTimers()
    }
  })

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

  it('a token that expires is refused once expired (past the clock skew)', async () => {
    // Past its exp already, but within the skew tolerated for the issuer's clock: accepted for 2 s more.
    const exp = nowS() - CLOCK_SKEW_S + 2
    const token = hs256(TEST_JWT_SECRET, claims('u-expiring', { iat: nowS() - 600, exp }))
    expect((await getEvents(`Bearer ${token}`)).status).toBe(200)
    await new Promise((r) => setTimeout(r, (exp + CLOCK_SKEW_S) * 1000 + 200 - Date.now()))
    const res = await getEvents(`Bearer ${token}`)
    expectUnauthorized(res)
    expect(detailOf(res)).toBe('The token has expired.')
  })

  // JWT_MAX_TTL_S is the default here (a day); CLOCK_SKEW_S is 30 s.
  const MAX = DEFAULT_JWT_MAX_TTL_S
  const lifetimeRefusals: Array<[string, () => Record<string, unknown>, string | RegExp]> = [
    ['no exp at all', () => ({ sub: 'u-no-exp', tenant: 't1', iat: nowS() }), 'The token has no expiry (exp).'],
    ['neither exp nor iat', () => ({ sub: 'u-no-exp', tenant: 't1' }), 'The token has no expiry (exp).'],
    [
      'exp - iat a second over JWT_MAX_TTL_S',
      () => claims('u-long', { iat: nowS(), exp: nowS() + MAX + 1 }),
      `The token lives ${MAX + 1} s (exp - iat); at most ${MAX} s is accepted.`,
    ],
    [
      'a ten-year token',
      () => claims('u-long', { iat: nowS(), exp: nowS() + 10 * 365 * 86_400 }),
      /^The token lives \d+ s \(exp - iat\)/,
    ],
    [
      'no iat, and exp further than JWT_MAX_TTL_S from now',
      () => ({ sub: 'u-long', tenant: 't1', exp: nowS() + MAX + 60 }),
      `The token expires more than ${MAX} s from now (exp) and has no iat; at most ${MAX} s is accepted.`,
    ],
    [
      'iat in the future, past the clock skew',
      () => claims('u-future', { iat: nowS() + CLOCK_SKEW_S + 30, exp: nowS() + 3600 }),
      'The token was issued in the future (iat): check the clock of its issuer.',
    ],
    [
      'exp past by more than the clock skew',
      () => claims('u-late', { iat: nowS() - 600, exp: nowS() - CLOCK_SKEW_S - 5 }),
      'The token has expired.',
    ],
    [
      'nbf ahead by more than the clock skew',
      () => claims('u-early', { nbf: nowS() + CLOCK_SKEW_S + 30 }),
      'The token is not valid yet (nbf).',
    ],
  ]

  it.each(lifetimeRefusals)(
    'a token with %s gets 401 problem+json saying why, on REST and the stream',
    async (_, payload, why) => {
      const token = hs256(TEST_JWT_SECRET, payload())
      const res = await getEvents(`Bearer ${token}`)
      expectUnauthorized(res)
      expect(detailOf(res)).toMatch(why)
      await expectStreamUnauthorized(t.url, token, true)
    },
  )

  const lifetimesAccepted: Array<[string, () => Record<string, unknown>]> = [
    ['exp - iat exactly JWT_MAX_TTL_S', () => claims('u-ok', { iat: nowS(), exp: nowS() + MAX })],
    ['no iat, and exp within JWT_MAX_TTL_S', () => ({ sub: 'u-ok', tenant: 't1', exp: nowS() + 3600 })],
    ['iat ahead, within the clock skew', () => claims('u-ok', { iat: nowS() + CLOCK_SKEW_S - 10 })],
    [
      'exp just past, within the clock skew',
      () => claims('u-ok', { iat: nowS() - 600, exp: nowS() - CLOCK_SKEW_S + 10 }),
    ],
    ['nbf ahead, within the clock skew', () => claims('u-ok', { nbf: nowS() + CLOCK_SKEW_S - 10 })],
  ]

  it.each(lifetimesAccepted)('a token with %s is accepted', async (_, payload) => {
    const res = await getEvents(`Bearer ${hs256(TEST_JWT_SECRET, payload())}`)
    expect(res.status, res.text).toBe(200)
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

  // Fastify decodes query keys and splits the query at `#` as well as `?`: each spelling that reaches the
  // token must be redacted as the plain one is, and a token anywhere else in a URL too.
  const spellings: Array<[string, (token: string) => string, number]> = [
    ['plain', (token) => `/v1/stream?access_token=${token}`, 200],
    ['with an encoded underscore', (token) => `/v1/stream?access%5Ftoken=${token}`, 200],
    ['with an encoded lower-case underscore', (token) => `/v1/stream?access%5ftoken=${token}`, 200],
    ['with an encoded first letter', (token) => `/v1/stream?%61ccess_token=${token}`, 200],
    ['with every letter encoded', (token) => `/v1/stream?${percentEncoded('access_token')}=${token}`, 200],
    ['after another parameter', (token) => `/v1/stream?topics=x&access_token=${token}`, 403],
    ['after #', (token) => `/v1/stream#access_token=${token}`, 200],
    ['with the token percent-encoded', (token) => `/v1/stream?access_token=${percentEncoded(token)}`, 200],
    ['after ;', (token) => `/v1/stream;access_token=${token}`, 404],
    ['in the path', (token) => `/v1/stream/${token}`, 404],
    ['percent-encoded in the path', (token) => `/v1/stream/${percentEncoded(token)}`, 404],
    ['under another name', (token) => `/v1/stream?token=${token}`, 401],
    ['in upper case', (token) => `/v1/stream?ACCESS_TOKEN=${token}`, 401],
    ['with a trailing +', (token) => `/v1/stream?access_token+=${token}`, 401],
    ['on a REST route', (token) => `/v1/events?access_token=${token}`, 401],
  ]

  it.each(spellings)('a token in the URL (%s) is redacted from the logs', async (name, urlFor, status) => {
    const token = t.token({ sub: `log-spelling-${name.replaceAll(' ', '-')}` })
    const [, payload, signature] = token.split('.')
    const path = urlFor(token)
    const before = lines.length
    expect(await rawGet(t.url, path)).toBe(status)
    // The request is logged, its URL with the token cut out.
    const prefix = path.slice(0, 10)
    await expect.poll(() => lines.slice(before).some((l) => l.includes(`"url":"${prefix}`))).toBe(true)
    const logged = lines.slice(before).join('\n')
    expect(logged).toContain('[redacted]')
    for (const secret of [token, payload, signature, percentEncoded(token), percentEncoded(signature)]) {
      expect(logged.includes(secret), 'a token in the log').toBe(false)
    }
  })

  it('the value of ?ticket= is redacted, whatever it looks like', async () => {
    const before = lines.length
    await rawGet(t.url, '/v1/stream?ticket=opaque-stream-ticket-42&topics=x')
    await expect.poll(() => lines.slice(before).some((l) => l.includes('"url":"/v1/stream?ticket='))).toBe(true)
    const logged = lines.slice(before).join('\n')
    expect(logged).not.toContain('opaque-stream-ticket-42')
    expect(logged).toContain('ticket=[redacted]&topics=x')
  })
})

describe('auth: JWT_MAX_TTL_S from the configuration', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp('pglite', { config: { JWT_MAX_TTL_S: 600 } })
  })
  afterAll(() => t.close())

  it('refuses a token living longer than JWT_MAX_TTL_S, accepts one living exactly that long', async () => {
    const get = (ttl: number) =>
      t
        .http()
        .get('/v1/events')
        .set('authorization', `Bearer ${t.token({ sub: 'ttl-user' }, ttl)}`)
    const refused = await get(601)
    expectUnauthorized(refused)
    expect(detailOf(refused)).toBe('The token lives 601 s (exp - iat); at most 600 s is accepted.')
    expect((await get(600)).status).toBe(200)
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
