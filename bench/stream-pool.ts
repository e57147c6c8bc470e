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
  /** The id of the last event frame received, as sent (warm-up events too): a reconnect sends it as Last-Event-ID. */
  lastIdText: string | undefined
  /** Its index in the pool (its user). */
  index: number
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
  /** Every stream opened, by index, whether open now or dropped by `disconnect`. */
  private readonly byIndex: Stream[] = []
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

  private openOne(i: number, existing?: Stream, onFirstRequest?: () => void): Promise<void> {
    const { host, port, localAddresses } = this.options
    const lastEventId = existing ? existing.lastIdText : this.options.lastEventId
    const headers: Record<string, string> = { accept: 'text/event-stream' }
    const token = this.options.tokenFor(i)
    if (token !== undefined) headers.authorization = `Bearer ${token}`
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId
    onFirstRequest?.()
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
        else if (stream.open && stream.req === req) this.ended(stream)
      })
      const stream: Stream = existing ?? {
        req,
        rest: '',
        seen: new Uint8Array(this.options.events),
        addressed: this.options.addressedTo?.(i),
        lastId: 0,
        lastIdText: undefined,
        index: i,
        warmed: false,
        open: false,
      }
      stream.req = req
      stream.rest = ''
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          res.resume()
          return fail(String(res.statusCode))
        }
        settled = true
        clearTimeout(timer)
        stream.open = true
        if (!existing) {
          this.streams.push(stream)
          this.byIndex[i] = stream
          this.counts.opened++
        }
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => this.onData(stream, chunk))
        // A socket dropped by `disconnect` may report its end after the stream reconnected: not this one's.
        res.on('end', () => stream.req === req && this.ended(stream))
        res.on('error', () => stream.req === req && this.ended(stream))
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
    s.lastIdText = id
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

  /**
   * Drops every stream's socket, as a network cut would, keeping what each has seen and its last event id
   * (scenario 14): `reconnect` opens them again with it. A dropped stream does not count as closed early.
   */
  disconnect(): number {
    let dropped = 0
    for (const s of this.streams) {
      if (!s.open) continue
      s.open = false
      s.req.destroy()
      dropped++
    }
    return dropped
  }

  /**
   * Opens every stream `disconnect` dropped again, at once (at most `concurrency` connects in flight), each with
   * `Last-Event-ID: <the id of the last event it received>`. `firstRequestMs`: when the first request went out.
   */
  async reconnect(
    concurrency: number,
  ): Promise<{ reconnected: number; failed: number; failures: Record<string, number>; firstRequestMs: number }> {
    const dropped = this.streams.filter((s) => !s.open)
    const failedBefore = this.counts.openFailed
    const failures: Record<string, number> = {}
    const before = { ...this.failures }
    let firstRequestMs = 0
    let next = 0
    const opener = async () => {
      while (next < dropped.length) {
        const s = dropped[next++]
        await this.openOne(s.index, s, () => {
          if (firstRequestMs === 0) firstRequestMs = nowMs()
        })
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, dropped.length) }, opener))
    for (const [k, v] of Object.entries(this.failures)) if (v !== (before[k] ?? 0)) failures[k] = v - (before[k] ?? 0)
    const failed = this.counts.openFailed - failedBefore
    return { reconnected: dropped.length - failed, failed, failures, firstRequestMs }
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
