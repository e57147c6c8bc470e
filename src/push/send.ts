import webpush from 'web-push'
import type { VapidKeys } from './keys.ts'
import type { PushAnswer, PushRequest } from './push-worker.ts'

// One Web Push request to a push service: VAPID, the request itself (made on a push thread: push-worker.ts),
// and what its answer means.

export type Outcome =
  | { state: 'sent'; status: number }
  | { state: 'retry'; status?: number; error: string; retryAfterMs?: number }
  | { state: 'failed'; status?: number; error: string; gone?: boolean }

/** The Web Push headers of one push. */
export interface PushHeaders {
  TTL: number
  urgency: 'very-low' | 'low' | 'normal' | 'high'
  topic?: string
}

/** Makes a push request off the main thread (a PushPool). */
export interface PushSender {
  send(request: PushRequest): Promise<PushAnswer>
}

/** One Web Push request, classified: sent, retry later (429, 5xx, network), or failed for good. */
export async function sendPush(
  sub: { endpoint: string; p256dh: string; auth: string },
  payload: string,
  headers: PushHeaders,
  vapid: VapidKeys,
  sender: PushSender,
): Promise<Outcome> {
  try {
    const { status, retryAfter } = await sender.send({
      endpoint: sub.endpoint,
      p256dh: sub.p256dh,
      auth: sub.auth,
      payload,
      authorization: vapidAuthorization(vapid, new URL(sub.endpoint).origin),
      TTL: headers.TTL,
      urgency: headers.urgency,
      ...(headers.topic ? { topic: headers.topic } : {}),
    })
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

/** A VAPID token may be valid for up to 24 h: one per push service is signed for 12 h and renewed 1 h before. */
const VAPID_TOKEN_S = 12 * 3600
const VAPID_RENEW_BEFORE_S = 3600
const vapidTokens = new Map<string, { authorization: string; expiresAt: number }>()

/**
 * The `Authorization: vapid t=…, k=…` header for a push service. web-push signs a new ES256 token (and
 * converts the key to PEM) for every message: most of a push's CPU. The token names only the push service's
 * origin, so one serves every message to it until it nears its expiry. Signed here, on the main thread: one
 * signature per push service in 11 h costs nothing, and one cache serves every push thread.
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
