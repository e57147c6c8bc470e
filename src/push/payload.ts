import { createHash } from 'node:crypto'
import type { EventRow } from '../db/schema.ts'
import type { Priority } from '../events/model.ts'
import { eventJson } from '../wire-format.ts'

/**
 * Push services take at most 4,096 bytes of encrypted body; aes128gcm with web-push's minimal padding adds
 * 103 bytes (86 header, 16 tag, 1 delimiter), leaving 3,993 bytes of plaintext.
 */
export const MAX_PUSH_PLAINTEXT_BYTES = 3_993

/**
 * The push payload: the event as clients see it plus its ackToken, cut to fit. `data` goes first, then
 * `body` is shortened; `truncated: true` tells the service worker to fetch the full event by id if it cares.
 */
export function pushPayload(event: EventRow, ackToken: string): string {
  const json = eventJson(event)
  // The event's JSON object with one more member, spliced in: most events fit as they are.
  let text = `${json.slice(0, -1)},"ackToken":${JSON.stringify(ackToken)}}`
  if (Buffer.byteLength(text) <= MAX_PUSH_PLAINTEXT_BYTES) return text
  const full = JSON.parse(json) as Record<string, unknown>
  full.ackToken = ackToken
  full.data = null
  full.truncated = true
  text = JSON.stringify(full)
  const excess = Buffer.byteLength(text) - MAX_PUSH_PLAINTEXT_BYTES
  if (excess <= 0) return text
  const body = String(full.body ?? '')
  // Cut by code points, a few at a time, until it fits (JSON escaping makes byte counts non-linear).
  let chars = [...body]
  chars = chars.slice(0, Math.max(0, chars.length - Math.ceil(excess / 4)))
  for (;;) {
    full.body = chars.length < [...body].length ? `${chars.join('')}…` : chars.join('')
    text = JSON.stringify(full)
    if (Buffer.byteLength(text) <= MAX_PUSH_PLAINTEXT_BYTES || chars.length === 0) return text
    chars = chars.slice(
      0,
      Math.max(0, chars.length - Math.max(1, Math.ceil((Buffer.byteLength(text) - MAX_PUSH_PLAINTEXT_BYTES) / 4))),
    )
  }
}

/** Web Push `Urgency` from our priority. */
export const urgencyOf = (priority: Priority) =>
  (({ low: 'low', normal: 'normal', high: 'high', urgent: 'high' }) as const)[priority]

/**
 * Web Push `Topic` (replaces an undelivered push with the same topic) from `collapseKey`: at most 32
 * characters of the URL-safe base64 alphabet. Keys that do not fit as they are are hashed, so two
 * different keys do not collapse into one.
 */
export function pushTopicOf(collapseKey: string | null): string | undefined {
  if (!collapseKey) return undefined
  if (/^[A-Za-z0-9_-]{1,32}$/.test(collapseKey)) return collapseKey
  return createHash('sha256').update(collapseKey).digest('base64url').slice(0, 32)
}
