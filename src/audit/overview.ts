import { type SQL, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import type { LiveEvent } from '../events/live.ts'
import { PeriodicPass } from '../events/periodic-pass.ts'
import { liveEventJson } from '../wire-format.ts'

/**
 * The topic of the live admin overview: only a token with the `admin` scope may follow it (routes/stream.ts),
 * and it carries the `herald.overview` live events this module sends.
 */
export const ADMIN_TOPIC = 'herald:admin'
/** The type of the overview's live events. */
export const OVERVIEW_TYPE = 'herald.overview'
/** How often the overview is computed and sent. */
export const OVERVIEW_INTERVAL_MS = 2_000
/** The activity counts are over this many seconds: rates per minute. */
const ACTIVITY_WINDOW_S = 60
/**
 * Deliveries, pushes and reads counted are of the events published within this many seconds: they are reached
 * by event id, from the tenant's recent events (the `(tenant, created_at)` index), never by scanning those tables.
 * Reads of older events do not count in the rate.
 */
const ACTIVITY_EVENTS_S = 3_600
/** The latest events shown, with their roll-call totals. */
const LATEST_EVENTS = 5

/** One tenant's overview, as the admin page gets it (the `data` of a `herald.overview` live event). */
export interface Overview {
  at: string
  online: { openStreams: number; onlineUsers: number }
  /** Over the last minute; deliveries, pushes and reads of events published within the hour. */
  lastMinute: {
    published: number
    deliveredOnStreams: number
    pushed: number
    pushFailures: number
    read: number
  }
  /** Pushes failed for good, of the events published within the hour. */
  pushFailuresLastHour: number
  latest: Array<{
    id: string
    type: string
    title: string
    createdAt: string
    recalled: boolean
    recipients: number
    delivered: number
    pushed: number
    read: number
    acked: number
  }>
}

interface OverviewRow {
  tenant: string
  overview: Overview | string
}

/**
 * The overviews of several tenants in one statement. Per tenant: presence across live instances (by the
 * presence key), the last minute's activity among its events of the last hour (each table reached by event id),
 * and its latest events with their roll-call totals (recipients as the roll-call counts them: event_recipients,
 * or `to_users`).
 */
export async function overviewsOf(
  database: Database,
  tenants: readonly string[],
  presenceTtlS: number,
): Promise<Map<string, Overview>> {
  const rows = await database.query<OverviewRow>(sql`
    with t as (
      select json_array_elements_text(${JSON.stringify(tenants)}::json) as tenant
    ), recent as materialized (
      select e.id, e.tenant, e.created_at from t
      join events e on e.tenant = t.tenant and e.kind = 'event'
        and e.created_at > now() - make_interval(secs => ${ACTIVITY_EVENTS_S})
    )
    select t.tenant, json_build_object(
      'at', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
      'online', (
        select json_build_object('openStreams', coalesce(sum(p.streams), 0), 'onlineUsers', count(distinct p.user_id))
        from stream_presence p
        join instances i on i.id = p.instance_id and i.seen_at > now() - make_interval(secs => ${presenceTtlS})
        where p.tenant = t.tenant),
      'lastMinute', (
        select json_build_object(
          'published', count(*) filter (where e.created_at > now() - make_interval(secs => ${ACTIVITY_WINDOW_S})),
          'deliveredOnStreams', coalesce(sum(a.delivered), 0),
          'pushed', coalesce(sum(a.pushed), 0),
          'pushFailures', coalesce(sum(a.failed), 0),
          'read', coalesce(sum(a.read), 0))
        from recent e cross join lateral (${activityOf(sql`e.id`)}) a
        where e.tenant = t.tenant),
      'pushFailuresLastHour', (
        select count(*) from recent e join push_deliveries pd on pd.event_id = e.id and pd.state = 'failed'
        where e.tenant = t.tenant),
      'latest', coalesce((
        select json_agg(json_build_object(
          'id', l.id::text, 'type', l.type, 'title', l.title,
          'createdAt', to_char(l.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
          'recalled', l.recalled_at is not null,
          'recipients', r.recipients, 'delivered', r.delivered, 'pushed', r.pushed, 'read', r.read, 'acked', r.acked)
          order by l.id desc)
        from (
          select id, type, title, created_at, recalled_at, to_users from events
          where tenant = t.tenant and kind = 'event' order by created_at desc, id desc limit ${LATEST_EVENTS}
        ) l cross join lateral (${rollCallTotals(sql`t.tenant`, sql`l.id`, sql`l.to_users`)}) r), '[]'::json)
    ) as overview
    from t`)
  return new Map(rows.map((r) => [r.tenant, typeof r.overview === 'string' ? JSON.parse(r.overview) : r.overview]))
}

/** What happened in the last minute to one event: deliveries on streams, pushes sent and failed, reads. */
const activityOf = (eventId: SQL) => sql`
  select
    (select count(*) from stream_deliveries sd cross join lateral unnest(sd.user_ids)
      where sd.event_id = ${eventId} and sd.delivered_at > now() - make_interval(secs => ${ACTIVITY_WINDOW_S})) as delivered,
    (select count(*) from push_deliveries pd where pd.event_id = ${eventId} and pd.state = 'sent'
      and pd.updated_at > now() - make_interval(secs => ${ACTIVITY_WINDOW_S})) as pushed,
    (select count(*) from push_deliveries pd where pd.event_id = ${eventId} and pd.state = 'failed'
      and pd.updated_at > now() - make_interval(secs => ${ACTIVITY_WINDOW_S})) as failed,
    (select count(*) from receipts rc where rc.event_id = ${eventId}
      and rc.read_at > now() - make_interval(secs => ${ACTIVITY_WINDOW_S})) as read`

/** An event's roll-call totals, as events/recipients.ts recipientTotals counts them. */
const rollCallTotals = (tenant: SQL, eventId: SQL, toUsers: SQL) => sql`
  select count(*) as recipients,
    count(*) filter (where u.user_id in (
      select unnest(sd.user_ids) from stream_deliveries sd where sd.event_id = ${eventId})) as delivered,
    count(*) filter (where u.user_id in (
      select pd.user_id from push_deliveries pd where pd.event_id = ${eventId} and pd.state = 'sent')) as pushed,
    count(rc.read_at) as read, count(rc.acked_at) as acked
  from unnest(coalesce((select user_ids from event_recipients where event_id = ${eventId}), ${toUsers})) as u(user_id)
  left join receipts rc on rc.tenant = ${tenant} and rc.user_id = u.user_id and rc.event_id = ${eventId}`

/** What the overview pass needs of the instance. */
export interface OverviewDeps {
  database: Database
  log: FastifyBaseLogger
  presenceTtlS: number
  /** Tenants with an open stream on this instance that follows ADMIN_TOPIC. */
  tenantsFollowing: (topic: string) => string[]
  /** To this instance's matching streams (the hub's dispatchLive): each instance serves its own admins. */
  dispatchLive: (e: LiveEvent) => void
}

/**
 * Every OVERVIEW_INTERVAL_MS, on each instance: the overview of each tenant with an admin stream here following
 * ADMIN_TOPIC, computed in one statement for all of them, sent to those streams as a `herald.overview` live
 * event. An instance with no such stream runs no query.
 */
export class OverviewPass {
  private readonly pass: PeriodicPass<number>

  constructor(private readonly deps: OverviewDeps) {
    this.pass = new PeriodicPass(
      () => this.run(),
      OVERVIEW_INTERVAL_MS,
      (err) => deps.log.warn({ err }, 'the admin overview failed; retrying at the next turn'),
    )
  }

  start(): void {
    this.pass.start()
  }

  stop(): Promise<void> {
    return this.pass.stop()
  }

  /** One pass now (tests, and a new admin stream that should not wait 2 s); resolves with the tenants sent to. */
  runNow(): Promise<number> {
    return this.pass.runNow()
  }

  private async run(): Promise<number> {
    const tenants = this.deps.tenantsFollowing(ADMIN_TOPIC)
    if (!tenants.length) return 0
    const overviews = await overviewsOf(this.deps.database, tenants, this.deps.presenceTtlS)
    const at = new Date()
    for (const [tenant, overview] of overviews) {
      this.deps.dispatchLive({
        tenant,
        type: OVERVIEW_TYPE,
        toUsers: [],
        toRoles: [],
        toTopics: [ADMIN_TOPIC],
        toTenant: false,
        priority: 'normal',
        json: liveEventJson({
          tenant,
          type: OVERVIEW_TYPE,
          title: 'Overview',
          body: null,
          dataJson: JSON.stringify(overview),
          priority: 'normal',
          url: null,
          collapseKey: OVERVIEW_TYPE,
          actionsJson: null,
          icon: null,
          image: null,
          badge: null,
          actor: 'herald',
          at,
        }),
      })
    }
    return overviews.size
  }
}
