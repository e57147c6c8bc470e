import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Writable } from 'node:stream'
import { topicMatches } from '../auth.ts'
import type { EventRow } from '../db/schema.ts'
import type { InAppFilter } from '../events/preference-rules.ts'
import type { Viewer } from '../events/visibility.ts'
import { chunkOf, evictedFrame, type Frame, HEARTBEAT_FRAME } from '../wire-format.ts'
import { releaseResponse } from './idle-memory.ts'

/** Consecutive events in id order that go to each stream in one write (StreamConnection.deliverAll). */
export interface JoinedEvents {
  readonly events: ReadonlyArray<{ readonly id: number; readonly frame: Frame }>
  /** The frames of `events[first]` and those after it, as one. */
  joinedFrom(first: number): Frame
}

export type CloseReason = 'client' | 'evicted' | 'expired' | 'slow' | 'shutdown' | 'error'

/** Live events that may wait behind a replay before the connection counts as too slow. */
const MAX_QUEUED_DURING_REPLAY = 50_000
/** Frames without an id (receipts) may overshoot the buffer limit by this factor before the reader is dropped. */
const HARD_LIMIT_FACTOR = 4

/** Where streams record the events they were sent, for the roll-call (events/stream-deliveries.ts). */
export interface DeliveryLog {
  delivered(userId: string, eventId: number): void
}

let nextConnectionId = 1
const NONE: ReadonlySet<string> = new Set()
const NO_PREFIXES: readonly string[] = []
const NO_TENANTS: ReadonlyMap<string, ReadonlySet<string>> = new Map()
/** Ends a chunked HTTP/1.1 body: written by the stream itself once its response is let go. */
const LAST_CHUNK = '0\r\n\r\n'

/** The stream a socket carries once its response is let go: what the socket's close listener closes. */
const STREAM_OF = Symbol('herald.stream')
type StreamSocket = Socket & { [STREAM_OF]?: StreamConnection }
/** Every stream's close listener on its socket: one function, not a closure per stream. */
function closeStreamOfSocket(this: StreamSocket) {
  this[STREAM_OF]?.close('client')
}
/** A tick after `start` (scheduled without a closure per stream): see StreamConnection.settle. */
function settleStream(c: StreamConnection) {
  if (!c.closed) c.settle()
}

/**
 * One open SSE stream, in one of three states:
 *  - replaying: history is being written from the database; live events queue (bounded) until it ends;
 *  - live: live events are written as they come;
 *  - behind: the client did not keep up (more than `bufferLimit` bytes unread). Live events are skipped,
 *    not buffered, so memory stays bounded; once the socket drains, `catchUp` reads what was skipped back
 *    from the log, and the stream is live again. A client that does not drain within `slowReaderTimeoutMs`
 *    is dropped; it resumes from Last-Event-ID and loses nothing.
 * An event id at or below `lastQueuedId` is never written twice.
 */
export class StreamConnection {
  readonly id = nextConnectionId++
  readonly openedAt = Date.now()
  readonly roles: ReadonlySet<string>
  exactTopics: ReadonlySet<string>
  readonly topicPrefixes: readonly string[]
  /**
   * True for a stream opened without `?topics=`: it follows the user's topic subscriptions, and the hub adds and
   * removes its topics as they change.
   */
  followsSubscriptions = false
  /** What the user's preferences leave out (`inApp: false`), live and in replays; undefined: nothing. */
  inApp: InAppFilter | undefined = undefined
  /**
   * The user's locale (BCP 47, as Intl writes it), set when the stream opens: events whose type rendered their text
   * per locale are sent in it, live and replayed; undefined: the fallback text.
   */
  locale: string | undefined = undefined
  /**
   * The other tenants the token covers (a director of several schools), with the user's roles in each: the hub
   * indexes the stream there too, by user and those roles. Set before the hub adds the stream, never after.
   */
  otherTenants: ReadonlyMap<string, ReadonlySet<string>> = NO_TENANTS
  /** Highest event id written or queued. */
  lastQueuedId = 0
  /** Told of each event written or queued here, live or replayed (StreamHub sets it). */
  deliveryLog: DeliveryLog | undefined
  closed = false
  /**
   * False until the response head is out (better-sse writes it a tick after the stream is registered).
   * Until then nothing may touch the response: the opener ends it if the stream was closed meanwhile.
   */
  private started = false
  /**
   * Once started, where the response is chunked (HTTP/1.1): its socket, which frames are written to directly
   * as prebuilt chunks. Otherwise (an HTTP/1.0 client or proxy) frames go through the response as they are.
   */
  private socket: Socket | undefined
  /**
   * The response, until frames go to the socket and Node's per-response state is let go (idle-memory.ts
   * releaseResponse): from then on the socket is the stream's only handle, and `res` is undefined.
   */
  private res: ServerResponse | undefined
  closeReason: CloseReason | undefined
  /**
   * Set by whoever opened the stream: replays ids after `afterId` from the log, then calls goLive(). One function
   * shared by every stream of the app (it is given the stream), not a closure per stream.
   */
  catchUp: ((c: StreamConnection, afterId: number) => Promise<void>) | undefined
  /** The request that opened the stream (its log lines carry it). */
  requestId: string | undefined
  /** The stream's record in the connection audit (audit/connections.ts), once it has one. */
  auditId: string | undefined
  private state: 'replaying' | 'live' | 'behind' = 'replaying'
  /** Live events that arrived during a replay (none: undefined, as for most streams, which never replay). */
  private queued: Array<{ id: number; frame: Frame }> | undefined
  /** When the token ends, in ms (Infinity without `exp`): the hub closes expired streams each second. */
  expiresAt = Number.POSITIVE_INFINITY
  private slowTimer: NodeJS.Timeout | undefined
  private readonly onClosed: Array<(c: StreamConnection) => void> = []
  /** Written last when the stream is closed (the evicted frame); whoever ends the response writes it. */
  farewell: string | undefined

  constructor(
    readonly tenant: string,
    readonly userId: string,
    roles: readonly string[],
    topics: readonly string[],
    res: ServerResponse,
    private readonly bufferLimit: number,
    private readonly slowReaderTimeoutMs: number,
    /** Counts event frames written live (replays are counted by whoever replays). */
    private readonly deliveries: { inc(count: number): void },
  ) {
    // Most streams have no roles or topics: they share one empty set instead of two of their own each.
    this.roles = roles.length ? new Set(roles) : NONE
    this.exactTopics = topics.length ? new Set(topics.filter((t) => !t.endsWith('*'))) : NONE
    this.topicPrefixes = topics.length ? topics.filter((t) => t.endsWith('*')) : NO_PREFIXES
    this.res = res
    res.on('close', () => this.close('client')) // emitted once; `once` would add a wrapper per stream
  }

  /** Bytes written to this stream that the socket has not taken yet: what a slow reader costs us. */
  get bufferedBytes(): number {
    return this.sinkLength()
  }

  /** The most `bufferedBytes` has been, right after a write. */
  peakBufferedBytes = 0

  /** Bytes waiting in the socket, or in the response and its socket until frames go to the socket directly. */
  private sinkLength(): number {
    return (this.socket ?? this.res)?.writableLength ?? 0
  }

  private written() {
    const n = this.sinkLength()
    if (n > this.peakBufferedBytes) this.peakBufferedBytes = n
    return n
  }

  /** Who is watching, for the database's visibility rule (replays). */
  get viewer(): Viewer {
    return {
      tenant: this.tenant,
      userId: this.userId,
      roles: [...this.roles],
      topicPatterns: this.topics,
      inApp: this.inApp,
      locale: this.locale,
      otherTenants: new Map([...this.otherTenants].map(([tenant, roles]) => [tenant, [...roles]])),
    }
  }

  /** Every tenant the stream carries: its own first, then the others its token covers. */
  get tenants(): string[] {
    return [this.tenant, ...this.otherTenants.keys()]
  }

  /** The user's roles in `tenant`, one the stream carries. */
  rolesIn(tenant: string): ReadonlySet<string> {
    return tenant === this.tenant ? this.roles : (this.otherTenants.get(tenant) ?? NONE)
  }

  /**
   * True when the user's preferences leave the event out of this stream. They are the current tenant's, so they
   * apply to its events only.
   */
  hides(e: Parameters<InAppFilter['hides']>[0] & { tenant: string }): boolean {
    return this.inApp !== undefined && e.tenant === this.tenant && this.inApp.hides(e)
  }

  /** The topics and `prefix*` patterns the stream follows now. */
  get topics(): string[] {
    return [...this.exactTopics, ...this.topicPrefixes]
  }

  /** Follows one more topic, or one less (the user's subscriptions changed). Returns false when nothing changed. */
  setFollows(topic: string, follows: boolean): boolean {
    if (this.exactTopics.has(topic) === follows) return false
    const topics = new Set(this.exactTopics)
    if (follows) topics.add(topic)
    else topics.delete(topic)
    this.exactTopics = topics.size ? topics : NONE
    return true
  }

  /**
   * True when the stream carries the event by its audience (stream/hub.ts dispatch indexes the same rule; the
   * database's is events/visibility.ts visibleTo): one of the stream's tenants, and sent to that tenant, to the
   * user, to one of their roles there, or to a topic the stream follows (topics are the current tenant's only).
   * The user's preferences (`hides`) are checked apart.
   */
  carries(e: Pick<EventRow, 'tenant' | 'toTenant' | 'toUsers' | 'toRoles' | 'toTopics'>): boolean {
    if (e.tenant !== this.tenant && !this.otherTenants.has(e.tenant)) return false
    if (e.toTenant || e.toUsers.includes(this.userId)) return true
    const roles = this.rolesIn(e.tenant)
    if (roles.size && e.toRoles.some((role) => roles.has(role))) return true
    return e.toTopics.length > 0 && e.tenant === this.tenant && this.followsAnyTopic(e.toTopics)
  }

  /** True when the stream subscribed to a topic matching one of `topics`. */
  followsAnyTopic(topics: readonly string[]): boolean {
    for (const t of topics) {
      if (this.exactTopics.has(t)) return true
      for (const p of this.topicPrefixes) if (topicMatches(p, t)) return true
    }
    return false
  }

  /** A live event (already serialized as an SSE frame). Dropped if this id was already sent. */
  deliver(id: number, frame: Frame): void {
    if (id <= this.lastQueuedId || this.closed || this.state === 'behind') return
    this.lastQueuedId = id
    this.deliveryLog?.delivered(this.userId, id)
    if (this.state === 'replaying') {
      this.queued ??= []
      this.queued.push({ id, frame })
      if (this.queued.length > MAX_QUEUED_DURING_REPLAY) this.close('slow')
      return
    }
    this.sendLive(frame, 1)
  }

  /**
   * Consecutive live events in id order, written together: a live stream gets those it does not have yet (the
   * first ones may have reached it already, joined to the fan-out before) in one write; one that is replaying
   * or behind gets them one by one, as deliver() takes them.
   */
  deliverAll(run: JoinedEvents): void {
    const { events } = run
    if (this.state !== 'live' || this.closed) {
      for (const e of events) this.deliver(e.id, e.frame)
      return
    }
    let first = 0
    while (first < events.length && events[first].id <= this.lastQueuedId) first++
    if (first === events.length) return
    this.lastQueuedId = events[events.length - 1].id
    if (this.deliveryLog)
      for (let i = first; i < events.length; i++) this.deliveryLog.delivered(this.userId, events[i].id)
    this.sendLive(run.joinedFrom(first), events.length - first)
  }

  /** Writes `count` live events' frames; past the buffer limit the stream falls behind. */
  private sendLive(frames: string | Frame, count: number) {
    this.send(frames)
    this.deliveries.inc(count)
    if (this.written() > this.bufferLimit) this.fallBehind()
  }

  /**
   * A live-only event's frame (no id): written now, also while replaying (it moves no Last-Event-ID, so it cannot
   * disturb the replay's order). Dropped, not buffered, for a stream that is behind or holds more than its buffer
   * limit unread: a live update is not a notification, and the next one supersedes it. Returns whether it was written.
   */
  writeLive(frame: Frame): boolean {
    if (this.closed || !this.started || this.state === 'behind' || this.sinkLength() > this.bufferLimit) return false
    this.send(frame)
    this.written()
    return true
  }

  /** Frames without an id (receipts, heartbeats, reset): written now, in any state. */
  write(chunk: string | Frame): void {
    if (this.closed || !this.started) return
    if (this.state === 'behind' && chunk === HEARTBEAT_FRAME) return // the socket is busy enough
    this.send(chunk)
    if (this.written() > this.bufferLimit * HARD_LIMIT_FACTOR) this.close('slow')
  }

  /** Every write after the head: false once the socket holds more than its high-water mark. */
  private send(chunk: string | Frame): boolean {
    const socket = this.socket ?? this.takeSocket()
    if (socket) return socket.write(typeof chunk === 'string' ? chunkOf(chunk) : chunk.asChunk)
    return (this.res as ServerResponse).write(typeof chunk === 'string' ? chunk : chunk.text)
  }

  /**
   * What emits 'drain' after `send` returned false, and 'close' when the client leaves: the socket, also while
   * frames still go through the response (the response relays its socket's 'drain' only while it is the
   * socket's current message, which idle-memory.ts undoes).
   */
  private get sink(): NodeJS.EventEmitter {
    return this.socket ?? this.res?.socket ?? (this.res as ServerResponse)
  }

  /**
   * Frames go to the socket directly, as chunks, once the response head is on it and the response holds nothing
   * of its own (writing past data the response still buffers would reorder the stream). Since Node 22 the first
   * write of a response goes out a tick later, so this is checked again on each write until it holds.
   */
  private takeSocket(): Socket | undefined {
    const res = this.res as ServerResponse & { _headerSent?: boolean }
    const socket = res.socket
    if (!this.started || !res.chunkedEncoding || !res._headerSent || !socket?.writable) return undefined
    if (res.writableLength !== socket.writableLength) return undefined
    this.socket = socket
    return socket
  }

  /**
   * Once the head is out and the opener has given back what the request held (idle-memory.ts shedRequestState):
   * takes the socket, and lets the response go, so that an idle stream holds neither it nor its request. The
   * socket then tells of the client leaving (the response no longer does).
   */
  settle(): void {
    const socket = this.socket ?? this.takeSocket()
    if (!socket || !this.res || !releaseResponse(this.res, socket)) return
    this.res = undefined
    ;(socket as StreamSocket)[STREAM_OF] = this
    socket.on('close', closeStreamOfSocket)
  }

  private fallBehind() {
    this.state = 'behind'
    this.slowTimer = setTimeout(() => this.close('slow'), this.slowReaderTimeoutMs)
    const drained = () => {
      clearTimeout(this.slowTimer)
      if (this.closed) return
      this.state = 'replaying'
      const catchUp = this.catchUp
      if (catchUp) void catchUp(this, this.lastQueuedId)
      else this.close('slow')
    }
    // A socket emits 'drain' only after a write past its high-water mark, which since Node 22 is 64 KiB: a stream
    // may fall behind (STREAM_BUFFER_LIMIT_BYTES) below it. Then an empty write's callback, which runs once
    // everything queued before it has gone to the kernel, says the same.
    const sink = this.sink as Writable
    if (sink.writableNeedDrain) sink.once('drain', drained)
    else sink.write('', drained)
  }

  /** Replay output: waits for the socket to drain (one page at a time), dropping a reader that does not. */
  async writeReplay(chunk: string): Promise<void> {
    if (this.closed) return
    const flushed = this.send(chunk)
    this.written()
    if (flushed) return
    const sink = this.sink
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        done()
        this.close('slow')
      }, this.slowReaderTimeoutMs)
      const done = () => {
        clearTimeout(timer)
        sink.off('drain', done)
        sink.off('close', done)
        resolve()
      }
      sink.on('drain', done)
      sink.on('close', done)
    })
  }

  /** Everything up to `id` is known to the client or predates it: later events only. */
  skipThrough(id: number): void {
    this.queued = this.queued?.filter((q) => q.id > id)
    this.lastQueuedId = Math.max(this.lastQueuedId, id)
  }

  /** The response head is ready: sends it with `first`, and from now on the stream may be written to. */
  start(first: string): void {
    this.started = true
    ;(this.res as ServerResponse).write(first)
    this.takeSocket()
    // Since Node 22 the head goes out on the next turn.
    setImmediate(settleStream, this)
  }

  /** Replay finished: send what queued meanwhile, then go live. */
  goLive(): void {
    if (this.closed) return
    this.state = 'live'
    const queued = this.queued
    this.queued = undefined
    if (queued?.length) this.sendLive(queued.map((q) => q.frame.text).join(''), queued.length)
  }

  /** Ends the stream when its token expires: now if it already has, else by the hub's sweep (no timer per stream). */
  closeAt(expSeconds: number | undefined) {
    if (expSeconds === undefined) return
    this.expiresAt = expSeconds * 1000
    if (this.expiresAt <= Date.now()) this.close('expired')
  }

  /** False once the response (or, without it, the socket) is ended or gone. */
  private writable(): boolean {
    if (this.res) return !this.res.writableEnded
    const socket = this.socket as Socket
    return !socket.destroyed && !socket.writableEnded
  }

  /** Ends the response: through Node while it has it, else as Node would, the last chunk and then the connection. */
  private end(): void {
    if (this.res) {
      this.res.end()
      return
    }
    const socket = this.socket as Socket
    socket.end(LAST_CHUNK, () => socket.destroy())
  }

  /** Drops the connection now, whatever it still had to send (shutdown, after its grace period). */
  destroy(): void {
    ;(this.res ?? this.socket)?.destroy()
  }

  /** Closes the stream for being over the per-user limit of `max` streams, telling the client why. */
  evict(max: number): void {
    if (this.closed) return
    this.farewell = evictedFrame(max)
    this.close('evicted')
  }

  /** `listener` runs once the stream has closed. Shared functions (given the stream) keep no closure per stream. */
  onClose(listener: (c: StreamConnection) => void) {
    this.onClosed.push(listener)
  }

  close(reason: CloseReason): void {
    if (this.closed) return
    this.closed = true
    this.closeReason = reason
    clearTimeout(this.slowTimer)
    this.queued = undefined
    if (!this.started) {
      // Closed before the head went out (evicted, shutdown): the opener ends the response once it can,
      // with the farewell.
    } else if (reason === 'slow' || reason === 'error') this.destroy()
    else if (this.writable()) {
      // (Writing the farewell may take the socket and let the response go: end() looks again.)
      if (this.farewell) this.send(this.farewell)
      this.end()
    }
    for (const listener of this.onClosed) listener(this)
  }
}
