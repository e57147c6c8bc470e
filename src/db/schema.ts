import { sql } from 'drizzle-orm'
import {
  bigint,
  bigserial,
  boolean,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core'

const emptyTextArray = sql`'{}'::text[]`

/**
 * The durable event log. Ids come from one sequence, so they increase across tenants; the live tail and
 * every resume read this table in id order.
 *
 * Partitioned by id into blocks of about a day (events/log-blocks.ts), and so are receipts, event_recipients
 * and stream_deliveries: pruning drops a block whose events have all expired, with theirs, in one statement.
 * drizzle-kit does not declare partitions: migration 0014 made the tables partitioned, and what drizzle-kit
 * generates for them later (columns, indexes) applies to the partitioned parents as to any table. For the same
 * reason the tables keyed by an event's id have no foreign key to it (a partition referenced by one cannot be
 * dropped without a scan of every referencing row): prune() deletes an event's rows in them with the event.
 */
export const events = pgTable(
  'events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    tenant: text('tenant').notNull(),
    type: text('type').notNull(),
    title: text('title').notNull(),
    body: text('body'),
    /** The publisher's `data` as JSON text, kept verbatim and spliced into the client JSON unparsed. */
    dataJson: text('data_json'),
    priority: text('priority', { enum: ['low', 'normal', 'high', 'urgent'] }).notNull(),
    url: text('url'),
    collapseKey: text('collapse_key'),
    /** Up to two action buttons, `[{action, title, url?}]`, as JSON text; null without any. */
    actionsJson: text('actions_json'),
    /** What a system notification shows: https URLs or paths on this service. */
    icon: text('icon'),
    image: text('image'),
    badge: text('badge'),
    actor: text('actor').notNull(),
    /**
     * `event` for a published event. `update` and `delete` rows record an edit or a recall of the event `refId`
     * in the log, so a stream resuming from Last-Event-ID replays changes in order with everything else.
     */
    kind: text('kind', { enum: ['event', 'update', 'delete'] })
      .notNull()
      .default('event'),
    /** On `update` and `delete` rows: the event they change. */
    refId: bigint('ref_id', { mode: 'number' }),
    /** On events: how many times it was edited (0: never). */
    revision: integer('revision').notNull().default(0),
    /** On events: when it was recalled; a recalled event is gone from history, reads and counts. */
    recalledAt: timestamp('recalled_at', { withTimezone: true, mode: 'date' }),
    /**
     * On `update` rows: a later edit or a recall of the same event made this edit obsolete, so replays leave it
     * out (the client ends at the event's current version). Set by the edit or recall that supersedes it.
     */
    superseded: boolean('superseded').notNull().default(false),
    toUsers: text('to_users').array().notNull().default(emptyTextArray),
    toRoles: text('to_roles').array().notNull().default(emptyTextArray),
    toTopics: text('to_topics').array().notNull().default(emptyTextArray),
    toTenant: boolean('to_tenant').notNull().default(false),
    /**
     * The title and body per locale, rendered from the event type's templates at publish time:
     * `{"fr": {"title": ..., "body": ...}}` as JSON text; `title`/`body` hold the fallback. Null: one text for all.
     */
    localizedJson: text('localized_json'),
    /** False for an event of a type registered not to go to the inbox: streamed (and pushed), never listed or counted. */
    inInbox: boolean('in_inbox').notNull().default(true),
    /** False for an event of a type registered not to push: no push is planned for it. */
    mayPush: boolean('may_push').notNull().default(true),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [
    // Replay, polling and history: `tenant = $1 and id > $2 order by id` (and `id < $2 order by id desc`).
    index('events_tenant_id_idx').on(t.tenant, t.id),
    // A user's direct messages among a busy tenant's broadcasts: `to_users && array[$user]`.
    index('events_to_users_idx').using('gin', t.toUsers).with({ fastupdate: false }),
    // Retention: `expires_at < now()`.
    index('events_expires_at_idx').on(t.expiresAt),
    // Statistics of a period: `tenant = $1 and created_at >= $2 and created_at < $3`.
    index('events_tenant_created_at_idx').on(t.tenant, t.createdAt),
    // The changes of one event: `where ref_id = $1`.
    index('events_ref_id_idx').on(t.refId).where(sql`ref_id is not null`),
  ],
)

/** One row per (user, event) the user acknowledged or read. Absent row: neither. */
export const receipts = pgTable(
  'receipts',
  {
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    eventId: bigint('event_id', { mode: 'number' }).notNull(),
    ackedAt: timestamp('acked_at', { withTimezone: true, mode: 'date' }),
    readAt: timestamp('read_at', { withTimezone: true, mode: 'date' }),
  },
  (t) => [
    // The inbox and unread count: `not exists (... where tenant, user_id, event_id = e.id and read_at is not null)`.
    primaryKey({ columns: [t.tenant, t.userId, t.eventId] }),
    // Delivery status of one event: `where event_id = $1`.
    index('receipts_event_id_idx').on(t.eventId),
  ],
)

/**
 * Idempotency-Key of a publish: the same key from the same publisher (tenant and user) within 24 h, with the
 * same request, returns these ids.
 */
export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    tenant: text('tenant').notNull(),
    /** The publisher: keys are scoped to who sent them, so one user's key never answers for another's. */
    actor: text('actor').notNull().default(''),
    key: text('key').notNull(),
    /** 'single', 'batch' or 'system' (a platform broadcast): a key reused across routes is a conflict, not a replay. */
    kind: text('kind', { enum: ['single', 'batch', 'system'] }).notNull(),
    /** SHA-256 of the request the key was first used with: a reuse with another request is refused (422). */
    fingerprint: text('fingerprint'),
    eventIds: bigint('event_ids', { mode: 'number' }).array().notNull().default(sql`'{}'::bigint[]`),
    /** Set when the publish was scheduled (`deliverAt`): the scheduled item the key answers with. */
    scheduledId: bigint('scheduled_id', { mode: 'number' }),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.tenant, t.actor, t.key] }),
    index('idempotency_keys_created_at_idx').on(t.createdAt),
  ],
)

/**
 * A user's roles and topic claims as their most recent token stated them, until that token expires: role and
 * topic audiences of pushes resolve through this, so a device follows its user's current rights (a device
 * registered with a teacher's token stops getting the teachers' pushes when the user's tokens stop saying
 * teacher, and when their last token has expired). Refreshed whenever the user authenticates.
 */
export const userClaims = pgTable(
  'user_claims',
  {
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    roles: text('roles').array().notNull().default(emptyTextArray),
    topics: text('topics').array().notNull().default(emptyTextArray),
    /** The `exp` of the token these claims came from: past it, they no longer count. */
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.userId] })],
)

export type EventRow = typeof events.$inferSelect

/** Secrets the service makes for itself and every instance must share: VAPID keys, the ackToken key. */
export const serviceKeys = pgTable('service_keys', {
  name: text('name').primaryKey(),
  value: text('value').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
})

/** A browser's push subscription. An endpoint belongs to the last user who registered it. */
export const pushSubscriptions = pgTable(
  'push_subscriptions',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    endpoint: text('endpoint').notNull().unique(),
    p256dh: text('p256dh').notNull(),
    auth: text('auth').notNull(),
    expirationTime: timestamp('expiration_time', { withTimezone: true, mode: 'date' }),
    /** SHA-256 of the credential the service worker uses to re-register after `pushsubscriptionchange`. */
    renewTokenHash: text('renew_token_hash').notNull(),
    /** The renew token stops working then (RENEW_TOKEN_TTL_DAYS after the last registration or renewal). */
    renewTokenExpiresAt: timestamp('renew_token_expires_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now() + interval '30 days'`),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    // Recipients of an event: `where tenant = $1 and (user_id = any($2) or roles && $3 ...)`; a user's devices.
    index('push_subscriptions_tenant_user_idx').on(t.tenant, t.userId),
  ],
)

/**
 * The push outbox: one row per (event, device) to push, written in the publish transaction. Dispatchers on
 * every instance claim due rows (`for update skip locked`), send, and record the outcome here.
 */
export const pushDeliveries = pgTable(
  'push_deliveries',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    eventId: bigint('event_id', { mode: 'number' }).notNull(),
    subscriptionId: bigint('subscription_id', { mode: 'number' }).references(() => pushSubscriptions.id, {
      onDelete: 'set null',
    }),
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    state: text('state', { enum: ['pending', 'sent', 'failed', 'skipped'] })
      .notNull()
      .default('pending'),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    /** A dispatcher's claim; a claim past this time (its instance died) may be taken over. */
    claimedUntil: timestamp('claimed_until', { withTimezone: true, mode: 'date' }),
    claimedBy: text('claimed_by'),
    lastStatus: integer('last_status'),
    lastError: text('last_error'),
    /**
     * A `normal` push held back because the user had open streams on these instances at publish time. It is
     * dropped if one of them was really alive then (it beat its heartbeat after the event was created), and
     * sent if all of them were already dead: a killed instance's stale presence must not swallow the push.
     */
    presentOn: text('present_on').array(),
    /**
     * The device's push service (SERVICE_PATTERN of its endpoint) when the push was planned: the claim keeps
     * each service to its share from this column, without joining every due row to its subscription.
     */
    service: text('service'),
    /** A nudge (`POST /v1/events/:id/nudge`): shown again even if the device shows the event already; skipped once read. */
    nudge: boolean('nudge').notNull().default(false),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    // The dispatcher's claim: due pending rows, oldest first.
    index('push_deliveries_due_idx').on(t.nextAttemptAt).where(sql`state = 'pending'`),
    // An event's delivery status.
    index('push_deliveries_event_idx').on(t.eventId),
  ],
)

/** Instances alive, by heartbeat: presence rows of an instance that stopped beating do not count. */
export const instances = pgTable('instances', {
  id: text('id').primaryKey(),
  seenAt: timestamp('seen_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
})

/**
 * "This user has open streams on that instance": for the push rule of `normal` and `high` events, and, with how
 * many and since when, for MAX_CONNECTIONS_PER_USER across instances (see Presence).
 */
export const streamPresence = pgTable(
  'stream_presence',
  {
    instanceId: text('instance_id')
      .notNull()
      .references(() => instances.id, { onDelete: 'cascade' }),
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    /** The user's open streams on that instance (the defaults fit an instance that writes neither column). */
    streams: integer('streams').notNull().default(1),
    /** When the oldest of them opened, by the database's clock (instances' clocks may disagree). */
    oldestAt: timestamp('oldest_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    // Is this user present: `where tenant = $1 and user_id = $2`.
    primaryKey({ columns: [t.tenant, t.userId, t.instanceId] }),
  ],
)

/**
 * Stream tickets: single-use credentials that open one stream within seconds, so that a browser's EventSource
 * (which cannot set headers) need not carry the JWT in its URL. Only a hash of the ticket is stored; the
 * claims of the token it was issued for open the stream. Redeeming deletes the row (single use, on any instance).
 */
export const streamTickets = pgTable(
  'stream_tickets',
  {
    hash: text('hash').primaryKey(),
    /** The caller the ticket stands for: user, tenant, roles, topics, scopes and the JWT's `exp`. */
    caller: text('caller').notNull(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [
    // Sweeping tickets that were never used.
    index('stream_tickets_expires_at_idx').on(t.expiresAt),
  ],
)

/**
 * Publishes to be made later (`deliverAt`). When one is due, an instance claims it (`for update skip locked`),
 * publishes its events through the normal path and marks it published in the same transaction: exactly once,
 * whatever the number of instances and restarts. Its events get their ids then, so the log's id order is
 * untouched.
 */
export const scheduledPublishes = pgTable(
  'scheduled_publishes',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    tenant: text('tenant').notNull(),
    /** The publisher. */
    actor: text('actor').notNull(),
    /** The publisher's claims when the publish was accepted (its scopes were checked then), as JSON. */
    caller: text('caller').notNull(),
    /** 'single' or 'batch': the route it came from. */
    kind: text('kind', { enum: ['single', 'batch'] }).notNull(),
    /** The events as validated (defaults applied), each `data` as its stored text: a JSON array. */
    events: text('events').notNull(),
    deliverAt: timestamp('deliver_at', { withTimezone: true, mode: 'date' }).notNull(),
    state: text('state', { enum: ['pending', 'published', 'cancelled'] })
      .notNull()
      .default('pending'),
    /** The events' ids once published. */
    eventIds: bigint('event_ids', { mode: 'number' }).array().notNull().default(sql`'{}'::bigint[]`),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    /** When it was published or cancelled. */
    settledAt: timestamp('settled_at', { withTimezone: true, mode: 'date' }),
  },
  (t) => [
    // The scheduler's claim: due pending items, earliest first.
    index('scheduled_publishes_due_idx').on(t.deliverAt).where(sql`state = 'pending'`),
    // A publisher's (or a tenant's) pending items.
    index('scheduled_publishes_tenant_actor_idx').on(t.tenant, t.actor, t.id),
  ],
)

/**
 * The topics a user follows (the seeds' channels): a stream opened without `?topics=` gets their events, and so
 * do the user's devices. A user subscribes within their token's `topics` claim; a tenant admin manages members
 * in bulk. A subscription is to one topic, never a pattern.
 */
export const topicSubscriptions = pgTable(
  'topic_subscriptions',
  {
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    topic: text('topic').notNull(),
    /** Who made it: the user (`self`), or a tenant admin (`admin`). */
    addedBy: text('added_by', { enum: ['self', 'admin'] }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    // A user's topics: `where tenant = $1 and user_id = $2`; one subscription: the whole key.
    primaryKey({ columns: [t.tenant, t.userId, t.topic] }),
    // A topic's subscribers (push planning, members): `where tenant = $1 and topic = any($2)`.
    index('topic_subscriptions_topic_idx').on(t.tenant, t.topic),
  ],
)

/**
 * Notification preferences: a user's own (`userId` set), or a tenant's defaults (`userId` = ''), which a
 * user's own override. `settings` holds the rules (by event type pattern or topic: inApp, push), the push
 * switch with a minimum priority, and quiet hours (start, end, IANA time zone, days of the week).
 */
export const preferences = pgTable(
  'preferences',
  {
    tenant: text('tenant').notNull(),
    /** The user, or '' for the tenant's defaults. */
    userId: text('user_id').notNull(),
    settings: jsonb('settings').notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.userId] })],
)

/**
 * The tenant's users as the app's backend states them (server to server, `admin` scope): roles, topics and how
 * to address them. Role and topic audiences resolve through it at publish time (events/recipients.ts), before
 * what tokens said: for a user listed here, these roles and topics decide which broadcasts and pushes they are a
 * recipient of. What a connected user may see stays their token's claims.
 */
export const directoryUsers = pgTable(
  'directory_users',
  {
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    roles: text('roles').array().notNull().default(emptyTextArray),
    /** Topics the user is a member of: names, or patterns ending in `*` as in a token's `topics` claim. */
    topics: text('topics').array().notNull().default(emptyTextArray),
    displayName: text('display_name'),
    /** BCP 47 language tag, e.g. `fr-CH`. */
    locale: text('locale'),
    /** IANA time zone; quiet hours use it when the user's preferences name none. */
    timeZone: text('time_zone'),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    // One user, and the tenant's users in id order (listing, cursor): the primary key.
    primaryKey({ columns: [t.tenant, t.userId] }),
    // Holders of a role among a large tenant: `roles && $1`.
    index('directory_users_roles_idx').using('gin', t.roles),
  ],
)

/**
 * How often the users a tenant broadcast goes to have changed: bumped, by triggers (migration 0016), whenever a
 * user is added to or removed from the directory, user_claims or push_subscriptions. A tenant no user was ever
 * added to has no row (version 0).
 */
export const tenantRosterVersions = pgTable('tenant_roster_versions', {
  tenant: text('tenant').primaryKey(),
  version: bigint('version', { mode: 'number' }).notNull(),
})

/**
 * Everyone a tenant broadcast goes to (the directory, users seen through tokens, devices' users) as one sorted
 * array, as a broadcast resolved it, and the tenant's roster version it was built at: the next broadcast records
 * it as its recipients while that version is current, instead of reading and sorting 10,000 users again
 * (events/recipients.ts). Written by publishes only, so a publish never waits behind the writers of users.
 */
export const tenantRosters = pgTable('tenant_rosters', {
  tenant: text('tenant').primaryKey(),
  builtVersion: bigint('built_version', { mode: 'number' }).notNull(),
  userIds: text('user_ids').array().notNull(),
})

/**
 * Who an event was for, resolved when it was published (events/recipients.ts): one row per event, its
 * recipients as one sorted array (10,000 recipients are one row, not 10,000). With the event's escalation and
 * its last nudge. An event to named users only has a row only once it escalates or is nudged: until then its
 * recipients are its `to_users`.
 */
export const eventRecipients = pgTable(
  'event_recipients',
  {
    eventId: bigint('event_id', { mode: 'number' }).primaryKey(),
    tenant: text('tenant').notNull(),
    userIds: text('user_ids').array().notNull(),
    /** When the last nudge went out: the next may follow NUDGE_MIN_INTERVAL_S later. */
    nudgedAt: timestamp('nudged_at', { withTimezone: true, mode: 'date' }),
    /** `escalate.after`: when recipients still unread (unacked) are reported as `event.unread`. */
    escalateAt: timestamp('escalate_at', { withTimezone: true, mode: 'date' }),
    escalateUnless: text('escalate_unless', { enum: ['read', 'acked'] }),
    /** `pending` until the escalation ran (`done`) or the event was recalled first (`cancelled`). */
    escalation: text('escalation', { enum: ['pending', 'done', 'cancelled'] }),
  },
  (t) => [
    // The escalator's claim: due pending escalations.
    index('event_recipients_escalate_due_idx').on(t.escalateAt).where(sql`escalation = 'pending'`),
  ],
)

/**
 * Which recipients' open streams were sent an event, and when: written by each instance in batches (one row per
 * event and flush, the users as an array), so a broadcast to 10,000 open streams is a row, not 10,000.
 */
export const streamDeliveries = pgTable(
  'stream_deliveries',
  {
    eventId: bigint('event_id', { mode: 'number' }).notNull(),
    userIds: text('user_ids').array().notNull(),
    deliveredAt: timestamp('delivered_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [
    // An event's roll-call: `where event_id = $1`.
    index('stream_deliveries_event_idx').on(t.eventId),
  ],
)

/** A tenant's webhook endpoint: where the events it names are POSTed, signed per Standard Webhooks. */
export const webhookEndpoints = pgTable(
  'webhook_endpoints',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    tenant: text('tenant').notNull(),
    url: text('url').notNull(),
    /** The event types it receives, e.g. `event.read`. */
    events: text('events').array().notNull(),
    description: text('description'),
    /** `whsec_` and the base64 key the deliveries are signed with. */
    secret: text('secret').notNull(),
    createdBy: text('created_by').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    /** Since when every delivery has failed (null: the last one succeeded, or none was made yet). */
    failingSince: timestamp('failing_since', { withTimezone: true, mode: 'date' }),
    /** Set when deliveries failed for too long: nothing more is sent until an admin enables it again. */
    disabledAt: timestamp('disabled_at', { withTimezone: true, mode: 'date' }),
    disabledReason: text('disabled_reason'),
  },
  (t) => [
    // A tenant's endpoints (listing, and the outbox's `where tenant = $1 and events @> ...`).
    index('webhook_endpoints_tenant_idx').on(t.tenant),
  ],
)

/**
 * The webhook outbox: one row per (endpoint, message), written in the transaction of the change it reports.
 * `msgId` is the same for the same occurrence (an event read by a user), so a message is enqueued once, and a
 * receiver deduplicates retries by it.
 */
export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    endpointId: bigint('endpoint_id', { mode: 'number' })
      .notNull()
      .references(() => webhookEndpoints.id, { onDelete: 'cascade' }),
    tenant: text('tenant').notNull(),
    /** The event type, e.g. `event.read`. */
    type: text('type').notNull(),
    /** The `webhook-id` header. */
    msgId: text('msg_id').notNull(),
    /** The body as sent: `{type, timestamp, data}` JSON text. */
    payload: text('payload').notNull(),
    state: text('state', { enum: ['pending', 'sent', 'failed'] })
      .notNull()
      .default('pending'),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    /** A dispatcher's claim; past this time (its instance died) another may take the row over. */
    claimedUntil: timestamp('claimed_until', { withTimezone: true, mode: 'date' }),
    claimedBy: text('claimed_by'),
    lastStatus: integer('last_status'),
    lastError: text('last_error'),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [
    // One message per endpoint: enqueueing it again does nothing.
    uniqueIndex('webhook_deliveries_endpoint_msg_idx').on(t.endpointId, t.msgId),
    // The dispatcher's claim: due pending rows, oldest first.
    index('webhook_deliveries_due_idx').on(t.nextAttemptAt).where(sql`state = 'pending'`),
    // An endpoint's recent deliveries, newest first.
    index('webhook_deliveries_endpoint_idx').on(t.endpointId, t.id),
  ],
)

/**
 * A tenant's registered event types (`PUT /v1/event-types/<type>`): what a publish of the type gets by default,
 * and the templates its title and body are rendered from, per locale.
 */
export const eventTypes = pgTable(
  'event_types',
  {
    tenant: text('tenant').notNull(),
    type: text('type').notNull(),
    description: text('description'),
    category: text('category'),
    /** `{priority, ttl, collapseKey, actions}`, each optional: what a publish that does not set them gets. */
    defaults: jsonb('defaults').notNull().default(sql`'{}'::jsonb`),
    /** False: events of the type are streamed (and pushed) but never in the inbox or unread counts. */
    inbox: boolean('inbox').notNull().default(true),
    /** False: events of the type are never pushed. */
    push: boolean('push').notNull().default(true),
    /** True: events of the type are live-only (never stored, as `store: false`). */
    liveOnly: boolean('live_only').notNull().default(false),
    /** `{title, body, locales: {<locale>: {title, body}}}`: Mustache templates over `data`; null without any. */
    templates: jsonb('templates'),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.type] })],
)

/**
 * Live-only events too large for a NOTIFY payload (8,000 bytes): the bus carries their id and each instance reads
 * the payload from here. Kept a minute, then pruned.
 */
export const liveEvents = pgTable(
  'live_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    payload: text('payload').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [index('live_events_created_at_idx').on(t.createdAt)],
)

/**
 * The connection audit: one row per stream opened, written by the instance that holds it (in batches), closed
 * when it ends. Kept AUDIT_RETENTION_DAYS.
 */
export const streamConnections = pgTable(
  'stream_connections',
  {
    /** Made by the instance (a UUID), so the row can be closed without reading it back. */
    id: text('id').primaryKey(),
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    instanceId: text('instance_id').notNull(),
    openedAt: timestamp('opened_at', { withTimezone: true, mode: 'date' }).notNull(),
    closedAt: timestamp('closed_at', { withTimezone: true, mode: 'date' }),
    closeReason: text('close_reason'),
    userAgent: text('user_agent'),
    clientIp: text('client_ip'),
  },
  (t) => [
    // A tenant's connections in a period, newest first: `tenant = $1 and opened_at between ...`.
    index('stream_connections_tenant_opened_idx').on(t.tenant, t.openedAt),
    // One user's: `tenant = $1 and user_id = $2 and opened_at between ...`.
    index('stream_connections_tenant_user_opened_idx').on(t.tenant, t.userId, t.openedAt),
    // Retention: `opened_at < now() - AUDIT_RETENTION_DAYS`.
    index('stream_connections_opened_idx').on(t.openedAt),
  ],
)
