// The webhook retry policy: when a failed delivery is attempted again, and when it is given up. Pure, apart from
// the default jitter source.

/** The longest wait between two attempts, however many have failed: 6 hours. */
export const MAX_BACKOFF_MS = 6 * 3_600_000
/** The longest `Retry-After` obeyed: an endpoint asking for more is tried again after this. */
export const MAX_RETRY_AFTER_MS = 6 * 3_600_000

export interface FailedDelivery {
  /** The attempt that just failed: 1 for the first. */
  attempt: number
  /** Attempts per delivery at most (WEBHOOK_MAX_ATTEMPTS): the last one failing gives the delivery up. */
  maxAttempts: number
  /** The backoff of the first retry (WEBHOOK_RETRY_BASE_MS); it doubles each attempt, up to MAX_BACKOFF_MS. */
  baseMs: number
  /** The endpoint's `Retry-After` (429 or 503), in ms from now: no retry sooner than that (capped). */
  retryAfterMs?: number
}

/**
 * How long after a failed attempt the delivery is tried again, in ms; undefined when it is given up (that was its
 * last attempt).
 *
 * Exponential backoff with full jitter: the delay is drawn uniformly between 0 and base × 2^(attempt-1) (capped at
 * MAX_BACKOFF_MS), so deliveries that failed together (an endpoint down for everyone) come back spread out rather
 * than together. An endpoint's Retry-After wins when it is longer, up to MAX_RETRY_AFTER_MS.
 */
export function retryDelayMs(failed: FailedDelivery, random: () => number = Math.random): number | undefined {
  if (failed.attempt >= failed.maxAttempts) return undefined
  const backoff = Math.min(failed.baseMs * 2 ** (failed.attempt - 1), MAX_BACKOFF_MS)
  const drawn = Math.floor(random() * backoff)
  const asked = Math.min(Math.max(0, failed.retryAfterMs ?? 0), MAX_RETRY_AFTER_MS)
  return Math.max(drawn, asked)
}

/**
 * `Retry-After` as seconds or an HTTP date, in ms from `now`; undefined when absent or not understood. A date in
 * the past is 0.
 */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined) return undefined
  const text = value.trim()
  if (/^\d+$/.test(text)) return Number(text) * 1000
  // An HTTP date names its day and month ("Sun, 01 Mar 2026 12:00:30 GMT"); Date.parse reads "-5" as a year.
  if (!/[a-z]{3}/i.test(text)) return undefined
  const at = Date.parse(text)
  return Number.isNaN(at) ? undefined : Math.max(0, at - now)
}
