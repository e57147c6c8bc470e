import type { IncomingMessage, ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import type { Socket } from 'node:net'

/**
 * Per-request state that Node and Fastify keep for as long as a response is open, which for a stream is its
 * whole life, and that an idle stream never uses again. Given back once the stream's head is out.
 * Each step leans on a Node or Fastify internal and does nothing when that internal is not there, so an
 * upgrade that changes one costs memory per stream, not behaviour.
 */
export function shedRequestState(res: ServerResponse): void {
  releaseFastifyRequest(res)
  releaseHttpParser(res)
  releaseRequestHeaders(res)
  // Node sends the head with the first write, on the next turn (the socket is corked until then).
  setImmediate(releaseSentHead, res)
}

/**
 * Fastify listens for the response's `finish` and `error` to log "request completed" and run onResponse hooks
 * (this app has none); the listener holds Fastify's request, reply and per-request logger: about 0.6 KB each.
 * Streams log their own end ("stream closed"), so those two listeners are removed.
 */
function releaseFastifyRequest(res: ServerResponse) {
  for (const event of ['finish', 'error'] as const) {
    for (const listener of res.listeners(event)) {
      if (listener.name === 'onResFinished') res.off(event, listener as (...args: unknown[]) => void)
    }
  }
}

/**
 * Node keeps the response head it sent (`_header`) for as long as the response is open: with the security
 * headers (the CSP above all) about 850 bytes per stream, the largest single thing an idle stream holds. Once
 * the head is out (`_headerSent`), Node only asks whether there is one (`headersSent`, and a second writeHead
 * is refused), so every stream shares one short stand-in. If the head is not out yet, the rope of small
 * strings it was built from is flattened (read with a regular expression), 0.7 KB down to the head's length.
 * Only for a response the stream keeps (an HTTP/1.0 client, or one releaseResponse could not let go).
 */
function releaseSentHead(res: ServerResponse) {
  // A response already let go (releaseResponse: detached from its socket) goes whole, head and headers with it.
  if (!res.socket) return
  const out = res as unknown as { _header?: unknown; _headerSent?: unknown } & Record<symbol, unknown>
  if (typeof out._header !== 'string') return
  if (out._headerSent !== true) {
    HEAD_END.test(out._header)
    return
  }
  out._header = SENT_HEAD
  // The headers as set (kOutHeaders: a [name, value] pair per header, in a dictionary), from which the head was
  // built: about 1.5 KB per stream. Node starts a response with none (null) and reads them only to build the
  // head or to answer getHeader, which then says there are none.
  outHeaders ??= Object.getOwnPropertySymbols(res).find((key) => key.description === 'kOutHeaders') ?? null
  if (outHeaders && out[outHeaders] !== undefined) out[outHeaders] = null
}
const SENT_HEAD = 'HTTP/1.1 200 OK\r\n\r\n'
const HEAD_END = /\r\n\r\n$/
/** Node's own key of a response's headers, found on the first stream (null: not there in this Node). */
let outHeaders: symbol | null | undefined

/**
 * The request's headers (the token among them), as Node parsed them, twice over (`rawHeaders` and `headers`):
 * read while the stream opens, never after. About 0.6 KB per stream.
 */
function releaseRequestHeaders(res: ServerResponse) {
  const req = res.req as IncomingMessage | undefined
  if (!req) return
  req.rawHeaders = []
  req.headers = {}
}

type HttpParser = object
type ConnectionSocket = Socket & { parser?: HttpParser | null }
type FreeParser = (parser: HttpParser, req: IncomingMessage, socket: Socket) => void
/** Node's own way to give a connection's parser back to its pool (what it does for an upgraded connection). */
const freeParser = (createRequire(import.meta.url)('_http_common') as { freeParser?: FreeParser }).freeParser

/**
 * Node keeps an HTTP parser on every open connection, ready for the next request; a stream's connection has
 * no next request (its response never ends while the stream is open). The parser is about 2.8 KB of memory
 * per idle stream, mostly outside the JS heap: 10.6 -> 7.8 KiB RSS per connection for 10,000 idle SSE
 * connections of a bare `node:http` server. It goes back to Node's pool, as for a connection upgraded to a
 * WebSocket, and this connection then:
 *  - drops bytes a client sends after its request (a pipelined request that could never be answered);
 *  - ends when the client half-closes it, as Node's own handler did;
 *  - closes once the stream's response ends (`_last`), rather than waiting for a request nobody would parse.
 * Only once the request is complete (a GET has no body), and only if Node's two listeners that use the
 * parser are found and taken off; otherwise the parser stays.
 */
function releaseHttpParser(res: ServerResponse) {
  const socket = res.socket as ConnectionSocket | null
  const parser = socket?.parser
  if (!freeParser || !socket || !parser || !res.req.complete) return
  const onData = socket.listeners('data').find((l) => l.name === 'bound socketOnData')
  const onEnd = socket.listeners('end').find((l) => l.name === 'bound socketOnEnd')
  if (!onData || !onEnd) return
  socket.off('data', onData as (...args: unknown[]) => void)
  socket.off('end', onEnd as (...args: unknown[]) => void)
  freeParser(parser, res.req, socket)
  socket.on('data', dropBytes)
  socket.on('end', endSocket)
  ;(res as unknown as { _last: boolean })._last = true
}

function dropBytes() {}
function endSocket(this: Socket) {
  this.end()
}

type HttpSocket = ConnectionSocket & { _httpMessage?: unknown; _peername?: unknown }
type DetachableResponse = ServerResponse & { detachSocket?: (socket: Socket) => void }

/**
 * For as long as a response is open Node keeps the request, the response, and the connection's own state with
 * the bound listeners that use it: about 2 KB per idle stream, none of it used again once frames go to the socket
 * directly and the parser is released (above). So the response is detached from its socket, as Node does for a
 * connection upgraded to a WebSocket, and its listeners on the socket come off:
 *  - Node's close listener, which would tell the request and response the client left: the stream listens on the
 *    socket itself (StreamConnection);
 *  - Node's drain listener, which relays 'drain' to the response: the stream waits on the socket's own;
 *  - Node's error listener, which answers a client error with a 400 where no response is in flight (none is,
 *    once detached): a socket error destroys the socket anyway, and the stream closes with it.
 * The stream then ends the chunked body itself (StreamConnection.close). The peer address Node cached when the
 * request read it goes too (read again if asked). Returns false, changing nothing, unless the parser is released
 * and each of Node's listeners is found.
 */
export function releaseResponse(res: ServerResponse, socket: Socket): boolean {
  const s = socket as HttpSocket
  const detach = (res as DetachableResponse).detachSocket
  if (s.parser || s._httpMessage !== res || typeof detach !== 'function') return false
  const onClose = socket.listeners('close').find((l) => l.name === 'bound socketOnClose')
  const onDrain = socket.listeners('drain').find((l) => l.name === 'bound socketOnDrain')
  const onError = socket.listeners('error').find((l) => l.name === 'socketOnError')
  if (!onClose || !onDrain || !onError) return false
  detach.call(res, socket)
  socket.off('close', onClose as (...args: unknown[]) => void)
  socket.off('drain', onDrain as (...args: unknown[]) => void)
  socket.off('error', onError as (...args: unknown[]) => void)
  socket.on('error', ignoreError)
  if (s._peername) s._peername = undefined
  return true
}

/** A socket error: the socket is destroyed with it and emits 'close', which ends the stream. */
function ignoreError() {}
