import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import type { EventRow } from '../db/schema.ts'

/** Rows read per query; a burst of publishes costs one query per this many events. */
const PAGE_SIZE = 1_000
/** While a gap waits on an open transaction, look again this soon. */
const GAP_RECHECK_MS = 5
/** After a failed read (database down), wait this long before the next. */
const ERROR_BACKOFF_MS = 1_000

interface PendingGap {
  /** Largest missing id this record covers. */
  upTo: number
  /** Transactions that were open when the gap was seen; one of them may still commit the missing ids. */
  xids: string[]
}

interface TailRow {
  snap: string
  id: number | string | null
  tenant: string
  type: string
  title: string
  body: string | null
  data_json: string | null
  priority: EventRow['priority']
  url: string | null
  collapse_key: string | null
  actor: string
  to_users: string[]
  to_roles: string[]
  to_topics: string[]
  to_tenant: boolean
  created_at: Date | string
  expires_at: Date | string
}

/**
 * Follows the event table in id order and hands each committed event to `deliver` exactly once, in order.
 *
 * Publishing transactions may commit out of id order: id 11 can be visible while id 10 is still in flight.
 * Every publish takes its transaction id before its event ids (see publish.ts), so a missing id below a
 * visible one belongs to a transaction that was open when we looked. We stop at such a gap and note the
 * open transactions; once none of them is open any more, whatever is still missing was rolled back and is
 * skipped. `cursor` is therefore a watermark: every event at or below it is settled and was delivered.
 */
export class LogTail {
  cursor = 0
  private pendingGap: PendingGap | undefined
  private running = false
  private again = false
  private waiters: Array<() => void> = []
  private timer: NodeJS.Timeout | undefined
  private pollTimer: NodeJS.Timeout | undefined
  private stopped = false
  /** False after a failed read, until a read succeeds. */
  healthy = true

  constructor(
    private readonly database: Database,
    private readonly deliver: (rows: EventRow[]) => void,
    private readonly log: FastifyBaseLogger,
    private readonly pollMs: number,
  ) {}

  /** Sets the cursor at the end of the log once every transaction open right now has finished. */
  async start(): Promise<void> {
    const [first] = await this.database.query<{ snap: string; max: string | number | null }>(
      sql`select pg_current_snapshot()::text as snap, (select max(id) from events) as max`,
    )
    const xids = openXids(first.snap)
    for (let waited = 0; xids.length && waited < 30_000; waited += 10) {
      const [now] = await this.database.query<{ snap: string }>(sql`select pg_current_snapshot()::text as snap`)
      const open = new Set(openXids(now.snap))
      if (!xids.some((x) => open.has(x))) break
      await sleep(10)
    }
    this.cursor = Number(first.max ?? 0)
    this.pollTimer = setInterval(() => this.wake(), this.pollMs)
    this.pollTimer.unref()
  }

  stop() {
    this.stopped = true
    clearInterval(this.pollTimer)
    clearTimeout(this.timer)
    for (const w of this.waiters.splice(0)) w()
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

  /** Resolves after a read that began after this call: everything committed before the call is settled or waiting on a gap. */
  sync(): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve()
      this.waiters.push(resolve)
      this.wake()
    })
  }

  private async run() {
    this.running = true
    try {
      do {
        this.again = false
        const waiters = this.waiters.splice(0)
        let full = true
        while (full && !this.stopped) full = await this.readOnce()
        for (const w of waiters) w()
      } while (this.again && !this.stopped)
    } catch (err) {
      this.healthy = false
      this.log.warn({ err }, 'reading the event log failed; retrying')
      clearTimeout(this.timer)
      this.timer = setTimeout(() => this.wake(), ERROR_BACKOFF_MS)
      // Waiters of a failed read are released: their callers read the (older) cursor and try again later.
      for (const w of this.waiters.splice(0)) w()
    } finally {
      this.running = false
    }
  }

  /** One page. Returns true when the page was full (read again at once). */
  private async readOnce(): Promise<boolean> {
    const rows = await this.database.query<TailRow>(sql`
      with s as (select pg_current_snapshot()::text as snap)
      select s.snap, e.* from s left join lateral (
        select * from events where id > ${this.cursor} order by id limit ${PAGE_SIZE}
      ) e on true`)
    this.healthy = true
    const open = openXids(rows[0].snap)
    const openSet = new Set(open)
    if (this.pendingGap && !this.pendingGap.xids.some((x) => openSet.has(x))) {
      this.pendingGap = { ...this.pendingGap, xids: [] } // settled: what is still missing up to `upTo` is gone for good
    }
    const ready: EventRow[] = []
    let expected = this.cursor + 1
    for (const raw of rows) {
      if (raw.id === null) break
      const id = Number(raw.id)
      if (id !== expected) {
        const settled =
          open.length === 0 || (this.pendingGap && this.pendingGap.xids.length === 0 && id - 1 <= this.pendingGap.upTo)
        if (!settled) {
          if (!this.pendingGap || this.pendingGap.xids.length === 0 || this.pendingGap.upTo < id - 1) {
            this.pendingGap = { upTo: id - 1, xids: open }
          }
          break
        }
      }
      ready.push(toEventRow(raw, id))
      expected = id + 1
    }
    if (ready.length) {
      this.cursor = ready[ready.length - 1].id
      if (this.pendingGap && this.pendingGap.upTo <= this.cursor) this.pendingGap = undefined
      this.deliver(ready)
    }
    if (this.pendingGap && !this.stopped) {
      clearTimeout(this.timer)
      this.timer = setTimeout(() => this.wake(), GAP_RECHECK_MS)
      return false
    }
    return rows.length === PAGE_SIZE
  }
}

/** The in-progress transaction ids of a `pg_current_snapshot()` text (`xmin:xmax:xip,...`). */
function openXids(snap: string): string[] {
  const xip = snap.split(':')[2]
  return xip ? xip.split(',') : []
}

const asDate = (v: Date | string) => (v instanceof Date ? v : new Date(v))

function toEventRow(r: TailRow, id: number): EventRow {
  return {
    id,
    tenant: r.tenant,
    type: r.type,
    title: r.title,
    body: r.body,
    dataJson: r.data_json,
    priority: r.priority,
    url: r.url,
    collapseKey: r.collapse_key,
    actor: r.actor,
    toUsers: r.to_users,
    toRoles: r.to_roles,
    toTopics: r.to_topics,
    toTenant: r.to_tenant,
    createdAt: asDate(r.created_at),
    expiresAt: asDate(r.expires_at),
  }
}
