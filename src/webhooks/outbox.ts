import { type SQL, sql } from 'drizzle-orm'
import { isoText } from '../wire-format.ts'

/** What a tenant admin may subscribe an endpoint to. */
export const WEBHOOK_TYPES = [
  'event.published',
  'event.read',
  'event.acked',
  'event.unread',
  'push.failed',
  'user.online',
  'user.offline',
] as const

export type WebhookType = (typeof WEBHOOK_TYPES)[number]

/** The transaction's time as the messages' `timestamp` is written: ISO 8601 in UTC, milliseconds, `Z`. */
export const SQL_NOW_ISO = isoText(sql`now()`)

/**
 * SQL that enqueues webhook messages of one type, run in the statement (or transaction) of the change they
 * report, so a committed change always has its messages and a rolled-back one never does.
 *
 * `source` is a relation with the columns `tenant text`, `msg_key text` and `data json`: one row per message.
 * Each goes to every enabled endpoint of its tenant that subscribed to `type`, as `{type, timestamp, data}`.
 * Its `webhook-id` is `msg_` and the MD5 of the type and `msg_key`, so the same occurrence (an event read by a
 * user, an escalation of one recipient) enqueued twice is one message per endpoint, and a receiver deduplicates
 * retries by it. Returns the ids of the rows written.
 */
export function enqueueWebhooks(type: WebhookType, source: SQL): SQL {
  return sql`
    insert into webhook_deliveries (endpoint_id, tenant, type, msg_id, payload)
    select w.id, m.tenant, ${type}, 'msg_' || md5(${type} || ':' || m.msg_key),
      json_build_object('type', ${type}::text, 'timestamp', ${SQL_NOW_ISO}, 'data', m.data)::text
    from (${source}) m
    join webhook_endpoints w on w.tenant = m.tenant and w.events @> array[${type}::text] and w.disabled_at is null
    on conflict (endpoint_id, msg_id) do nothing
    returning id`
}
