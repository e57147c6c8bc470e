import { z } from 'zod'
import { storableText } from '../db/storable-text.ts'

/** Seven days: long enough for a weekend away, short enough that stale news is not pushed. */
export const DEFAULT_EVENT_TTL_S = 7 * 24 * 3600
export const MIN_EVENT_TTL_S = 60
export const MAX_EVENT_TTL_S = 2_592_000
export const MAX_DATA_BYTES = 16 * 1024
export const MAX_BATCH_EVENTS = 1_000

/** A user id, role or tenant name as stored. */
export const nameSchema = storableText(200).min(1)
const name = nameSchema
/** A topic as events name it and users subscribe to it: no `*` (patterns are for claims), commas or spaces. */
export const topicNameSchema = storableText(200)
  .min(1)
  .regex(/^[^*\s,]+$/, 'must not contain "*", commas or spaces')

export const audienceSchema = z
  .strictObject({
    users: z.array(name).max(10_000).optional(),
    roles: z.array(name).max(100).optional(),
    topics: z.array(topicNameSchema).max(100).optional(),
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
export const safeUrlSchema = storableText(MAX_URL_CHARS)
  .refine((u) => !CONTROL_OR_BACKSLASH.test(u), 'must not contain control characters or backslashes')
  .refine((u) => isOwnOriginPath(u) || isHttpsUrl(u), 'must be a path on this service ("/grades/42") or an https URL')

export const prioritySchema = z.enum(['low', 'normal', 'high', 'urgent'])

/** Action buttons per event: what browsers show on a notification (Chrome, Edge and Firefox show at most 2). */
export const MAX_ACTIONS = 2
/** Longest action title: a button's label, which browsers cut short well before this. */
export const MAX_ACTION_TITLE_CHARS = 40

/**
 * What a button does, with the event's own ackToken in the service worker (or the user's JWT in a page):
 * `ack` acknowledges the event (POST .../ack) and `read` marks it read (POST .../read), neither opening a
 * window; `open` opens the action's `url`, else the event's `url`, and marks the event read, as a click on the
 * notification itself does.
 */
export const actionKindSchema = z.enum(['ack', 'read', 'open'])

export const eventActionSchema = z
  .strictObject({
    action: actionKindSchema,
    title: storableText(MAX_ACTION_TITLE_CHARS).min(1).describe('The button’s label.'),
    url: safeUrlSchema
      .nullish()
      .describe('`open` only: the page to open instead of the event’s `url`. A path on this service or an https URL.'),
  })
  .refine((a) => a.url == null || a.action === 'open', {
    message: 'only an "open" action has a url (ack and read open nothing)',
    path: ['url'],
  })

export type EventAction = z.infer<typeof eventActionSchema>

/** An image a notification shows (icon, image, badge): the same rule as every URL of the API. */
const imageUrlSchema = safeUrlSchema.nullish()

/** Shortest escalation delay: time for a person to see the news and open it. */
export const MIN_ESCALATE_AFTER_S = 10

/** `escalate`: report the recipients who have not read (or acked) the event `after` seconds after it was published. */
export const escalateSchema = z.strictObject({
  after: z.number().int().min(MIN_ESCALATE_AFTER_S).max(MAX_EVENT_TTL_S).describe('Seconds after publishing.'),
  unless: z
    .enum(['read', 'acked'])
    .default('read')
    .describe('Who is reported: recipients who have not read the event (default), or not acked it.'),
})

/** An event's type: what a publish names and what a type is registered as (event-types/). */
export const eventTypeNameSchema = storableText(100).regex(
  /^[a-z0-9]+(?:[_-][a-z0-9]+)*(?:\.[a-z0-9]+(?:[_-][a-z0-9]+)*)*$/,
  'must be lower-case dotted words, like "grade.updated"',
)

/** Longest title and body of an event; text rendered from a type's templates is cut to these. */
export const MAX_TITLE_CHARS = 200
export const MAX_BODY_CHARS = 2_000

/** The fields a registered type may give defaults for, each checked exactly as a publish's (event-types/model.ts). */
export const collapseKeySchema = storableText(64).min(1)
export const actionsSchema = z
  .array(eventActionSchema)
  .max(MAX_ACTIONS)
  .describe(
    `At most ${MAX_ACTIONS} buttons on the notification and in the inbox, in order; an empty list is none. An \`open\` action needs a URL: its own or the event’s.`,
  )
export const ttlSchema = z
  .number()
  .int()
  .min(MIN_EVENT_TTL_S)
  .max(MAX_EVENT_TTL_S)
  .describe('Seconds; an expired event is not replayed, listed or pushed.')

/**
 * A publish as sent. Only `type` and `to` are required: a registered type (event-types/) fills in its defaults
 * and renders `title` and `body` from `data` (EventTypeService.resolve), which yields a NewEvent; checks that
 * depend on the final values (finalEventIssues) run after that.
 */
export const newEventSchema = z.object({
  type: eventTypeNameSchema,
  to: audienceSchema.describe('At least one of users, roles, topics, or tenant: true.'),
  title: storableText(MAX_TITLE_CHARS)
    .min(1)
    .optional()
    .describe('Required unless the type is registered with a title template (`/v1/event-types`).'),
  body: storableText(MAX_BODY_CHARS)
    .nullish()
    .describe('Absent: rendered from the type’s body template, if it is registered with one.'),
  // Its size is checked by publish.ts on the text it stores, not here on the parsed value: a 900 KB number
  // parses to Infinity (JSON.stringify: "null"), and "\u0041" is 6 bytes sent for 1 byte parsed.
  data: z
    .unknown()
    .optional()
    .describe(
      `Any JSON, at most ${MAX_DATA_BYTES} bytes as sent (whitespace outside strings not counted); stored and sent back byte for byte.`,
    ),
  priority: prioritySchema.optional().describe('Default: the registered type’s default, else `normal`.'),
  url: safeUrlSchema.nullish().describe('A path on this service ("/grades/42") or an https URL.'),
  collapseKey: collapseKeySchema.nullish().describe('Default: the registered type’s default, else none.'),
  actions: actionsSchema.nullish(),
  icon: imageUrlSchema.describe('A small picture shown with the notification (the app’s or the sender’s).'),
  image: imageUrlSchema.describe(
    'A large picture shown in the notification; some browsers (Firefox, Safari) ignore it.',
  ),
  badge: imageUrlSchema.describe('A small monochrome picture for the status bar (Android); most desktops ignore it.'),
  ttl: ttlSchema
    .optional()
    .describe(
      `Seconds; an expired event is not replayed, listed or pushed. Default: the registered type’s default, else ${DEFAULT_EVENT_TTL_S} (7 days).`,
    ),
  escalate: escalateSchema
    .nullish()
    .describe(
      'When `after` seconds have passed, each recipient who has still not read (or acked) the event is reported by an `event.unread` webhook, once. Cancelled when the event is recalled.',
    ),
  store: z
    .boolean()
    .default(true)
    .describe(
      'false: a live-only update (progress, counters), not a notification. It goes to the matching open streams on every instance as an `event: live` frame without an id, and is never stored: not in history, unread counts, pushes, webhooks or roll-calls, and not replayed on resume. Answered 202 `{"live":true}`; it cannot be scheduled (`deliverAt`) or escalated, and an Idempotency-Key is ignored.',
    ),
})

/** A publish once its type's defaults and templates are applied (EventTypeService.resolve): what is stored. */
export type NewEvent = Omit<EventRequest, 'title' | 'priority' | 'ttl'> & {
  title: string
  priority: Priority
  ttl: number
  /** The title and body per locale (`{"fr":{"title":..,"body":..}}`), as stored; absent: one text for all. */
  localizedJson?: string
  /** Only when false (a type registered so): left out of the inbox and its counts, streamed and pushed. */
  inInbox?: false
  /** Only when false (a type registered so): never pushed. */
  mayPush?: false
}

/**
 * What is wrong with an event once its defaults are applied: checks that depend on the final values (a
 * default ttl, default actions). Paths are the event's own (`escalate.after`); the caller puts them under the body.
 */
export function finalEventIssues(event: NewEvent): Array<{ path: string; message: string }> {
  const issues: Array<{ path: string; message: string }> = []
  if (event.escalate && event.escalate.after >= event.ttl) {
    issues.push({
      path: 'escalate.after',
      message: `must be shorter than the event's ttl (${event.ttl} s): an expired event is not escalated`,
    })
  }
  if (event.store === false && event.escalate) {
    issues.push({
      path: 'escalate',
      message: 'a live-only event (store: false) is not stored: it has no readers to escalate',
    })
  }
  // An `open` button must have somewhere to go: its own url or the event's.
  for (const [i, action] of (event.actions ?? []).entries()) {
    if (action.action === 'open' && action.url == null && event.url == null) {
      issues.push({ path: `actions.${i}.url`, message: 'an "open" action needs a url, its own or the event’s' })
    }
  }
  return issues
}

export const batchSchema = z.object({
  events: z.array(newEventSchema).min(1).max(MAX_BATCH_EVENTS),
})

/** A publish as sent (and validated), before its type's defaults. */
export type EventRequest = z.infer<typeof newEventSchema>
export type Priority = z.infer<typeof prioritySchema>

/** Decimal event id as it appears in URLs, Last-Event-ID and bodies. */
export const eventIdSchema = z.string().regex(/^(0|[1-9][0-9]{0,17})$/, 'must be a decimal event id')
export const parseEventId = (s: string) => Number(s)

/** What an edit may change (`PATCH /v1/events/<id>`): the event's text, its data and its url. */
export const EDITABLE_FIELDS = ['title', 'body', 'data', 'url'] as const

/**
 * An edit: any of EDITABLE_FIELDS, by the rules of a publish; `null` clears `body`, `data` or `url`. Anything
 * else (the audience, priority, actions...) cannot be edited: a member naming it is a 400 that names it.
 */
export const eventEditFields = z.object({
  title: storableText(200).min(1).optional(),
  body: storableText(2_000).nullish(),
  // Its size is checked on the text stored (events/changes.ts), as a publish's is.
  data: z
    .unknown()
    .optional()
    .describe(
      `Any JSON, at most ${MAX_DATA_BYTES} bytes as sent (whitespace outside strings not counted); null clears it.`,
    ),
  url: safeUrlSchema.nullish().describe('A path on this service ("/grades/42") or an https URL; null clears it.'),
})

/** eventEditFields and nothing else (each other member named in the 400), at least one of them. */
export const eventEditSchema = z
  .strictObject(eventEditFields.shape, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `cannot be edited: ${issue.keys.map((k) => JSON.stringify(k)).join(', ')} (only title, body, data and url can)`
        : undefined,
  })
  .refine((edit) => EDITABLE_FIELDS.some((field) => field in edit), {
    message: 'give at least one of title, body, data and url',
    // Only of an edit without other faults: one naming nothing but what cannot be edited gets that said alone.
    when: (payload) => payload.issues.length === 0,
  })

export type EventEdit = z.infer<typeof eventEditFields>
