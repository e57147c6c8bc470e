import { type SQLWrapper, sql } from 'drizzle-orm'
import { z } from 'zod'
import { type EventRow, events } from '../db/schema.ts'

/** Seven days: long enough for a weekend away, short enough that stale news is not pushed. */
export const DEFAULT_EVENT_TTL_S = 7 * 24 * 3600
export const MIN_EVENT_TTL_S = 60
export const MAX_EVENT_TTL_S = 2_592_000
export const MAX_DATA_BYTES = 16 * 1024
export const MAX_BATCH_EVENTS = 1_000

/** Text that PostgreSQL can store as given: no NUL characters and no lone UTF-16 surrogates. */
const text = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => !s.includes('\u0000'), 'must not contain NUL characters')
    .refine((s) => s.isWellFormed(), 'must be valid Unicode (no lone surrogates)')

const name = text(200).min(1)
const topicName = text(200)
  .min(1)
  .regex(/^[^*\s,]+$/, 'must not contain "*", commas or spaces')

export const audienceSchema = z
  .strictObject({
    users: z.array(name).max(10_000).optional(),
    roles: z.array(name).max(100).optional(),
    topics: z.array(topicName).max(100).optional(),
    tenant: z.boolean().optional(),
  })
  .refine((to) => Boolean(to.users?.length || to.roles?.length || to.topics?.length || to.tenant), {
    message: 'name at least one audience: users, roles, topics or tenant: true',
  })

/** Longest URL a publisher may give: what every browser opens, with room for a long query. */
const MAX_URL_CHARS = 2048

/**
 * Control characters (C0, DEL, C1: Unicode's Cc) and backslashes. URL parsers drop tabs and newlines and
 * read "\\" as "/", so "/\t/evil.example" and "/\\evil.example" are "//evil.example": another host.
 */
const CONTROL_OR_BACKSLASH = /[\p{Cc}\\]/u

/** A path on whatever origin resolves it: "/" and then anything but a second "/" or "\\" (which start a host). */
const isOwnOriginPath = (u: string) => u.startsWith('/') && u[1] !== '/' && u[1] !== '\\'

/** An absolute https URL with a host and no credentials (a user:password@ prefix disguises the host). */
function isHttpsUrl(u: string): boolean {
  if (!/^https:\/\//i.test(u)) return false
  let url: URL
  try {
    url = new URL(u)
  } catch {
    return false
  }
  return url.protocol === 'https:' && url.hostname !== '' && url.username === '' && url.password === ''
}

/**
 * A URL a client may open: a path on the service's own origin ("/grades/42"), or an https URL. Every URL
 * field of the API uses this one rule, so none can resolve, in a browser or the service worker, to another
 * origin over plain http or to a scheme such as javascript:.
 */
export const safeUrlSchema = text(MAX_URL_CHARS)
  .refine((u) => !CONTROL_OR_BACKSLASH.test(u), 'must not contain control characters or backslashes')
  .refine((u) => isOwnOriginPath(u) || isHttpsUrl(u), 'must be a path on this service ("/grades/42") or an https URL')

export const prioritySchema = z.enum(['low', 'normal', 'high', 'urgent'])

export const newEventSchema = z.object({
  type: text(100).regex(
    /^[a-z0-9]+(?:[_-][a-z0-9]+)*(?:\.[a-z0-9]+(?:[_-][a-z0-9]+)*)*$/,
    'must be lower-case dotted words, like "grade.updated"',
  ),
  to: audienceSchema.describe('At least one of users, roles, topics, or tenant: true.'),
  title: text(200).min(1),
  body: text(2_000).nullish(),
  // Its size is checked by publish.ts on the text it stores, not here on the parsed value: a 900 KB number
  // parses to Infinity (JSON.stringify: "null"), and "\u0041" is 6 bytes sent for 1 byte parsed.
  data: z
    .unknown()
    .optional()
    .describe(
      `Any JSON, at most ${MAX_DATA_BYTES} bytes as sent (whitespace outside strings not counted); stored and sent back byte for byte.`,
    ),
  priority: prioritySchema.default('normal'),
  url: safeUrlSchema.nullish().describe('A path on this service ("/grades/42") or an https URL.'),
  collapseKey: text(64).min(1).nullish(),
  ttl: z
    .number()
    .int()
    .min(MIN_EVENT_TTL_S)
    .max(MAX_EVENT_TTL_S)
    .default(DEFAULT_EVENT_TTL_S)
    .describe('Seconds; an expired event is not replayed, listed or pushed.'),
})

export const batchSchema = z.object({
  events: z.array(newEventSchema).min(1).max(MAX_BATCH_EVENTS),
})

export type NewEvent = z.infer<typeof newEventSchema>
export type Priority = NewEvent['priority']

/** Decimal event id as it appears in URLs, Last-Event-ID and bodies. */
export const eventIdSchema = z.string().regex(/^(0|[1-9][0-9]{0,17})$/, 'must be a decimal event id')
export const parseEventId = (s: string) => Number(s)

const q = JSON.stringify

/**
 * The event as every client sees it, as JSON text. Built by concatenation so `data` goes out exactly as
 * it was stored and the live path serializes each event once, whatever the number of recipients.
 */
export function eventJson(
  row: Pick<
    EventRow,
    | 'id'
    | 'type'
    | 'title'
    | 'body'
    | 'dataJson'
    | 'priority'
    | 'url'
    | 'collapseKey'
    | 'actor'
    | 'createdAt'
    | 'expiresAt'
  >,
  receipt?: { readAt: Date | null; ackedAt: Date | null },
): string {
  let json = `{"id":"${row.id}","type":${q(row.type)},"title":${q(row.title)},"body":${row.body === null ? 'null' : q(row.body)},"data":${row.dataJson ?? 'null'},"priority":"${row.priority}","url":${row.url === null ? 'null' : q(row.url)},"collapseKey":${row.collapseKey === null ? 'null' : q(row.collapseKey)},"actor":${q(row.actor)},"createdAt":"${row.createdAt.toISOString()}","expiresAt":"${row.expiresAt.toISOString()}"`
  if (receipt) {
    json += `,"readAt":${receipt.readAt ? `"${receipt.readAt.toISOString()}"` : 'null'},"ackedAt":${receipt.ackedAt ? `"${receipt.ackedAt.toISOString()}"` : 'null'}`
  }
  return `${json}}`
}

/** A timestamp as `toISOString` formats it (milliseconds, truncated, UTC), formatted by the database. */
const isoText = (column: SQLWrapper) => sql`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`
/** A nullable text column as a JSON string or null. PostgreSQL's to_json escapes exactly as JSON.stringify does. */
const jsonOrNull = (column: SQLWrapper) => sql`coalesce(to_json(${column})::text, 'null')`

/**
 * eventJson of an `events` row, built by the database: the same text, byte for byte (a test holds them to
 * it). A long replay reads this instead of the columns: building it in JavaScript was most of the
 * service's CPU per replayed event.
 */
export const eventJsonSql = sql`'{"id":"' || ${events.id} || '","type":' || to_json(${events.type})::text
  || ',"title":' || to_json(${events.title})::text || ',"body":' || ${jsonOrNull(events.body)}
  || ',"data":' || coalesce(${events.dataJson}, 'null') || ',"priority":"' || ${events.priority}
  || '","url":' || ${jsonOrNull(events.url)} || ',"collapseKey":' || ${jsonOrNull(events.collapseKey)}
  || ',"actor":' || to_json(${events.actor})::text || ',"createdAt":"' || ${isoText(events.createdAt)}
  || '","expiresAt":"' || ${isoText(events.expiresAt)} || '"}'`
