import https, { type Agent } from 'node:https'
import webpush from 'web-push'
import type { VapidKeys } from './keys.ts'

// One Web Push request to a push service: VAPID, the request itself, and what its answer means.

/** A push service that has not answered by then counts as a network error (retried). */
const SEND_TIMEOUT_MS = 10_000

export type Outcome =
  | { state: 'sent'; status: number }
  | { state: 'retry'; status?: number; error: string; retryAfterMs?: number }
  | { state: 'failed'; status?: number; error: string; gone?: boolean }

/** One Web Push request, classified: sent, retry later (429, 5xx, network), or failed for good. */
export async function sendPush(
  sub: { endpoint: string; p256dh: string; auth: string },
  payload: string,
  headers: { TTL: number; urgency: 'very-low' | 'low' | 'normal' | 'high'; topic?: string },
  vapid: VapidKeys,
  agent?: Agent,
): Promise<Outcome> {
  try {
    const url = new URL(sub.endpoint)
    const request = webpush.generateRequestDetails(
      { endpoint: sub.endpoint, keys: { p256dh: sub.p256dh, auth: sub.auth } },
      payload,
      {
        // No vapidDetails: web-push would sign a token of its own (webpush.setVapidDetails is never called).
        headers: { Authorization: vapidAuthorization(vapid, url.origin) },
        TTL: headers.TTL,
        urgency: headers.urgency,
        ...(headers.topic ? { topic: headers.topic } : {}),
      },
    )
    const { status, retryAfter } = await post(url, request, agent)
    if (status >= 200 && status <= 299) return { state: 'sent', status }
    if (status === 404 || status === 410) return { state: 'failed', status, error: 'subscription gone', gone: true }
    if (status === 429 || status >= 500) {
      return {
        state: 'retry',
        status,
        error: `push service answered ${status}`,
        retryAfterMs: retryAfterMs(retryAfter),
      }
    }
    return { state: 'failed', status, error: `push service refused: ${status}` }
  } catch (err) {
    return { state: 'retry', error: `network: ${(err as Error).message ?? String(err)}` }
  }
}

/**
 * Sends a request web-push prepared (encrypted body, VAPID and Web Push headers) and resolves with the answer,
 * whatever its status; rejects on a network error, or after SEND_TIMEOUT_MS without progress. web-push's own
 * sendNotification writes the headers and the body separately: two TLS records per push where one will do
 * (`end(body)` sends them together).
 */
function post(
  url: URL,
  request: webpush.RequestDetails,
  agent: Agent | undefined,
): Promise<{ status: number; retryAfter: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        method: request.method,
        hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'), // an IPv6 literal without its brackets
        port: url.port,
        path: url.pathname + url.search,
        headers: request.headers,
        timeout: SEND_TIMEOUT_MS,
        ...(agent ? { agent } : {}),
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

/** A VAPID token may be valid for up to 24 h: one per push service is signed for 12 h and renewed 1 h before. */
const VAPID_TOKEN_S = 12 * 3600
const VAPID_RENEW_BEFORE_S = 3600
const vapidTokens = new Map<string, { authorization: string; expiresAt: number }>()

/**
 * The `Authorization: vapid t=…, k=…` header for a push service. web-push signs a new ES256 token (and
 * converts the key to PEM) for every message: most of a push's CPU. The token names only the push service's
 * origin, so one serves every message to it until it nears its expiry.
 */
function vapidAuthorization(vapid: VapidKeys, audience: string): string {
  const key = `${vapid.publicKey} ${vapid.subject} ${audience}`
  const now = Math.floor(Date.now() / 1000)
  const cached = vapidTokens.get(key)
  if (cached && cached.expiresAt - now > VAPID_RENEW_BEFORE_S) return cached.authorization
  const expiresAt = now + VAPID_TOKEN_S
  const { Authorization } = webpush.getVapidHeaders(
    audience,
    vapid.subject,
    vapid.publicKey,
    vapid.privateKey,
    'aes128gcm',
    expiresAt,
  )
  if (vapidTokens.size >= 1_000) vapidTokens.clear() // push services are few; this only bounds the map
  vapidTokens.set(key, { authorization: Authorization, expiresAt })
  return Authorization
}

/** `Retry-After` as seconds or an HTTP date, in ms from now. */
function retryAfterMs(value: string | undefined): number | undefined {
  if (!value) return undefined
  if (/^\d+$/.test(value.trim())) return Number(value) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}
