import { z } from 'zod'
import { DEFAULT_PAGE, MAX_PAGE } from '../events/inbox.ts'
import {
  actionKindSchema,
  batchSchema,
  eventEditSchema,
  eventIdSchema,
  MAX_BATCH_EVENTS,
  nameSchema,
  newEventSchema,
  prioritySchema,
  topicNameSchema,
} from '../events/model.ts'
import { deliverAtSchema } from '../events/scheduled.ts'
import { MAX_MEMBERS_PER_REQUEST } from '../events/topic-subscriptions.ts'

export const idParams = z.object({ id: eventIdSchema })

export const listQuery = z
  .object({
    after: eventIdSchema.optional(),
    before: eventIdSchema.optional(),
    limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(DEFAULT_PAGE),
    unread: z.enum(['true', 'false']).optional(),
  })
  .refine((q) => q.after === undefined || q.before === undefined, {
    message: 'use either after (polling) or before (history), not both',
    path: ['before'],
  })

export const bulkReadBody = z.union([
  z.strictObject({ ids: z.array(eventIdSchema).min(1).max(1_000) }),
  z.strictObject({ upTo: eventIdSchema }),
])

export const idempotencyHeaders = z.object({
  'idempotency-key': z
    .string()
    .min(1)
    .max(200)
    .optional()
    .describe(
      'The same request again with this key within 24 h replays the first answer: 200 with the first event(s), or ' +
        'for a scheduled publish 202 with the same `scheduledId`. With another request (another `deliverAt` ' +
        'included): 422; on the other publish route, or while the first request with it is still in flight: 409 ' +
        '(retry later).',
    ),
})

export const streamQuery = z.object({
  topics: z
    .string()
    .max(4_000)
    .optional()
    .describe(
      'Comma-separated topics for this stream (`class:7A,batch:9`); each must match the token’s `topics` claim. ' +
        'Without it, the stream follows the user’s topic subscriptions (`/v1/me/topics`), and their changes, live.',
    ),
  lastEventId: z
    .string()
    .max(100)
    .optional()
    .describe('Resume after this event id when no Last-Event-ID header is sent (the header wins).'),
  access_token: z
    .string()
    .optional()
    .describe('The JWT, for EventSource, which cannot set headers. Never logged by the service; prefer `ticket`.'),
  ticket: z
    .string()
    .max(100)
    .optional()
    .describe('A single-use ticket from POST /v1/stream/tickets (valid 30 s), instead of the JWT in the URL.'),
})

export const streamTicketReply = z
  .object({
    ticket: z.string().describe('Pass as `?ticket=` to GET /v1/stream, once, within `expiresIn` seconds.'),
    expiresIn: z.number().int().describe('Seconds the ticket stays valid.'),
  })
  .describe('A single-use stream ticket for the caller.')

/** Only described: the route checks the value itself, to answer with its own message. */
export const streamHeaders = z.object({
  'last-event-id': z
    .string()
    .optional()
    .describe('Sent by a reconnecting EventSource: every visible event after this id is replayed first.'),
})

// Replies. Routes that declare one in `schema.response` are serialized through it (a reply that does not fit
// is a 500, so each matches what the handler sends); those that send ready-made JSON text or a stream only
// document theirs (see docs.ts `documentedReplies`).

/** ISO 8601 in UTC, as `Date.toISOString()` writes it (z.iso.datetime() would put its long regex in the docs). */
export const timestamp = z.string().meta({ format: 'date-time' })

export const published = z
  .object({ id: eventIdSchema, createdAt: timestamp })
  .describe('The event is committed; its id and creation time.')
export const replayedPublish = published.describe('The same Idempotency-Key within 24 h: the first event; nothing new.')

export const batchPublished = z
  .object({ ids: z.array(eventIdSchema) })
  .describe('The events are committed; their ids, in the order given.')
export const replayedBatch = batchPublished.describe(
  'The same Idempotency-Key within 24 h: the first ids; nothing new.',
)

/** The event as every client sees it (stream, history, push payload). The audience is never shown. */
export const eventSchema = z.object({
  id: eventIdSchema,
  tenant: z
    .string()
    .describe('The event’s tenant: a stream carries the events of every tenant its token covers (`tenants` claim).'),
  type: z.string(),
  title: z.string(),
  body: z.string().nullable(),
  data: z.unknown().describe('Any JSON, byte for byte as published; null when none was given.'),
  priority: prioritySchema,
  url: z.string().nullable(),
  collapseKey: z.string().nullable(),
  actions: z
    .array(
      z.object({
        action: actionKindSchema,
        title: z.string(),
        url: z.string().nullable().describe('`open` only: opened instead of the event’s `url`; null: the event’s.'),
      }),
    )
    .nullable()
    .describe(
      'At most 2 buttons: `ack` acknowledges the event, `read` marks it read, `open` opens a URL and marks it read.',
    ),
  icon: z.string().nullable(),
  image: z.string().nullable(),
  badge: z.string().nullable(),
  actor: z.string().describe('The publisher’s user id.'),
  createdAt: timestamp,
  expiresAt: timestamp,
  revision: z
    .number()
    .int()
    .min(0)
    .describe('How many times the event was edited (PATCH /v1/events/{id}); 0 as published.'),
})

export const listedEvent = eventSchema
  .extend({ readAt: timestamp.nullable(), ackedAt: timestamp.nullable() })
  .describe('One event with the caller’s receipt.')

export const eventPage = z
  .object({
    events: z.array(listedEvent),
    next: eventIdSchema
      .nullable()
      .describe('Pass as `after` (polling) or `before` (history) for the next page; null when history is done.'),
  })
  .describe('A page of the caller’s events.')

export const unreadCountReply = z
  .object({ unread: z.number().int().min(0) })
  .describe('Events the caller has not read.')

const count = z.number().int().min(0)
export const recipientTotals = z
  .object({
    recipients: count.describe('Who the event was for, resolved when it was published.'),
    delivered: count.describe('Recipients sent it on an open stream (live or in a replay).'),
    pushed: count.describe('Recipients whose device it was pushed to.'),
    acked: count,
    read: count,
    unread: count,
  })
  .describe('The event’s recipients, and what became of it for them.')

export const deliveryStatusReply = z
  .object({
    acked: count,
    read: count,
    push: z.object({ sent: count, failed: count, pending: count }),
    recipients: recipientTotals,
  })
  .describe('Receipts and Web Push deliveries of the event, and its recipients’ totals.')

const timeOrNull = z.iso.datetime().nullable()

export const recipientsQuery = z.object({
  state: z
    .enum(['all', 'unread', 'read', 'acked'])
    .default('all')
    .describe('Which recipients to list: all (default), those who have not read it, read it, or acked it.'),
  cursor: z.string().max(400).optional().describe('`next` of the previous page.'),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
})

export const recipientsReply = z
  .object({
    recipients: z.array(
      z.object({
        userId: z.string(),
        displayName: z.string().nullable().describe('From the directory, when it has one.'),
        deliveredAt: timeOrNull.describe('First sent on one of the user’s open streams (to about a second).'),
        pushedAt: timeOrNull.describe('First pushed to one of the user’s devices.'),
        ackedAt: timeOrNull,
        readAt: timeOrNull,
      }),
    ),
    totals: recipientTotals,
    next: z.string().nullable().describe('The cursor of the next page; null on the last.'),
  })
  .describe('A page of the event’s recipients in user id order, and the totals of all of them.')

export const nudgeReply = z
  .object({
    nudged: count.describe('Recipients who had not read the event, each reminded.'),
    pushes: count.describe('Pushes planned to their devices (as their preferences allow).'),
  })
  .describe('The unread recipients were nudged.')

/** 204: `send()` with no payload, so nothing is serialized. */
export const noContent = z.undefined().describe('Done; no body.')

export const vapidKeyReply = z
  .object({
    publicKey: z
      .string()
      .describe('Uncompressed P-256 key, base64url: `applicationServerKey` for pushManager.subscribe.'),
  })
  .describe('The VAPID public key.')

export const registeredSubscription = z
  .object({
    id: z.string(),
    renewToken: z
      .string()
      .describe('Keep it in the service worker: it re-registers after `pushsubscriptionchange` without the JWT.'),
  })
  .describe('The device is registered.')

export const subscriptionList = z
  .object({
    subscriptions: z.array(
      z.object({
        id: z.string(),
        endpoint: z.string(),
        expirationTime: z.date().nullable(),
        createdAt: z.date(),
        updatedAt: z.date(),
      }),
    ),
  })
  .describe('The caller’s devices, newest first (keys are never shown back).')

export const pushTestReply = z
  .object({
    sent: count,
    failed: count,
    devices: z.array(
      z.object({
        id: z.string(),
        outcome: z.enum(['sent', 'failed']),
        status: z.number().int().nullable().describe('The push service’s HTTP status, when it answered.'),
      }),
    ),
  })
  .describe('What each device’s push service answered.')

/** The stream's body, as documented. */
export const sseStream = z
  .string()
  .describe(
    [
      'Server-Sent Events. The first line is `retry: 3000`; then, one frame per event:',
      '',
      '- `event: notification`, `id: <event id>`, `data:` the event JSON on one line (the fields of GET /v1/events/{id} without `readAt`/`ackedAt`).',
      '- `event: update`, `id: <id of the edit in the log>`, `data:` the edited event’s JSON (its own `id`, and its `revision`): an event the stream carried was edited.',
      '- `event: delete`, `id: <id of the recall in the log>`, `data: {"id":"<event id>"}`: an event the stream carried was recalled; remove it.',
      '- `event: receipt`, `data: {"ids":[...],"state":"read"|"acked"}` or `{"upTo":"<id>","state":"read"}`: the same user acked or read on another connection or device.',
      '- `event: nudge`, `data:` the event JSON: its publisher reminds the recipients who have not read it (POST /v1/events/{id}/nudge). Not replayed.',
      '- `event: roll-call`, `data: {"ids":[...],"userId":"<recipient>","state":"read"|"acked"}`: to the publisher, a recipient acked or read their events.',
      '- `event: reset`, `data: {"reason":"expired"}`: the resume point is older than what is kept; what is kept is replayed next.',
      '- `: ping`, a comment, every HEARTBEAT_MS (15 s by default).',
      '',
      'With Last-Event-ID (or `lastEventId`), every visible event, edit and recall after it is replayed in id order (an event as it now stands; recalled ones and superseded edits left out), then live events follow with no gap and no duplicate. The stream ends when the token expires, when the user opens more than MAX_CONNECTIONS_PER_USER streams (the oldest closes), or on shutdown: reconnect.',
    ].join('\n'),
  )

// Scheduled publishes (`deliverAt`): the publish bodies that take it, the 202 reply, and the /v1/scheduled routes.

/** `PATCH /v1/events/{id}`: what the edit changes. */
export const editBody = eventEditSchema

/** `POST /v1/events`: the event, and `deliverAt` to publish it later. */
export const publishBody = newEventSchema.extend({ deliverAt: deliverAtSchema.optional() })

/** `POST /v1/events/batch`: the events, and `deliverAt` for all of them (an event of its own has none). */
export const batchBody = batchSchema.extend({
  events: z
    .array(
      newEventSchema.extend({
        deliverAt: z
          .never({ error: 'deliverAt applies to the whole batch: give it once, next to "events"' })
          .optional()
          .describe('Not here: `deliverAt` is given once, next to `events`.'),
      }),
    )
    .min(1)
    .max(MAX_BATCH_EVENTS),
  deliverAt: deliverAtSchema.optional(),
})

/** `POST /v1/events` and `/batch` with `store: false`: sent to the open streams, nothing stored. */
export const liveSent = z
  .object({ live: z.literal(true) })
  .describe(
    'Live-only (`store: false`): sent to the matching open streams on every instance as `event: live`, without an id; not stored, listed, counted, pushed or replayed.',
  )

export const scheduledIdSchema = z.string().regex(/^(0|[1-9][0-9]{0,17})$/, 'must be a decimal scheduled id')
export const scheduledIdParams = z.object({ id: scheduledIdSchema })

export const scheduledReply = z
  .object({ scheduledId: scheduledIdSchema, deliverAt: timestamp })
  .describe(
    'Accepted for later: checked now, published at `deliverAt` (GET /v1/scheduled/{id} follows it). The same ' +
      'Idempotency-Key within 24 h answers this again, with the same `scheduledId`; nothing new.',
  )

export const scheduledListQuery = z.object({
  after: scheduledIdSchema.optional().describe('Items accepted after this one (the previous page’s `next`).'),
  limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(DEFAULT_PAGE),
})

const scheduledState = z
  .enum(['pending', 'published', 'cancelled'])
  .describe('`pending` until it goes out (`published`) or is cancelled (`cancelled`).')
const scheduledCommon = {
  id: scheduledIdSchema,
  state: scheduledState,
  kind: z.enum(['single', 'batch']).describe('The route it came from.'),
  actor: z.string().describe('The publisher’s user id.'),
  deliverAt: timestamp,
  createdAt: timestamp,
}

export const scheduledPage = z
  .object({
    scheduled: z.array(
      z.object({
        ...scheduledCommon,
        eventCount: z.number().int().min(1),
        title: z.string().describe('The first event’s title.'),
      }),
    ),
    next: scheduledIdSchema.nullable().describe('Pass as `after` for the next page; null when this is the last.'),
  })
  .describe('The caller’s pending scheduled publishes (an `admin`’s: the tenant’s), in the order they were accepted.')

export const scheduledItem = z
  .object({
    ...scheduledCommon,
    settledAt: timestamp.nullable().describe('When it was published or cancelled.'),
    eventIds: z.array(eventIdSchema).describe('Its events’ ids once published, in order; empty before.'),
    events: z
      .array(newEventSchema)
      .describe('The events as accepted (defaults applied), `data` byte for byte as sent.'),
  })
  .describe('A scheduled publish of the caller’s (an `admin`: of the tenant).')

/** A topic in a URL path: a topic name as events name them (no `*`, commas or spaces). */
export const topicParams = z.object({ topic: topicNameSchema })

export const topicSubscriptionList = z.object({
  topics: z.array(
    z.object({
      topic: z.string(),
      addedBy: z.enum(['self', 'admin']).describe('`self`: the user subscribed; `admin`: a tenant admin added them.'),
      createdAt: z.string().describe('RFC 3339'),
    }),
  ),
})

export const topicMembersBody = z.object({
  users: z.array(nameSchema).min(1).max(MAX_MEMBERS_PER_REQUEST).describe('User ids (`sub`), at most 1,000.'),
})

export const topicMembersChanged = z.object({
  changed: z.number().int().describe('How many users were added (were not members yet) or removed (were members).'),
})

export const topicMemberList = z.object({ users: z.array(z.string()) })
