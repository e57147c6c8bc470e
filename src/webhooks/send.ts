import http from 'node:http'
import https from 'node:https'
import type { LookupFunction } from 'node:net'
import { Webhook } from 'standardwebhooks'
import { parseRetryAfter } from './backoff.ts'
import { checkDestination, type Resolve, systemResolve, UrlRefused } from './urls.ts'

// One webhook request: signed per Standard Webhooks, to an address checked just before, with a deadline, never
// following a redirect; and what its answer means.

/** What one attempt came to: delivered (2xx), or not, with why and the endpoint's Retry-After if it gave one. */
export type SendOutcome =
  | { ok: true; status: number }
  | { ok: false; status: number | null; error: string; retryAfterMs?: number }

/** One message to one endpoint, as the outbox row and its endpoint have it. */
export interface Message {
  url: string
  /** `whsec_` and the base64 key. */
  secret: string
  /** The `webhook-id`. */
  msgId: string
  /** The body, exactly as signed and sent. */
  payload: string
}

export interface SenderOptions {
  /** An attempt (DNS, connecting, the answer's status) gets this long (WEBHOOK_TIMEOUT_MS). */
  timeoutMs: number
  /** Host patterns that may be http or private (WEBHOOK_URL_ALLOWLIST). */
  allowlist: readonly string[]
  /** CA certificates to trust instead of the system's (tests pass their own). */
  ca?: string | Buffer | Array<string | Buffer>
  /** Sockets kept per endpoint host (WEBHOOK_CONCURRENCY). */
  maxSockets: number
  /** DNS; tests give their own. */
  resolve?: Resolve
}

/** Bytes of a refusal's body kept for `lastError`. */
const ERROR_BODY_BYTES = 200
const USER_AGENT = 'herald-webhooks'

/** Text from an endpoint as it may be stored and shown: printable, on one line, short. */
const printable = (text: string, max: number) =>
  text
    .replace(/[\p{Cc}\p{Cs}]+/gu, ' ')
    .trim()
    .slice(0, max)

/** Sends webhook requests over keep-alive agents of its own (one per scheme). */
export class WebhookSender {
  private readonly httpsAgent: https.Agent
  private readonly httpAgent: http.Agent
  private readonly resolve: Resolve

  constructor(private readonly options: SenderOptions) {
    const common = { keepAlive: true, maxSockets: options.maxSockets, maxFreeSockets: 4, scheduling: 'lifo' as const }
    this.httpsAgent = new https.Agent({ ...common, ...(options.ca ? { ca: options.ca } : {}) })
    this.httpAgent = new http.Agent(common)
    this.resolve = options.resolve ?? systemResolve
  }

  /** One attempt: never throws; the outcome says what happened. */
  async send(message: Message): Promise<SendOutcome> {
    const deadline = AbortSignal.timeout(this.options.timeoutMs)
    try {
      return await this.attempt(message, deadline)
    } catch (err) {
      if (err instanceof UrlRefused) return { ok: false, status: null, error: `refused: the URL ${err.message}` }
      if (deadline.aborted) return { ok: false, status: null, error: `no answer within ${this.options.timeoutMs} ms` }
      const e = err as { code?: string; message?: string }
      return { ok: false, status: null, error: printable(`network: ${e.code ?? e.message ?? String(err)}`, 300) }
    }
  }

  private async attempt(message: Message, deadline: AbortSignal): Promise<SendOutcome> {
    const url = new URL(message.url)
    // The host is resolved and its addresses checked now, and the connection goes to the address checked.
    const destination = await raceAbort(checkDestination(url, this.options.allowlist, this.resolve), deadline)
    const { address, family } = destination
    const lookup: LookupFunction | undefined =
      address === undefined
        ? undefined
        : (_host, options, callback) => {
            if (options.all) callback(null, [{ address, family: family ?? 4 }])
            else callback(null, address, family ?? 4)
          }
    const timestamp = new Date()
    const signature = new Webhook(message.secret).sign(message.msgId, timestamp, message.payload)
    const body = Buffer.from(message.payload)
    const secure = url.protocol === 'https:'
    const request = (secure ? https : http).request(url, {
      method: 'POST',
      agent: secure ? this.httpsAgent : this.httpAgent,
      lookup,
      signal: deadline,
      headers: {
        'content-type': 'application/json',
        'content-length': body.length,
        'user-agent': USER_AGENT,
        'webhook-id': message.msgId,
        'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
        'webhook-signature': signature,
      },
    })
    return new Promise<SendOutcome>((resolve, reject) => {
      // Every error, also one after the answer (the deadline cutting a body being drained), ends up here.
      request.on('error', reject)
      request.once('response', (response) => {
        const status = response.statusCode ?? 0
        if (status >= 200 && status <= 299) {
          response.resume() // the body is not needed; read to its end, the socket goes back to the pool
          response.on('error', () => {})
          return resolve({ ok: true, status })
        }
        const retryAfterMs =
          status === 429 || status === 503 ? parseRetryAfter(header(response.headers['retry-after'])) : undefined
        if (status >= 300 && status <= 399) {
          response.destroy()
          const location = printable(header(response.headers.location) ?? 'nowhere', 200)
          return resolve({
            ok: false,
            status,
            error: `redirected (${status} to ${location}); redirects are not followed`,
          })
        }
        // A refusal: its first bytes say why, for the deliveries listing.
        const chunks: Buffer[] = []
        let size = 0
        const done = () => {
          const text = printable(Buffer.concat(chunks).toString('utf8'), ERROR_BODY_BYTES)
          resolve({ ok: false, status, error: `endpoint answered ${status}${text ? `: ${text}` : ''}`, retryAfterMs })
        }
        response.on('data', (chunk: Buffer) => {
          chunks.push(chunk)
          size += chunk.length
          if (size >= ERROR_BODY_BYTES) {
            response.destroy()
            done()
          }
        })
        response.once('end', done)
        response.once('close', done)
        response.on('error', done)
      })
      request.end(body)
    })
  }

  close() {
    this.httpsAgent.destroy()
    this.httpAgent.destroy()
  }
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/** The promise, or a rejection as soon as `signal` aborts (a DNS lookup cannot be cancelled, only left). */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const abort = () => reject(signal.reason)
    signal.addEventListener('abort', abort, { once: true })
    promise.then(
      (value) => {
        signal.removeEventListener('abort', abort)
        resolve(value)
      },
      (err) => {
        signal.removeEventListener('abort', abort)
        reject(err)
      },
    )
  })
}
