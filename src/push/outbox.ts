import { sql } from 'drizzle-orm'
import { userIsPresent } from '../cluster/presence.ts'
import type { Database, Db } from '../db/client.ts'

export interface PushPolicy {
  /** Seconds an open stream has to ack a `high` event before it is pushed anyway. */
  highAckTimeoutS: number
  /** See Presence: how long a silent instance's streams still count. */
  presenceTtlS: number
}

/**
 * Writes the push outbox rows of just-inserted events, inside the publish transaction, so a committed event
 * always has its pushes planned (and a rolled-back one never does). One row per (event, device), by the
 * push rule of SPEC 6:
 *   low: none. normal: devices of users with no open stream anywhere. urgent: all devices, now.
 *   high: like normal now, and devices of users with an open stream after `highAckTimeoutS` (skipped at
 *   send time if the user acked meanwhile; that check applies to every push).
 * Role, topic and tenant audiences resolve through the roles and topic claims each device registered with.
 */
export async function enqueuePushes(database: Database, tx: Db, eventIds: number[], policy: PushPolicy) {
  if (!eventIds.length) return
  const present = userIsPresent(sql`s.tenant`, sql`s.user_id`, policy.presenceTtlS)
  await database.query(
    sql`
    insert into push_deliveries (event_id, subscription_id, tenant, user_id, next_attempt_at)
    select e.id, s.id, s.tenant, s.user_id,
      case when e.priority = 'high' and ${present}
        then now() + make_interval(secs => ${policy.highAckTimeoutS}) else now() end
    from events e
    join push_subscriptions s on s.tenant = e.tenant
      and (e.to_tenant
        or s.user_id = any(e.to_users)
        or s.roles && e.to_roles
        or exists (
          select 1 from unnest(s.topics) as claim(pattern), unnest(e.to_topics) as t(topic)
          where claim.pattern = t.topic
            or (right(claim.pattern, 1) = '*' and starts_with(t.topic, left(claim.pattern, -1)))))
    where e.id in (${sql.join(
      eventIds.map((id) => sql`${id}`),
      sql`, `,
    )})
      and e.priority <> 'low'
      and (s.expiration_time is null or s.expiration_time > now())
      and (e.priority in ('high', 'urgent') or not ${present})`,
    tx,
  )
}
