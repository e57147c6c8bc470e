import { type SQLWrapper, sql } from 'drizzle-orm'
import { type EventRow, events } from './db/schema.ts'

/**
 * Every byte the service writes to clients about events: the event's JSON (REST, streams, push payloads) and
 * every Server-Sent Events frame. Where the database builds the same text for replays, the SQL builder sits
 * next to the JavaScript one, and test/wire-format.test.ts holds the two to the same bytes.
 */

const jsonString = JSON.stringify

/** The columns of an event that its JSON shows. */
export type EventJsonColumns = Pick<
  EventRow,
  | 'id'
  | 'type'
  | 'title'
  | 'body'
  | 'dataJson'
  | 'priority'
  | 'url'
  | 'collapseKey'
  | 'actionsJson'
  | 'icon'
  | 'image'
  | 'badge'
  | 'actor'
  | 'createdAt'
  | 'expiresAt'
  | 'refId'
  | 'revision'
>

/** A nullable text as a JSON string or null. */
const stringOrNull = (text: string | null) => (text === null ? 'null' : jsonString(text))

/**
 * The event as every client sees it, as JSON text. Built by concatenation so `data` goes out exactly as
 * it was stored and the live path serializes each event once, whatever the number of recipients. `actions`
 * is stored as the JSON text it is sent as (events/publish.ts), like `data`. `revision` counts the event's edits
 * (0: as published). Of an `update` row of the log (events/changes.ts), it is the edited event as that edit left
 * it: its `id` is the event's (`refId`), not the row's.
 */
export function eventJson(row: EventJsonColumns, receipt?: { readAt: Date | null; ackedAt: Date | null }): string {
  let json = `{"id":"${row.refId ?? row.id}","type":${jsonString(row.type)},"title":${jsonString(row.title)},"body":${stringOrNull(row.body)},"data":${row.dataJson ?? 'null'},"priority":"${row.priority}","url":${stringOrNull(row.url)},"collapseKey":${stringOrNull(row.collapseKey)},"actions":${row.actionsJson ?? 'null'},"icon":${stringOrNull(row.icon)},"image":${stringOrNull(row.image)},"badge":${stringOrNull(row.badge)},"actor":${jsonString(row.actor)},"createdAt":"${row.createdAt.toISOString()}","expiresAt":"${row.expiresAt.toISOString()}","revision":${row.revision}`
  if (receipt) {
    json += `,"readAt":${receipt.readAt ? `"${receipt.readAt.toISOString()}"` : 'null'},"ackedAt":${receipt.ackedAt ? `"${receipt.ackedAt.toISOString()}"` : 'null'}`
  }
  return `${json}}`
}

/**
 * A timestamp as `toISOString` formats it (milliseconds, truncated, UTC), formatted by the database: every time the
 * service writes from SQL (event JSON, webhook payloads) is in this one form.
 */
export const isoText = (column: SQLWrapper) =>
  sql`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`
/** A nullable text column as a JSON string or null. PostgreSQL's to_json escapes exactly as JSON.stringify does. */
const jsonOrNull = (column: SQLWrapper) => sql`coalesce(to_json(${column})::text, 'null')`

/**
 * eventJson of an `events` row, built by the database: the same text, byte for byte. A long replay reads
 * this instead of the columns: building it in JavaScript was most of the service's CPU per replayed event.
 */
export const eventJsonSql = sql`'{"id":"' || coalesce(${events.refId}, ${events.id}) || '","type":' || to_json(${events.type})::text
  || ',"title":' || to_json(${events.title})::text || ',"body":' || ${jsonOrNull(events.body)}
  || ',"data":' || coalesce(${events.dataJson}, 'null') || ',"priority":"' || ${events.priority}
  || '","url":' || ${jsonOrNull(events.url)} || ',"collapseKey":' || ${jsonOrNull(events.collapseKey)}
  || ',"actions":' || coalesce(${events.actionsJson}, 'null') || ',"icon":' || ${jsonOrNull(events.icon)}
  || ',"image":' || ${jsonOrNull(events.image)} || ',"badge":' || ${jsonOrNull(events.badge)}
  || ',"actor":' || to_json(${events.actor})::text || ',"createdAt":"' || ${isoText(events.createdAt)}
  || '","expiresAt":"' || ${isoText(events.expiresAt)} || '","revision":' || ${events.revision} || '}'`

/** An event's SSE frame: its id (what EventSource resumes from) and its JSON. */
export const notificationFrame = (id: number, json: string) => `id: ${id}\nevent: notification\ndata: ${json}\n\n`

/** notificationFrame of an `events` row, built by the database for replays: the same text, byte for byte. */
export const notificationFrameSql = sql`'id: ' || ${events.id} || E'\\nevent: notification\\ndata: ' || ${eventJsonSql} || E'\\n\\n'`

/**
 * An edit of an event, as a row of the log: its id is the row's (what EventSource resumes from), its data the
 * event's JSON as the edit left it (its own id, and its `revision`).
 */
export const updateFrame = (id: number, json: string) => `id: ${id}\nevent: update\ndata: ${json}\n\n`

/** A recall of event `eventId`, as a row of the log: its id is the row's, its data names the event only. */
export const deleteFrame = (id: number, eventId: number) => `id: ${id}\nevent: delete\ndata: {"id":"${eventId}"}\n\n`

/** The frame of any row of the log (`kind` says which): an event, an edit of one, or a recall. */
export function logFrame(row: EventJsonColumns & Pick<EventRow, 'kind'>): string {
  if (row.kind === 'delete') return deleteFrame(row.id, row.refId ?? row.id)
  if (row.kind === 'update') return updateFrame(row.id, eventJson(row))
  return notificationFrame(row.id, eventJson(row))
}

/** logFrame of an `events` row, built by the database for replays: the same text, byte for byte. */
export const logFrameSql = sql`case ${events.kind}
  when 'event' then ${notificationFrameSql}
  when 'update' then 'id: ' || ${events.id} || E'\\nevent: update\\ndata: ' || ${eventJsonSql} || E'\\n\\n'
  else 'id: ' || ${events.id} || E'\\nevent: delete\\ndata: {"id":"' || ${events.refId} || E'"}\\n\\n' end`

/** An ack or read of the user's, from any of their devices: no id (it is not an event to resume from). */
export const receiptFrame = (notice: object) => `event: receipt\ndata: ${JSON.stringify(notice)}\n\n`

/**
 * A publisher nudged the reader about an event they have not read: the event's JSON, without an `id:` line (a
 * nudge is no new event and does not move Last-Event-ID; one missed while away is not replayed).
 */
export const nudgeFrame = (json: string) => `event: nudge\ndata: ${json}\n\n`

/** To a publisher's streams: a recipient acked or read some of their events (RollCallNotice). */
export const rollCallFrame = (notice: object) => `event: roll-call\ndata: ${JSON.stringify(notice)}\n\n`

/** Sent before a replay that cannot be whole: the client's last event expired or was pruned. */
export const RESET_FRAME = 'event: reset\ndata: {"reason":"expired"}\n\n'

/** The first line of every stream: how long EventSource waits before it reconnects. */
export const retryFrame = (ms: number) => `retry: ${ms}\n\n`

/** A comment line that keeps proxies from closing an idle stream. */
export const HEARTBEAT_TEXT = ': ping\n\n'

/**
 * The `id:` of the frame that tells a client its stream was closed for being over MAX_CONNECTIONS_PER_USER.
 * EventSource then reconnects with `Last-Event-ID: evicted`, which is answered 204 (routes/stream.ts): per the
 * HTML standard a 204 stops its reconnecting, so an evicted stream does not come back to evict another.
 */
export const EVICTED_EVENT_ID = 'evicted'

/** The last frame of an evicted stream: why, and the limit it went over. */
export const evictedFrame = (max: number) =>
  `id: ${EVICTED_EVENT_ID}\nevent: evicted\ndata: {"reason":"too-many-streams","max":${max}}\n\n`

/** `text` as one HTTP/1.1 chunk. */
export const chunkOf = (text: string) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`

/**
 * A frame, and the same frame as one HTTP/1.1 chunk, built once and shared by every stream it goes to.
 * Node's `res.write` sends a chunk as four pieces (size, CRLF, text, CRLF) and encodes the text again for
 * each stream; at 10,000 streams per event that was a third of the fan-out's CPU.
 */
export class Frame {
  private chunk: Buffer | undefined
  constructor(readonly text: string) {}

  get asChunk(): Buffer {
    this.chunk ??= Buffer.from(chunkOf(this.text))
    return this.chunk
  }
}

export const HEARTBEAT_FRAME = new Frame(HEARTBEAT_TEXT)
