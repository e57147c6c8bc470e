import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import type { EventRow } from '../db/schema.ts'
import type { RecentLog } from './recent-log.ts'

/** Rows read per query; a burst of publishes costs one query per this many events. */
const PAGE_SIZE = 1_000
/** While a gap waits on an open transaction, look again this soon. */
const GAP_RECHECK_MS = 5
/** After a failed read (database down), wait this long before the next. */
const ERROR_BACKOFF_MS = 1_000

/**
 * Every publishing transaction holds this advisory lock (shared: publishers never wait for each other)
 * from before it takes event ids until it ends. Its holders are exactly the publishes in flight.
 */
export const PUBLISH_LOCK = { classId: 727_140, objId: 2 } as const

interface PendingGap {
  /** Largest missing id this record covers. */
  upTo: number
  /** Publishing transactions (virtual transaction ids) in flight when the gap was seen. */
  holders?: string[]
}

/** An `events` row as the drivers return it from raw SQL (`select *`): eventRowOf makes an EventRow of it. */
export interface TailRow {
  id: number | string
  tenant: string
  type: string
  title: string
  body: string | null
  data_json: string | null
  priority: EventRow['priority']
  url: string | null
  collapse_key: string | null
  actions_json: string | null
  icon: string | null
  image: string | null
  badge: string | null
  actor: string
  kind: EventRow['kind']
  ref_id: number | string | null
  revision: number | string
  recalled_at: Date | string | null
  to_users: string[]
  to_roles: string[]
  to_topics: string[]
  to_tenant: boolean
  localized_json: string | null
  in_inbox: boolean
  may_push: boolean
  superseded: boolean
  created_at: Date | string
  expires_at: Date | string
}

/**
 * Follows the event table in id order and hands each committed event to `deliver` exactly once, in order.
 *
 * Publishing transactions may commit out of id order: id 11 can be visible while id 10 is still in flight.
 * Every publish holds PUBLISH_LOCK (shared) from before it takes ids until it commits or rolls back, so a
 * missing id below a visible one belongs to a publish that was in flight when we looked. We stop at such a
 * gap and note the lock's holders; once all of them have finished, one more read settles it: an id still
 * missing then was rolled back and is skipped. Unrelated long transactions never hold us up.
 * `cursor` is therefore a watermark: every event at or below it is settled and was delivered.
 */
export class LogTail {
  cursor = 0
  private pendingGap: PendingGap | undefined
  /** Missing ids at or below this are known to be rolled back. */
  private settledUpTo = 0
  private running = false
  private again = false
  /** Callers of sync(): each waits for a read that began at or after its `since`. */
  private waiters: Array<{ since: number; resolve: () => void }> = []
  /** When the last read that ran to its end began (performance.now()). */
  private settledFrom = Number.NEGATIVE_INFINITY
  private timer: NodeJS.Timeout | undefined
  private pollTimer: NodeJS.Timeout | undefined
  private stopped = false
  /** Rows this instance's publishes committed since the last turn of the event loop (offer()). */
  private offered: EventRow[] = []
  private offerPending = false

  constructor(
    private readonly database: Database,
    /** May return a promise: the tail reads on once it settles (the hub's fan-outs are behind). */
    private readonly deliver: (rows: EventRow[]) => void | Promise<void>,
    private readonly log: FastifyBaseLogger,
    private readonly pollMs: number,
    /** Kept as the tail's copy of the newest rows: replays of resumes among them read no database. */
    readonly recent?: RecentLog,
  ) {}

  /** Sets the cursor at the end of the log once every publish in flight right now has finished. */
  async start(): Promise<void> {
    const [first] = await this.database.query<{ max: string | number | null }>(sql`select max(id) as max from events`)
    const holders = await this.publishesInFlight()
    for (let waited = 0; holders.length && waited < 30_000; waited += 10) {
      const now = new Set(await this.publishesInFlight())
      if (!holders.some((h) => now.has(h))) break
      await sleep(10)
    }
    this.cursor = Number(first.max ?? 0)
    this.settledUpTo = this.cursor
    this.recent?.reset(this.cursor)
    this.pollTimer = setInterval(() => this.wake(), this.pollMs)
    this.pollTimer.unref()
  }

  stop() {
    this.stopped = true
    clearInterval(this.pollTimer)
    clearTimeout(this.timer)
    for (const w of this.waiters.splice(0)) w.resolve()
  }

  /** Something was committed: read the log soon. Calls during a read coalesce into one more read. */
  wake(): void {
    if (this.stopped) return
    if (this.running) {
      this.again = true
      return
    }
    void this.run()
  }

  /**
   * A publish of this instance committed these rows. If the tail is idle and they follow its cursor with no id
   * missing, it delivers them as its read would have, without reading them back: an event published at a quiet
   * moment reaches its streams a database round trip sooner (1.5 ms at the median, more when the database is
   * busy). Otherwise this is a wake(): the read joins them with whatever else committed, so under load events
   * still go out together. What one statement answered (coalesced single publishes) is taken together, on the
   * next turn of the event loop.
   */
  offer(rows: readonly EventRow[]): void {
    if (this.stopped || rows.length === 0) return
    for (const row of rows) this.offered.push(row)
    if (this.offerPending) return
    this.offerPending = true
    setImmediate(() => this.takeOffered())
  }

  private takeOffered() {
    this.offerPending = false
    const rows = this.offered.sort((a, b) => a.id - b.id)
    this.offered = []
    if (this.stopped || rows[rows.length - 1].id <= this.cursor) return // read already
    if (this.running || this.pendingGap || !followOn(this.cursor, rows)) return this.wake()
    void this.run(rows)
  }

  /**
   * Resolves after a read that began at or after `since` (performance.now(); by default, this call): everything
   * committed before then is settled or waiting on a gap. A stream opening passes the moment its request
   * arrived, so the tail's reads while it authenticated count, and the opens of a storm add no reads of their own.
   */
  sync(since = performance.now()): Promise<void> {
    if (this.stopped || this.settledFrom >= since) return Promise.resolve()
    return new Promise((resolve) => {
      this.waiters.push({ since, resolve })
      this.wake()
    })
  }

  /** Reads until nothing is left; first delivers `offered` (offer()), which settles no sync() waiter: not a read. */
  private async run(offered?: EventRow[]) {
    this.running = true
    try {
      if (offered) await this.take(offered)
      if (offered && !this.again) return
      do {
        this.again = false
        const began = performance.now()
        let more = true
        while (more && !this.stopped) more = await this.readOnce()
        this.settledFrom = began
        // Those who asked before this read began are served by it; the others (who woke it again) by the next.
        const waiting = this.waiters
        this.waiters = waiting.filter((w) => w.since > began)
        for (const w of waiting) if (w.since <= began) w.resolve()
      } while (this.again && !this.stopped)
    } catch (err) {
      this.log.warn({ err }, 'reading the event log failed; retrying')
      clearTimeout(this.timer)
      this.timer = setTimeout(() => this.wake(), ERROR_BACKOFF_MS)
      // Waiters of a failed read are released: their callers read the (older) cursor and try again later.
      for (const w of this.waiters.splice(0)) w.resolve()
    } finally {
      this.running = false
    }
  }

  /** One page, then the state of a pending gap. Returns true to read again at once. */
  private async readOnce(): Promise<boolean> {
    const rows = await this.database.query<TailRow>(
      sql`select * from events where id > ${this.cursor} order by id limit ${PAGE_SIZE}`,
    )
    const ready: EventRow[] = []
    let expected = this.cursor + 1
    for (const raw of rows) {
      const id = Number(raw.id)
      if (id !== expected && id - 1 > this.settledUpTo) {
        if (!this.pendingGap || this.pendingGap.upTo < id - 1) this.pendingGap = { upTo: id - 1 }
        break
      }
      ready.push(eventRowOf(raw))
      expected = id + 1
    }
    if (ready.length) await this.take(ready)
    if (this.pendingGap && this.pendingGap.upTo <= this.cursor) this.pendingGap = undefined
    if (!this.pendingGap) return rows.length === PAGE_SIZE

    // A gap: wait until the publishes that were in flight when we saw it have all finished.
    const now = await this.publishesInFlight()
    const gap = this.pendingGap
    gap.holders ??= now
    const current = new Set(now)
    if (!gap.holders.some((h) => current.has(h))) {
      // All finished, so they are visible now (committed) or never will be (rolled back): read once more.
      this.settledUpTo = gap.upTo
      this.pendingGap = undefined
      return true
    }
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.wake(), GAP_RECHECK_MS)
    return false
  }

  /** Moves the cursor past `ready` (settled rows, in id order, following the cursor) and delivers them. */
  private take(ready: EventRow[]) {
    this.cursor = ready[ready.length - 1].id
    this.recent?.append(ready)
    return this.deliver(ready)
  }

  /** Virtual transaction ids of the publishes in flight in this database. */
  private async publishesInFlight(): Promise<string[]> {
    const rows = await this.database.query<{ vxid: string }>(sql`
      select virtualtransaction as vxid from pg_locks
      where locktype = 'advisory' and granted
        and database = (select oid from pg_database where datname = current_database())
        and classid = ${PUBLISH_LOCK.classId} and objid = ${PUBLISH_LOCK.objId} and objsubid = 2`)
    return rows.map((r) => r.vxid)
  }
}

/** Whether `rows` (in id order) are the ids right after `cursor`, none missing. */
function followOn(cursor: number, rows: readonly EventRow[]): boolean {
  return rows.every((row, i) => row.id === cursor + 1 + i)
}

const asDate = (v: Date | string) => (v instanceof Date ? v : new Date(v))

/** An `events` row read with raw SQL, as the query builder would have returned it. */
export function eventRowOf(r: TailRow): EventRow {
  return {
    id: Number(r.id),
    tenant: r.tenant,
    type: r.type,
    title: r.title,
    body: r.body,
    dataJson: r.data_json,
    priority: r.priority,
    url: r.url,
    collapseKey: r.collapse_key,
    actionsJson: r.actions_json,
    icon: r.icon,
    image: r.image,
    badge: r.badge,
    actor: r.actor,
    kind: r.kind,
    refId: r.ref_id === null ? null : Number(r.ref_id),
    revision: Number(r.revision),
    recalledAt: r.recalled_at === null ? null : asDate(r.recalled_at),
    toUsers: r.to_users,
    toRoles: r.to_roles,
    toTopics: r.to_topics,
    toTenant: r.to_tenant,
    localizedJson: r.localized_json,
    inInbox: r.in_inbox,
    mayPush: r.may_push,
    superseded: r.superseded,
    createdAt: asDate(r.created_at),
    expiresAt: asDate(r.expires_at),
  }
}
