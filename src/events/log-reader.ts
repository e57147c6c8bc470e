import { sql } from 'drizzle-orm'
import type { Database } from '../db/client.ts'
import { events } from '../db/schema.ts'
import { logFrameSqlFor } from '../wire-format.ts'
import type { RecentLog } from './recent-log.ts'
import { type Viewer, visibleTo } from './visibility.ts'

/** Where a client resumes from: see LogReader.resumePoint. */
export type ResumePoint = 'kept' | 'gone' | 'unknown'

/**
 * The rows of the log a replay sends: events as they stand (a recalled one is left out: its recall follows),
 * recalls, and the edits that made an event what it is now. An edit that a later one superseded, or of an
 * event since recalled, is left out (`superseded`, set by that edit or recall): the client ends at the event's
 * current version without passing through older ones.
 */
const replayable = sql`(
  (${events.kind} = 'event' and ${events.recalledAt} is null)
  or ${events.kind} = 'delete'
  or (${events.kind} = 'update' and not ${events.superseded}))`

/** A row of a replay: its id and its SSE frame, built by the database. */
export interface ReplayedEvent {
  id: string | number
  frame: string
}

/** The reads of the event log that streams make: where a resume starts, and the replayed events' frames. */
export class LogReader {
  constructor(
    private readonly database: Database,
    /** The newest rows, in memory (the log tail keeps them): replays and resume points among them read nothing. */
    readonly recent?: RecentLog,
  ) {}

  /**
   * Where a client resumes from: `kept` (the event is still in the log), `gone` (expired or pruned: events
   * after it may have been lost to retention), or `unknown` (larger than any id the log ever issued).
   * 0 means "from the beginning" and is always kept. The largest id ever issued comes from the id sequence,
   * never from the surviving rows: once the newest events are pruned, their ids are still `gone`, not unknown
   * (which would replay the whole history to a client that had seen it).
   */
  async resumePoint(id: number): Promise<ResumePoint> {
    if (id === 0) return 'kept'
    const known = this.recent?.resumePoint(id)
    if (known) return known
    const [row] = await this.database.db
      .select({
        kept: sql<boolean>`exists (select 1 from ${events} where ${events.id} = ${id} and ${events.expiresAt} > now())`,
        issued: sql<string | number | null>`pg_sequence_last_value(pg_get_serial_sequence('events', 'id')::regclass)`,
      })
      .from(sql`(select 1) as one`)
    if (row.kept) return 'kept'
    return row.issued !== null && id <= Number(row.issued) ? 'gone' : 'unknown'
  }

  /**
   * The first event id in (after, upTo] of any of the tenants, or upTo + 1 if there is none: one look at the
   * (tenant, id) index per tenant (a director's stream covers several).
   */
  async firstIdAfter(tenants: readonly string[], after: number, upTo: number): Promise<number> {
    const [row] = await this.database.query<{ first: string | number | null }>(
      sql`select min(f.first) as first from unnest(array[${sql.join(
        tenants.map((t) => sql`${t}`),
        sql`, `,
      )}]::text[]) as t(tenant),
        lateral (select min(${events.id}) as first from ${events}
          where ${events.tenant} = t.tenant and ${events.id} > ${after} and ${events.id} <= ${upTo}) as f`,
    )
    return row.first === null ? upTo + 1 : Number(row.first)
  }

  /**
   * The first `limit` rows in (from, to] that `viewer` may see, in id order, as frames: events, and the edits and
   * recalls (`replayable`) of events it may see, which have their events' audience.
   */
  replayWindow(viewer: Viewer, from: number, to: number, limit: number): Promise<ReplayedEvent[]> {
    return this.database.query<ReplayedEvent>(sql`
      select ${events.id} as id, ${logFrameSqlFor(viewer.locale)} as frame
      from ${events}
      where ${visibleTo(viewer)} and ${replayable} and ${events.id} > ${from} and ${events.id} <= ${to}
      order by ${events.id} limit ${limit}`)
  }
}
