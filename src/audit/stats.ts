import { sql } from 'drizzle-orm'
import type { Database } from '../db/client.ts'
import { InvalidFieldsError } from '../service-errors.ts'
import { checkOrder, instantOf } from './period.ts'

/** The longest period one request may cover. */
export const MAX_STATS_DAYS = 92
/** Without `from`: the last 7 UTC days, today's included. */
export const DEFAULT_STATS_DAYS = 7
const DAY_MS = 86_400_000

/** What became of a tenant's events of one type published on one UTC day. */
export interface DayStats {
  /** `YYYY-MM-DD`, UTC. */
  day: string
  type: string
  published: number
  /** Recipients whose open streams were sent the event (live or in a replay), summed over the events. */
  deliveredOnStreams: number
  /** Pushes a push service accepted (per device). */
  pushed: number
  /** Pushes that failed for good (per device). */
  pushFailures: number
  acked: number
  read: number
  /** Median of read_at - created_at over the reads, in seconds; null without reads. */
  medianTimeToReadS: number | null
}

export interface Stats {
  from: Date
  to: Date
  days: DayStats[]
  now: Online
}

/** Across every live instance. */
export interface Online {
  openStreams: number
  onlineUsers: number
}

export interface StatsQuery {
  from?: string
  to?: string
  type?: string
}

/** The period asked for: [from, to), at most MAX_STATS_DAYS; by default the last DEFAULT_STATS_DAYS UTC days. */
export function statsPeriod(query: StatsQuery, now = new Date()): { from: Date; to: Date } {
  const to = query.to === undefined ? now : instantOf(query.to, 'to')
  const from =
    query.from === undefined
      ? new Date(Math.floor(to.getTime() / DAY_MS) * DAY_MS - (DEFAULT_STATS_DAYS - 1) * DAY_MS)
      : instantOf(query.from, 'from')
  checkOrder(from, to)
  if (to.getTime() - from.getTime() > MAX_STATS_DAYS * DAY_MS) {
    throw new InvalidFieldsError([
      { path: 'querystring.to', message: `must be at most ${MAX_STATS_DAYS} days after \`from\`` },
    ])
  }
  return { from, to }
}

interface DayRow {
  day: string
  type: string
  published: string | number
  delivered: string | number
  pushed: string | number
  push_failures: string | number
  acked: string | number
  read: string | number
  median_s: string | number | null
}

/**
 * A tenant's statistics per UTC day and event type over [from, to). The events come from the
 * `(tenant, created_at)` index; their stream deliveries, pushes and receipts are each reached by event id (a
 * lateral subquery per event on that table's event index), so no table is scanned whole however large it is.
 * The cost grows with the tenant's events in the period (bench scenario `stats` measures it).
 */
export async function statsOf(
  database: Database,
  tenant: string,
  period: { from: Date; to: Date },
  type: string | undefined,
  presenceTtlS: number,
): Promise<Stats> {
  const [rows, now] = await Promise.all([
    database.query<DayRow>(sql`
      with ev as materialized (
        select id, type, created_at, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD') as day
        from events
        where tenant = ${tenant} and created_at >= ${period.from.toISOString()}::timestamptz
          and created_at < ${period.to.toISOString()}::timestamptz and kind = 'event'
          ${type === undefined ? sql`` : sql`and type = ${type}`}
      ), per_event as (
        select ev.day, ev.type, s.users, p.sent, p.failed, r.acked, r.read, r.to_read
        from ev
        cross join lateral (
          select count(distinct u.user_id) as users
          from stream_deliveries sd cross join lateral unnest(sd.user_ids) as u(user_id)
          where sd.event_id = ev.id) s
        cross join lateral (
          select count(*) filter (where state = 'sent') as sent, count(*) filter (where state = 'failed') as failed
          from push_deliveries where event_id = ev.id) p
        -- One aggregate per event, so the planner keeps it a lookup by event id (a plain lateral join it may turn
        -- into a hash join over the whole receipts table); the times to read go on, as an array, to the median.
        cross join lateral (
          select count(acked_at) as acked, count(read_at) as read,
            array_agg(extract(epoch from read_at - ev.created_at)) filter (where read_at is not null) as to_read
          from receipts where event_id = ev.id) r
      ), totals as (
        select day, type, count(*) as published, sum(users) as delivered, sum(sent) as pushed,
          sum(failed) as push_failures, sum(acked) as acked, sum(read) as read
        from per_event group by day, type
      ), medians as (
        select day, type, percentile_cont(0.5) within group (order by s) as median_s
        from per_event cross join lateral unnest(to_read) as s
        group by day, type
      )
      select t.*, m.median_s from totals t left join medians m on m.day = t.day and m.type = t.type
      order by t.day, t.type`),
    onlineOf(database, tenant, presenceTtlS),
  ])
  return {
    ...period,
    days: rows.map((r) => ({
      day: r.day,
      type: r.type,
      published: Number(r.published),
      deliveredOnStreams: Number(r.delivered),
      pushed: Number(r.pushed),
      pushFailures: Number(r.push_failures),
      acked: Number(r.acked),
      read: Number(r.read),
      medianTimeToReadS: r.median_s === null ? null : Math.round(Number(r.median_s) * 1000) / 1000,
    })),
    now,
  }
}

/** The tenant's open streams and users online, across the instances alive now (stream_presence). */
export async function onlineOf(database: Database, tenant: string, presenceTtlS: number): Promise<Online> {
  const [row] = await database.query<{ streams: string | number; users: string | number }>(sql`
    select coalesce(sum(p.streams), 0) as streams, count(distinct p.user_id) as users
    from stream_presence p
    join instances i on i.id = p.instance_id and i.seen_at > now() - make_interval(secs => ${presenceTtlS})
    where p.tenant = ${tenant}`)
  return { openStreams: Number(row.streams), onlineUsers: Number(row.users) }
}
