import { describe, expect, it } from 'vitest'
import { isTimeZone, type QuietHours, quietUntil, WEEKDAYS } from '../src/events/quiet-hours.ts'

// Issue 18, part 1: quiet-hour windows by the wall clock of the user's zone (src/events/quiet-hours.ts), the
// answers the push dispatcher acts on.

const every = [...WEEKDAYS]
const night: QuietHours = { start: '22:00', end: '07:00', timeZone: 'Europe/Paris', days: every }
const until = (q: QuietHours, at: string) => quietUntil(q, new Date(at))?.toISOString()

describe('quiet hours', () => {
  it('a window across midnight holds from its start (inclusive) to its end (exclusive), the next morning', () => {
    // Paris is UTC+1 in December.
    expect(until(night, '2026-12-07T20:59:59Z')).toBeUndefined() // 21:59:59 in Paris
    expect(until(night, '2026-12-07T21:00:00Z')).toBe('2026-12-08T06:00:00.000Z') // 22:00, until 07:00 next day
    expect(until(night, '2026-12-07T23:30:00Z')).toBe('2026-12-08T06:00:00.000Z') // 00:30 the next day
    expect(until(night, '2026-12-08T05:59:00Z')).toBe('2026-12-08T06:00:00.000Z')
    expect(until(night, '2026-12-08T06:00:00Z')).toBeUndefined() // 07:00: over
    expect(until(night, '2026-12-08T12:00:00Z')).toBeUndefined()
  })

  it('a window within a day holds from start to end of that day', () => {
    const lunch: QuietHours = { start: '12:00', end: '13:30', timeZone: 'America/New_York', days: every }
    // New York is UTC-5 in December.
    expect(until(lunch, '2026-12-07T17:15:00Z')).toBe('2026-12-07T18:30:00.000Z')
    expect(until(lunch, '2026-12-07T16:59:00Z')).toBeUndefined()
    expect(until(lunch, '2026-12-07T18:30:00Z')).toBeUndefined()
  })

  it('days name the day a window starts on: Friday night is quiet until Saturday morning, Saturday night is not', () => {
    const weekdays: QuietHours = { ...night, days: ['mon', 'tue', 'wed', 'thu', 'fri'] }
    // 2026-12-11 is a Friday.
    expect(until(weekdays, '2026-12-11T22:00:00Z')).toBe('2026-12-12T06:00:00.000Z') // Fri 23:00
    expect(until(weekdays, '2026-12-12T05:00:00Z')).toBe('2026-12-12T06:00:00.000Z') // Sat 06:00, Friday's window
    expect(until(weekdays, '2026-12-12T22:00:00Z')).toBeUndefined() // Sat 23:00
    expect(until(weekdays, '2026-12-13T05:00:00Z')).toBeUndefined() // Sun 06:00, Saturday's window: none
    expect(until(weekdays, '2026-12-14T05:00:00Z')).toBeUndefined() // Mon 06:00, Sunday's window: none
    expect(until(weekdays, '2026-12-14T22:00:00Z')).toBe('2026-12-15T06:00:00.000Z') // Mon 23:00
  })

  it('follows daylight saving time: the window ends at 07:00 on the wall clock, whatever the offset', () => {
    // Paris goes from UTC+1 to UTC+2 at 02:00 on 2026-03-29 (clocks forward), back at 03:00 on 2026-10-25.
    expect(until(night, '2026-03-28T22:00:00Z')).toBe('2026-03-29T05:00:00.000Z')
    expect(until(night, '2026-10-24T21:00:00Z')).toBe('2026-10-25T06:00:00.000Z')
    // A window starting at a time the clock skips (02:30 on the night it goes forward) starts when it jumps.
    const skipped: QuietHours = { start: '02:30', end: '04:00', timeZone: 'Europe/Paris', days: every }
    expect(until(skipped, '2026-03-29T01:10:00Z')).toBe('2026-03-29T02:00:00.000Z') // 03:10 CEST
  })

  it('UTC and zones with other offsets work; a zone has to be an IANA name', () => {
    const utc: QuietHours = { start: '00:00', end: '06:00', timeZone: 'UTC', days: every }
    expect(until(utc, '2026-12-07T03:00:00Z')).toBe('2026-12-07T06:00:00.000Z')
    const kolkata: QuietHours = { start: '21:30', end: '06:00', timeZone: 'Asia/Kolkata', days: every }
    expect(until(kolkata, '2026-12-07T16:00:00Z')).toBe('2026-12-08T00:30:00.000Z') // 21:30 IST
    for (const zone of ['Europe/Paris', 'UTC', 'America/Argentina/Buenos_Aires', 'Etc/GMT+5', 'Asia/Kolkata']) {
      expect(isTimeZone(zone), zone).toBe(true)
    }
    for (const zone of ['Mars/Olympus', '+01:00', 'GMT+1:00', '', 'Europe/Paris ', 'Europe//Paris', 'x'.repeat(200)]) {
      expect(isTimeZone(zone), zone).toBe(false)
    }
  })
})
