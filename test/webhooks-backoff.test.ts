import { describe, expect, it } from 'vitest'
import {
  type FailedDelivery,
  MAX_BACKOFF_MS,
  MAX_RETRY_AFTER_MS,
  parseRetryAfter,
  retryDelayMs,
} from '../src/webhooks/backoff.ts'

// The retry policy of a failed webhook delivery, as a receiver sees it: when the delivery comes again, and when it
// stops coming.

const BASE = 30_000
/** The lowest and nearly the highest draw of the jitter. */
const LOW = () => 0
const HIGH = () => 1 - Number.EPSILON

const delayAfter = (attempt: number, random: () => number, more: Partial<FailedDelivery> = {}) =>
  retryDelayMs({ attempt, maxAttempts: 100, baseMs: BASE, ...more }, random)

describe('webhook retry backoff', () => {
  it('draws the first retry from 0 to the base delay (full jitter)', () => {
    expect(delayAfter(1, LOW)).toBe(0)
    expect(delayAfter(1, () => 0.5)).toBe(BASE / 2)
    expect(delayAfter(1, HIGH)).toBe(BASE - 1)
  })

  it('doubles the bound with each further failure', () => {
    expect([1, 2, 3, 4, 5].map((attempt) => delayAfter(attempt, () => 0.5))).toEqual(
      [1, 2, 4, 8, 16].map((f) => (BASE / 2) * f),
    )
  })

  it('spreads deliveries that failed together over the whole window', () => {
    for (const attempt of [1, 4, 8]) {
      const bound = BASE * 2 ** (attempt - 1)
      const drawn = Array.from({ length: 400 }, () => delayAfter(attempt, Math.random) as number)
      for (const d of drawn) {
        expect(d).toBeGreaterThanOrEqual(0)
        expect(d).toBeLessThan(bound)
      }
      expect(Math.min(...drawn), 'some come back early').toBeLessThan(bound / 4)
      expect(Math.max(...drawn), 'some come back late').toBeGreaterThan((3 * bound) / 4)
    }
  })

  it('never waits longer than 6 hours between attempts', () => {
    expect(MAX_BACKOFF_MS).toBe(6 * 3_600_000)
    expect(delayAfter(40, HIGH)).toBe(MAX_BACKOFF_MS - 1)
    expect(delayAfter(40, () => 0.5)).toBe(MAX_BACKOFF_MS / 2)
  })

  it("waits at least as long as the endpoint's Retry-After asks, up to 6 hours", () => {
    expect(delayAfter(1, HIGH, { retryAfterMs: 120_000 })).toBe(120_000)
    expect(delayAfter(1, LOW, { retryAfterMs: 1_000 }), 'the backoff may already be longer').toBe(1_000)
    expect(delayAfter(6, HIGH, { retryAfterMs: 1_000 }), 'a shorter Retry-After does not hurry it').toBe(BASE * 32 - 1)
    expect(delayAfter(1, LOW, { retryAfterMs: 7 * 24 * 3_600_000 })).toBe(MAX_RETRY_AFTER_MS)
  })

  it('gives up once the last allowed attempt has failed', () => {
    expect(retryDelayMs({ attempt: 14, maxAttempts: 15, baseMs: BASE }, LOW)).toBe(0)
    expect(retryDelayMs({ attempt: 15, maxAttempts: 15, baseMs: BASE }, LOW)).toBeUndefined()
    expect(retryDelayMs({ attempt: 1, maxAttempts: 1, baseMs: BASE }, LOW)).toBeUndefined()
  })

  it('reads Retry-After as seconds or as an HTTP date; anything else is ignored', () => {
    const now = Date.parse('2026-03-01T12:00:00Z')
    expect(parseRetryAfter('120', now)).toBe(120_000)
    expect(parseRetryAfter(' 5 ', now)).toBe(5_000)
    expect(parseRetryAfter('Sun, 01 Mar 2026 12:00:30 GMT', now)).toBe(30_000)
    expect(parseRetryAfter('Sun, 01 Mar 2026 11:00:00 GMT', now), 'a date in the past: at once').toBe(0)
    expect(parseRetryAfter('soon', now)).toBeUndefined()
    expect(parseRetryAfter('-5', now)).toBeUndefined()
    expect(parseRetryAfter(undefined, now)).toBeUndefined()
  })
})
