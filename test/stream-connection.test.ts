import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import net from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { StreamConnection } from '../src/stream/connection.ts'
import { shedRequestState } from '../src/stream/idle-memory.ts'
import { Frame } from '../src/wire-format.ts'

// One stream's connection over a real Node HTTP server and a real socket, opened the way open-stream.ts opens
// it: the head, the first frame, then what the request held given back. Once settled (a tick later) the stream
// writes to its socket and keeps neither the response nor the request (idle-memory.ts releaseResponse): these
// tests hold it to behaving as before, seen from the client's side of the socket.

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const RETRY = 'retry: 3000\n\n'
const LAST_CHUNK = '0\r\n\r\n'
const SLOW_READER_TIMEOUT_MS = 300

/** What the server side of one stream gives the test: the connection, and which of its request and response are gone. */
interface Opened {
  conn: StreamConnection
  /** 'request' and 'response' once the garbage collector has taken them. */
  collected: Set<string>
}

/**
 * Tells which objects the garbage collector took. (A WeakRef would not do: V8 keeps a WeakRef's target alive until
 * the embedder ends the job, which Node does not do between timers.)
 */
const collected = new FinalizationRegistry<{ into: Set<string>; name: string }>(({ into, name }) => into.add(name))
const NO_DELIVERIES = { inc() {} }

let server: Server
let port: number
let onOpen: (o: Opened) => void = () => {}

/** Outside the request handler: nothing here may keep the request or the response in a closure. */
function openStream(req: IncomingMessage, res: ServerResponse) {
  res.writeHead(200, { 'content-type': 'text/event-stream' })
  const conn = new StreamConnection('t', 'u', [], [], res, 64 * 1024, SLOW_READER_TIMEOUT_MS, NO_DELIVERIES)
  conn.start(RETRY)
  shedRequestState(res)
  const gone = new Set<string>()
  collected.register(req, { into: gone, name: 'request' })
  collected.register(res, { into: gone, name: 'response' })
  onOpen({ conn, collected: gone })
}

beforeAll(async () => {
  server = createServer((req, res) => {
    // On a later turn, as the service's opener (which awaits the database first): the request is complete.
    setImmediate(openStream, req, res)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  port = (server.address() as net.AddressInfo).port
})

afterAll(async () => {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
})

/** A client on a raw socket: everything it read, and whether the server ended and closed the connection. */
async function open(): Promise<{
  opened: Opened
  client: { socket: net.Socket; text: string; ended: boolean; closed: boolean }
}> {
  const opened = new Promise<Opened>((resolve) => {
    onOpen = resolve
  })
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
  const client = { socket, text: '', ended: false, closed: false }
  socket.on('data', (chunk) => {
    client.text += chunk.toString('latin1')
  })
  socket.on('end', () => {
    client.ended = true
  })
  socket.on('close', () => {
    client.closed = true
  })
  socket.write('GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  return { opened: await opened, client }
}

/** The body of a chunked response, chunks joined: what EventSource reads. */
function body(text: string): string {
  let rest = text.slice(text.indexOf('\r\n\r\n') + 4)
  let out = ''
  for (;;) {
    const size = Number.parseInt(rest.slice(0, rest.indexOf('\r\n')), 16)
    if (!(size > 0)) return out
    const start = rest.indexOf('\r\n') + 2
    out += rest.slice(start, start + size)
    rest = rest.slice(start + size + 2)
  }
}

const waitUntil = (done: () => boolean, what: string) =>
  expect.poll(done, { message: `waiting for ${what}`, timeout: 3_000, interval: 10 }).toBe(true)

/** A turn of the event loop: the stream settles a tick after it starts. */
const nextTurn = () => new Promise((resolve) => setImmediate(resolve))

/** A stream that is live and has settled (its socket taken, its response let go, a turn after it started). */
async function openLive() {
  const o = await open()
  o.opened.conn.goLive()
  await nextTurn()
  await nextTurn()
  return o
}

describe('a stream connection', () => {
  it('once settled holds neither its request nor its response, and still delivers', async () => {
    const { opened, client } = await openLive()
    gc()
    await waitUntil(() => opened.collected.size === 2, 'the request and the response to be collected')
    opened.conn.deliver(1, new Frame('id: 1\ndata: after\n\n'))
    await waitUntil(() => body(client.text).endsWith('id: 1\ndata: after\n\n'), 'the event')
    expect(body(client.text)).toBe(`${RETRY}id: 1\ndata: after\n\n`)
    client.socket.destroy()
  })

  it('evicted before it settles: the client gets the farewell, the last chunk and the end of the connection', async () => {
    const { opened, client } = await open()
    // In the same turn as the start: the response still holds the head back.
    opened.conn.evict(3)
    await waitUntil(() => client.ended, 'the server to end the connection')
    expect(client.text.endsWith(LAST_CHUNK)).toBe(true)
    expect(body(client.text)).toMatch(new RegExp(`^${RETRY}id: evicted\nevent: evicted\n`))
    expect(opened.conn.closeReason).toBe('evicted')
    client.socket.destroy()
  })

  it('evicted once settled: the same, written by the stream itself', async () => {
    const { opened, client } = await openLive()
    gc()
    await waitUntil(() => opened.collected.has('response'), 'the response to be collected')
    opened.conn.evict(3)
    await waitUntil(() => client.ended, 'the server to end the connection')
    expect(client.text.endsWith(LAST_CHUNK)).toBe(true)
    expect(body(client.text)).toMatch(new RegExp(`^${RETRY}id: evicted\nevent: evicted\n`))
  })

  it('once settled, closes when the client goes away', async () => {
    const { opened, client } = await openLive()
    client.socket.destroy()
    await waitUntil(() => opened.conn.closed, 'the stream to close')
    expect(opened.conn.closeReason).toBe('client')
  })

  it('once settled, a slow client is dropped: the connection is destroyed, nothing more is written', async () => {
    const { opened, client } = await openLive()
    client.socket.pause()
    const big = new Frame(`data: ${'x'.repeat(256 * 1024)}\n\n`)
    for (let id = 1; id <= 40 && !opened.conn.closed; id++) opened.conn.deliver(id, big)
    await waitUntil(() => opened.conn.closed, 'the stream to close')
    expect(opened.conn.closeReason).toBe('slow')
    client.socket.resume()
    await waitUntil(() => client.ended || client.closed, 'the connection to close')
    expect(client.text.endsWith(LAST_CHUNK)).toBe(false)
  })
})
