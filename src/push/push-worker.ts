import https from 'node:https'
import { workerData } from 'node:worker_threads'
import webpush from 'web-push'

// Runs in the push pool's worker threads (see push-pool.ts), never on the main thread: a push's encryption
// and its HTTPS request (TLS handshakes and records) are most of its CPU.

/** A push service that has not answered by then counts as a network error (retried). */
const SEND_TIMEOUT_MS = 10_000
/** Idle connections are closed after this, as Node's global agent does: just under common keep-alive timeouts. */
const IDLE_SOCKET_MS = 5_000

/** What the pool gives each thread (piscina's `workerData`). */
export interface PushWorkerData {
  /** CA certificates to trust instead of the system's (tests' own push services); unset: the system's. */
  ca?: string | Buffer | Array<string | Buffer>
}

/** One push to make: plain data only, so it crosses to a worker thread as a structured clone. */
export interface PushRequest {
  endpoint: string
  p256dh: string
  auth: string
  payload: string
  /** `vapid t=…, k=…`, signed (and cached) on the main thread: see send.ts. */
  authorization: string
  TTL: number
  urgency: 'very-low' | 'low' | 'normal' | 'high'
  topic?: string
}

/** The push service's answer, whatever its status; a network error or timeout rejects instead. */
export interface PushAnswer {
  status: number
  retryAfter: string | undefined
}

const { ca } = (workerData ?? {}) as PushWorkerData
/** One agent per thread: connections to a push service stay open between its pushes. */
const agent = new https.Agent({ keepAlive: true, scheduling: 'lifo', timeout: IDLE_SOCKET_MS, ...(ca ? { ca } : {}) })

/** Encrypts one push (RFC 8291: ECDH, HKDF, AES-128-GCM), sends it, and resolves with the answer. */
export function sendPushRequest(request: PushRequest): Promise<PushAnswer> {
  const details = webpush.generateRequestDetails(
    { endpoint: request.endpoint, keys: { p256dh: request.p256dh, auth: request.auth } },
    request.payload,
    {
      // No vapidDetails: web-push would sign a token of its own (webpush.setVapidDetails is never called).
      headers: { Authorization: request.authorization },
      TTL: request.TTL,
      urgency: request.urgency,
      ...(request.topic ? { topic: request.topic } : {}),
    },
  )
  return post(new URL(request.endpoint), details)
}

/**
 * Sends a request web-push prepared (encrypted body, VAPID and Web Push headers) and resolves with the answer,
 * whatever its status; rejects on a network error, or after SEND_TIMEOUT_MS without progress. web-push's own
 * sendNotification writes the headers and the body separately: two TLS records per push where one will do
 * (`end(body)` sends them together).
 */
function post(url: URL, request: webpush.RequestDetails): Promise<PushAnswer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        method: request.method,
        hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'), // an IPv6 literal without its brackets
        port: url.port,
        path: url.pathname + url.search,
        headers: request.headers,
        timeout: SEND_TIMEOUT_MS,
        agent,
      },
      (res) => {
        res.resume() // push services answer with an empty or short body that nothing here reads
        res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] }))
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error('Socket timeout')))
    req.on('error', reject)
    req.end(request.body ?? undefined)
  })
}
