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
 * What goes when an event's JSON does not fit, in this order: `data` (the worker does not show it), then the
 * pictures, the least needed first (a large `image` that some browsers ignore anyway, the status-bar `badge`,
 * the `icon`). Then `body` is shortened, the message itself coming before its buttons; `actions` are dropped
 * only when the payload does not fit even with an empty body (then the body is cut from its whole text again).
 */
const DROPPED_FIRST = ['data', 'image', 'badge', 'icon'] as const

/**
 * The push payload: the event as clients see it plus its ackToken, cut to fit (see DROPPED_FIRST);
 * `truncated: true` tells the service worker that something was left out (the full event is in the inbox).
 * The title, url, ids and ackToken always stay. `replaces`: the push of an edit, replacing the notification an
 * earlier push showed (`"change":"update"`: the service worker shows it without alerting again). `nudge`: the
 * publisher's reminder of an event not read yet (`"nudge":true`: shown again, alerting even where it still shows).
 */
export function pushPayload(event: EventRow, ackToken: string, kind?: 'update' | 'nudge'): string {
  const json = eventJson(event)
  const replaces = kind === 'update'
  const change = replaces ? ',"change":"update"' : kind === 'nudge' ? ',"nudge":true' : ''
  // The event's JSON object with more members, spliced in: most events fit as they are.
  const text = `${json.slice(0, -1)},"ackToken":${JSON.stringify(ackToken)}${change}}`
  if (fits(text)) return text
  const full = JSON.parse(json) as Record<string, unknown>
  full.ackToken = ackToken
  if (replaces) full.change = 'update'
  if (kind === 'nudge') full.nudge = true
  full.truncated = true
  for (const field of DROPPED_FIRST) {
    full[field] = null
    if (fits(JSON.stringify(full))) return JSON.stringify(full)
  }
  const body = [...String(full.body ?? '')]
  const shortestBody = body.length ? '…' : full.body
  if (full.actions !== null && !fits(JSON.stringify({ ...full, body: shortestBody }))) full.actions = null
  return withBodyCut(full, body)
}

/**
 * The push of a recall: the event's id and its collapseKey (which makes the notification's tag), and
 * `"change":"delete"`, for the service worker to close the notification an earlier push showed.
 */
export const recallPayload = (event: Pick<EventRow, 'id' | 'collapseKey'>) =>
  `{"id":"${event.id}","collapseKey":${JSON.stringify(event.collapseKey)},"change":"delete"}`

const fits = (text: string) => Buffer.byteLength(text) <= MAX_PUSH_PLAINTEXT_BYTES

/** `full` with as much of `body` (code points) as fits, ending in "…" when cut; with none at all if nothing does. */
function withBodyCut(full: Record<string, unknown>, body: string[]): string {
  // Cut by code points, a few at a time, until it fits (JSON escaping makes byte counts non-linear).
  let chars = body
  let text = JSON.stringify(full)
  for (;;) {
    const excess = Buffer.byteLength(text) - MAX_PUSH_PLAINTEXT_BYTES
    if (excess <= 0 || chars.length === 0) return text
    chars = chars.slice(0, Math.max(0, chars.length - Math.max(1, Math.ceil(excess / 4))))
    full.body = chars.length < body.length ? `${chars.join('')}…` : chars.join('')
    text = JSON.stringify(full)
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
