import http from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { nowMs, Samples } from './stats.ts'

export interface PostResult {
  status: number
  body: string
  /** Request written to reply fully read. */
  ms: number
}

/** Publishes over a few keep-alive connections, opened up front (before the streams fill the server's file table). */
export class Publisher {
  private readonly agent: http.Agent

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly token: string,
    private readonly sockets: number,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: sockets })
  }

  /** Opens every keep-alive socket now, with as many concurrent health checks. */
  async warm(): Promise<void> {
    await Promise.all(Array.from({ length: this.sockets }, () => this.request('GET', '/health')))
  }

  /** POSTs `body` (JSON) with the publisher's token, or with `token` (a user registering a device, say). */
  post(path: string, body: string, token?: string): Promise<PostResult> {
    return this.request('POST', path, body, token)
  }

  /** PUTs `body` (JSON) with the publisher's token, or with `token` (a user setting their preferences, say). */
  put(path: string, body: string, token?: string): Promise<PostResult> {
    return this.request('PUT', path, body, token)
  }

  private request(method: string, path: string, body?: string, token = this.token): Promise<PostResult> {
    const started = nowMs()
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { authorization: `Bearer ${token}` }
      if (body !== undefined) headers['content-type'] = 'application/json'
      const req = http.request(
        { host: this.host, port: this.port, method, path, headers, agent: this.agent },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (text += d))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, ms: nowMs() - started }))
          res.on('error', reject)
        },
      )
      req.on('error', reject)
      req.end(body)
    })
  }

  close(): void {
    this.agent.destroy()
  }
}

export interface LoadResult {
  /** Requests answered with the expected status. */
  ok: number
  /** Other statuses and network errors, by status code or error code. */
  errors: Record<string, number>
  /** Latency of each successful request, ms. */
  latencies: Float64Array
  elapsedMs: number
}

/** Answers as a load counts them: latencies of the expected status, everything else by status or error code. */
class Tally {
  private readonly latencies = new Samples()
  private readonly errors: Record<string, number> = {}
  private ok = 0
  private readonly started = nowMs()

  constructor(private readonly expectStatus: number) {}

  /** A request whose latency counts from `since`; resolves once it is answered and counted. */
  async send(request: Promise<PostResult>, since: number): Promise<void> {
    try {
      const r = await request
      if (r.status === this.expectStatus) {
        this.ok++
        this.latencies.push(nowMs() - since)
      } else this.count(String(r.status))
    } catch (err) {
      this.count((err as NodeJS.ErrnoException).code ?? 'error')
    }
  }

  private count(what: string) {
    this.errors[what] = (this.errors[what] ?? 0) + 1
  }

  result(): LoadResult {
    return { ok: this.ok, errors: this.errors, latencies: this.latencies.values(), elapsedMs: nowMs() - this.started }
  }
}

/**
 * Closed-loop load: `clients` loops, each sending its next request as soon as the last one is answered,
 * until `durationMs` has passed. Requests still in flight at the deadline are awaited and counted.
 */
export async function closedLoop(
  publisher: Publisher,
  options: { clients: number; durationMs: number; path: string; body: () => string; expectStatus: number },
): Promise<LoadResult> {
  const tally = new Tally(options.expectStatus)
  const deadline = nowMs() + options.durationMs
  const client = async () => {
    while (nowMs() < deadline) {
      const sent = nowMs()
      await tally.send(publisher.post(options.path, options.body()), sent)
    }
  }
  await Promise.all(Array.from({ length: options.clients }, client))
  return tally.result()
}

/**
 * Open-loop load: requests sent at a fixed rate whatever the answers, as many clients of a busy backend do.
 * Each latency counts from when its request was due, not when it went out, so a service that falls behind is
 * charged for the wait (no coordinated omission). Timers tick about every millisecond: the requests due by
 * then go out together. Requests still in flight at the end are awaited and counted.
 */
export async function openLoop(
  publisher: Publisher,
  options: { ratePerSec: number; durationMs: number; path: string; body: () => string; expectStatus: number },
): Promise<LoadResult> {
  const tally = new Tally(options.expectStatus)
  const started = nowMs()
  const total = Math.floor((options.durationMs / 1000) * options.ratePerSec)
  const dueAt = (i: number) => started + (i * 1000) / options.ratePerSec
  const inFlight: Array<Promise<void>> = []
  for (let i = 0; i < total; ) {
    for (; i < total && dueAt(i) <= nowMs(); i++) {
      inFlight.push(tally.send(publisher.post(options.path, options.body()), dueAt(i)))
    }
    if (i < total) await sleep(Math.max(0, dueAt(i) - nowMs()))
  }
  await Promise.all(inFlight)
  return tally.result()
}
