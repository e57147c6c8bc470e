import { execFile } from 'node:child_process'
import crypto from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

/**
 * A local Web Push service (RFC 8030 + RFC 8291 + RFC 8292) that accepts and rejects what FCM or Mozilla
 * autopush would, decrypts every accepted message, and can be told to fail, for tests of Web Push dispatch.
 *
 * Status codes: 404 for a path that is not a push resource, 410 for an unknown or expired subscription,
 * 400 for a missing/invalid TTL, Urgency or Topic or a body that does not decrypt, 415 for a
 * Content-Encoding other than aes128gcm, 401 for a missing or invalid VAPID credential, 403 when the
 * VAPID key is not the one the subscription was created with, 413 for a body over 4096 bytes, 201 accepted.
 */

export interface BrowserSubscription {
  endpoint: string
  expirationTime: null
  keys: { p256dh: string; auth: string }
}

export interface SubscriptionOptions {
  /** The VAPID public key (base64url) passed to pushManager.subscribe(); pushes signed by another key get 403. */
  applicationServerKey?: string
}

export interface ReceivedPush {
  endpoint: string
  subscriptionId: string
  /** The decrypted body as UTF-8. */
  payload: string
  json(): unknown
  headers: { ttl: number; urgency: string | undefined; topic: string | undefined; authorization: string }
  vapid: { aud: string; exp: number; sub: string; publicKey: string }
  /** Date.now() when the request arrived. */
  receivedAt: number
}

export interface PushAttempt {
  endpoint: string
  /** The status answered, or 'reset' when the connection was destroyed instead. */
  status: number | 'reset'
  /** Why a request was refused (absent for accepted and injected answers). */
  reason?: string
  /** Date.now() when the request arrived. */
  at: number
}

export type FaultResponse = { status: number; retryAfter?: string | number; delayMs?: number } | 'reset'

export interface PushService {
  origin: string
  /** The CA certificate (PEM) the server's certificate chains to. */
  ca: string
  /** Path of the CA PEM, for NODE_EXTRA_CA_CERTS of a child process. Deleted by close(). */
  caFile: string
  /** Trusts the CA: pass as web-push's `agent` option to a sender running in this process. */
  agent: https.Agent
  messages: ReceivedPush[]
  /** Every request received, accepted or not, in arrival order. */
  attempts: PushAttempt[]
  createSubscription(options?: SubscriptionOptions): BrowserSubscription
  /** An endpoint on this service that no browser holds: pushes to it get 410. */
  unknownEndpoint(): string
  /** Forgets a subscription, as when the browser unsubscribes: later pushes to it get 410. */
  expire(endpoint: string): void
  messagesFor(endpoint: string): ReceivedPush[]
  waitForMessages(n: number, timeoutMs?: number): Promise<ReceivedPush[]>
  waitForAttempts(n: number, timeoutMs?: number): Promise<PushAttempt[]>
  /** The next n requests, to any endpoint, get this answer instead of being processed. */
  failNext(n: number, response: FaultResponse): void
  /** Delays every answer by ms (0 to stop). */
  setDelay(ms: number): void
  /** Requests received and not yet answered (nor dropped), now. */
  inFlight(): number
  /** The most requests in flight at once since the service started, or since resetMaxInFlight(). */
  maxInFlight(): number
  resetMaxInFlight(): void
  close(): Promise<void>
}

interface Subscription {
  ecdh: crypto.ECDH
  authSecret: Buffer
  applicationServerKey?: string
}

const MAX_BODY = 4096
const MAX_VAPID_LIFETIME_S = 24 * 60 * 60
const URGENCIES = ['very-low', 'low', 'normal', 'high']

/** An answer the service refuses with; `reason` goes into the body and into `attempts`. */
class Refusal extends Error {
  constructor(
    readonly status: number,
    reason: string,
  ) {
    super(reason)
  }
}

const execFileAsync = promisify(execFile)

/**
 * A throwaway CA and a leaf certificate for IP 127.0.0.1 (and `dnsNames`) signed by it, in `dir` (a fresh temp
 * dir). The test push service's and the webhook receiver's.
 */
export async function makeCertificates(dir: string, { caName = 'push-test-ca', dnsNames = [] as string[] } = {}) {
  // Arguments contain no spaces, so each command reads as it would in a shell.
  const openssl = (command: string) => execFileAsync('openssl', command.split(' '), { cwd: dir })
  const newKey = '-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'
  await openssl(
    `req -x509 ${newKey} -keyout ca.key -out ca.pem -days 2 -subj /CN=${caName} ` +
      '-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign',
  )
  await openssl(`req -new ${newKey} -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1`)
  // Node checks an IP host against the IP entries of subjectAltName, never the CN.
  const leafExtensions = [
    `subjectAltName=${['IP:127.0.0.1', ...dnsNames.map((n) => `DNS:${n}`)].join(',')}`,
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
  ]
  await writeFile(path.join(dir, 'leaf.ext'), leafExtensions.join('\n'))
  await openssl(
    'x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out leaf.pem -extfile leaf.ext',
  )
  const [ca, key, cert] = await Promise.all(
    ['ca.pem', 'leaf.key', 'leaf.pem'].map((f) => readFile(path.join(dir, f), 'utf8')),
  )
  return { ca, key, cert, caFile: path.join(dir, 'ca.pem') }
}

function hkdf(salt: Buffer, ikm: Buffer, info: Buffer, length: number): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', ikm, salt, info, length))
}

/**
 * Decrypts an aes128gcm Web Push body (RFC 8188 framing, RFC 8291 key derivation) with the user agent's
 * private key (32 raw bytes) and auth secret. Throws when the body is malformed or does not authenticate.
 */
export function decryptAes128gcm(body: Buffer, uaPrivateKey: Buffer, authSecret: Buffer): Buffer {
  if (body.length < 21) throw new Error('body shorter than the aes128gcm header')
  const salt = body.subarray(0, 16)
  const rs = body.readUInt32BE(16)
  const idlen = body[20]
  if (rs < 18) throw new Error(`record size ${rs} below the minimum of 18`)
  if (idlen !== 65) throw new Error(`keyid is ${idlen} bytes, not a 65-byte P-256 public key`)
  const asPublic = body.subarray(21, 21 + idlen)
  const ciphertext = body.subarray(21 + idlen)

  const ecdh = crypto.createECDH('prime256v1')
  ecdh.setPrivateKey(uaPrivateKey)
  const uaPublic = ecdh.getPublicKey()
  const ecdhSecret = ecdh.computeSecret(asPublic)
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, asPublic])
  const ikm = hkdf(authSecret, ecdhSecret, keyInfo, 32)
  const cek = hkdf(salt, ikm, Buffer.from('Content-Encoding: aes128gcm\0'), 16)
  const baseNonce = hkdf(salt, ikm, Buffer.from('Content-Encoding: nonce\0'), 12)

  if (ciphertext.length === 0) throw new Error('no records')
  const plain: Buffer[] = []
  for (let start = 0, seq = 0; start < ciphertext.length; start += rs, seq++) {
    const record = ciphertext.subarray(start, start + rs)
    const last = start + rs >= ciphertext.length
    if (record.length <= 16) throw new Error(`record ${seq} too short`)
    // The per-record nonce is the base nonce XOR the record's sequence number (RFC 8188 section 2.3).
    const nonce = Buffer.from(baseNonce)
    nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ seq) >>> 0, 8)
    const decipher = crypto.createDecipheriv('aes-128-gcm', cek, nonce)
    decipher.setAuthTag(record.subarray(record.length - 16))
    const data = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()])
    // Padding: a delimiter (2 on the last record, 1 on others) followed by zeros.
    let end = data.length - 1
    while (end >= 0 && data[end] === 0) end--
    if (end < 0 || data[end] !== (last ? 2 : 1)) throw new Error(`record ${seq} has no valid padding delimiter`)
    plain.push(data.subarray(0, end))
  }
  return Buffer.concat(plain)
}

/** The public key of an uncompressed P-256 point, for verifying an ES256 signature. */
function p256PublicKey(point: Buffer): crypto.KeyObject {
  if (point.length !== 65 || point[0] !== 4) throw new Error('not an uncompressed P-256 point')
  return crypto.createPublicKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      x: point.subarray(1, 33).toString('base64url'),
      y: point.subarray(33).toString('base64url'),
    },
    format: 'jwk',
  })
}

/** Checks a VAPID Authorization header (RFC 8292) as a push service does; throws a Refusal. */
function verifyVapid(authorization: string | undefined, origin: string, sub: Subscription): ReceivedPush['vapid'] {
  if (!authorization) throw new Refusal(401, 'missing Authorization')
  const match = /^vapid\s+(.*)$/i.exec(authorization.trim())
  if (!match) throw new Refusal(401, 'Authorization scheme is not vapid')
  const params = new Map<string, string>()
  for (const part of match[1].split(',')) {
    const eq = part.indexOf('=')
    if (eq > 0) params.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim())
  }
  const token = params.get('t')
  const k = params.get('k')
  if (!token || !k) throw new Refusal(401, 'vapid Authorization lacks t= or k=')

  let key: crypto.KeyObject
  try {
    key = p256PublicKey(Buffer.from(k, 'base64url'))
  } catch {
    throw new Refusal(401, 'k is not a P-256 public key')
  }
  const parts = token.split('.')
  if (parts.length !== 3) throw new Refusal(401, 't is not a JWS')
  let header: { alg?: unknown }
  let claims: { aud?: unknown; exp?: unknown; sub?: unknown }
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'))
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'))
  } catch {
    throw new Refusal(401, 'JWT header or claims are not JSON')
  }
  if (header.alg !== 'ES256') throw new Refusal(401, `JWT alg ${String(header.alg)} is not ES256`)
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`)
  // JWS carries ES256 signatures as raw r||s, not DER.
  const valid = crypto.verify('sha256', signed, { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(parts[2], 'base64url'))
  if (!valid) throw new Refusal(401, 'JWT signature does not verify with k')

  const now = Math.floor(Date.now() / 1000)
  const { aud, exp, sub: subject } = claims
  if (aud !== origin) throw new Refusal(401, `JWT aud ${JSON.stringify(aud)} is not ${origin}`)
  if (typeof exp !== 'number' || !Number.isInteger(exp)) throw new Refusal(401, 'JWT exp missing or not an integer')
  if (exp <= now) throw new Refusal(401, `JWT expired ${now - exp} s ago`)
  if (exp > now + MAX_VAPID_LIFETIME_S) throw new Refusal(401, 'JWT exp more than 24 h ahead')
  if (typeof subject !== 'string' || !/^(mailto:|https:)/.test(subject)) {
    throw new Refusal(401, `JWT sub ${JSON.stringify(subject)} is not a mailto: or https: URI`)
  }
  if (sub.applicationServerKey && sub.applicationServerKey !== k) {
    throw new Refusal(403, 'VAPID key differs from the applicationServerKey the subscription was created with')
  }
  return { aud, exp, sub: subject, publicKey: k }
}

function one(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

export async function startPushService(): Promise<PushService> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'push-service-'))
  const { ca, key, cert, caFile } = await makeCertificates(dir)

  const subscriptions = new Map<string, Subscription>()
  const faults: FaultResponse[] = []
  const timers = new Set<NodeJS.Timeout>()
  const waiters = new Set<() => void>()
  const messages: ReceivedPush[] = []
  const attempts: PushAttempt[] = []
  let delayMs = 0
  let origin = ''
  let inFlight = 0
  let maxInFlight = 0

  const later = (ms: number, fn: () => void) => {
    if (ms <= 0) return fn()
    const timer = setTimeout(() => {
      timers.delete(timer)
      fn()
    }, ms)
    timers.add(timer)
  }

  const record = (attempt: PushAttempt) => {
    attempts.push(attempt)
    for (const wake of waiters) wake()
  }

  /** Validates and decrypts a push exactly as a strict push service would. */
  const accept = (req: http.IncomingMessage, body: Buffer, at: number): ReceivedPush => {
    const url = new URL(req.url ?? '/', origin)
    const id = /^\/push\/([\w-]+)$/.exec(url.pathname)?.[1]
    if (!id) throw new Refusal(404, `${url.pathname} is not a push resource`)
    if (req.method !== 'POST') throw new Refusal(405, `${req.method} is not POST`)
    const sub = subscriptions.get(id)
    if (!sub) throw new Refusal(410, 'no such subscription (unknown or expired)')

    const ttlHeader = one(req.headers.ttl)
    if (ttlHeader === undefined) throw new Refusal(400, 'missing TTL header')
    if (!/^\d+$/.test(ttlHeader.trim())) throw new Refusal(400, `TTL ${ttlHeader} is not a non-negative integer`)
    const urgency = one(req.headers.urgency)
    if (urgency !== undefined && !URGENCIES.includes(urgency)) throw new Refusal(400, `invalid Urgency ${urgency}`)
    const topic = one(req.headers.topic)
    if (topic !== undefined && !/^[\w-]{1,32}$/.test(topic)) {
      throw new Refusal(400, `Topic ${JSON.stringify(topic)} is not 1-32 base64url characters`)
    }

    // A push without a body needs no encryption (RFC 8030 section 5).
    const encoding = one(req.headers['content-encoding'])
    if (body.length > 0 && encoding?.toLowerCase() !== 'aes128gcm') {
      throw new Refusal(415, `Content-Encoding ${encoding ?? '(none)'} is not aes128gcm`)
    }
    const authorization = one(req.headers.authorization)
    const vapid = verifyVapid(authorization, origin, sub)

    let payload = ''
    if (body.length > 0) {
      if (body.length > MAX_BODY) throw new Refusal(413, `body of ${body.length} bytes exceeds ${MAX_BODY}`)
      try {
        payload = decryptAes128gcm(body, sub.ecdh.getPrivateKey(), sub.authSecret).toString('utf8')
      } catch (err) {
        throw new Refusal(400, `body does not decrypt: ${(err as Error).message}`)
      }
    }
    return {
      endpoint: `${origin}${url.pathname}`,
      subscriptionId: id,
      payload,
      json: () => JSON.parse(payload),
      headers: { ttl: Number(ttlHeader), urgency, topic, authorization: authorization ?? '' },
      vapid,
      receivedAt: at,
    }
  }

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, at: number) => {
    const endpoint = `${origin}${req.url ?? ''}`
    const fault = faults.shift()
    if (fault === 'reset') {
      record({ endpoint, status: 'reset', at })
      return later(delayMs, () => req.socket.destroy())
    }
    if (fault) {
      record({ endpoint, status: fault.status, at })
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json' }
      if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter)
      const text = JSON.stringify({ code: fault.status, error: http.STATUS_CODES[fault.status], message: 'injected' })
      return later(delayMs + (fault.delayMs ?? 0), () => res.writeHead(fault.status, headers).end(text))
    }
    try {
      const message = accept(req, body, at)
      messages.push(message)
      record({ endpoint, status: 201, at })
      later(delayMs, () => res.writeHead(201, { location: `${origin}/m/${crypto.randomUUID()}` }).end())
    } catch (err) {
      if (!(err instanceof Refusal)) throw err
      record({ endpoint, status: err.status, reason: err.message, at })
      // The JSON error shape autopush answers with; web-push surfaces it as WebPushError.body.
      const text = JSON.stringify({ code: err.status, error: http.STATUS_CODES[err.status], message: err.message })
      later(delayMs, () => res.writeHead(err.status, { 'content-type': 'application/json' }).end(text))
    }
  }

  const server = https.createServer({ key, cert }, (req, res) => {
    const at = Date.now()
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    // 'close' follows the answer, or a connection destroyed instead ('reset').
    res.once('close', () => inFlight--)
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => handle(req, res, Buffer.concat(chunks), at))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
  const agent = new https.Agent({ ca })

  const waitFor = <T>(what: string, list: T[], n: number, timeoutMs: number): Promise<T[]> =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (list.length < n) return
        cleanup()
        resolve(list.slice())
      }
      const timer = setTimeout(() => {
        cleanup()
        const seen = attempts.map((a) => `  ${a.status} ${a.endpoint}${a.reason ? ` (${a.reason})` : ''}`).join('\n')
        reject(
          new Error(`expected ${n} ${what} within ${timeoutMs} ms, got ${list.length}; requests:\n${seen || '  none'}`),
        )
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })

  return {
    origin,
    ca,
    caFile,
    agent,
    messages,
    attempts,
    createSubscription(options = {}) {
      const id = crypto.randomBytes(16).toString('base64url')
      const ecdh = crypto.createECDH('prime256v1')
      const p256dh = ecdh.generateKeys()
      const authSecret = crypto.randomBytes(16)
      subscriptions.set(id, { ecdh, authSecret, applicationServerKey: options.applicationServerKey })
      return {
        endpoint: `${origin}/push/${id}`,
        expirationTime: null,
        keys: { p256dh: p256dh.toString('base64url'), auth: authSecret.toString('base64url') },
      }
    },
    unknownEndpoint: () => `${origin}/push/${crypto.randomBytes(16).toString('base64url')}`,
    expire(endpoint) {
      subscriptions.delete(new URL(endpoint).pathname.replace(/^\/push\//, ''))
    },
    messagesFor: (endpoint) => messages.filter((m) => m.endpoint === endpoint),
    waitForMessages: (n, timeoutMs = 10_000) => waitFor('push messages', messages, n, timeoutMs),
    waitForAttempts: (n, timeoutMs = 10_000) => waitFor('push requests', attempts, n, timeoutMs),
    failNext(n, response) {
      for (let i = 0; i < n; i++) faults.push(response)
    },
    setDelay(ms) {
      delayMs = ms
    },
    inFlight: () => inFlight,
    maxInFlight: () => maxInFlight,
    resetMaxInFlight() {
      maxInFlight = inFlight
    },
    async close() {
      for (const timer of timers) clearTimeout(timer)
      agent.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(dir, { recursive: true, force: true })
    },
  }
}
