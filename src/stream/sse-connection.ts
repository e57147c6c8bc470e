import type { ServerResponse } from 'node:http'
import { Connection } from 'better-sse'

/** The URL better-sse looks at when a session starts (for its `padding` options): ours have none. */
const NO_OPTIONS_URL = new URL('http://localhost/v1/stream')
/**
 * better-sse listens on the request's signal to learn of a disconnect; StreamConnection already listens on
 * the response, so this one never fires and keeps nothing.
 */
const UNUSED_REQUEST = { signal: { addEventListener() {}, removeEventListener() {} } } as unknown as Request
const UNUSED_RESPONSE = new Response(null)

/** Header names in one case, so ours replace better-sse's defaults instead of being sent next to them. */
const lowerCased = (headers: Readonly<Record<string, string>>) =>
  Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]))
const SSE_HEAD = lowerCased(Connection.constants.RESPONSE_HEADERS)

/**
 * A better-sse Connection over a Node response that allocates nothing per stream beyond itself.
 * The built-in NodeHttp1Connection copies every request and response header into a fetch Request and
 * Response (with a URL, Headers and an AbortController each) and keeps them for the life of the stream:
 * about 3 KB per idle stream that nothing here reads. better-sse's Session writes the head through this;
 * every frame after that goes to the response directly (StreamConnection).
 */
export class SseResponseConnection extends Connection {
  url = NO_OPTIONS_URL
  request = UNUSED_REQUEST
  response = UNUSED_RESPONSE

  constructor(
    private readonly res: ServerResponse,
    private readonly headers: Record<string, string>,
  ) {
    super()
  }

  sendHead(): void {
    this.res.writeHead(200, { ...SSE_HEAD, ...lowerCased(this.headers) })
  }

  sendChunk(chunk: string): void {
    if (chunk) this.res.write(chunk)
  }

  cleanup(): void {}
}
