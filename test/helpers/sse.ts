import http from 'node:http'
import { createParser, type EventSourceMessage } from 'eventsource-parser'

export interface StreamEvent {
  id?: string
  event: string
  data: string
}

export interface OpenStreamOptions {
  token?: string
  /** Send the token as ?access_token= instead of the Authorization header. */
  tokenInQuery?: boolean
  lastEventId?: string
  /** ?ticket=: a stream ticket instead of a token. */
  ticket?: string
  /** ?lastEventId= (the header wins when both are given). */
  lastEventIdQuery?: string
  topics?: string[]
  headers?: Record<string, string>
}

/**
 * A real SSE client over its own socket: records every event, comment and the raw text, so tests can
 * assert on exactly what a browser's EventSource would have received.
 */
export class SseClient {
  status = 0
  headers: http.IncomingHttpHeaders = {}
  /** Error body when the server refused the stream. */
  body = ''
  readonly events: StreamEvent[] = []
  readonly comments: string[] = []
  raw = ''
  /** `raw` as the socket delivered it: what the server wrote at once arrives as one piece (on loopback). */
  readonly chunks: string[] = []
  retry: number | undefined
  ended = false
  private request!: http.ClientRequest
  private response: http.IncomingMessage | undefined
  private listeners = new Set<() => void>()
  readonly done: Promise<void>
  private resolveDone!: () => void

  private constructor() {
    this.done = new Promise((r) => (this.resolveDone = r))
  }

  static open(baseUrl: string, options: OpenStreamOptions = {}): Promise<SseClient> {
    const client = new SseClient()
    const url = new URL('/v1/stream', baseUrl)
    if (options.topics) url.searchParams.set('topics', options.topics.join(','))
    if (options.lastEventIdQuery !== undefined) url.searchParams.set('lastEventId', options.lastEventIdQuery)
    if (options.token && options.tokenInQuery) url.searchParams.set('access_token', options.token)
    if (options.ticket !== undefined) url.searchParams.set('ticket', options.ticket)
    const headers: Record<string, string> = { accept: 'text/event-stream', ...options.headers }
    if (options.token && !options.tokenInQuery) headers.authorization = `Bearer ${options.token}`
    if (options.lastEventId !== undefined) headers['last-event-id'] = options.lastEventId
    return new Promise((resolve, reject) => {
      const parser = createParser({
        onEvent: (m: EventSourceMessage) => {
          client.events.push({ id: m.id, event: m.event ?? 'message', data: m.data })
          client.notify()
        },
        onComment: (c) => {
          client.comments.push(c)
          client.notify()
        },
        onRetry: (ms) => {
          client.retry = ms
        },
      })
      client.request = http.get(url, { headers, agent: false }, (res) => {
        client.response = res
        client.status = res.statusCode ?? 0
        client.headers = res.headers
        res.setEncoding('utf8')
        const finish = () => {
          if (client.ended) return
          client.ended = true
          client.resolveDone()
          client.notify()
        }
        res.on('data', (chunk: string) => {
          if (client.status === 200) {
            client.raw += chunk
            client.chunks.push(chunk)
            parser.feed(chunk)
          } else client.body += chunk
        })
        res.on('end', finish)
        res.on('close', finish)
        res.on('error', finish)
        if (client.status !== 200) res.on('end', () => resolve(client))
        else resolve(client)
      })
      client.request.on('error', (err) => {
        if (!client.response) reject(err)
        else {
          client.ended = true
          client.resolveDone()
          client.notify()
        }
      })
    })
  }

  /** Parsed `notification` events, in arrival order. */
  get notifications(): Array<Record<string, unknown> & { id: string }> {
    return this.events.filter((e) => e.event === 'notification').map((e) => JSON.parse(e.data))
  }

  get notificationIds(): string[] {
    return this.events.filter((e) => e.event === 'notification').map((e) => e.id as string)
  }

  /** The last `id:` received: what EventSource would send as Last-Event-ID. */
  get lastEventId(): string | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) if (this.events[i].id) return this.events[i].id
    return undefined
  }

  /** The problem+json body of a refused stream. */
  get problem(): Record<string, unknown> {
    return JSON.parse(this.body)
  }

  private notify() {
    for (const l of this.listeners) l()
  }

  /** Waits until `predicate` holds (checked on every event/comment/end), or fails after `timeoutMs`. */
  waitFor(predicate: (c: SseClient) => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    if (predicate(this)) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const check = () => {
        if (predicate(this)) {
          clearTimeout(timer)
          this.listeners.delete(check)
          resolve()
        }
      }
      const timer = setTimeout(() => {
        this.listeners.delete(check)
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; got ${this.events.length} events: ${this.raw.slice(-500)}`,
          ),
        )
      }, timeoutMs)
      this.listeners.add(check)
    })
  }

  waitForNotifications(count: number, timeoutMs = 10_000) {
    return this.waitFor((c) => c.notificationIds.length >= count, timeoutMs, `${count} notifications`)
  }

  waitForEvent(name: string, timeoutMs = 10_000) {
    return this.waitFor((c) => c.events.some((e) => e.event === name), timeoutMs, `a "${name}" event`)
  }

  waitForEnd(timeoutMs = 10_000) {
    return this.waitFor((c) => c.ended, timeoutMs, 'the stream to end')
  }

  /** Pauses reading: the server's writes pile up in the socket buffers. */
  pause() {
    this.response?.pause()
  }

  /** Drops the connection from the client side. */
  close() {
    this.request.destroy()
  }
}
