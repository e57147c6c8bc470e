import type { ServerResponse } from 'node:http'
import { Session } from 'better-sse'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import type { Caller } from '../auth.ts'
import type { Presence } from '../cluster/presence.ts'
import type { LogReader, ReplayedEvent } from '../events/log-reader.ts'
import type { LogTail } from '../events/log-tail.ts'
import type { InAppFilter } from '../events/preference-rules.ts'
import type { RecentRow } from '../events/recent-log.ts'
import type { Metrics } from '../metrics.ts'
import { RESET_FRAME, retryFrame } from '../wire-format.ts'
import { StreamConnection } from './connection.ts'
import type { StreamHub } from './hub.ts'
import { shedRequestState } from './idle-memory.ts'
import { SseResponseConnection } from './sse-connection.ts'

/** Events per replay query. */
const REPLAY_PAGE = 1_000
/**
 * Windows read ahead of the one being written: one at a time, a replay waits on a database round trip per page
 * (bench scenario 5 measures it). A replaying stream holds at most this many pages plus one.
 */
const REPLAY_READ_AHEAD = 3
/** Replay output is written in slices of about this many characters. */
const REPLAY_SLICE_CHARS = 64 * 1024
/** Tells EventSource to wait 3 s before reconnecting. */
const RETRY_MS = 3_000

export interface StreamDeps {
  reader: LogReader
  hub: StreamHub
  tail: LogTail
  presence: Presence
  metrics: Metrics
  bufferLimit: number
  slowReaderTimeoutMs: number
  /** Extra response headers (CORS): Fastify hooks do not run after hijack. */
  headers?: (request: FastifyRequest) => Record<string, string>
  /** The connection audit (audit/connections.ts): told of each stream that opens and of its close. */
  audit?: StreamAudit
}

/** Records streams as they open and close, without making them wait (audit/connections.ts ConnectionAudit). */
export interface StreamAudit {
  /** Returns the connection's audit id, for `close`. */
  open(c: { tenant: string; userId: string; userAgent: string | undefined; clientIp: string | undefined }): string
  close(id: string, reason: string): void
}

/**
 * Opens an SSE stream: registers it (live events queue from here on), replays the visible events after
 * `lastEventId` up to the log tail's watermark, then flushes the queue. The watermark splits the id space:
 * replay covers ids up to it, the tail delivers ids above it, so nothing falls between or comes twice.
 * The same replay brings back a stream that fell behind (see StreamConnection).
 */
export async function openStream(
  deps: StreamDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  caller: Caller,
  topics: string[],
  lastEventId: number | undefined,
  /** The stream was opened without `?topics=`: `topics` are the user's subscriptions, and follow their changes. */
  followsSubscriptions = false,
  /** What the user's preferences leave out (`inApp: false`); the hub keeps it current as they change. */
  inApp?: InAppFilter,
  /** The user's locale (the directory's, else Accept-Language): the text of events rendered per locale. */
  locale?: string,
): Promise<void> {
  const { reader, hub, tail, presence, metrics } = deps
  // The stream carries every tenant the token covers (a director of several schools), each with its roles.
  const otherTenants = new Map<string, ReadonlySet<string>>()
  for (const [tenant, roles] of caller.tenants ?? [])
    if (tenant !== caller.tenant) otherTenants.set(tenant, new Set(roles))
  const tenants = [caller.tenant, ...otherTenants.keys()]
  // Present (in each of them) before the stream opens: a push decided after this moment knows the user is online.
  // (If the database is down this throws, and the client gets a 503 instead of a stream.)
  await enterAll(presence, tenants, caller.userId)
  // Live only means: after everything committed before this request, which the tail may not have read yet
  // (a publish answers 201 before the tail wakes). Catch it up before the response starts, so nothing
  // published after the client saw the stream open counts as "before". A read that began once the request was
  // in (fastify's clock, from routing; without it, now) will do: opens arriving together share the tail's reads.
  if (lastEventId === undefined) await tail.sync(performance.now() - reply.elapsedTime)
  // The client may have left during those awaits, before anything listened for it: stop here.
  if (reply.raw.destroyed || request.raw.socket?.destroyed) {
    for (const tenant of tenants) presence.leave(tenant, caller.userId)
    return
  }
  const conn = new StreamConnection(
    caller.tenant,
    caller.userId,
    caller.roles,
    topics,
    reply.raw,
    deps.bufferLimit,
    deps.slowReaderTimeoutMs,
    metrics.deliveries,
  )
  conn.followsSubscriptions = followsSubscriptions
  conn.inApp = inApp
  conn.locale = locale
  if (otherTenants.size) conn.otherTenants = otherTenants
  const hooks = hooksFor(deps, request.server.log)
  conn.onClose(hooks.leave)
  // Registered before the response starts: from this instant live events above the watermark queue.
  conn.lastQueuedId = Math.max(lastEventId ?? 0, tail.cursor)
  hub.add(conn)
  reply.hijack()
  await sendHead(reply.raw, { 'Cache-Control': 'no-store', ...deps.headers?.(request) })
  if (conn.closed) {
    // Left, evicted or shut down before the stream started: end it now that the head is out (an evicted one
    // with the frame that says so), and the connection with it (kept alive, it would hold a server that is
    // shutting down until its idle timeout).
    if (!reply.raw.writableEnded) reply.raw.end(conn.farewell)
    reply.raw.socket?.end()
    return
  }
  conn.start(retryFrame(RETRY_MS))
  conn.closeAt(caller.exp)
  // Who, from where (request.ip follows TRUST_PROXY), and later when and why it closed: held, written each second.
  if (deps.audit) {
    conn.auditId = deps.audit.open({
      tenant: caller.tenant,
      userId: caller.userId,
      userAgent: request.headers['user-agent'],
      clientIp: request.ip,
    })
    if (conn.closed) deps.audit.close(conn.auditId, conn.closeReason ?? 'error')
  }
  // Nothing reads the request from here on (its headers, its address): what only it held is given back.
  shedRequestState(reply.raw)

  // From here the stream keeps no closure of its own: `request`, `reply`, `caller` (and the request's child
  // logger) would each be memory held by every idle stream. What it needs later is on `conn`.
  const log = request.server.log
  conn.requestId = request.id
  conn.onClose(hooks.closed)
  log.info(
    { reqId: conn.requestId, stream: conn.id, user: caller.userId, tenant: caller.tenant, topics, lastEventId },
    'stream opened',
  )
  conn.catchUp = hooks.catchUp

  if (lastEventId === undefined) {
    conn.goLive()
    return
  }

  let from = lastEventId
  try {
    const point = await reader.resumePoint(lastEventId)
    if (point !== 'kept') {
      conn.write(RESET_FRAME)
      metrics.resets.inc()
    }
    // An id the log never had (a reset database, a made-up value): start over from what is kept.
    if (point === 'unknown') {
      from = 0
      conn.lastQueuedId = tail.cursor
    }
  } catch (err) {
    log.warn({ err, stream: conn.id }, 'checking the resume point failed; closing the stream')
    conn.close('error')
    return
  }
  await catchUp(deps, conn, log, from)
}

/** What every stream of one app does when it closes or falls behind: one set of functions, given the stream. */
interface StreamHooks {
  /** Counts the user out of each tenant the stream carried. */
  leave: (c: StreamConnection) => void
  /** Records the close in the audit and the log. */
  closed: (c: StreamConnection) => void
  catchUp: (c: StreamConnection, after: number) => Promise<void>
}
const hooksByDeps = new WeakMap<StreamDeps, StreamHooks>()

function hooksFor(deps: StreamDeps, log: FastifyBaseLogger): StreamHooks {
  let hooks = hooksByDeps.get(deps)
  if (hooks) return hooks
  hooks = {
    leave: (c) => {
      for (const tenant of c.tenants) deps.presence.leave(tenant, c.userId)
    },
    closed: (c) => {
      if (c.auditId !== undefined) deps.audit?.close(c.auditId, c.closeReason ?? 'error')
      log.info(
        {
          reqId: c.requestId,
          stream: c.id,
          user: c.userId,
          tenant: c.tenant,
          reason: c.closeReason,
          durationMs: Date.now() - c.openedAt,
          // What the stream cost at most while its client read slowly: the slow-reader limit at work.
          peakBufferedBytes: c.peakBufferedBytes,
        },
        'stream closed',
      )
    },
    catchUp: (c, after) => catchUp(deps, c, log, after),
  }
  hooksByDeps.set(deps, hooks)
  return hooks
}

/** Replays ids in (after, watermark] while live events above the watermark queue, then goes live. */
async function catchUp(deps: StreamDeps, conn: StreamConnection, log: FastifyBaseLogger, after: number) {
  const watermark = deps.tail.cursor
  // Live events up to the watermark that queued meanwhile come from the replay instead.
  conn.skipThrough(Math.max(after, watermark))
  try {
    deps.metrics.replayedEvents.inc(await replay(deps.reader, conn, after, watermark))
    conn.goLive()
  } catch (err) {
    log.warn({ err, stream: conn.id }, 'replay failed; closing the stream so the client resumes')
    conn.close('error')
  }
}

/** Counts the user present in each tenant; if that cannot be written for one, in none (and throws). */
async function enterAll(presence: Presence, tenants: readonly string[], userId: string): Promise<void> {
  if (tenants.length === 1) return presence.enter(tenants[0], userId)
  const entered = await Promise.allSettled(tenants.map((tenant) => presence.enter(tenant, userId)))
  const failed = entered.find((r) => r.status === 'rejected')
  if (!failed) return
  tenants.forEach((tenant, i) => {
    if (entered[i].status === 'fulfilled') presence.leave(tenant, userId)
  })
  throw failed.reason
}

/** Writes the response head through better-sse; resolves once it is out (better-sse writes it a tick later). */
function sendHead(res: ServerResponse, headers: Record<string, string>): Promise<void> {
  const session = new Session(new SseResponseConnection(res, headers), {
    retry: null,
    keepAlive: null,
    trustClientEventId: false,
  })
  // Emitted whatever happened meanwhile; the session is not used after it.
  return new Promise((resolve) => session.once('connected', () => resolve()))
}

/** A window of ids being read for a replay: (its start, `to`]. */
interface ReplayWindow {
  to: number
  rows: Promise<ReplayedEvent[]>
}

/**
 * Writes the visible events in (after, upTo] to the stream; returns how many. Pages are read ahead while one
 * is written, so the database and the socket work at the same time; at most REPLAY_READ_AHEAD + 1 pages
 * are held. The database builds each frame.
 */
async function replay(reader: LogReader, conn: StreamConnection, after: number, upTo: number): Promise<number> {
  // Resumes from a recent event (most of them: a reconnect) are served from the rows the tail keeps in memory.
  const held = reader.recent?.between(after, upTo)
  if (held) return replayHeld(conn, held)
  const viewer = conn.viewer
  /** The first REPLAY_PAGE visible events in (from, to]. */
  const read = (from: number, to: number): ReplayWindow => {
    const rows = reader.replayWindow(viewer, from, to, REPLAY_PAGE)
    rows.catch(() => {}) // awaited below; a read ahead and never awaited (client left) must not crash us
    return { to, rows }
  }
  // The range is read as windows of ids, REPLAY_READ_AHEAD of them in flight while a page is written, so a
  // long replay is not one database round trip per page. Each query looks at a window, not at everything up
  // to the watermark: when the planner misjudges a tenant (statistics not yet analyzed after a burst of
  // inserts) it sorts every row in range before the LIMIT. A window with few visible events (a sparse
  // history) makes the next ones twice as wide. A full window was cut at REPLAY_PAGE: the history is dense
  // from there, so the wider windows already in flight behind it are dropped (their reads abandoned) and
  // reading goes on from its last event in narrow windows again.
  let width = REPLAY_PAGE
  // Windows start at the first event after `after` of the stream's tenants (one look at the (tenant, id) index
  // each): a stream resuming from far back does not walk, window by window, through other tenants' ids first.
  let end = Math.max(after, (await reader.firstIdAfter(conn.tenants, after, upTo)) - 1)
  let ahead: ReplayWindow[] = []
  const readAhead = () => {
    while (ahead.length < REPLAY_READ_AHEAD && end < upTo) {
      const from = end
      end = Math.min(upTo, from + width)
      ahead.push(read(from, end))
    }
  }
  readAhead()
  let written = 0
  while (ahead.length && !conn.closed) {
    const window = ahead.shift() as ReplayWindow
    const rows = await window.rows
    const lastId = rows.length ? Number(rows[rows.length - 1].id) : window.to
    if (rows.length === REPLAY_PAGE && lastId < window.to) {
      ahead = []
      end = lastId
      width = REPLAY_PAGE
    } else if (rows.length < REPLAY_PAGE / 2) {
      width *= 2
    }
    readAhead()
    // Written in slices, each waiting for the socket to drain: a replay holds at most a slice in memory
    // beyond what the socket has taken, whatever the size of the events.
    let slice = ''
    for (const r of rows) {
      slice += r.frame
      if (slice.length >= REPLAY_SLICE_CHARS) {
        await conn.writeReplay(slice)
        slice = ''
      }
    }
    if (slice) await conn.writeReplay(slice)
    if (conn.deliveryLog) for (const r of rows) conn.deliveryLog.delivered(conn.userId, Number(r.id))
    written += rows.length
  }
  return written
}

/**
 * replay, from rows held in memory (events/recent-log.ts): those the stream carries (the hub's rule of live
 * dispatch) and its user's preferences show, their frames shared by every stream that replays them.
 */
async function replayHeld(conn: StreamConnection, rows: readonly RecentRow[]): Promise<number> {
  let slice = ''
  let ids: number[] = []
  let written = 0
  const flush = async () => {
    await conn.writeReplay(slice)
    if (conn.deliveryLog && !conn.closed) for (const id of ids) conn.deliveryLog.delivered(conn.userId, id)
    written += ids.length
    slice = ''
    ids = []
  }
  for (const r of rows) {
    if (conn.closed) break
    if (!conn.carries(r.row) || conn.hides(r.row)) continue
    slice += r.frame(conn.locale)
    ids.push(r.row.id)
    if (slice.length >= REPLAY_SLICE_CHARS) await flush()
  }
  if (slice) await flush()
  return written
}
