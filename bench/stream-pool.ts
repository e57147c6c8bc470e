import http from 'node:http'
import { nowMs, Samples } from './stats.ts'

export interface PoolOptions {
  host: string
  port: number
  /** How many streams this pool opens; stream `i` authenticates with `tokenFor(i)` (no header when undefined). */
  streams: number
  tokenFor: (i: number) => string | undefined
  /** Request path of stream `i` (default `/v1/stream`). */
  pathFor?: (i: number) => string
  /**
   * Which measured events are addressed to stream `i` (1 = addressed). Without it every stream expects every
   * event; with it, an event that reaches a stream it was not addressed to counts as `misaddressed`.
   */
  addressedTo?: (i: number) => Uint8Array
  /** Client sockets are spread over these source addresses: one address runs out of ports near 28k. */
  localAddresses: string[]
  /** Measured events expected on every stream, numbered 0..events-1 by the `n` in their data. */
  events: number
  /** Sent as Last-Event-ID (the replay scenario). */
  lastEventId?: string
  /** Connection attempts in flight at once: more only overflows the server's accept backlog. */
  openConcurrency?: number
  /** An open that has no response after this long counts as failed. */
  openTimeoutMs?: number
  /** No new connection is started after this long; the streams not started count as failed ("not started"). */
  openPhaseMs?: number
}

/** What the publisher puts in each event's `data`: its send time, and its number (-1: the warm-up event). */
export interface BenchData {
  t: number
  n: number
}

export interface PoolProgress {
  /** Streams that received the warm-up event. */
  warmed: number
  /** Distinct (stream, event) pairs received: the deliveries that count. */
  unique: number
  duplicated: number
  lastReceiveMs: number
  /** When the last warm-up event (n < 0) arrived. */
  lastWarmedMs: number
}

export interface PoolReport extends PoolProgress {
  opened: number
  openFailed: number
  /** Why opens failed, e.g. { "503": 12, "ECONNRESET": 3 }. */
  failures: Record<string, number>
  /** Streams that ended or errored while we were still listening. */
  closedEarly: number
  /** Events received after an event with a higher id on the same stream (ids must only grow). */
  outOfOrder: number
  /** Events whose data was not ours (another scenario's, say). */
  unexpected: number
  /** Events that reached a stream they were not addressed to (see PoolOptions.addressedTo): must be 0. */
  misaddressed: number
  firstReceiveMs: number
  /** Publish-to-receive milliseconds of every counted delivery. */
  latencies: Float64Array
}

interface Stream {
  req: http.ClientRequest
  /** Text after the last complete frame. */
  rest: string
  /** seen[n] = 1 once event n arrived. */
  seen: Uint8Array
  /** addressed[n] = 1 when event n is meant for this stream; undefined: every event is. */
  addressed: Uint8Array | undefined
  /** Highest event id received so far. */
  lastId: number
  warmed: boolean
  open: boolean
}

const DEFAULT_OPEN_CONCURRENCY = 200
/** How a live-only event's frame starts (no `id:` line). */
const LIVE_PREFIX = 'event: live\ndata: '
const DEFAULT_OPEN_TIMEOUT_MS = 30_000

/**
 * Many SSE streams on raw sockets (no agent, no EventSource), read cheaply: frames are cut on blank lines,
 * an `id:` frame is counted, and its data JSON is parsed once per event id (not once per stream) just to read
 * the publisher's timestamp and number. Every stream counts each event once, so losses and duplicates show.
 */
export class StreamPool {
  private readonly streams: Stream[] = []
  /** Per event id, the parsed bench data: every stream gets the same frame, so parse it once. */
  private readonly dataById = new Map<string, BenchData | null>()
  private latencies = new Samples()
  private readonly failures: Record<string, number> = {}
  private closing = false
  private counts = {
    opened: 0,
    openFailed: 0,
    closedEarly: 0,
    warmed: 0,
    unique: 0,
    duplicated: 0,
    outOfOrder: 0,
    unexpected: 0,
    misaddressed: 0,
    firstReceiveMs: 0,
    lastReceiveMs: 0,
    lastWarmedMs: 0,
  }

  constructor(private readonly options: PoolOptions) {}

  /** Opens every stream (a bounded number at a time); resolves when each has answered or failed. */
  async open(): Promise<{ opened: number; openFailed: number; failures: Record<string, number>; ms: number }> {
    const started = nowMs()
    const stopAt = started + (this.options.openPhaseMs ?? Number.POSITIVE_INFINITY)
    let next = 0
    const opener = async () => {
      while (next < this.options.streams && nowMs() < stopAt) await this.openOne(next++)
    }
    await Promise.all(
      Array.from(
        { length: Math.min(this.options.openConcurrency ?? DEFAULT_OPEN_CONCURRENCY, this.options.streams) },
        opener,
      ),
    )
    const notStarted = this.options.streams - next
    if (notStarted > 0) {
      this.counts.openFailed += notStarted
      this.failures['not started'] = notStarted
    }
    return {
      opened: this.counts.opened,
      openFailed: this.counts.openFailed,
      failures: this.failures,
      ms: nowMs() - started,
    }
  }

  private openOne(i: number): Promise<void> {
    const { host, port, localAddresses, lastEventId } = this.options
    const headers: Record<string, string> = { accept: 'text/event-stream' }
    const token = this.options.tokenFor(i)
    if (token !== undefined) headers.authorization = `Bearer ${token}`
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
    return new Promise((resolve) => {
      let settled = false
      const fail = (why: string) => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        this.counts.openFailed++
        this.failures[why] = (this.failures[why] ?? 0) + 1
        req.destroy()
        resolve()
      }
      const req = http.request({
        host,
        port,
        path: this.options.pathFor?.(i) ?? '/v1/stream',
        headers,
        agent: false,
        localAddress: localAddresses[i % localAddresses.length],
      })
      const timer = setTimeout(() => fail('timeout'), this.options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS)
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (!settled) fail(err.code ?? err.message)
        else if (stream.open) this.ended(stream)
      })
      const stream: Stream = {
        req,
        rest: '',
        seen: new Uint8Array(this.options.events),
        addressed: this.options.addressedTo?.(i),
        lastId: 0,
        warmed: false,
        open: false,
      }
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          res.resume()
          return fail(String(res.statusCode))
        }
        settled = true
        clearTimeout(timer)
        stream.open = true
        this.streams.push(stream)
        this.counts.opened++
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => this.onData(stream, chunk))
        res.on('end', () => this.ended(stream))
        res.on('error', () => this.ended(stream))
        resolve()
      })
      req.end()
    })
  }

  private ended(s: Stream) {
    if (!s.open) return
    s.open = false
    if (!this.closing) this.counts.closedEarly++
  }

  private onData(s: Stream, chunk: string) {
    const t = nowMs()
    const text = s.rest ? s.rest + chunk : chunk
    let start = 0
    for (;;) {
      const end = text.indexOf('\n\n', start)
      if (end < 0) break
      // Only notification frames carry an id; comments, retry and receipts are skipped. Live-only frames
      // (`event: live`, no id: scenario 12) count as events too.
      if (text.startsWith('id: ', start)) this.onEvent(s, text, start, end, t)
      else if (text.startsWith(LIVE_PREFIX, start)) this.onLive(s, text, start, end, t)
      start = end + 2
    }
    s.rest = start < text.length ? text.slice(start) : ''
  }

  private onEvent(s: Stream, text: string, start: number, end: number, t: number) {
    const id = text.slice(start + 4, text.indexOf('\n', start))
    let data = this.dataById.get(id)
    if (data === undefined) {
      data = parseBenchData(text, start, end)
      this.dataById.set(id, data)
    }
    this.count(s, data, orderOf(id), t)
  }

  /** A live-only frame: no id, so its data text is the key its parsed data is kept under (parsed once per event). */
  private onLive(s: Stream, text: string, start: number, end: number, t: number) {
    const json = text.slice(start + LIVE_PREFIX.length, end)
    let data = this.dataById.get(json)
    if (data === undefined) {
      data = parseBenchData(`\ndata: ${json}`, 0, json.length + 7)
      this.dataById.set(json, data)
    }
    this.count(s, data, undefined, t)
  }

  /** One event frame received by `s` (`order`: its id as a number; none for live frames, which have no order). */
  private count(s: Stream, data: BenchData | null, order: number | undefined, t: number) {
    const c = this.counts
    if (data === null || data.n >= s.seen.length) {
      c.unexpected++
      return
    }
    if (data.n < 0) {
      if (!s.warmed) c.warmed++
      s.warmed = true
      c.lastWarmedMs = t
      return
    }
    if (s.addressed && !s.addressed[data.n]) {
      c.misaddressed++
      return
    }
    if (s.seen[data.n]) {
      c.duplicated++
      return
    }
    s.seen[data.n] = 1
    c.unique++
    if (order !== undefined && order < s.lastId) c.outOfOrder++
    else if (order !== undefined) s.lastId = order
    this.latencies.push(t - data.t)
    if (c.firstReceiveMs === 0) c.firstReceiveMs = t
    c.lastReceiveMs = t
  }

  progress(): PoolProgress {
    const { warmed, unique, duplicated, lastReceiveMs, lastWarmedMs } = this.counts
    return { warmed, unique, duplicated, lastReceiveMs, lastWarmedMs }
  }

  /**
   * Counts so far. With `newRound`, the delivery counts and latencies start again from zero afterwards (the
   * streams, and which events each has seen, stay): the fan-out scenario measures several bursts on one set of streams.
   */
  report(newRound = false): PoolReport {
    const report = { ...this.counts, failures: { ...this.failures }, latencies: this.latencies.values() }
    if (newRound) {
      Object.assign(this.counts, {
        unique: 0,
        duplicated: 0,
        outOfOrder: 0,
        unexpected: 0,
        misaddressed: 0,
        firstReceiveMs: 0,
        lastReceiveMs: 0,
      })
      this.latencies = new Samples()
    }
    return report
  }

  /** Drops every socket; nothing counts as closed early from here on. */
  close(): void {
    this.closing = true
    for (const s of this.streams) s.req.destroy()
  }
}

/**
 * An event id as a number that grows with it: ours are decimal integers; Nchan's are `<unix seconds>:<tag>`
 * (the tag counts messages within the second), compared as seconds first, then tag.
 */
function orderOf(id: string): number {
  const colon = id.indexOf(':')
  return colon < 0 ? Number(id) : Number(id.slice(0, colon)) * 1e6 + Number(id.slice(colon + 1))
}

/** The `data` of an event frame's JSON, when it is ours. */
function parseBenchData(text: string, start: number, end: number): BenchData | null {
  const at = text.indexOf('\ndata: ', start)
  if (at < 0 || at > end) return null
  try {
    const data = JSON.parse(text.slice(at + 7, end)).data
    return typeof data?.t === 'number' && typeof data?.n === 'number' ? data : null
  } catch {
    return null
  }
}
