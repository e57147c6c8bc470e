import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { lt, type SQL, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import { QuerySpacing } from '../db/batched-reads.ts'
import type { Database } from '../db/client.ts'
import { instances } from '../db/schema.ts'
import { enqueueWebhooks, SQL_NOW_ISO } from '../webhooks/outbox.ts'

/** A user over MAX_CONNECTIONS_PER_USER across instances, as a presence write found them. */
export interface UserOverLimit {
  tenant: string
  userId: string
  /** Their streams on this instance now, open or opening. */
  here: number
  /** Their streams on other live instances, as those last wrote them; oldestAt in ms by this instance's clock. */
  elsewhere: Array<{ instanceId: string; streams: number; oldestAt: number }>
}

/** What presence needs to keep MAX_CONNECTIONS_PER_USER across instances. */
export interface StreamLimit {
  maxPerUser: number
  /** When the user's oldest open stream here opened (ms); undefined while none has opened yet. */
  oldestOpenedAt(tenant: string, userId: string): number | undefined
  /**
   * Called, before the streams that opened get going, for each user whom a write that carried an opening
   * stream of theirs found over the limit across instances (never on PGlite: one process, the hub's own limit).
   */
  onOverLimit(over: UserOverLimit): void
}

/** A user whose row the next write makes what it should be; `opened`: a stream of theirs opened meanwhile. */
interface Queued {
  key: string
  tenant: string
  userId: string
  opened: boolean
}

/** Per user of a write, as the statement reads it: their streams here (0: remove the row), since when. */
interface Written {
  tenant: string
  user_id: string
  streams: number
  age_ms: number
  opened: boolean
}

/** A row of another instance for a user the write found over the limit. */
interface OverRow {
  tenant: string
  user_id: string
  instance_id: string
  streams: number
  age_ms: string | number
}

const keyOf = (tenant: string, userId: string) => `${tenant}\u0000${userId}`

/**
 * The `user.online` / `user.offline` messages of a relation of (tenant, user_id) transitions, for enqueueWebhooks:
 * `{tenant, userId, at}`, keyed by the user and the transaction, so each transition is its own message.
 */
const transitions = (relation: SQL) => sql`
  select tenant, json_build_array(tenant, user_id, txid_current())::text as msg_key,
    json_build_object('tenant', tenant, 'userId', user_id, 'at', ${SQL_NOW_ISO}) as data
  from ${relation}`

/**
 * "Has open streams on any instance, how many, since when", kept in the database so push decisions are right
 * whichever instance holds the stream, and so MAX_CONNECTIONS_PER_USER holds across instances. Each instance
 * beats a heartbeat; the streams of an instance that stopped beating (killed, partitioned) stop counting
 * after `ttlSeconds`.
 */
export class Presence {
  readonly instanceId = randomUUID()
  /** Open (and opening) streams here per user: what their row's `streams` must say. */
  private readonly counts = new Map<string, number>()
  /** Users whose row must be written (count > 0) or removed (count 0) by the next write. */
  private readonly toWrite = new Map<string, Queued>()
  /** The write not yet started, which will take what `toWrite` holds; and the latest write (one runs at a time). */
  private nextWrite: Promise<void> | undefined
  private lastWrite: Promise<void> = Promise.resolve()
  /** Writes are spaced as the batched reads are (QuerySpacing). */
  private readonly spacing = new QuerySpacing()
  private heartbeat: NodeJS.Timeout | undefined
  /** Other instances' rows exist only on PostgreSQL: on PGlite the hub's own limit is all there is. */
  private readonly clustered: boolean

  constructor(
    private readonly database: Database,
    private readonly ttlSeconds: number,
    private readonly log: FastifyBaseLogger,
    private readonly limit: StreamLimit,
  ) {
    this.clustered = database.kind === 'postgres'
  }

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
    const [{ alive }] = await this.database.query<{ alive: boolean }>(sql`
      with previous as (select seen_at from instances where id = ${this.instanceId})
      insert into instances (id) values (${this.instanceId})
      on conflict (id) do update set seen_at = now()
      returning coalesce((select seen_at > now() - make_interval(secs => ${this.ttlSeconds}) from previous), false)
        as alive`)
    // Back from the dead (a pause longer than the TTL): other instances may have swept this one's rows and
    // reported its users offline. Its users are written again (and reported online if they were swept).
    if (!alive) for (const key of this.counts.keys()) this.requeue(key)
    await this.sweep()
    // Long-dead instances and (by cascade) their presence rows.
    await db.delete(instances).where(lt(instances.seenAt, sql`now() - make_interval(secs => ${this.ttlSeconds * 10})`))
  }

  /**
   * Removes the presence rows of dead instances (heartbeat older than the TTL: killed, partitioned), and reports
   * `user.offline` for each user who then has no row left, in the same statement. Each instance runs it with
   * its heartbeat; a row is removed (and reported) once whichever instances sweep together.
   */
  private async sweep() {
    await this.database.query(sql`
      with dead as (
        delete from stream_presence p using instances i
        where i.id = p.instance_id and i.id <> ${this.instanceId}
          and i.seen_at <= now() - make_interval(secs => ${this.ttlSeconds})
          -- Checked once first: with no dead instance (nearly always), no presence row is read.
          and exists (select 1 from instances x
            where x.id <> ${this.instanceId} and x.seen_at <= now() - make_interval(secs => ${this.ttlSeconds}))
        returning p.tenant, p.user_id, p.instance_id
      ), gone as (
        select d.tenant, d.user_id from dead d
        where not exists (
          select 1 from stream_presence p
          where p.tenant = d.tenant and p.user_id = d.user_id
            and p.instance_id not in (select instance_id from dead))
        group by d.tenant, d.user_id
      ), offline as (${enqueueWebhooks('user.offline', transitions(sql`gone`))})
      select count(*) as swept from dead`)
  }

  /** Queues a user of this instance to be written again, as they are now (their stream count here). */
  private requeue(key: string) {
    const [tenant, userId] = key.split('\u0000')
    this.write(key, tenant, userId, false).catch(() => {})
  }

  /**
   * A stream of this user opens here. Resolves once the user counts as present everywhere with this stream
   * counted (and, if that made them one too many across instances, once the oldest were told to close);
   * rejects (and counts the stream as gone) if that could not be written.
   */
  enter(tenant: string, userId: string): Promise<void> {
    const key = keyOf(tenant, userId)
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1)
    // The caller opens no stream if this fails, and will not call leave().
    return this.write(key, tenant, userId, true).catch((err) => {
      this.leave(tenant, userId)
      throw err
    })
  }

  /** A stream of this user closed here. */
  leave(tenant: string, userId: string): void {
    const key = keyOf(tenant, userId)
    const n = (this.counts.get(key) ?? 1) - 1
    if (n > 0) this.counts.set(key, n)
    else this.counts.delete(key)
    this.write(key, tenant, userId, false).catch(() => {}) // logged once for its whole batch (writeQueued)
  }

  /**
   * Queues a user's row to be written. Streams opening and closing together share one statement (a reconnect
   * storm is thousands of opens a second); a user's count as it is when the statement starts is what is written.
   */
  private write(key: string, tenant: string, userId: string, opened: boolean): Promise<void> {
    const queued = this.toWrite.get(key)
    if (queued) queued.opened ||= opened
    else this.toWrite.set(key, { key, tenant, userId, opened })
    if (!this.nextWrite) {
      // Starts once the write in progress has ended, at least MIN_QUERY_INTERVAL_MS after it started and as long
      // after it ended as it ran (the opens and closes of a storm's few milliseconds share one), with every user
      // queued by then.
      const write: Promise<void> = this.lastWrite
        .catch(() => {})
        .then(() => {
          const wait = this.spacing.wait()
          return wait > 0 ? sleep(wait) : undefined
        })
        .then(() => this.writeQueued())
      write.catch(() => {}) // a leave's failure is logged by its caller; enter's callers await it
      this.nextWrite = this.lastWrite = write
    }
    return this.nextWrite
  }

  private async writeQueued() {
    this.nextWrite = undefined
    this.spacing.started()
    const now = Date.now()
    const batch: Written[] = []
    for (const u of this.toWrite.values()) {
      const streams = this.counts.get(u.key) ?? 0
      const oldest = streams ? (this.limit.oldestOpenedAt(u.tenant, u.userId) ?? now) : now
      batch.push({
        tenant: u.tenant,
        user_id: u.userId,
        streams,
        age_ms: now - oldest,
        opened: u.opened && this.clustered,
      })
    }
    this.toWrite.clear()
    let over: OverRow[]
    try {
      over = await this.database.query<OverRow>(this.statement(batch))
    } catch (err) {
      const left = batch.filter((u) => u.streams === 0).length
      this.log.warn({ err, entered: batch.length - left, left }, 'presence update failed')
      throw err
    } finally {
      this.spacing.finished()
    }
    this.reportOverLimit(over)
  }

  /**
   * One statement per batch: removes the rows of users with no stream left here, writes the others' counts,
   * and reads, for users with a stream that opened, other live instances' rows when the user's streams
   * across instances exceed the limit (none, nearly always). Small races, accepted: it reads the other rows as
   * they were when it started, so two instances writing the same user at once each miss the other's newest
   * stream, and may both evict the same oldest stream (one too few closed) or one each (one too many); and an
   * instance asked to evict shows it in its row only after its own next write, so a stream of the same user
   * opening in between may evict one more.
   */
  private statement(batch: Written[]) {
    return sql`
      with batch as (
        select * from json_to_recordset(${JSON.stringify(batch)}::json)
          as u(tenant text, user_id text, streams int, age_ms float8, opened boolean)
      ), prior as (
        select u.tenant, u.user_id, u.streams, r.here, r.elsewhere
        from batch u cross join lateral (
          select coalesce(bool_or(p.instance_id = ${this.instanceId}), false) as here,
            coalesce(bool_or(p.instance_id <> ${this.instanceId}), false) as elsewhere
          from stream_presence p where p.tenant = u.tenant and p.user_id = u.user_id) r
      ), online as (${enqueueWebhooks(
        'user.online',
        transitions(sql`(select tenant, user_id from prior where streams > 0 and not here and not elsewhere) t`),
      )}), offline as (${enqueueWebhooks(
        'user.offline',
        transitions(sql`(select tenant, user_id from prior where streams = 0 and here and not elsewhere) t`),
      )}), gone as (
        delete from stream_presence p using batch u
        where u.streams = 0 and p.instance_id = ${this.instanceId} and p.tenant = u.tenant and p.user_id = u.user_id
      ), here as (
        insert into stream_presence (instance_id, tenant, user_id, streams, oldest_at)
        select ${this.instanceId}, u.tenant, u.user_id, u.streams, now() - make_interval(secs => u.age_ms / 1000)
        from batch u where u.streams > 0
        on conflict (tenant, user_id, instance_id)
          do update set streams = excluded.streams, oldest_at = excluded.oldest_at
      )
      select tenant, user_id, instance_id, streams, age_ms from (
        select p.tenant, p.user_id, p.instance_id, p.streams,
          extract(epoch from now() - p.oldest_at) * 1000 as age_ms,
          u.streams + sum(p.streams) over (partition by p.tenant, p.user_id) as total
        from batch u
        join stream_presence p
          on p.tenant = u.tenant and p.user_id = u.user_id and p.instance_id <> ${this.instanceId}
        join instances i
          on i.id = p.instance_id and i.seen_at > now() - make_interval(secs => ${this.ttlSeconds})
        where u.opened
      ) across where total > ${this.limit.maxPerUser}`
  }

  /** Hands each user the write found over the limit to `onOverLimit`, with their count here as it is now. */
  private reportOverLimit(rows: OverRow[]) {
    if (!rows.length) return
    const now = Date.now()
    const users = new Map<string, UserOverLimit>()
    for (const r of rows) {
      const key = keyOf(r.tenant, r.user_id)
      let user = users.get(key)
      if (!user) {
        user = { tenant: r.tenant, userId: r.user_id, here: this.counts.get(key) ?? 0, elsewhere: [] }
        users.set(key, user)
      }
      user.elsewhere.push({ instanceId: r.instance_id, streams: r.streams, oldestAt: now - Number(r.age_ms) })
    }
    for (const user of users.values()) {
      const total = user.elsewhere.reduce((n, e) => n + e.streams, user.here)
      if (total <= this.limit.maxPerUser) continue // streams here closed while the statement ran
      try {
        this.limit.onOverLimit(user)
      } catch (err) {
        // Not the write's failure: the streams opening stay open, over the limit until the next one opens.
        this.log.warn({ err }, 'enforcing the per-user stream limit failed')
      }
    }
  }

  /**
   * Shutdown: this instance's users stop counting as present at once; those with no stream elsewhere are reported
   * `user.offline`, in the same statement.
   */
  async stop() {
    clearInterval(this.heartbeat)
    await this.lastWrite.catch(() => {})
    await this.database
      .query(sql`
        with gone as (
          select p.tenant, p.user_id from stream_presence p
          where p.instance_id = ${this.instanceId} and not exists (
            select 1 from stream_presence o
            where o.tenant = p.tenant and o.user_id = p.user_id and o.instance_id <> ${this.instanceId})
        ), offline as (${enqueueWebhooks('user.offline', transitions(sql`gone`))})
        delete from instances where id = ${this.instanceId}`)
      .catch(() => {})
  }
}
