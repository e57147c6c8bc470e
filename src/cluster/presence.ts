import { randomUUID } from 'node:crypto'
import { and, eq, lt, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import { instances, streamPresence } from '../db/schema.ts'

/**
 * "Has an open stream on any instance", kept in the database so push decisions are right whichever
 * instance holds the stream. Each instance beats a heartbeat; the streams of an instance that stopped
 * beating (killed, partitioned) stop counting after `ttlSeconds`.
 */
export class Presence {
  readonly instanceId = randomUUID()
  private readonly counts = new Map<string, number>()
  /** Per user, the last write: writes for one user run in order (enter, leave, enter...). */
  private readonly chains = new Map<string, Promise<void>>()
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

  /** A stream of this user opened here. Resolves once the user counts as present everywhere. */
  enter(tenant: string, userId: string): Promise<void> {
    const key = `${tenant}\u0000${userId}`
    const n = (this.counts.get(key) ?? 0) + 1
    this.counts.set(key, n)
    if (n > 1) return this.chains.get(key) ?? Promise.resolve()
    return this.chain(key, () =>
      this.database.db
        .insert(streamPresence)
        .values({ instanceId: this.instanceId, tenant, userId })
        .onConflictDoNothing(),
    )
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
    void this.chain(key, () =>
      this.database.db
        .delete(streamPresence)
        .where(
          and(
            eq(streamPresence.instanceId, this.instanceId),
            eq(streamPresence.tenant, tenant),
            eq(streamPresence.userId, userId),
          ),
        ),
    ).catch((err) => this.log.warn({ err }, 'presence update failed'))
  }

  private chain(key: string, write: () => PromiseLike<unknown>): Promise<void> {
    const next = (this.chains.get(key) ?? Promise.resolve())
      .catch(() => {})
      .then(async () => {
        await write()
      })
    this.chains.set(key, next)
    void next
      .finally(() => {
        if (this.chains.get(key) === next) this.chains.delete(key)
      })
      .catch(() => {})
    return next
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
