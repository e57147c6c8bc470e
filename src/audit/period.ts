import { InvalidFieldsError } from '../service-errors.ts'

/** A date (`2025-03-01`, midnight UTC) or an ISO 8601 date-time with its offset (`2025-03-01T08:00:00Z`). */
const INSTANT = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2}))?$/

export const INSTANT_FORMAT = 'a date (2025-03-01, midnight UTC) or an ISO 8601 date-time with its offset'

/** The instant a `from`/`to` query parameter names; a 400 naming the field when it names none. */
export function instantOf(value: string, field: 'from' | 'to'): Date {
  const at = INSTANT.test(value) ? new Date(value) : undefined
  if (!at || Number.isNaN(at.getTime())) {
    throw new InvalidFieldsError([{ path: `querystring.${field}`, message: `must be ${INSTANT_FORMAT}` }])
  }
  return at
}

/** `from` before `to`, else a 400 naming `from`. */
export function checkOrder(from: Date | undefined, to: Date | undefined): void {
  if (from && to && from.getTime() >= to.getTime()) {
    throw new InvalidFieldsError([{ path: 'querystring.from', message: 'must be before `to`' }])
  }
}
