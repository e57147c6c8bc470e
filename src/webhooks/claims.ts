import { type SQL, sql } from 'drizzle-orm'
import { deleteInBatches } from '../db/batched-delete.ts'
import type { Database } from '../db/client.ts'

// The webhook outbox's SQL, as the dispatcher (dispatcher.ts) runs it: claiming due deliveries, recording their
// outcomes and the endpoints' health, handing claims back, pruning. When and how much is the dispatcher's call.

/** A webhook_deliveries row this instance has claimed, with its endpoint's URL and secret. */
export interface ClaimedDelivery {
  id: number
  endpointId: number
  url: string
  secret: string
  msgId: string
  payload: string
  /** Attempts including this one. */
  attempts: number
}

/** What an attempt came to, to be written to its row (and to its endpoint's health). */
export interface DeliveryOutcome {
  id: number
  endpointId: number
  state: 'sent' | 'pending' | 'failed'
  lastStatus: number | null
  lastError: string | null
  /** `pending`: due again this long after now. */
  retryInMs?: number
}

export interface ClaimsOptions {
  instanceId: string
  /** An instance whose heartbeat is older than this is dead: its claims are taken over at once (PRESENCE_TTL_S). */
  instanceTtlS: number
  /** A claim lasts this long; then another instance may take the row over. */
  claimS: number
  /** An endpoint failing for longer than this is disabled (WEBHOOK_DISABLE_AFTER_H). */
  disableAfterS: number
  /** A clock a test moves (AppOptions.clock): "now" is the later of it and the database's. */
  clock?: () => Date
}

export class WebhookClaims {
  constructor(
    private readonly database: Database,
    private readonly options: ClaimsOptions,
  ) {}

  /** "Now": the database's clock, or the test clock when it is later. */
  private now(): SQL {
    const { clock } = this.options
    return clock ? sql`greatest(now(), ${clock().toISOString()}::timestamptz)` : sql`now()`
  }

  /**
   * Claims due rows of enabled endpoints, oldest first: pending, due, and not claimed (or their claim expired,
   * or its instance stopped beating), at most `room[endpoint]` (else `perEndpoint`) per endpoint. Counts the
   * attempt.
   */
  async claim(limit: number, room: Record<string, number>, perEndpoint: number): Promise<ClaimedDelivery[]> {
    const { instanceId, instanceTtlS, claimS } = this.options
    const rooms = JSON.stringify(room)
    const rows = await this.database.query<{
      id: string | number
      endpoint_id: string | number
      url: string
      secret: string
      msg_id: string
      payload: string
      attempts: number
    }>(sql`
      with candidates as (
        select d.id, d.endpoint_id, d.next_attempt_at
        from webhook_deliveries d
        join webhook_endpoints w on w.id = d.endpoint_id and w.disabled_at is null
        where d.state = 'pending' and d.next_attempt_at <= ${this.now()}
          and (d.claimed_until is null or d.claimed_until < now() or not exists (
            select 1 from instances i
            where i.id = d.claimed_by and i.seen_at > now() - make_interval(secs => ${instanceTtlS})))
          and coalesce((${rooms}::jsonb ->> d.endpoint_id::text)::int, ${perEndpoint}) > 0
        order by d.next_attempt_at
        limit ${limit}
        for update of d skip locked),
      fitting as (
        select id from (
          select id, endpoint_id,
            row_number() over (partition by endpoint_id order by next_attempt_at, id) as n
          from candidates) c
        where n <= coalesce((${rooms}::jsonb ->> endpoint_id::text)::int, ${perEndpoint}))
      update webhook_deliveries d
      set claimed_by = ${instanceId}, claimed_until = now() + make_interval(secs => ${claimS}),
          attempts = d.attempts + 1, updated_at = now()
      from fitting f, webhook_endpoints w
      where d.id = f.id and w.id = d.endpoint_id
      returning d.id, d.endpoint_id, w.url, w.secret, d.msg_id, d.payload, d.attempts`)
    return rows.map((r) => ({
      id: Number(r.id),
      endpointId: Number(r.endpoint_id),
      url: r.url,
      secret: r.secret,
      msgId: r.msg_id,
      payload: r.payload,
      attempts: Number(r.attempts),
    }))
  }

  /**
   * Writes outcomes in one statement, releasing their claims (a row another instance took over meanwhile is left
   * to it), and keeps each endpoint's health: the last outcome of the batch decides. A success clears
   * `failing_since`; a failure sets it if unset, and disables the endpoint once it is older than `disableAfterS`.
   */
  async record(outcomes: readonly DeliveryOutcome[], disabledReason: (lastError: string) => string): Promise<void> {
    const { instanceId, disableAfterS } = this.options
    const deliveries = outcomes.map((o) => ({
      id: o.id,
      state: o.state,
      last_status: o.lastStatus,
      last_error: o.lastError,
      retry_ms: o.retryInMs ?? null,
    }))
    const last = new Map<number, DeliveryOutcome>()
    for (const o of outcomes) last.set(o.endpointId, o)
    const endpoints = [...last.values()].map((o) => ({
      id: o.endpointId,
      ok: o.state === 'sent',
      reason: o.state === 'sent' ? null : disabledReason(o.lastError ?? 'unknown'),
    }))
    const now = this.now()
    await this.database.query(sql`
      with outcomes as (
        select * from json_to_recordset(${JSON.stringify(deliveries)}::json)
          as o(id bigint, state text, last_status int, last_error text, retry_ms float8)
      ), written as (
        update webhook_deliveries d
        set state = o.state, last_status = o.last_status, last_error = o.last_error,
            next_attempt_at = case when o.state = 'pending'
              then ${now} + make_interval(secs => o.retry_ms / 1000) else d.next_attempt_at end,
            claimed_by = null, claimed_until = null, updated_at = now()
        from outcomes o
        where d.id = o.id and d.claimed_by = ${instanceId}
        returning d.id
      ), health as (
        update webhook_endpoints w
        set failing_since = case when e.ok then null else coalesce(w.failing_since, ${now}) end,
            disabled_at = case
              when not e.ok and w.disabled_at is null
                and coalesce(w.failing_since, ${now}) <= ${now} - make_interval(secs => ${disableAfterS})
              then ${now} else w.disabled_at end,
            disabled_reason = case
              when not e.ok and w.disabled_at is null
                and coalesce(w.failing_since, ${now}) <= ${now} - make_interval(secs => ${disableAfterS})
              then e.reason else w.disabled_reason end
        from json_to_recordset(${JSON.stringify(endpoints)}::json) as e(id bigint, ok boolean, reason text)
        where w.id = e.id
        returning w.id
      )
      select (select count(*) from written) as written, (select count(*) from health) as endpoints`)
  }

  /**
   * Releases this instance's claims (at shutdown). Those in `notStarted` were claimed but never attempted: their
   * attempt is not counted. Others still pending were in flight: they will be attempted again.
   */
  async handBack(notStarted: readonly number[]): Promise<void> {
    const { instanceId } = this.options
    await this.database.query(sql`
      update webhook_deliveries
      set claimed_by = null, claimed_until = null,
          attempts = attempts - case when id = any(array(
            select json_array_elements_text(${JSON.stringify(notStarted)}::json)::bigint)) then 1 else 0 end
      where claimed_by = ${instanceId} and state = 'pending'`)
  }

  /** Deletes sent and failed deliveries last changed more than `retentionDays` ago. Returns how many. */
  prune(retentionDays: number): Promise<number> {
    return deleteInBatches(
      this.database,
      'webhook_deliveries',
      sql`state <> 'pending' and updated_at < now() - make_interval(days => ${retentionDays})`,
    )
  }
}
