// The bench's push service (scenario 6), in a process of its own so that its CPU is not the service's or the
// bench's: HTTPS on 127.0.0.1 with a throwaway CA (the service trusts it through NODE_EXTRA_CA_CERTS), one
// push resource per subscription, 201 at once. Every accepted push is decrypted (RFC 8291 aes128gcm) to read
// the bench data in the event it carries, so each push is counted once per (device, event) and timed from its
// publish; the VAPID signature (RFC 8292) is checked on every 10th. Its certificates and decryption are those of
// test/helpers/push-service.ts; it is lighter (no fault injection, no per-message checks beyond those).
import crypto from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decryptAes128gcm, makeCertificates } from '../test/helpers/push-service.ts'
import { nowMs, Samples } from './stats.ts'

export interface ReceiverStart {
  subscriptions: number
  /** The service's VAPID public key: pushes signed with another get counted as `vapidFailed`. */
  vapidPublicKey: string
}

export interface ReceiverStarted {
  origin: string
  caFile: string
  /** What a browser's PushSubscription.toJSON() gives, one per device. */
  subscriptions: Array<{ endpoint: string; expirationTime: null; keys: { p256dh: string; auth: string } }>
}

export interface ReceiverProgress {
  requests: number
  unique: number
  lastReceiveMs: number
}

export interface ReceiverReport extends ReceiverProgress {
  /** Requests by the status answered. */
  statuses: Record<string, number>
  duplicated: number
  /** Pushes whose body did not decrypt, or whose payload was not bench data. */
  undecryptable: number
  vapidChecked: number
  vapidFailed: number
  firstReceiveMs: number
  /** Publish (the `t` in the event's data) to push received, ms, per counted push. */
  latencies: Float64Array
  /** Largest encrypted body seen, bytes. */
  maxBodyBytes: number
  /** TLS connections the service opened (a keep-alive sender opens few). */
  connections: number
}

type Request =
  | { seq: number; cmd: 'start'; options: ReceiverStart }
  | { seq: number; cmd: 'report' | 'progress' | 'close' }

interface Device {
  ecdh: crypto.ECDH
  authSecret: Buffer
}

const VAPID_CHECK_EVERY = 10

const devices = new Map<string, Device>()
let server: https.Server | undefined
let dir: string | undefined
let origin = ''
let vapidKey = ''
let counts = freshCounts()

function freshCounts() {
  return {
    requests: 0,
    unique: 0,
    duplicated: 0,
    undecryptable: 0,
    vapidChecked: 0,
    vapidFailed: 0,
    firstReceiveMs: 0,
    lastReceiveMs: 0,
    maxBodyBytes: 0,
    connections: 0,
    statuses: {} as Record<string, number>,
    seen: new Set<string>(),
    latencies: new Samples(),
  }
}

/** `vapid t=<jwt>, k=<key>`: signed ES256 by k, k is the service's key, aud is this origin, exp in the future. */
function vapidValid(authorization: string | undefined): boolean {
  const m = /^vapid\s+(.+)$/i.exec(authorization ?? '')
  if (!m) return false
  const params = new Map(
    m[1].split(',').map((p) => {
      const eq = p.indexOf('=')
      return [p.slice(0, eq).trim(), p.slice(eq + 1).trim()] as const
    }),
  )
  const [token, k] = [params.get('t'), params.get('k')]
  if (!token || k !== vapidKey) return false
  const [header, claims, signature] = token.split('.')
  const raw = Buffer.from(k, 'base64url')
  const key = crypto.createPublicKey({
    key: {
      kty: 'EC',
      crv: 'P-256',
      x: raw.subarray(1, 33).toString('base64url'),
      y: raw.subarray(33).toString('base64url'),
    },
    format: 'jwk',
  })
  const signed = crypto.verify(
    'sha256',
    Buffer.from(`${header}.${claims}`),
    { key, dsaEncoding: 'ieee-p1363' },
    Buffer.from(signature ?? '', 'base64url'),
  )
  const c = JSON.parse(Buffer.from(claims, 'base64url').toString('utf8')) as { aud?: string; exp?: number }
  return signed && c.aud === origin && typeof c.exp === 'number' && c.exp > Date.now() / 1000
}

function onPush(path: string, headers: Record<string, string | string[] | undefined>, body: Buffer, at: number) {
  const c = counts
  const id = /^\/push\/([\w-]+)$/.exec(path)?.[1]
  const device = id === undefined ? undefined : devices.get(id)
  if (!device) return 404
  if (c.requests % VAPID_CHECK_EVERY === 0) {
    c.vapidChecked++
    try {
      if (!vapidValid(headers.authorization as string | undefined)) c.vapidFailed++
    } catch {
      c.vapidFailed++
    }
  }
  c.maxBodyBytes = Math.max(c.maxBodyBytes, body.length)
  let data: { t?: unknown; n?: unknown } | undefined
  try {
    data = (
      JSON.parse(decryptAes128gcm(body, device.ecdh.getPrivateKey(), device.authSecret).toString('utf8')) as {
        data?: { t?: unknown; n?: unknown }
      }
    ).data
  } catch {
    // Counted below.
  }
  if (typeof data?.t !== 'number' || typeof data.n !== 'number') {
    c.undecryptable++
    return 201
  }
  const key = `${id}:${data.n}`
  if (c.seen.has(key)) {
    c.duplicated++
    return 201
  }
  c.seen.add(key)
  c.unique++
  c.latencies.push(at - data.t)
  if (c.firstReceiveMs === 0) c.firstReceiveMs = at
  c.lastReceiveMs = at
  return 201
}

async function start(o: ReceiverStart): Promise<ReceiverStarted> {
  vapidKey = o.vapidPublicKey
  dir = mkdtempSync(join(tmpdir(), 'herald-bench-push-'))
  const { key, cert, caFile } = await makeCertificates(dir)
  server = https.createServer({ key, cert, keepAliveTimeout: 120_000 }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const at = nowMs()
      counts.requests++
      const status = req.method === 'POST' ? onPush(req.url ?? '', req.headers, Buffer.concat(chunks), at) : 405
      counts.statuses[status] = (counts.statuses[status] ?? 0) + 1
      res.writeHead(status, status === 201 ? { location: `${origin}/m/${counts.requests}` } : {}).end()
    })
  })
  server.on('secureConnection', () => counts.connections++)
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve))
  origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
  const subscriptions = Array.from({ length: o.subscriptions }, () => {
    const id = crypto.randomBytes(12).toString('base64url')
    const ecdh = crypto.createECDH('prime256v1')
    const p256dh = ecdh.generateKeys()
    const authSecret = crypto.randomBytes(16)
    devices.set(id, { ecdh, authSecret })
    return {
      endpoint: `${origin}/push/${id}`,
      expirationTime: null,
      keys: { p256dh: p256dh.toString('base64url'), auth: authSecret.toString('base64url') },
    }
  })
  return { origin, caFile, subscriptions }
}

process.on('message', async (m: Request) => {
  const reply = (value: unknown) => process.send?.({ seq: m.seq, value })
  switch (m.cmd) {
    case 'start':
      reply(await start(m.options))
      break
    case 'progress':
      reply({ requests: counts.requests, unique: counts.unique, lastReceiveMs: counts.lastReceiveMs })
      break
    case 'report': {
      // The counts start again from zero: the next phase is counted apart.
      const { seen: _, latencies, ...rest } = counts
      counts = freshCounts()
      reply({ ...rest, latencies: latencies.values() } satisfies ReceiverReport)
      break
    }
    case 'close':
      server?.closeAllConnections()
      server?.close()
      if (dir) rmSync(dir, { recursive: true, force: true })
      reply(true)
      setImmediate(() => process.exit(0))
      break
  }
})

process.on('disconnect', () => {
  if (dir) rmSync(dir, { recursive: true, force: true })
  process.exit(0)
})
