import { Session } from 'better-sse'
import { and, asc, eq, gt, lte, sql } from 'drizzle-orm'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Caller } from '../auth.ts'
import type { Presence } from '../cluster/presence.ts'
import type { Database } from '../db/client.ts'
import { events } from '../db/schema.ts'
import type { LogTail } from '../events/log-tail.ts'
import { eventJson } from '../events/model.ts'
import { viewerOf, visibleTo } from '../events/visibility.ts'
import { StreamConnection } from './connection.ts'
import { notificationFrame, type StreamHub } from './hub.ts'

/** Events per replay query; each page is written as one chunk. */
const REPLAY_PAGE = 500
/** Tells EventSource to wait 3 s before reconnecting. */
const RETRY_MS = 3_000
const RESET_FRAME = 'event: reset\ndata: {"reason":"expired"}\n\n'

export interface StreamDeps {
  database: Database
  hub: StreamHub
  tail: LogTail
  presence: Presence
  bufferLimit: number
  /** Extra response headers (CORS): Fastify hooks do not run after hijack. */
  headers?: (request: FastifyRequest) => Record<string, string>
}

/**
 * Opens an SSE stream: registers it (live events queue from here on), replays the visible events after
 * `lastEventId` up to the log tail's watermark, then flushes the queue. The watermark splits the id space:
 * replay covers ids up to it, the tail delivers ids above it, so nothing falls between or comes twice.
 */
export async function openStream(
  deps: StreamDeps,
  request: FastifyRequest,
  reply: FastifyReply,
  caller: Caller,
  topics: string[],
  lastEventId: number | undefined,
): Promise<void> {
  const { database, hub, tail, presence } = deps
  // Present before the stream opens: a push decided after this moment knows the user is online.
  // (If the database is down this throws, and the client gets a 503 instead of a stream.)
  await presence.enter(caller.tenant, caller.userId)
  reply.hijack()
  const session = new Session(request.raw, reply.raw, {
    retry: null,
    keepAlive: null,
    trustClientEventId: false,
    headers: { 'Cache-Control': 'no-store', ...deps.headers?.(request) },
  })
  const conn = new StreamConnection(caller.tenant, caller.userId, caller.roles, topics, reply.raw, deps.bufferLimit)
  conn.onClose(() => presence.leave(caller.tenant, caller.userId))
  await new Promise<void>((resolve) => {
    session.once('connected', () => resolve())
    conn.onClose(() => resolve())
  })
  if (conn.closed) return // the client left before the stream started
  conn.write(`retry: ${RETRY_MS}\n\n`)

  const watermark = tail.cursor
  conn.lastQueuedId = Math.max(lastEventId ?? watermark, watermark)
  hub.add(conn)
  conn.closeAt(caller.exp)
  const opened = Date.now()
  conn.onClose((c) =>
    request.log.info(
      { stream: c.id, user: c.userId, tenant: c.tenant, reason: c.closeReason, durationMs: Date.now() - opened },
      'stream closed',
    ),
  )
  request.log.info(
    { stream: conn.id, user: caller.userId, tenant: caller.tenant, topics, lastEventId },
    'stream opened',
  )

  try {
    if (lastEventId !== undefined) {
      if (lastEventId > 0 && !(await isKept(database, lastEventId))) conn.write(RESET_FRAME)
      await replay(database, conn, caller, topics, lastEventId, watermark)
    }
    conn.goLive()
  } catch (err) {
    request.log.warn({ err, stream: conn.id }, 'replay failed; closing the stream so the client resumes')
    conn.close('error')
  }
}

/** True when the event a client resumes from is still in the log (not pruned, not expired). */
async function isKept(database: Database, id: number): Promise<boolean> {
  const rows = await database.db
    .select({ id: events.id })
    .from(events)
    .where(and(eq(events.id, id), gt(events.expiresAt, sql`now()`)))
  return rows.length > 0
}

async function replay(
  database: Database,
  conn: StreamConnection,
  caller: Caller,
  topics: string[],
  after: number,
  upTo: number,
) {
  const visible = visibleTo(viewerOf(caller, topics))
  let cursor = after
  while (cursor < upTo && !conn.closed) {
    const rows = await database.db
      .select()
      .from(events)
      .where(and(visible, gt(events.id, cursor), lte(events.id, upTo)))
      .orderBy(asc(events.id))
      .limit(REPLAY_PAGE)
    if (!rows.length) break
    await conn.writeReplay(rows.map((r) => notificationFrame(r.id, eventJson(r))).join(''))
    cursor = rows[rows.length - 1].id
    if (rows.length < REPLAY_PAGE) break
  }
}
