/**
 * What the services throw when a request cannot be done as asked. They say what went wrong in the service's own
 * terms; problems.ts is the one place that turns each into an HTTP status and problem+json.
 */

/** A field of the request and what is wrong with it. */
export interface FieldError {
  path: string
  message: string
}

export const describeFieldErrors = (errors: readonly FieldError[]) =>
  errors.map((e) => `${e.path}: ${e.message}`).join('; ')

export abstract class ServiceError extends Error {
  constructor(readonly detail: string) {
    super(detail)
  }
}

/** Fields of the request break a rule the schema cannot express (a size measured on stored bytes). */
export class InvalidFieldsError extends ServiceError {
  override name = 'InvalidFieldsError'
  constructor(readonly fields: FieldError[]) {
    super(describeFieldErrors(fields))
  }
}

/** The caller may not do this (a scope their token lacks). */
export class NotAllowedError extends ServiceError {
  override name = 'NotAllowedError'
}

/** Nothing by that id, or nothing the caller may see (the two are not told apart). */
export class NotFoundError extends ServiceError {
  override name = 'NotFoundError'
}

/** The request clashes with the current state: another request in flight, a key used on another route. */
export class ConflictError extends ServiceError {
  override name = 'ConflictError'
}

/** Well-formed, but it cannot be done: an Idempotency-Key reused for another request. */
export class UnprocessableError extends ServiceError {
  override name = 'UnprocessableError'
}

/** Done too recently to be done again yet (a nudge within NUDGE_MIN_INTERVAL_S of the last). */
export class TooSoonError extends ServiceError {
  override name = 'TooSoonError'
  constructor(
    detail: string,
    /** Seconds until it may be done again. */
    readonly retryAfterS: number,
  ) {
    super(detail)
  }
}

/** The error and its causes, outermost first (drivers wrap one another's errors). */
export function* causeChain(err: unknown): Generator<unknown> {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 16; depth++) {
    yield e
    e = typeof e === 'object' ? (e as { cause?: unknown }).cause : undefined
  }
}
