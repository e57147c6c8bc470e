// Tokens must never reach a log line: the request URLs the logger writes are redacted here.

/** What a logged URL shows in place of a credential. */
const REDACTED = '[redacted]'

/** Query parameters whose value is a credential: the stream's token, and a stream ticket. Compared decoded. */
const CREDENTIAL_PARAMS = new Set(['access_token', 'ticket'])

/**
 * A JWT (or a push ackToken, also one): three base64url runs joined by dots. Each run must start where a run
 * starts (the lookbehind), so a long run of letters is scanned once, not once per position.
 */
const JWT_SHAPE = /(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/

/** What lies between a URL's delimiters: a path segment, a query key or value. */
const URL_PIECE = /[^/?#&=;]+/g

/** Percent-decoded as the query parser decodes (`+` is a space); as it is when it does not decode. */
function decodePiece(piece: string): string {
  try {
    return decodeURIComponent(piece.replaceAll('+', ' '))
  } catch {
    return piece
  }
}

/** Each piece that holds something JWT-shaped, as sent or once decoded, is replaced whole. */
const redactTokenShapes = (text: string) =>
  text.replace(URL_PIECE, (piece) => (JWT_SHAPE.test(piece) || JWT_SHAPE.test(decodePiece(piece)) ? REDACTED : piece))

/** One `key=value` of the query: a credential parameter's value goes, however its name is spelled (`access%5Ftoken`). */
function redactParam(pair: string): string {
  const equals = pair.indexOf('=')
  if (equals === -1) return redactTokenShapes(pair)
  const key = pair.slice(0, equals)
  const value = CREDENTIAL_PARAMS.has(decodePiece(key).trim().toLowerCase())
    ? REDACTED
    : redactTokenShapes(pair.slice(equals + 1))
  return `${redactTokenShapes(key)}=${value}`
}

/**
 * Tokens must never reach a log line. The stream takes `?access_token=`, and Fastify decodes query keys, so
 * the value of a credential parameter is cut whatever the spelling of its name; anything JWT-shaped anywhere
 * else in the URL (path included, percent-encoded or not) is cut too. The query starts at the first `?` or `#`,
 * as the router splits it.
 */
export function redactUrl(url: string): string {
  const start = url.slice(1).search(/[?#]/) + 1
  if (start === 0) return redactTokenShapes(url)
  const query = url
    .slice(start + 1)
    .split('&')
    .map(redactParam)
    .join('&')
  return `${redactTokenShapes(url.slice(0, start))}${url[start]}${query}`
}
