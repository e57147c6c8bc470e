import { sql } from 'drizzle-orm'
import { bigint, bigserial, boolean, index, pgTable, primaryKey, text, timestamp } from 'drizzle-orm/pg-core'

const emptyTextArray = sql`'{}'::text[]`

/**
 * The durable event log. Ids come from one sequence, so they increase across tenants; the live tail and
 * every resume read this table in id order.
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
    actor: text('actor').notNull(),
    toUsers: text('to_users').array().notNull().default(emptyTextArray),
    toRoles: text('to_roles').array().notNull().default(emptyTextArray),
    toTopics: text('to_topics').array().notNull().default(emptyTextArray),
    toTenant: boolean('to_tenant').notNull().default(false),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [
    // Replay, polling and history: `tenant = $1 and id > $2 order by id` (and `id < $2 order by id desc`).
    index('events_tenant_id_idx').on(t.tenant, t.id),
    // A user's direct messages among a busy tenant's broadcasts: `to_users && array[$user]`.
    index('events_to_users_idx').using('gin', t.toUsers),
    // Retention: `expires_at < now()`.
    index('events_expires_at_idx').on(t.expiresAt),
  ],
)

/** One row per (user, event) the user acknowledged or read. Absent row: neither. */
export const receipts = pgTable(
  'receipts',
  {
    tenant: text('tenant').notNull(),
    userId: text('user_id').notNull(),
    eventId: bigint('event_id', { mode: 'number' })
      .notNull()
      .references(() => events.id, { onDelete: 'cascade' }),
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

/** Idempotency-Key of a publish: the same key from the same tenant within 24 h returns these ids. */
export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    tenant: text('tenant').notNull(),
    key: text('key').notNull(),
    /** 'single' or 'batch': a key reused across the two routes is a conflict, not a replay. */
    kind: text('kind', { enum: ['single', 'batch'] }).notNull(),
    eventIds: bigint('event_ids', { mode: 'number' }).array().notNull().default(sql`'{}'::bigint[]`),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.key] }), index('idempotency_keys_created_at_idx').on(t.createdAt)],
)

export type EventRow = typeof events.$inferSelect
