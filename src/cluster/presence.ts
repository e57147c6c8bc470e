import { randomUUID } from 'node:crypto'
import { eq, lt, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import { instances } from '../db/schema.ts'

/**
 * "Has an open stream on any instance", kept in the database so push decisions are right whichever
 * instance holds the stream. Each instance beats a heartbeat; the streams of an instance that stopped
 * beating (killed, partitioned) stop counting after `ttlSeconds`.
 */
export class Presence {
  readonly instanceId = randomUUID()
  /** Open streams here per user. */
  private readonly counts = new Map<string, number>()
  /** Users whose row must be written (present) or removed (absent) by the next write. */
  private readonly toWrite = new Map<string, { tenant: string; userId: string; present: boolean }>()
  /** Per user, the write that will make their row what it should be (awaited by a second stream opening). */
  private readonly writes = new Map<string, Promise<void>>()
  /** The write not yet started, which will take what `toWrite` holds; and the latest write (one runs at a time). */
  private nextWrite: Promise<void> | undefined
  private lastWrite: Promise<void> = Promise.resolve()
  private heartbeat: NodeJS.Timeout | undefined

  constructor(
    private readonly database: Database,
    private readonly ttlSeconds: number,
    private readonly log: FastifyBaseLogger,
  ) {}

  async start() {
    await this.beat()
    // Three beats per TTL: one lost beat does not make this instance's users look absent.
    this.heartbeat = setInterval(
      () => void this.beat().catch((err) => this.log.warn({ err }, 'presence heartbeat failed')),
      (this.ttlSeconds * 1000) / 3,
    )
    this.heartbeat.unref()
  }

  private async beat() {
    const { db } = this.database
    await db
      .insert(instances)
      .values({ id: this.instanceId })
      .onConflictDoUpdate({ target: instances.id, set: { seenAt: sql`now()` } })
    // Long-dead instances and (by cascade) their presence rows.
    await db.delete(instances).where(lt(instances.seenAt, sql`now() - make_interval(secs => ${this.ttlSeconds * 10})`))
  }

  /**
   * A stream of this user opened here. Resolves once the user counts as present everywhere; rejects (and
   * counts the stream as gone) if that could not be written.
   */
  enter(tenant: string, userId: string): Promise<void> {
    const key = `${tenant}\u0000${userId}`
    const n = (this.counts.get(key) ?? 0) + 1
    this.counts.set(key, n)
    const written = n > 1 ? (this.writes.get(key) ?? Promise.resolve()) : this.write(key, tenant, userId, true)
    // The caller opens no stream if this fails, and will not call leave().
    return written.catch((err) => {
      this.leave(tenant, userId)
      throw err
    })
  }

  /** A stream of this user closed here. */
  leave(tenant: string, userId: string): void {
    const key = `${tenant}\u0000${userId}`
    const n = (this.counts.get(key) ?? 1) - 1
    if (n > 0) {
      this.counts.set(key, n)
      return
    }
    this.counts.delete(key)
    this.write(key, tenant, userId, false).catch(() => {}) // logged once for its whole batch (writeQueued)
  }

  /**
   * Queues a user's row to be written or removed. Streams opening and closing together share one insert and
   * one delete (a reconnect storm is thousands of opens a second); a user's latest state is what is written.
   */
  private write(key: string, tenant: string, userId: string, present: boolean): Promise<void> {
    this.toWrite.set(key, { tenant, userId, present })
    if (!this.nextWrite) {
      // Starts once the write in progress has ended, with every user queued by then (those of this turn too).
      const write: Promise<void> = this.lastWrite.catch(() => {}).then(() => this.writeQueued(write))
      write.catch(() => {}) // a leave's failure is logged by its caller; enter's callers await it
      this.nextWrite = this.lastWrite = write
    }
    this.writes.set(key, this.nextWrite)
    return this.nextWrite
  }

  private async writeQueued(write: Promise<void>) {
    this.nextWrite = undefined
    const batch = [...this.toWrite]
    this.toWrite.clear()
    const users = (present: boolean) =>
      batch.filter(([, u]) => u.present === present).map(([, u]) => ({ tenant: u.tenant, user_id: u.userId }))
    const [entered, left] = [users(true), users(false)]
    try {
      await Promise.all([
        entered.length &&
          this.database.query(sql`
            insert into stream_presence (instance_id, tenant, user_id)
            select ${this.instanceId}, u.tenant, u.user_id
            from json_to_recordset(${JSON.stringify(entered)}::json) as u(tenant text, user_id text)
            on conflict do nothing`),
        left.length &&
          this.database.query(sql`
            delete from stream_presence p
            using json_to_recordset(${JSON.stringify(left)}::json) as u(tenant text, user_id text)
            where p.instance_id = ${this.instanceId} and p.tenant = u.tenant and p.user_id = u.user_id`),
      ])
    } catch (err) {
      this.log.warn({ err, entered: entered.length, left: left.length }, 'presence update failed')
      throw err
    } finally {
      for (const [key] of batch) if (this.writes.get(key) === write) this.writes.delete(key)
    }
  }

  /** Shutdown: this instance's users stop counting as present at once. */
  async stop() {
    clearInterval(this.heartbeat)
    await this.database.db
      .delete(instances)
      .where(eq(instances.id, this.instanceId))
      .catch(() => {})
  }
}
