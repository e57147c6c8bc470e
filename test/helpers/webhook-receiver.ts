import { mkdtemp, rm } from 'node:fs/promises'
import type http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Webhook } from 'standardwebhooks'
import { makeCertificates } from './push-service.ts'

/**
 * A local HTTPS webhook receiver, as an integrator would write one: every request is verified with
 * `standardwebhooks`' own `Webhook.verify` against the secret of the endpoint (its path) it was registered for,
 * and recorded. A request that does not verify gets 401 and is recorded as rejected. It can be told to answer
 * otherwise (500, 503 with Retry-After, a redirect) or not at all (hang).
 *
 * Its certificate (from its own throwaway CA) names IP 127.0.0.1 and the host `hooks.test` (tests resolve that
 * name themselves).
 */

/** One delivery that verified. */
export interface ReceivedWebhook {
  path: string
  /** The `webhook-id` header. */
  id: string
  timestamp: string
  signature: string
  contentType: string | undefined
  /** The body, exactly as received. */
  body: string
  /** What Webhook.verify returned: the parsed body. */
  payload: { type: string; timestamp: string; data: Record<string, unknown> }
  /** Date.now() when it arrived. */
  at: number
}

/** Every request, verified or not, in arrival order, with what it was answered. */
export interface ReceiverAttempt {
  path: string
  id: string | undefined
  status: number | 'hang'
  at: number
  /** Why it was refused as not verifying. */
  rejected?: string
}

export type Answer =
  | { status: number; headers?: Record<string, string>; body?: string }
  /** Keep the request open without answering (until close()). */
  | 'hang'

export interface WebhookReceiver {
  /** https://127.0.0.1:<port> */
  origin: string
  port: number
  /** `127.0.0.1:<port>`, for WEBHOOK_URL_ALLOWLIST. */
  allowlistEntry: string
  /** The CA certificate (PEM) the receiver's certificate chains to. */
  ca: string
  /** Its path, for NODE_EXTRA_CA_CERTS of a child process. Deleted by close(). */
  caFile: string
  /** A URL on the receiver for a new endpoint (a fresh path each call unless given). */
  url(path?: string): string
  /** The secret deliveries to this URL (or path) are verified with: set it from the registration's answer. */
  expect(urlOrPath: string, secret: string): void
  received: ReceivedWebhook[]
  attempts: ReceiverAttempt[]
  receivedAt(urlOrPath: string): ReceivedWebhook[]
  attemptsAt(urlOrPath: string): ReceiverAttempt[]
  /** The next n requests to this URL (or path) get this answer, after being verified and recorded. */
  failNext(urlOrPath: string, n: number, answer: Answer): void
  /** Forgets the answers queued for this URL (or path). */
  heal(urlOrPath: string): void
  /** Waits until `check` holds (checked at each request), or fails after timeoutMs. */
  waitFor<T>(check: () => T | undefined | false, what: string, timeoutMs?: number): Promise<T>
  close(): Promise<void>
}

const one = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value)

export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'webhook-receiver-'))
  const { ca, key, cert, caFile } = await makeCertificates(dir, { caName: 'webhook-test-ca', dnsNames: ['hooks.test'] })
  const secrets = new Map<string, string>()
  const answers = new Map<string, Answer[]>()
  const received: ReceivedWebhook[] = []
  const attempts: ReceiverAttempt[] = []
  const waiters = new Set<() => void>()
  const hanging = new Set<http.ServerResponse>()
  let counter = 0
  let origin = ''
  const pathOf = (urlOrPath: string) => (urlOrPath.startsWith('/') ? urlOrPath : new URL(urlOrPath).pathname)
  const notify = () => {
    for (const wake of waiters) wake()
  }

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, body: string) => {
    const at = Date.now()
    const where = pathOf(req.url ?? '/')
    const id = one(req.headers['webhook-id'])
    const secret = secrets.get(where)
    const refuse = (why: string) => {
      attempts.push({ path: where, id, status: 401, at, rejected: why })
      res.writeHead(401, { 'content-type': 'text/plain' }).end(why)
      notify()
    }
    if (req.method !== 'POST') return refuse(`${req.method} is not POST`)
    if (!secret) return refuse(`no secret for ${where}`)
    let payload: ReceivedWebhook['payload']
    try {
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, one(v) ?? '']))
      payload = new Webhook(secret).verify(body, headers) as ReceivedWebhook['payload']
    } catch (err) {
      return refuse(`does not verify: ${(err as Error).message}`)
    }
    received.push({
      path: where,
      id: id as string,
      timestamp: one(req.headers['webhook-timestamp']) as string,
      signature: one(req.headers['webhook-signature']) as string,
      contentType: one(req.headers['content-type']),
      body,
      payload,
      at,
    })
    const answer = answers.get(where)?.shift() ?? { status: 200 }
    if (answer === 'hang') {
      attempts.push({ path: where, id, status: 'hang', at })
      hanging.add(res)
      notify()
      return
    }
    attempts.push({ path: where, id, status: answer.status, at })
    res.writeHead(answer.status, { 'content-type': 'text/plain', ...answer.headers }).end(answer.body ?? 'ok')
    notify()
  }

  const server = https.createServer({ key, cert }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => handle(req, res, Buffer.concat(chunks).toString('utf8')))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const port = (server.address() as AddressInfo).port
  origin = `https://127.0.0.1:${port}`

  return {
    origin,
    port,
    allowlistEntry: `127.0.0.1:${port}`,
    ca,
    caFile,
    url: (p) => `${origin}${p ?? `/hooks/${++counter}`}`,
    expect: (urlOrPath, secret) => secrets.set(pathOf(urlOrPath), secret),
    received,
    attempts,
    receivedAt: (urlOrPath) => received.filter((r) => r.path === pathOf(urlOrPath)),
    attemptsAt: (urlOrPath) => attempts.filter((a) => a.path === pathOf(urlOrPath)),
    failNext(urlOrPath, n, answer) {
      const queue = answers.get(pathOf(urlOrPath)) ?? []
      for (let i = 0; i < n; i++) queue.push(answer)
      answers.set(pathOf(urlOrPath), queue)
    },
    heal: (urlOrPath) => answers.delete(pathOf(urlOrPath)),
    waitFor<T>(check: () => T | undefined | false, what: string, timeoutMs = 15_000): Promise<T> {
      return new Promise((resolve, reject) => {
        const test = () => {
          const value = check()
          if (value === undefined || value === false) return
          cleanup()
          resolve(value as T)
        }
        // Also polled: some conditions (the database's, the clock's) change without a request.
        const poll = setInterval(test, 50)
        const timer = setTimeout(() => {
          cleanup()
          const seen = attempts.map((a) => `  ${a.status} ${a.path} ${a.id ?? ''} ${a.rejected ?? ''}`).join('\n')
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; requests:\n${seen || '  none'}`))
        }, timeoutMs)
        const cleanup = () => {
          clearTimeout(timer)
          clearInterval(poll)
          waiters.delete(test)
        }
        waiters.add(test)
        test()
      })
    },
    async close() {
      for (const res of hanging) res.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(dir, { recursive: true, force: true })
    },
  }
}
