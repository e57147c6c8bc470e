import { count, eq, type SQL, sql } from 'drizzle-orm'
import type { Database } from '../db/client.ts'
import { pushDeliveries } from '../db/schema.ts'
import type { ChangePushes } from '../events/changes.ts'
import { pushPreferencesSql } from '../events/preference-rules.ts'

export interface PushPolicy {
  /** Seconds an open stream has to ack a `high` event before it is pushed anyway. */
  highAckTimeoutS: number
  /** See Presence: how long a silent instance's streams still count. */
  presenceTtlS: number
}

/**
 * Which push service an endpoint belongs to: its scheme and authority. Stored with each planned push; the
 * dispatcher shares its slots out by it.
 */
const SERVICE_PATTERN = '^[a-z]+://[^/?#]+'

/** The recipient's push preferences for the event, in the plans below: devices are `s`, the event `e`. */
const preferences = pushPreferencesSql({
  tenant: sql`s.tenant`,
  userId: sql`s.user_id`,
  type: sql`e.type`,
  priority: sql`e.priority`,
  topics: sql`e.to_topics`,
})

/**
 * SQL that writes the push outbox rows of just-inserted events (`inserted`: a relation with the events'
 * id, tenant, type, priority and audience), as part of the publish statement, so a committed event always has
 * its pushes planned (and a rolled-back one never does). Returns the event id of each push planned. One row per
 * (event, device), by the push rule of SPEC 6:
 *   low: none, nor for an event of a type registered not to push (`may_push` false). urgent: every device, now.
 *   normal: devices of users with no open stream on a live instance, now. Users with open streams get a
 *     held-back row (`present_on`), checked after `presenceTtlS`: sent only if every instance that claimed
 *     their presence was in fact already dead (see PushDispatcher).
 *   high: like normal for absent users; users with open streams are pushed after `highAckTimeoutS`.
 * Every push is skipped at send time if the user acked the event meanwhile.
 * The recipient's preferences (events/preference-rules.ts pushPreferencesSql) come first: a push they rule out (a
 * `push: false` rule, the push switch off, a priority under their minimum) gets no row; an event they do not see
 * in the app (`inApp: false`) is pushed as to a user with no open stream. `urgent` ignores them unless the tenant's
 * defaults say otherwise. Quiet hours are the dispatcher's (push/quiet-hours.ts).
 * Who the recipients are is the publish statement's (`recipients`: rows of event_id, tenant, user_id; see
 * events/recipients.ts): the directory's roles and topics, else the user's current claims, and topic followers.
 */
export function planPushes(inserted: SQL, recipients: SQL, policy: PushPolicy): SQL {
  // Instances, alive by their heartbeat, on which the device's user has an open stream right now.
  const presentOn = sql`array(
    select p.instance_id from stream_presence p join instances i on i.id = p.instance_id
    where p.tenant = s.tenant and p.user_id = s.user_id
      and i.seen_at > now() - make_interval(secs => ${policy.presenceTtlS}))`
  return sql`
    insert into push_deliveries (event_id, subscription_id, tenant, user_id, service, next_attempt_at, present_on)
    select id, sub_id, tenant, user_id, substring(endpoint from ${SERVICE_PATTERN}),
      case
        when cardinality(present_on) = 0 or priority = 'urgent' then now()
        when priority = 'high' then now() + make_interval(secs => ${policy.highAckTimeoutS})
        else now() + make_interval(secs => ${policy.presenceTtlS})
      end,
      case when priority = 'normal' and cardinality(present_on) > 0 then present_on end
    from (
      select e.id, e.priority, s.id as sub_id, s.tenant, s.user_id, s.endpoint,
        case when ${preferences.inApp} then ${presentOn} else '{}'::text[] end as present_on
      from (
        -- The devices of the event's recipients, resolved and recorded by the publish statement
        -- (events/recipients.ts): named users, role holders, topic members and followers, the tenant's users.
        select r.event_id, s.id as sub_id
        from ${recipients} r
        join push_subscriptions s on s.tenant = r.tenant and s.user_id = r.user_id
      ) recipient
      join ${inserted} e on e.id = recipient.event_id
      join push_subscriptions s on s.id = recipient.sub_id
      ${preferences.joins}
      where e.priority <> 'low' and e.may_push
        and (s.expiration_time is null or s.expiration_time > now())
        and ${preferences.mayPush}
    ) planned
    returning event_id`
}

/**
 * The pushes of an edit or a recall (events/changes.ts), as SQL run in its statement.
 *
 * `cancel`: a recalled event's pushes not sent yet are skipped (`event recalled`). One a dispatcher has claimed
 * may be on its way: it is left to finish, and gets a recall after it (below).
 *
 * `plan`: to each device the event was pushed to (sent, or claimed and maybe on its way), the change is pushed
 * in turn: the edited event (sent as it stands when the push goes out), or its recall. The row's `event_id` is
 * the change's row of the log, which tells the dispatcher what to send (claims.ts); it replaces the earlier
 * push under the same Topic and notification tag (payload.ts). Under a `collapseKey`, only where this event is
 * the latest pushed (or to be pushed) with that key: the tag there shows a later event, which a change of this
 * one must not replace. A push of the event still pending needs nothing: it loads the event when it goes out.
 */
export const CHANGE_PUSHES: ChangePushes = {
  cancel: (recalled) => sql`
    update push_deliveries d set state = 'skipped', last_error = 'event recalled', updated_at = now()
    where d.event_id in (select r.id from ${recalled} r) and d.state = 'pending'
      and (d.claimed_until is null or d.claimed_until < now())
    returning d.id`,
  plan: (changes) => sql`
    insert into push_deliveries (event_id, subscription_id, tenant, user_id, service)
    select c.id, d.subscription_id, d.tenant, d.user_id, d.service
    from ${changes} c
    join push_deliveries d on d.event_id = c.ref_id
    join events e on e.id = c.ref_id
    where d.subscription_id is not null
      and (d.state = 'sent' or (d.state = 'pending' and d.claimed_until >= now()))
      and (e.collapse_key is null or not exists (
        select 1 from push_deliveries later_push join events later on later.id = later_push.event_id
        where later_push.subscription_id = d.subscription_id and later_push.event_id > e.id
          and later_push.state in ('sent', 'pending') and later.kind = 'event' and later.collapse_key = e.collapse_key))
    returning event_id`,
}

/** Pushes not yet sent, failed or skipped, across instances (the metrics' backlog). Served by the pending-rows index. */
export async function countPendingPushes(database: Database): Promise<number> {
  const [row] = await database.db.select({ n: count() }).from(pushDeliveries).where(eq(pushDeliveries.state, 'pending'))
  return row.n
}

/**
 * SQL that plans a nudge's pushes (`POST /v1/events/:id/nudge`): to every device of `users` (a JSON array of
 * the event's unread recipients), now, as the recipient's preferences allow a push of the event; quiet hours
 * hold it as any push. Marked `nudge`: the dispatcher sends it unless the user read the event meanwhile, and the
 * service worker alerts again even if the notification still shows. Returns a row per push planned.
 */
export function planNudgePushes(eventId: number, users: string): SQL {
  return sql`
    insert into push_deliveries (event_id, subscription_id, tenant, user_id, service, nudge)
    select e.id, s.id, s.tenant, s.user_id, substring(s.endpoint from ${SERVICE_PATTERN}), true
    from events e
    join push_subscriptions s on s.tenant = e.tenant
      and s.user_id in (select json_array_elements_text(${users}::json))
    ${preferences.joins}
    where e.id = ${eventId} and e.may_push
      and (s.expiration_time is null or s.expiration_time > now())
      and ${preferences.mayPush}
    returning id`
}
