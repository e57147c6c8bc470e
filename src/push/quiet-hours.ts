import { sql } from 'drizzle-orm'
import type { Database } from '../db/client.ts'
import type { EventRow } from '../db/schema.ts'
import { quietHoursApply } from '../events/preference-rules.ts'
import { effectivePreferencesOf, userKey } from '../events/preferences.ts'
import { quietUntil } from '../events/quiet-hours.ts'
import type { ClaimedPush, Subscription } from './claims.ts'

/** `last_error` of a push waiting for the end of its user's quiet hours (still `pending`: it will go out). */
export const WAITING_FOR_QUIET_HOURS = 'waiting for the end of quiet hours'
/** Why a waiting push was dropped: a later one with its collapseKey goes out instead, when the window ends. */
export const REPLACED_BY_LATER = 'replaced by a later push with the same collapseKey (quiet hours)'

/** A claimed push about to be sent. */
export interface PushToSend {
  claimed: ClaimedPush
  event: EventRow
  sub: Subscription
}

/** What quiet hours did with a batch: pushes now waiting (rescheduled), and pushes to skip (replaced). */
export interface Held {
  waiting: Set<number>
  replaced: Set<number>
}

/**
 * Quiet hours, as the push dispatcher applies them to pushes it has claimed, just before sending: a push whose user
 * is in a quiet window (events/quiet-hours.ts, by the user's own zone and by `now`, which tests move) is put back,
 * due when the window ends, its attempt not counted (a tenant's window follows the zone the user directory gives
 * the user, if any: `directoryTimeZones`). Then, as any push, it is skipped if its event was acked or read meanwhile.
 * Pushes of one device with one collapseKey collapse while they wait: only the latest goes out.
 * The window is computed here, in JavaScript, with the time-zone data that validated the zone.
 */
export class QuietHoursGate {
  constructor(
    private readonly database: Database,
    private readonly now: () => Date,
  ) {}

  async hold(pushes: readonly PushToSend[]): Promise<Held> {
    const held: Held = { waiting: new Set(), replaced: new Set() }
    const candidates = pushes.filter((p) => p.event.priority !== 'low')
    if (!candidates.length) return held
    const users = new Map(candidates.map((p) => [userKey(p.claimed.tenant, p.claimed.userId), p.claimed]))
    const preferences = await effectivePreferencesOf(
      this.database,
      [...users.values()].map((c) => ({ tenant: c.tenant, userId: c.userId })),
      { directoryTimeZones: true },
    )
    const now = this.now()
    const quiet: Array<PushToSend & { until: Date }> = []
    for (const p of candidates) {
      const prefs = preferences.get(userKey(p.claimed.tenant, p.claimed.userId))
      if (!prefs?.quietHours || !quietHoursApply(prefs, p.event)) continue
      const until = quietUntil(prefs.quietHours, now)
      if (until) quiet.push({ ...p, until })
    }
    if (!quiet.length) return held

    // Of one device's pushes with one collapseKey in this batch, the latest waits; the others are replaced now.
    const latest = new Map<string, PushToSend & { until: Date }>()
    const keep: Array<PushToSend & { until: Date }> = []
    for (const p of quiet) {
      if (p.event.collapseKey === null) {
        keep.push(p)
        continue
      }
      const key = JSON.stringify([p.sub.id, p.event.tenant, p.event.collapseKey])
      const other = latest.get(key)
      if (!other || other.event.id < p.event.id) {
        if (other) held.replaced.add(other.claimed.id)
        latest.set(key, p)
      } else held.replaced.add(p.claimed.id)
    }
    keep.push(...latest.values())

    const batch = keep.map((p) => ({
      id: p.claimed.id,
      until: p.until.toISOString(),
      event_id: p.claimed.eventId,
      sub_id: p.sub.id,
      tenant: p.event.tenant,
      collapse_key: p.event.collapseKey,
    }))
    // One statement: the batch's pushes wait (unless one of their device and collapseKey waits already for a later
    // event: then they are replaced), and the device's waiting pushes they replace are skipped.
    const superseded = await this.database.query<{ id: string | number }>(sql`
      with batch as (
        select * from json_to_recordset(${JSON.stringify(batch)}::json)
          as b(id bigint, until timestamptz, event_id bigint, sub_id bigint, tenant text, collapse_key text)
      ), superseded as (
        select b.id from batch b
        where b.collapse_key is not null and exists (
          select 1 from push_deliveries w join events we on we.id = w.event_id
          where w.subscription_id = b.sub_id and w.state = 'pending' and w.last_error = ${WAITING_FOR_QUIET_HOURS}
            and w.event_id > b.event_id and we.tenant = b.tenant and we.collapse_key = b.collapse_key
            and w.id not in (select id from batch))
      ), waiting as (
        update push_deliveries d
        set next_attempt_at = b.until, attempts = greatest(d.attempts - 1, 0), claimed_by = null,
          claimed_until = null, present_on = null, last_error = ${WAITING_FOR_QUIET_HOURS}, updated_at = now()
        from batch b
        where d.id = b.id and b.id not in (select id from superseded)
        returning d.id
      ), replaced as (
        update push_deliveries w
        set state = 'skipped', last_error = ${REPLACED_BY_LATER}, claimed_by = null, claimed_until = null,
          updated_at = now()
        from events we, batch b
        where we.id = w.event_id and w.subscription_id = b.sub_id and w.state = 'pending'
          and w.last_error = ${WAITING_FOR_QUIET_HOURS} and w.event_id < b.event_id
          and b.collapse_key is not null and we.tenant = b.tenant and we.collapse_key = b.collapse_key
          and b.id not in (select id from superseded) and w.id not in (select id from batch)
        returning w.id
      )
      select id from superseded`)
    const skipped = new Set(superseded.map((r) => Number(r.id)))
    for (const p of keep) {
      if (skipped.has(p.claimed.id)) held.replaced.add(p.claimed.id)
      else held.waiting.add(p.claimed.id)
    }
    return held
  }
}
