import { causeChain } from '../service-errors.ts'

/** Network codes of a connection lost or refused, on either driver. */
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
])

const codeOf = (e: unknown) => String((e as { code?: unknown } | null)?.code ?? '')

/** Errors that mean "the database cannot be reached right now", on either driver (drizzle wraps theirs). */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (const e of causeChain(err)) {
    if (!e || typeof e !== 'object') return false
    const code = codeOf(e)
    if (CONNECTION_CODES.has(code)) return true
    // SQLSTATE 08xxx connection exceptions, 57P01-03 shutdown / cannot connect now, 53300 too many connections.
    if (/^08/.test(code) || /^57P0[1-3]$/.test(code) || code === '53300') return true
  }
  return false
}

/** An error PostgreSQL answered for the statement (an SQLSTATE), not a lost or refused connection. */
export function refusedByDatabase(err: unknown): boolean {
  for (const e of causeChain(err)) {
    if (!e || typeof e !== 'object') return false
    if (/^[0-9A-Z]{5}$/.test(codeOf(e))) return !isDatabaseUnavailable(e)
  }
  return false
}

/** The innermost error: the driver's or the database's own, under drizzle's wrapper. */
export function innermostError(err: unknown): unknown {
  let innermost = err
  for (const e of causeChain(err)) if (e && typeof e === 'object') innermost = e
  return innermost
}

/** The SQLSTATE PostgreSQL answered with (`55P03`: lock not available), under drizzle's wrapper; else undefined. */
export function sqlStateOf(err: unknown): string | undefined {
  for (const e of causeChain(err)) {
    if (!e || typeof e !== 'object') return undefined
    const code = codeOf(e)
    if (/^[0-9A-Z]{5}$/.test(code)) return code
  }
  return undefined
}
