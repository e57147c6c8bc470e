import { spawn } from 'node:child_process'
import crypto from 'node:crypto'
import https from 'node:https'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import webpush from 'web-push'
import {
  type BrowserSubscription,
  decryptAes128gcm,
  type PushService,
  startPushService,
} from './helpers/push-service.ts'

const SUBJECT = 'mailto:test@example.com'
const vapidKeys = webpush.generateVAPIDKeys()

let service: PushService

beforeAll(async () => {
  service = await startPushService()
})
afterAll(async () => {
  await service?.close()
})
beforeEach(() => {
  service.setDelay(0)
})

function send(subscription: BrowserSubscription, payload: string | Buffer, options: webpush.RequestOptions = {}) {
  return webpush.sendNotification(subscription, payload, {
    vapidDetails: { subject: SUBJECT, ...vapidKeys },
    TTL: 60,
    agent: service.agent,
    ...options,
  })
}

/** The error a send rejects with (fails the test if it resolves). */
async function sendError(subscription: BrowserSubscription, payload: string, options: webpush.RequestOptions = {}) {
  const err = await send(subscription, payload, options).then(
    () => {
      throw new Error('expected the send to be refused')
    },
    (e: unknown) => e,
  )
  return err as webpush.WebPushError & NodeJS.ErrnoException
}

/** Sends web-push's request (encrypted for `encryptFor`) with headers changed, as a sender that gets them wrong would. */
function sendRaw(
  subscription: BrowserSubscription,
  change: (headers: Record<string, string | number | undefined>) => void,
  encryptFor = subscription,
): Promise<{ status: number; body: string }> {
  const details = webpush.generateRequestDetails(encryptFor, 'hello', {
    vapidDetails: { subject: SUBJECT, ...vapidKeys },
    TTL: 60,
  })
  const headers: Record<string, string | number | undefined> = { ...details.headers }
  change(headers)
  for (const name of Object.keys(headers)) if (headers[name] === undefined) delete headers[name]
  return new Promise((resolve, reject) => {
    const req = https.request(subscription.endpoint, { method: 'POST', headers, agent: service.agent }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end(details.body)
  })
}

/** A VAPID Authorization header signed with our own JWT, to try claims web-push refuses to produce. */
function vapidHeader(claims: Record<string, unknown>, signer = vapidKeys): string {
  const pub = Buffer.from(signer.publicKey, 'base64url')
  const key = crypto.createPrivateKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      d: signer.privateKey,
      x: pub.subarray(1, 33).toString('base64url'),
      y: pub.subarray(33).toString('base64url'),
    },
    format: 'jwk',
  })
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const input = `${part({ typ: 'JWT', alg: 'ES256' })}.${part(claims)}`
  const signature = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' })
  return `vapid t=${input}.${signature.toString('base64url')}, k=${vapidKeys.publicKey}`
}

const now = () => Math.floor(Date.now() / 1000)

describe('local push service', () => {
  it('delivers a web-push message decrypted byte for byte, with its VAPID claims and headers', async () => {
    const subscription = service.createSubscription()
    const text = JSON.stringify({ title: 'Grüße 👋🏽', body: 'Mathématiques: 18/20 — 日本語 ✓', nul: '\u0000' })
    const before = service.messages.length
    const result = await send(subscription, text, { urgency: 'high', topic: 'grade-42' })
    expect(result.statusCode).toBe(201)
    expect(result.headers.location).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/m\//)

    const [message] = (await service.waitForMessages(before + 1)).slice(before)
    expect(Buffer.from(message.payload, 'utf8').equals(Buffer.from(text, 'utf8'))).toBe(true)
    expect(message.json()).toEqual(JSON.parse(text))
    expect(message.endpoint).toBe(subscription.endpoint)
    expect(service.messagesFor(subscription.endpoint)).toEqual([message])
    expect(message.headers).toMatchObject({ ttl: 60, urgency: 'high', topic: 'grade-42' })
    expect(message.headers.authorization).toMatch(/^vapid t=[\w-]+\.[\w-]+\.[\w-]+, k=/)
    expect(message.vapid).toMatchObject({ aud: service.origin, sub: SUBJECT, publicKey: vapidKeys.publicKey })
    expect(message.vapid.exp).toBeGreaterThan(now())
    expect(message.vapid.exp).toBeLessThanOrEqual(now() + 24 * 3600)
  })

  it('uses web-push defaults when the sender sets no TTL or urgency', async () => {
    const subscription = service.createSubscription()
    await webpush.sendNotification(subscription, 'x', {
      vapidDetails: { subject: SUBJECT, ...vapidKeys },
      agent: service.agent,
    })
    const [message] = service.messagesFor(subscription.endpoint)
    expect(message.headers).toMatchObject({ ttl: 2_419_200, urgency: 'normal', topic: undefined })
  })

  it('accepts 3993 bytes of plaintext (4096 on the wire) and answers 413 to 3994', async () => {
    const subscription = service.createSubscription()
    await send(subscription, 'a'.repeat(3993))
    expect(service.messagesFor(subscription.endpoint)[0].payload).toHaveLength(3993)

    const err = await sendError(subscription, 'a'.repeat(3994))
    expect(err).toBeInstanceOf(webpush.WebPushError)
    expect(err.statusCode).toBe(413)
    expect(service.messagesFor(subscription.endpoint)).toHaveLength(1)
  })

  it('refuses a request without TTL (400) or with a bad Urgency or Topic', async () => {
    const subscription = service.createSubscription()
    expect((await sendRaw(subscription, (h) => (h.TTL = undefined))).status).toBe(400)
    expect((await sendRaw(subscription, (h) => (h.TTL = '-1'))).status).toBe(400)
    expect((await sendRaw(subscription, (h) => (h.Urgency = 'urgent'))).status).toBe(400)
    expect((await sendRaw(subscription, (h) => (h.Topic = 'class:7A'))).status).toBe(400)
    expect((await sendRaw(subscription, (h) => (h.Topic = 'a'.repeat(33)))).status).toBe(400)
    expect((await sendRaw(subscription, () => {})).status).toBe(201)
    expect(service.attempts.at(-2)?.reason).toMatch(/Topic/)
  })

  it('answers 415 to the legacy aesgcm encoding and 400 to a body that does not decrypt', async () => {
    const subscription = service.createSubscription()
    expect((await sendError(subscription, 'x', { contentEncoding: 'aesgcm' })).statusCode).toBe(415)

    // Encrypted for another browser's keys: it authenticates nowhere else.
    const other = service.createSubscription()
    expect((await sendRaw(subscription, () => {}, other)).status).toBe(400)
    expect(service.attempts.at(-1)?.reason).toMatch(/does not decrypt/)
  })

  it('refuses a JWT signed by a key other than k (401), and a key other than the subscription was made with (403)', async () => {
    const subscription = service.createSubscription()
    const other = webpush.generateVAPIDKeys()
    // web-push does not check that the pair matches: it signs with one key and announces the other.
    const err = await sendError(subscription, 'x', {
      vapidDetails: { subject: SUBJECT, publicKey: other.publicKey, privateKey: vapidKeys.privateKey },
    })
    expect(err.statusCode).toBe(401)
    expect(err.body).toMatch(/signature/)

    const bound = service.createSubscription({ applicationServerKey: other.publicKey })
    expect((await sendError(bound, 'x')).statusCode).toBe(403)
    await send(bound, 'x', { vapidDetails: { subject: SUBJECT, ...other } })
    expect(service.messagesFor(bound.endpoint)).toHaveLength(1)
  })

  it('checks the JWT claims: exp in the future and at most 24 h ahead, aud with port, sub mailto:/https:', async () => {
    const subscription = service.createSubscription()
    const withClaims = (claims: Record<string, unknown>) =>
      sendRaw(
        subscription,
        (h) => (h.Authorization = vapidHeader({ aud: service.origin, exp: now() + 3600, sub: SUBJECT, ...claims })),
      )

    expect((await withClaims({})).status).toBe(201)
    expect((await withClaims({ sub: 'https://example.com/contact' })).status).toBe(201)
    expect((await withClaims({ exp: now() + 23 * 3600 })).status).toBe(201)
    expect((await withClaims({ exp: now() - 60 })).status).toBe(401)
    expect((await withClaims({ exp: now() + 25 * 3600 })).status).toBe(401)
    expect((await withClaims({ exp: undefined })).status).toBe(401)
    expect((await withClaims({ aud: 'https://127.0.0.1' })).status).toBe(401)
    expect((await withClaims({ sub: 'test@example.com' })).status).toBe(401)
    expect((await sendRaw(subscription, (h) => (h.Authorization = undefined))).status).toBe(401)
    expect(service.messagesFor(subscription.endpoint)).toHaveLength(3)
  })

  it('failNext(2, 503) fails the next two sends, and the third gets through', async () => {
    const subscription = service.createSubscription()
    const start = service.attempts.length
    service.failNext(2, { status: 503 })
    expect((await sendError(subscription, 'one')).statusCode).toBe(503)
    expect((await sendError(subscription, 'two')).statusCode).toBe(503)
    await send(subscription, 'three')
    expect(service.attempts.slice(start).map((a) => a.status)).toEqual([503, 503, 201])
    expect(service.messagesFor(subscription.endpoint).map((m) => m.payload)).toEqual(['three'])
  })

  it('failNext(1, 429 with Retry-After) returns that header', async () => {
    const subscription = service.createSubscription()
    service.failNext(1, { status: 429, retryAfter: 7 })
    const err = await sendError(subscription, 'x')
    expect(err.statusCode).toBe(429)
    expect(err.headers['retry-after']).toBe('7')
  })

  it('answers 410 for an unknown endpoint and for an expired subscription', async () => {
    const unknown = { ...service.createSubscription(), endpoint: service.unknownEndpoint() }
    expect((await sendError(unknown, 'x')).statusCode).toBe(410)

    const subscription = service.createSubscription()
    await send(subscription, 'before')
    service.expire(subscription.endpoint)
    expect((await sendError(subscription, 'after')).statusCode).toBe(410)
  })

  it("'reset' destroys the connection: web-push rejects with a network error, not a WebPushError", async () => {
    const subscription = service.createSubscription()
    service.failNext(1, 'reset')
    const err = await sendError(subscription, 'x')
    expect(err).not.toBeInstanceOf(webpush.WebPushError)
    expect(err.code).toBe('ECONNRESET')
    expect(service.attempts.at(-1)?.status).toBe('reset')
  })

  it('delays answers: setDelay for all, delayMs for injected ones (web-push `timeout` then gives up)', async () => {
    const subscription = service.createSubscription()
    service.setDelay(300)
    const t0 = Date.now()
    await send(subscription, 'slow')
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290)
    service.setDelay(0)

    service.failNext(1, { status: 503, delayMs: 1000 })
    const err = await sendError(subscription, 'x', { timeout: 200 })
    expect(err.message).toBe('Socket timeout')
  })

  it('waitForMessages fails with the requests it saw', async () => {
    const fresh = await startPushService()
    try {
      fresh.createSubscription()
      await expect(fresh.waitForMessages(1, 50)).rejects.toThrow(/expected 1 push messages within 50 ms, got 0/)
    } finally {
      await fresh.close()
    }
  })

  it('a child process trusts the service through NODE_EXTRA_CA_CERTS=caFile', async () => {
    const code = `require('https').request(process.argv[1], { method: 'POST' }, (r) => {
      console.log(r.statusCode)
      process.exit()
    }).end()`
    const child = spawn(process.execPath, ['-e', code, service.unknownEndpoint()], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: service.caFile },
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    await new Promise((resolve) => child.on('exit', resolve))
    expect(out.trim()).toBe('410')
  })
})

describe('decryptAes128gcm', () => {
  // RFC 8291 Appendix A.
  const vector = {
    uaPrivateKey: 'q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94',
    authSecret: 'BTBZMqHH6r4Tts7J_aSIgg',
    body:
      'DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_' +
      'yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN',
  }
  const b64 = (s: string) => Buffer.from(s, 'base64url')

  it('decrypts the RFC 8291 Appendix A test vector', () => {
    const plain = decryptAes128gcm(b64(vector.body), b64(vector.uaPrivateKey), b64(vector.authSecret))
    expect(plain.toString('utf8')).toBe('When I grow up, I want to be a watermelon')
  })

  it('refuses the vector with one bit flipped or with another auth secret', () => {
    const body = b64(vector.body)
    body[body.length - 1] ^= 1
    expect(() => decryptAes128gcm(body, b64(vector.uaPrivateKey), b64(vector.authSecret))).toThrow()
    expect(() => decryptAes128gcm(b64(vector.body), b64(vector.uaPrivateKey), crypto.randomBytes(16))).toThrow()
  })
})
