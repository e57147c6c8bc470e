import type { ServerResponse } from 'node:http'
import { topicMatches } from '../auth.ts'

export type CloseReason = 'client' | 'evicted' | 'expired' | 'slow' | 'shutdown' | 'error'

/** Live events that may wait behind a replay before the connection counts as too slow. */
const MAX_QUEUED_DURING_REPLAY = 50_000

let nextConnectionId = 1

/**
 * One open SSE stream. While its replay runs, live events queue here; afterwards they are written
 * straight to the socket. An event id at or below `lastQueuedId` is never written twice.
 */
export class StreamConnection {
  readonly id = nextConnectionId++
  readonly openedAt = Date.now()
  readonly roles: ReadonlySet<string>
  readonly exactTopics: ReadonlySet<string>
  readonly topicPrefixes: readonly string[]
  /** Highest event id written or queued. */
  lastQueuedId = 0
  closed = false
  closeReason: CloseReason | undefined
  private replaying = true
  private queued: string[] = []
  private expiryTimer: NodeJS.Timeout | undefined
  private readonly onClosed: Array<(c: StreamConnection) => void> = []

  constructor(
    readonly tenant: string,
    readonly userId: string,
    roles: readonly string[],
    readonly topics: readonly string[],
    private readonly res: ServerResponse,
    private readonly bufferLimit: number,
  ) {
    this.roles = new Set(roles)
    this.exactTopics = new Set(topics.filter((t) => !t.endsWith('*')))
    this.topicPrefixes = topics.filter((t) => t.endsWith('*'))
    res.once('close', () => this.close('client'))
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
  deliver(id: number, frame: string): void {
    if (id <= this.lastQueuedId || this.closed) return
    this.lastQueuedId = id
    if (this.replaying) {
      this.queued.push(frame)
      if (this.queued.length > MAX_QUEUED_DURING_REPLAY) this.close('slow')
      return
    }
    this.write(frame)
  }

  /** Frames without an id (receipts, heartbeats, reset): written now, in whatever mode. */
  write(chunk: string): void {
    if (this.closed) return
    this.res.write(chunk)
    // The kernel and Node hold what the client has not read: past the limit the client is too slow.
    // Dropping it is safe: it resumes from Last-Event-ID and loses nothing.
    if (this.res.writableLength > this.bufferLimit) this.close('slow')
  }

  /** Replay output: waits for the socket to drain instead of dropping the reader. */
  async writeReplay(chunk: string): Promise<void> {
    if (this.closed) return
    if (this.res.write(chunk)) return
    await new Promise<void>((resolve) => {
      const done = () => {
        this.res.off('drain', done)
        this.res.off('close', done)
        resolve()
      }
      this.res.on('drain', done)
      this.res.on('close', done)
    })
  }

  /** Replay finished: send what queued meanwhile, then go live. */
  goLive(): void {
    this.replaying = false
    const queued = this.queued
    this.queued = []
    if (queued.length) this.write(queued.join(''))
  }

  closeAt(expSeconds: number | undefined) {
    if (expSeconds === undefined) return
    const ms = Math.min(expSeconds * 1000 - Date.now(), 2 ** 31 - 1)
    this.expiryTimer = setTimeout(() => this.close('expired'), Math.max(ms, 0))
  }

  onClose(listener: (c: StreamConnection) => void) {
    this.onClosed.push(listener)
  }

  close(reason: CloseReason): void {
    if (this.closed) return
    this.closed = true
    this.closeReason = reason
    clearTimeout(this.expiryTimer)
    this.queued = []
    if (reason === 'slow' || reason === 'error') this.res.destroy()
    else if (!this.res.writableEnded) this.res.end()
    for (const listener of this.onClosed) listener(this)
  }
}
