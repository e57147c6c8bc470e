import { describe, expect, it } from 'vitest'
import { type FailedAttempt, MAX_BACKOFF_MS, nextAttemptAt, tooLateToPush } from '../src/push/backoff.ts'

// The retry policy of a failed push, as a user sees it: when the push comes again, and when it stops coming.

const BASE = 5_000
const NOW = Date.parse('2026-01-01T00:00:00Z')
/** The lowest and nearly the highest draw of the jitter. */
const LOW = () => 0
const HIGH = () => 0.999

/** The delay before the next attempt after `attempt` failed; undefined: given up. */
function delayAfter(attempt: number, random: () => number, more: Partial<FailedAttempt> = {}) {
  const due = nextAttemptAt({ attempt, maxAttempts: 100, baseMs: BASE, now: NOW, ...more }, random)
  return due === undefined ? undefined : due - NOW
}

describe('push retry backoff', () => {
  it('retries a first failure after about the base delay: between half of it and all of it', () => {
    expect(delayAfter(1, LOW)).toBe(BASE / 2)
    expect(delayAfter(1, () => 0.5)).toBe(0.75 * BASE)
    expect(delayAfter(1, HIGH)).toBe(BASE / 2 + 0.999 * (BASE / 2))
  })

  it('doubles the delay with each further failure', () => {
    const delays = [1, 2, 3, 4, 5].map((attempt) => delayAfter(attempt, () => 0.5)!)
    expect(delays).toEqual([1, 2, 4, 8, 16].map((f) => 0.75 * BASE * f))
  })

  it('draws each delay from the upper half of its backoff, so pushes that failed together spread out', () => {
    for (const attempt of [1, 3, 6]) {
      const backoff = BASE * 2 ** (attempt - 1)
      const drawn = Array.from({ length: 200 }, () => delayAfter(attempt, Math.random)!)
      for (const d of drawn) {
        expect(d).toBeGreaterThanOrEqual(backoff / 2)
        expect(d).toBeLessThan(backoff)
      }
      expect(new Set(drawn).size, 'the jitter varies the delay').toBeGreaterThan(100)
    }
  })

  it('never waits longer than an hour between attempts, or the cap it is given', () => {
    expect(MAX_BACKOFF_MS).toBe(3_600_000)
    expect(delayAfter(30, HIGH)).toBe(MAX_BACKOFF_MS / 2 + 0.999 * (MAX_BACKOFF_MS / 2))
    expect(delayAfter(30, LOW)).toBe(MAX_BACKOFF_MS / 2)
    expect(delayAfter(30, LOW, { capMs: 60_000 })).toBe(30_000)
    expect(delayAfter(1, LOW, { capMs: 60_000 }), 'a cap above the backoff changes nothing').toBe(BASE / 2)
  })

  it("waits at least as long as the push service's Retry-After asks", () => {
    expect(delayAfter(1, HIGH, { retryAfterMs: 120_000 })).toBe(120_000)
    expect(delayAfter(1, LOW, { retryAfterMs: 1_000 }), 'a shorter Retry-After does not hurry it').toBe(BASE / 2)
  })

  it('gives up once the last allowed attempt has failed', () => {
    expect(nextAttemptAt({ attempt: 7, maxAttempts: 8, baseMs: BASE, now: NOW }, LOW)).toBe(NOW + BASE * 2 ** 6 * 0.5)
    expect(nextAttemptAt({ attempt: 8, maxAttempts: 8, baseMs: BASE, now: NOW }, LOW)).toBeUndefined()
    expect(nextAttemptAt({ attempt: 1, maxAttempts: 1, baseMs: BASE, now: NOW }, LOW)).toBeUndefined()
  })

  it('gives up when the event would have less than 1 s left at the next attempt', () => {
    const due = NOW + BASE / 2 // the next attempt's time with the lowest jitter
    const expiring = (msLeftAtDue: number) => ({ expiresAt: new Date(due + msLeftAtDue) })
    expect(delayAfter(1, LOW, expiring(1_000)), 'exactly 1 s left: still retried').toBe(BASE / 2)
    expect(delayAfter(1, LOW, expiring(999))).toBeUndefined()
    expect(delayAfter(1, LOW, expiring(-5_000)), 'expired by then').toBeUndefined()
    // The same event, a later draw of the jitter: past the margin, so given up.
    expect(delayAfter(1, () => 0.5, expiring(1_000))).toBeUndefined()
    // A Retry-After past the event's end gives it up too.
    expect(delayAfter(1, LOW, { ...expiring(60_000), retryAfterMs: BASE / 2 + 59_500 })).toBeUndefined()
  })

  it('starts a push only with at least 1 s of its event left', () => {
    const expiresAt = new Date(NOW + 10_000)
    expect(tooLateToPush(expiresAt, NOW + 9_000)).toBe(false)
    expect(tooLateToPush(expiresAt, NOW + 9_001)).toBe(true)
    expect(tooLateToPush(expiresAt, NOW + 20_000)).toBe(true)
  })
})
