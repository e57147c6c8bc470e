// The push retry policy: when a failed push is attempted again, and when it is given up. Pure, apart from the
// default jitter source.

/** The longest wait between two attempts, however many have failed. */
export const MAX_BACKOFF_MS = 3_600_000
/**
 * A push is only started with at least this long left before its event expires: with less, its TTL header
 * would be 0 s and it would reach the push service as the event expires, or after.
 */
export const MIN_TIME_LEFT_MS = 1_000

/** True when a push started at `at` (ms since the epoch) would leave its event less than MIN_TIME_LEFT_MS to live. */
export const tooLateToPush = (expiresAt: Date, at: number) => expiresAt.getTime() - at < MIN_TIME_LEFT_MS

export interface FailedAttempt {
  /** The attempt that just failed: 1 for the first. */
  attempt: number
  /** Attempts per push at most (PUSH_MAX_ATTEMPTS): the last one failing gives the push up. */
  maxAttempts: number
  /** The first retry's delay (PUSH_RETRY_BASE_MS); it doubles each attempt. */
  baseMs: number
  /** When the attempt failed, ms since the epoch. */
  now: number
  /** When the push's event expires; a retry that would start too late for it is not made. Unknown: not checked. */
  expiresAt?: Date
  /** The push service's Retry-After: no retry sooner than that. */
  retryAfterMs?: number
  /** The cap on the backoff; MAX_BACKOFF_MS unless given. */
  capMs?: number
}

/**
 * When a push whose attempt failed (and may be retried) is due again, in ms since the epoch; undefined when it
 * is given up: that was its last attempt, or its event would have less than MIN_TIME_LEFT_MS left by then.
 *
 * The backoff is base × 2^(attempt-1), capped; the delay is drawn from its upper half (jitter, so that pushes
 * failed together do not come back together), and is never shorter than the push service's Retry-After.
 */
export function nextAttemptAt(failed: FailedAttempt, random: () => number = Math.random): number | undefined {
  if (failed.attempt >= failed.maxAttempts) return undefined
  const backoff = Math.min(failed.baseMs * 2 ** (failed.attempt - 1), failed.capMs ?? MAX_BACKOFF_MS)
  const delay = Math.max(failed.retryAfterMs ?? 0, backoff / 2 + random() * (backoff / 2))
  const due = failed.now + delay
  if (failed.expiresAt && tooLateToPush(failed.expiresAt, due)) return undefined
  return due
}
