import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'

/** Recorded deliveries are written this often: the roll-call's "delivered" is exact to about this. */
export const DELIVERY_FLUSH_MS = 1_000
/**
 * Deliveries held for writing at most (about 20 MB): past it, while the database does not take them, the
 * newest are dropped (and counted in the log). The roll-call then shows those as not delivered; acks and reads,
 * which users make, are never lost this way.
 */
const MAX_HELD = 500_000

/**
 * Records which users' open streams were sent which events (live or in a replay), for the roll-call: held in
 * memory and written once a second, one row per event and flush with its users as an array, so a broadcast to
 * 10,000 open streams is one row. Rows of edits and recalls are left out when written.
 */
export class StreamDeliveries {
  private held = new Map<number, { at: number; users: Set<string> }>()
  private count = 0
  private dropped = 0
  private readonly timer: NodeJS.Timeout
  private flushing: Promise<void> = Promise.resolve()

  constructor(
    private readonly database: Database,
    private readonly log: FastifyBaseLogger,
    flushMs = DELIVERY_FLUSH_MS,
  ) {
    this.timer = setInterval(() => void this.flush(), flushMs)
    this.timer.unref()
  }

  /** The event was sent (or queued) on one of the user's streams. */
  delivered(userId: string, eventId: number): void {
    if (this.count >= MAX_HELD) {
      this.dropped++
      return
    }
    // A Set: a user with several streams is recorded once (deduplicating here costs far less than in SQL).
    const entry = this.held.get(eventId)
    if (!entry) this.held.set(eventId, { at: Date.now(), users: new Set([userId]) })
    else if (entry.users.has(userId)) return
    else entry.users.add(userId)
    this.count++
  }

  /** Writes what is held; resolves once written (or failed: logged, and kept for the next flush while it fits). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.write())
    return this.flushing
  }

  private async write() {
    if (this.dropped) {
      this.log.warn({ dropped: this.dropped }, 'stream deliveries not recorded: the database did not take them')
      this.dropped = 0
    }
    if (!this.held.size) return
    const batch = this.held
    const count = this.count
    this.held = new Map()
    this.count = 0
    const json = JSON.stringify([...batch].map(([id, { at, users }]) => ({ id, at, users: [...users] })))
    try {
      await this.database.query(sql`
        insert into stream_deliveries (event_id, user_ids, delivered_at)
        select d.id, d.users, to_timestamp(d.at / 1000.0)
        from json_to_recordset(${json}::json) as d(id bigint, at double precision, users text[])
        join events e on e.id = d.id and e.kind = 'event'`)
    } catch (err) {
      this.log.warn({ err }, 'recording stream deliveries failed; retrying at the next flush')
      // Kept for the next flush, behind what came meanwhile, within the bound.
      if (this.count + count > MAX_HELD) {
        this.dropped += count
        return
      }
      for (const [id, entry] of batch) {
        const now = this.held.get(id)
        if (now) for (const user of entry.users) now.users.add(user)
        else this.held.set(id, entry)
      }
      this.count += count
    }
  }

  /** Stops the timer and writes what is held (shutdown, before the database closes). */
  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.flush()
  }
}
