// Quiet hours as wall-clock times in an IANA time zone: whether an instant falls in a window, and when that
// window ends. Computed here, with the same Intl time-zone data that validates the zone (isTimeZone), so what is
// accepted and what is computed never disagree; the database is not asked (its zone data may differ).

/** Days of the week as preferences name them, Sunday first (as Date.getUTCDay counts). */
export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const
export type Weekday = (typeof WEEKDAYS)[number]

/**
 * A quiet window: from `start` to `end` (`HH:MM`, 24 h) in `timeZone`, starting on each of `days`. A window whose
 * end is earlier than its start ends the next day (22:00 to 07:00): it belongs to the day it starts on.
 */
export interface QuietHours {
  start: string
  end: string
  timeZone: string
  days: Weekday[]
}

/** `HH:MM`, 00:00 to 23:59. */
export const TIME_OF_DAY = /^([01][0-9]|2[0-3]):[0-5][0-9]$/

const minutesOf = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5))

/** Formatters by zone: building one costs far more than using it. */
const formatters = new Map<string, Intl.DateTimeFormat>()

function formatterOf(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone)
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    })
    formatters.set(timeZone, f)
  }
  return f
}

/**
 * True for a time-zone name this service knows (the IANA database as Node's Intl has it: `Europe/Paris`, `UTC`,
 * `America/Argentina/Buenos_Aires`). Offsets (`+01:00`), which Intl also takes, are not zones: they know no
 * daylight saving time, so a name is required.
 */
export function isTimeZone(name: string): boolean {
  if (!/^[A-Za-z][A-Za-z0-9_+\-/]{0,99}$/.test(name)) return false
  try {
    formatterOf(name)
    return true
  } catch {
    return false
  }
}

/** A calendar date (the month 1-12). */
interface LocalDate {
  year: number
  month: number
  day: number
}

/** The wall-clock date and time in `timeZone` at instant `at` (ms). */
function wallClock(timeZone: string, at: number): LocalDate & { minutes: number; second: number } {
  const parts: Record<string, number> = {}
  for (const p of formatterOf(timeZone).formatToParts(at)) if (p.type !== 'literal') parts[p.type] = Number(p.value)
  return {
    year: parts.year,
    month: parts.month,
    day: parts.day,
    minutes: parts.hour * 60 + parts.minute,
    second: parts.second,
  }
}

/** How far `timeZone`'s wall clock is ahead of UTC at instant `at`, ms. */
function offsetAt(timeZone: string, at: number): number {
  const w = wallClock(timeZone, at)
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, 0, w.minutes, w.second)
  return asUtc - (at - (at % 1000))
}

/**
 * The instant the wall clock of `timeZone` reads `minutes` past midnight on `date`. A time skipped by a
 * daylight-saving change (02:30 on the night clocks go forward) comes out as the instant the clock jumps past.
 */
function instantOf(timeZone: string, date: LocalDate, minutes: number): number {
  const wall = Date.UTC(date.year, date.month - 1, date.day, 0, minutes)
  const first = wall - offsetAt(timeZone, wall)
  return wall - offsetAt(timeZone, first)
}

/** The date `days` after `date`. */
function addDays(date: LocalDate, days: number): LocalDate {
  const d = new Date(Date.UTC(date.year, date.month - 1, date.day + days))
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() }
}

const weekdayOf = (date: LocalDate): Weekday =>
  WEEKDAYS[new Date(Date.UTC(date.year, date.month - 1, date.day)).getUTCDay()]

/**
 * When the quiet window `at` falls in ends, or undefined when `at` is outside every window. From `start`
 * inclusive to `end` exclusive, by the wall clock of the window's zone.
 */
export function quietUntil(quiet: QuietHours, at: Date): Date | undefined {
  const start = minutesOf(quiet.start)
  const end = minutesOf(quiet.end)
  if (start === end) return undefined
  const now = at.getTime()
  const today = wallClock(quiet.timeZone, now)
  const startsOn = (date: LocalDate) => quiet.days.includes(weekdayOf(date))
  let until: number | undefined
  if (start < end) {
    if (startsOn(today) && today.minutes >= start && today.minutes < end) until = instantOf(quiet.timeZone, today, end)
  } else if (today.minutes >= start && startsOn(today)) {
    until = instantOf(quiet.timeZone, addDays(today, 1), end)
  } else if (today.minutes < end && startsOn(addDays(today, -1))) {
    until = instantOf(quiet.timeZone, today, end)
  }
  // A daylight-saving change inside the window could put its end at or before now: then it has ended.
  return until !== undefined && until > now ? new Date(until) : undefined
}
