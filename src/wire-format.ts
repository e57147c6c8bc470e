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
  | 'tenant'
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
 * is stored as the JSON text it is sent as (events/publish.ts), like `data`. `tenant` is the event's: one
 * stream carries the events of every tenant its token covers (a director of several schools). `revision` counts
 * the event's edits (0: as published). Of an `update` row of the log (events/changes.ts), it is the edited event
 * as that edit left it: its `id` is the event's (`refId`), not the row's.
 */
export function eventJson(row: EventJsonColumns, receipt?: { readAt: Date | null; ackedAt: Date | null }): string {
  let json = `{"id":"${row.refId ?? row.id}","tenant":${jsonString(row.tenant)},"type":${jsonString(row.type)},"title":${jsonString(row.title)},"body":${stringOrNull(row.body)},"data":${row.dataJson ?? 'null'},"priority":"${row.priority}","url":${stringOrNull(row.url)},"collapseKey":${stringOrNull(row.collapseKey)},"actions":${row.actionsJson ?? 'null'},"icon":${stringOrNull(row.icon)},"image":${stringOrNull(row.image)},"badge":${stringOrNull(row.badge)},"actor":${jsonString(row.actor)},"createdAt":"${row.createdAt.toISOString()}","expiresAt":"${row.expiresAt.toISOString()}","revision":${row.revision}`
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

/** The title and body an event's JSON shows, as SQL: the stored ones, or one locale's (localizedTextSql). */
export interface TextColumns {
  title: SQLWrapper
  body: SQLWrapper
}
const STORED_TEXT: TextColumns = { title: events.title, body: events.body }

/**
 * eventJson of an `events` row, built by the database: the same text, byte for byte. A long replay reads
 * this instead of the columns: building it in JavaScript was most of the service's CPU per replayed event.
 * `text`: the title and body to show (eventJson of localizedRow, for a locale).
 */
export const eventJsonSqlOf = (
  text: TextColumns = STORED_TEXT,
) => sql`'{"id":"' || coalesce(${events.refId}, ${events.id}) || '","tenant":' || to_json(${events.tenant})::text
  || ',"type":' || to_json(${events.type})::text
  || ',"title":' || to_json(${text.title})::text || ',"body":' || ${jsonOrNull(text.body)}
  || ',"data":' || coalesce(${events.dataJson}, 'null') || ',"priority":"' || ${events.priority}
  || '","url":' || ${jsonOrNull(events.url)} || ',"collapseKey":' || ${jsonOrNull(events.collapseKey)}
  || ',"actions":' || coalesce(${events.actionsJson}, 'null') || ',"icon":' || ${jsonOrNull(events.icon)}
  || ',"image":' || ${jsonOrNull(events.image)} || ',"badge":' || ${jsonOrNull(events.badge)}
  || ',"actor":' || to_json(${events.actor})::text || ',"createdAt":"' || ${isoText(events.createdAt)}
  || '","expiresAt":"' || ${isoText(events.expiresAt)} || '","revision":' || ${events.revision} || '}'`

export const eventJsonSql = eventJsonSqlOf()

/** An event's SSE frame: its id (what EventSource resumes from) and its JSON. */
export const notificationFrame = (id: number, json: string) => `id: ${id}\nevent: notification\ndata: ${json}\n\n`

/** notificationFrame of an `events` row, built by the database for replays: the same text, byte for byte. */
export const notificationFrameSqlOf = (text?: TextColumns) =>
  sql`'id: ' || ${events.id} || E'\\nevent: notification\\ndata: ' || ${eventJsonSqlOf(text)} || E'\\n\\n'`
export const notificationFrameSql = notificationFrameSqlOf()

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
export const logFrameSqlOf = (text?: TextColumns) => sql`case ${events.kind}
  when 'event' then ${notificationFrameSqlOf(text)}
  when 'update' then 'id: ' || ${events.id} || E'\\nevent: update\\ndata: ' || ${eventJsonSqlOf(text)} || E'\\n\\n'
  else 'id: ' || ${events.id} || E'\\nevent: delete\\ndata: {"id":"' || ${events.refId} || E'"}\\n\\n' end`
export const logFrameSql = logFrameSqlOf()

/** logFrameSql as a viewer in `locale` sees it (undefined: the stored text; the same SQL as logFrameSql). */
export const logFrameSqlFor = (locale: string | undefined) =>
  locale === undefined ? logFrameSql : logFrameSqlOf(localizedTextSql(locale))

/** One locale's title and body of an event whose type rendered them per locale (`localized_json`). */
export interface LocalizedText {
  title: string
  body: string | null
}

/** The language of a BCP 47 tag: `fr` of `fr-CH`. */
const languageOf = (locale: string) => locale.split('-')[0]

/**
 * The locale of `localized` that a reader in `locale` gets: the exact tag, else its language (`fr-CH` gets `fr`);
 * undefined: the fallback (the event's `title` and `body`). Tags are as Intl writes them on both sides.
 */
export function localeKeyOf(localized: Readonly<Record<string, LocalizedText>>, locale: string | undefined) {
  if (locale === undefined) return undefined
  if (Object.hasOwn(localized, locale)) return locale
  const language = languageOf(locale)
  return Object.hasOwn(localized, language) ? language : undefined
}

/**
 * A log row's frames, `make` of each frame's text: one for every reader, or, for an event whose type rendered its
 * text per locale, one per locale asked for; each built once, when first asked for. Live dispatch and replays
 * from memory share a row's frames through this.
 */
export class RowFrames<F> {
  private fallback: F | undefined
  private localized: Record<string, LocalizedText> | undefined
  private byLocale: Map<string, F> | undefined

  constructor(
    readonly row: EventRow,
    private readonly make: (text: string) => F,
  ) {}

  of(locale: string | undefined): F {
    const row = this.row
    if (row.localizedJson !== null && locale !== undefined) {
      this.localized ??= JSON.parse(row.localizedJson) as Record<string, LocalizedText>
      const key = localeKeyOf(this.localized, locale)
      if (key !== undefined) {
        this.byLocale ??= new Map()
        let frame = this.byLocale.get(key)
        if (frame === undefined)
          this.byLocale.set(key, (frame = this.make(logFrame({ ...row, ...this.localized[key] }))))
        return frame
      }
    }
    this.fallback ??= this.make(logFrame(row))
    return this.fallback
  }
}

/** The row as a reader in `locale` sees it: its title and body in that locale when its type rendered them. */
export function localizedRow<T extends Pick<EventRow, 'title' | 'body' | 'localizedJson'>>(
  row: T,
  locale: string | undefined,
): T {
  if (row.localizedJson === null || locale === undefined) return row
  const localized = JSON.parse(row.localizedJson) as Record<string, LocalizedText>
  const key = localeKeyOf(localized, locale)
  return key === undefined ? row : { ...row, title: localized[key].title, body: localized[key].body }
}

/** localizedRow's title and body, as SQL over the `events` row (the same choice, for replays). */
export function localizedTextSql(locale: string): TextColumns {
  const localized = sql`${events.localizedJson}::jsonb`
  const entry = sql`coalesce(${localized} -> ${locale}::text, ${localized} -> ${languageOf(locale)}::text)`
  return {
    title: sql`coalesce(${entry} ->> 'title', ${events.title})`,
    body: sql`case when ${entry} is null then ${events.body} else ${entry} ->> 'body' end`,
  }
}

/** An ack or read of the user's, from any of their devices: no id (it is not an event to resume from). */
export const receiptFrame = (notice: object) => `event: receipt\ndata: ${JSON.stringify(notice)}\n\n`

/**
 * A publisher nudged the reader about an event they have not read: the event's JSON, without an `id:` line (a
 * nudge is no new event and does not move Last-Event-ID; one missed while away is not replayed).
 */
export const nudgeFrame = (json: string) => `event: nudge\ndata: ${json}\n\n`

/** What a live-only event (`store: false`) shows: an event's fields but its id, receipts and expiry, and its tenant. */
export interface LiveJsonFields {
  tenant: string
  type: string
  title: string
  body: string | null
  /** `data` as the publisher sent it (stored events' rule), or null. */
  dataJson: string | null
  priority: string
  url: string | null
  collapseKey: string | null
  actionsJson: string | null
  icon: string | null
  image: string | null
  badge: string | null
  actor: string
  /** When it was published. */
  at: Date
}

/**
 * A live-only event as clients see it: eventJson's fields in its order, without `id` (it has none: nothing is
 * stored), `expiresAt` and `revision`, with `tenant`, and `at` for when it was sent. `data` spliced as stored.
 */
export function liveEventJson(e: LiveJsonFields): string {
  return `{"type":${jsonString(e.type)},"tenant":${jsonString(e.tenant)},"title":${jsonString(e.title)},"body":${stringOrNull(e.body)},"data":${e.dataJson ?? 'null'},"priority":"${e.priority}","url":${stringOrNull(e.url)},"collapseKey":${stringOrNull(e.collapseKey)},"actions":${e.actionsJson ?? 'null'},"icon":${stringOrNull(e.icon)},"image":${stringOrNull(e.image)},"badge":${stringOrNull(e.badge)},"actor":${jsonString(e.actor)},"at":"${e.at.toISOString()}"}`
}

/**
 * A live-only event (`store: false`): no `id:` line, so the client's Last-Event-ID does not move, and nothing
 * of it is replayed on resume (clients re-read their state after a reconnect).
 */
export const liveFrame = (json: string) => `event: live\ndata: ${json}\n\n`

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
