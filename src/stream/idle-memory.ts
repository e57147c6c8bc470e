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
  compactHead(res)
  releaseFastifyRequest(res)
  releaseHttpParser(res)
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
 * Node keeps the response head it sent (`_header`, for `headersSent`) as the rope of some 30 small strings it
 * was concatenated from: 0.7 KB of heap. Reading it with a regular expression makes V8 flatten it in place
 * into one string of about 200 bytes; nothing about the response changes.
 */
function compactHead(res: ServerResponse) {
  const head = (res as unknown as { _header?: unknown })._header
  if (typeof head === 'string') HEAD_END.test(head)
}
const HEAD_END = /\r\n\r\n$/

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
