import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import { enqueueWebhooks } from '../webhooks/outbox.ts'
import { isoText } from '../wire-format.ts'
import { PeriodicPass } from './periodic-pass.ts'

/** Look for due escalations this often: an `event.unread` is enqueued within about this long after `after`. */
export const ESCALATION_POLL_MS = 1_000
/** Escalations settled per statement: a pass goes on while there are more. */
const ESCALATIONS_PER_STATEMENT = 100

/**
 * The lowest event id with an escalation due by `dueBy`; null when none is due, as at most polls. The statement
 * that settles them names only the ids from there on, so PostgreSQL plans it over the log's blocks that can hold
 * them (log-blocks.ts), not over every block of the four tables it reads. PostgreSQL makes a new plan at each
 * connection's first five runs of a statement and again after anything invalidates it (an ANALYZE, a new block):
 * over 91 daily blocks (psql, blocks empty), the settling statement took 41-147 ms to plan and 20-30 ms to run
 * without the bound, 1.2-1.5 ms and 0.2 ms with it; this one takes 4-6 ms to plan.
 */
const firstDue = (dueBy: Date) => sql`
  select min(event_id)::text as first from event_recipients
  where escalation = 'pending' and escalate_at <= ${dueBy.toISOString()}::timestamptz`

/**
 * One statement that settles the escalations due by `dueBy` (their events are `firstEventId` or later, from
 * firstDue): each is claimed (`for update skip locked`, so instances share them), marked `done` (or `cancelled`
 * when its event was recalled), and, unless recalled, every recipient who has still not read (acked) the event
 * gets one `event.unread` webhook. Claim, mark and messages
 * commit together: an escalation runs exactly once across instances and restarts, and its message ids (event and
 * user) make a second enqueue of the same recipient a no-op.
 */
export const settleDue = (dueBy: Date, firstEventId: string) => sql`
  with due as (
    select er.event_id, er.tenant, er.user_ids, er.escalate_unless from event_recipients er
    where er.escalation = 'pending' and er.escalate_at <= ${dueBy.toISOString()}::timestamptz
      and er.event_id >= ${firstEventId}::bigint
    order by er.escalate_at limit ${ESCALATIONS_PER_STATEMENT}
    for update skip locked
  ), settled as (
    update event_recipients er set escalation = case when e.recalled_at is null then 'done' else 'cancelled' end
    from due join events e on e.id = due.event_id and e.id >= ${firstEventId}::bigint
    where er.event_id = due.event_id and er.event_id >= ${firstEventId}::bigint
    returning er.event_id
  ), reported as (${enqueueWebhooks(
    'event.unread',
    sql`select due.tenant, due.event_id || ':' || u.user_id as msg_key,
      json_build_object('eventId', due.event_id::text, 'tenant', due.tenant, 'userId', u.user_id,
        'unless', due.escalate_unless,
        'event', json_build_object('id', e.id::text, 'type', e.type, 'title', e.title, 'body', e.body,
          'priority', e.priority, 'createdAt', ${isoText(sql`e.created_at`)}),
        'user', case when d.user_id is null then null
          else json_build_object('displayName', d.display_name, 'locale', d.locale) end) as data
    from due
    join events e on e.id = due.event_id and e.id >= ${firstEventId}::bigint and e.recalled_at is null
    cross join lateral unnest(due.user_ids) as u(user_id)
    left join receipts rc on rc.tenant = due.tenant and rc.user_id = u.user_id and rc.event_id = due.event_id
      and rc.event_id >= ${firstEventId}::bigint
    left join directory_users d on d.tenant = due.tenant and d.user_id = u.user_id
    where (case when due.escalate_unless = 'acked' then rc.acked_at else rc.read_at end) is null`,
  )})
  select (select count(*) from settled) as settled, (select count(*) from reported) as reported`

export interface EscalatorOptions {
  database: Database
  log: FastifyBaseLogger
  /** The escalator's clock: an escalation is due when its time is at or before `now()`. Tests move it. */
  now: () => Date
  /** Webhooks were enqueued: the webhook dispatcher may look now. */
  onReported?: () => void
  pollMs?: number
}

/**
 * Runs the escalations of published events (`escalate: {after, unless}`) when they are due: `event.unread`
 * webhooks for the recipients still unread (unacked). Every instance runs one; passes here never overlap.
 */
export class Escalator {
  private readonly passes: PeriodicPass<number>

  constructor(private readonly options: EscalatorOptions) {
    this.passes = new PeriodicPass(
      () => this.settleAll(),
      options.pollMs ?? ESCALATION_POLL_MS,
      (err) => options.log.warn({ err }, 'escalating unread events failed; retrying at the next poll'),
    )
  }

  start(): void {
    this.passes.start()
  }

  /** Stops polling; resolves once a pass in flight has finished. */
  stop(): Promise<void> {
    return this.passes.stop()
  }

  /** One pass, after the one in flight: settles every escalation due by the clock; resolves with the messages. */
  runDue(): Promise<number> {
    return this.passes.runNow()
  }

  private async settleAll(): Promise<number> {
    const { database, now, onReported } = this.options
    const dueBy = now()
    let reported = 0
    while (!this.passes.stopped) {
      const [due] = await database.query<{ first: string | null }>(firstDue(dueBy))
      if (!due?.first) break
      const [row] = await database.query<{ settled: string | number; reported: string | number }>(
        settleDue(dueBy, due.first),
      )
      reported += Number(row.reported)
      if (Number(row.settled) < ESCALATIONS_PER_STATEMENT) break
    }
    if (reported) onReported?.()
    return reported
  }
}
