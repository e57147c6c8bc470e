import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import { deleteInBatches } from '../db/batched-delete.ts'
import type { Database } from '../db/client.ts'
import { randomId } from '../random-id.ts'
import { InvalidFieldsError } from '../service-errors.ts'

/** Opened and closed streams are written this often. */
export const AUDIT_FLUSH_MS = 1_000
/**
 * Opens and closes held for writing at most (each about 300 bytes: some 30 MB): past it, while the database does
 * not take them, the newest are dropped and counted in the log. Streams are never held up by their audit.
 */
const MAX_HELD = 100_000
/** User agents are kept up to this many characters: enough to tell browsers and versions apart. */
export const MAX_USER_AGENT = 256
/** A stream as it opened, to record. */
export interface OpenedConnection {
  tenant: string
  userId: string
  userAgent: string | undefined
  clientIp: string | undefined
}

interface HeldOpen {
  id: string
  tenant: string
  user: string
  /** Milliseconds since the epoch (stored exactly: to the millisecond, which the listing's cursor relies on). */
  at: number
  ua: string | null
  ip: string | null
  closedAt: number | null
  reason: string | null
}

interface HeldClose {
  id: string
  at: number
  reason: string
}

/** A timestamp in ms, as SQL, exactly (to_timestamp's float would move it by a microsecond now and then). */
const fromMs = (column: string) => sql.raw(`timestamptz 'epoch' + ${column} * interval '1 millisecond'`)

/**
 * The connection audit: every stream opened here is recorded in `stream_connections` (who, from where, on which
 * instance, when, and when and why it closed). Opening a stream must stay fast (a reconnect storm is thousands
 * of opens a second), so nothing is written while a stream opens: opens and closes are held in memory and
 * written once a second, one insert for the opened and one update for the closed (a stream that opened and
 * closed within the same second is inserted closed).
 */
export class ConnectionAudit {
  private opened = new Map<string, HeldOpen>()
  private closed: HeldClose[] = []
  private dropped = 0
  private readonly timer: NodeJS.Timeout
  private flushing: Promise<void> = Promise.resolve()

  constructor(
    private readonly database: Database,
    private readonly instanceId: string,
    private readonly log: FastifyBaseLogger,
    flushMs = AUDIT_FLUSH_MS,
  ) {
    this.timer = setInterval(() => void this.flush(), flushMs)
    this.timer.unref()
  }

  private get held() {
    return this.opened.size + this.closed.length
  }

  /** A stream opened; returns its audit id, for `closed`. */
  open(c: OpenedConnection): string {
    const id = randomId()
    if (this.held >= MAX_HELD) {
      this.dropped++
      return id
    }
    this.opened.set(id, {
      id,
      tenant: c.tenant,
      user: c.userId,
      at: Date.now(),
      ua: c.userAgent ? c.userAgent.slice(0, MAX_USER_AGENT) : null,
      ip: c.clientIp ?? null,
      closedAt: null,
      reason: null,
    })
    return id
  }

  /** The stream of audit id `id` closed, for `reason`. */
  close(id: string, reason: string): void {
    const open = this.opened.get(id)
    if (open) {
      open.closedAt = Date.now()
      open.reason = reason
    } else if (this.held >= MAX_HELD) this.dropped++
    else this.closed.push({ id, at: Date.now(), reason })
  }

  /** Writes what is held; resolves once written (or failed: logged, and kept for the next flush while it fits). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.write())
    return this.flushing
  }

  private async write() {
    if (this.dropped) {
      this.log.warn({ dropped: this.dropped }, 'stream connections not audited: the database did not take them')
      this.dropped = 0
    }
    const opened = [...this.opened.values()]
    const closed = this.closed
    this.opened = new Map()
    this.closed = []
    try {
      if (opened.length) {
        await this.database.query(sql`
          insert into stream_connections
            (id, tenant, user_id, instance_id, opened_at, closed_at, close_reason, user_agent, client_ip)
          select o.id, o.tenant, o.user_id, ${this.instanceId}, ${fromMs('o.at')},
            case when o.closed_at is null then null else ${fromMs('o.closed_at')} end, o.reason, o.ua, o.ip
          from json_to_recordset(${JSON.stringify(opened.map(asRecord))}::json)
            as o(id text, tenant text, user_id text, at float8, closed_at float8, reason text, ua text, ip text)
          on conflict (id) do nothing`)
        opened.length = 0 // written: not to be written again if the update below fails
      }
      if (closed.length) {
        await this.database.query(sql`
          update stream_connections s set closed_at = ${fromMs('c.at')}, close_reason = c.reason
          from json_to_recordset(${JSON.stringify(closed)}::json) as c(id text, at float8, reason text)
          where s.id = c.id`)
      }
    } catch (err) {
      this.log.warn({ err }, 'auditing stream connections failed; retrying at the next flush')
      // Kept for the next flush, within the bound; what came meanwhile (closes of these opens too) stays.
      for (const o of opened) {
        if (this.held >= MAX_HELD) this.dropped++
        else if (!this.opened.has(o.id)) this.opened.set(o.id, o)
      }
      for (const c of closed) {
        if (this.held >= MAX_HELD) this.dropped++
        else this.closed.push(c)
      }
      // A close that arrived meanwhile for an open put back goes into that open's row.
      this.closed = this.closed.filter((c) => {
        const open = this.opened.get(c.id)
        if (!open) return true
        open.closedAt = c.at
        open.reason = c.reason
        return false
      })
    }
  }

  /** Stops the timer and writes what is held (shutdown: after the streams closed, before the database closes). */
  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.flush()
  }
}

const asRecord = (o: HeldOpen) => ({
  id: o.id,
  tenant: o.tenant,
  user_id: o.user,
  at: o.at,
  closed_at: o.closedAt,
  reason: o.reason,
  ua: o.ua,
  ip: o.ip,
})

/** Deletes connections opened more than `days` ago, in batches; returns how many. */
export function pruneConnections(database: Database, days: number): Promise<number> {
  return deleteInBatches(database, 'stream_connections', sql`opened_at < now() - make_interval(days => ${days})`)
}

/** One audited stream connection, as the listing shows it. */
export interface AuditedConnection {
  id: string
  user: string
  instance: string
  openedAt: Date
  closedAt: Date | null
  closeReason: string | null
  userAgent: string | null
  clientIp: string | null
}

export interface ConnectionQuery {
  user?: string
  from?: Date
  to?: Date
  cursor?: string
  limit: number
}

interface ConnectionRow {
  id: string
  user_id: string
  instance_id: string
  opened_ms: string | number
  closed_at: Date | string | null
  close_reason: string | null
  user_agent: string | null
  client_ip: string | null
}

/** A page's cursor: where the last row is in the order (opened_at desc, id desc), opaque to clients. */
const cursorOf = (openedMs: number, id: string) => Buffer.from(`${openedMs}.${id}`, 'utf8').toString('base64url')

function positionOf(cursor: string): { openedMs: number; id: string } {
  const text = /^[A-Za-z0-9_-]{1,200}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : ''
  const match = /^(\d{1,15})\.([\w-]{1,64})$/.exec(text)
  if (!match || cursorOf(Number(match[1]), match[2]) !== cursor) {
    throw new InvalidFieldsError([
      { path: 'querystring.cursor', message: 'is not a cursor this listing gave (pass `next` as it is)' },
    ])
  }
  return { openedMs: Number(match[1]), id: match[2] }
}

/**
 * A tenant's audited connections, newest first, `limit` at a time (the `(tenant, opened_at)` index, or
 * `(tenant, user_id, opened_at)` for one user): opened at or after `from` and before `to`.
 */
export async function listConnections(
  database: Database,
  tenant: string,
  query: ConnectionQuery,
): Promise<{ connections: AuditedConnection[]; next: string | null }> {
  const after = query.cursor ? positionOf(query.cursor) : undefined
  const rows = await database.query<ConnectionRow>(sql`
    select id, user_id, instance_id, (extract(epoch from opened_at) * 1000)::bigint as opened_ms,
      closed_at, close_reason, user_agent, client_ip
    from stream_connections
    where tenant = ${tenant}
      ${query.user === undefined ? sql`` : sql`and user_id = ${query.user}`}
      ${query.from ? sql`and opened_at >= ${query.from.toISOString()}::timestamptz` : sql``}
      ${query.to ? sql`and opened_at < ${query.to.toISOString()}::timestamptz` : sql``}
      ${after ? sql`and (opened_at, id) < (timestamptz 'epoch' + ${after.openedMs}::float8 * interval '1 millisecond', ${after.id})` : sql``}
    order by opened_at desc, id desc
    limit ${query.limit + 1}`)
  const page = rows.slice(0, query.limit)
  const last = page[page.length - 1]
  return {
    connections: page.map((r) => ({
      id: r.id,
      user: r.user_id,
      instance: r.instance_id,
      openedAt: new Date(Number(r.opened_ms)),
      closedAt: r.closed_at === null ? null : new Date(r.closed_at),
      closeReason: r.close_reason,
      userAgent: r.user_agent,
      clientIp: r.client_ip,
    })),
    next: rows.length > query.limit ? cursorOf(Number(last.opened_ms), last.id) : null,
  }
}
