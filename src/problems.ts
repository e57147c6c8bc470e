import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod'
import { stdSerializers } from 'pino'
import { z } from 'zod'
import { innermostError, isDatabaseUnavailable } from './db/errors.ts'
import {
  ConflictError,
  describeFieldErrors,
  type FieldError,
  InvalidFieldsError,
  NotAllowedError,
  NotFoundError,
  type ServiceError,
  TooSoonError,
  UnprocessableError,
} from './service-errors.ts'

/**
 * HTTP's side of errors: the problem types a client can see, the problem+json body (RFC 9457), and the one error
 * handler that turns everything thrown (the services' errors, Fastify's, the database's) into one.
 */

/** Seconds a client should wait before retrying when the database is unreachable. */
export const DATABASE_DOWN_RETRY_AFTER_S = 5

/** The coded errors a client can see. `type` is a stable URI-ish slug; the title is the human summary. */
export const problems = {
  badRequest: { status: 400, type: 'bad-request', title: 'Bad request' },
  validation: { status: 400, type: 'validation', title: 'The request is not valid' },
  unauthorized: { status: 401, type: 'unauthorized', title: 'Missing or invalid token' },
  forbidden: { status: 403, type: 'forbidden', title: 'Not allowed' },
  notFound: { status: 404, type: 'not-found', title: 'Not found' },
  conflict: { status: 409, type: 'conflict', title: 'Conflict' },
  tooLarge: { status: 413, type: 'payload-too-large', title: 'Request body too large' },
  uriTooLong: { status: 414, type: 'uri-too-long', title: 'URI too long' },
  unsupportedMediaType: { status: 415, type: 'unsupported-media-type', title: 'Unsupported media type' },
  unprocessable: { status: 422, type: 'unprocessable', title: 'Unprocessable content' },
  tooManyRequests: { status: 429, type: 'too-many-requests', title: 'Too many requests' },
  internal: { status: 500, type: 'internal', title: 'Internal server error' },
  unavailable: { status: 503, type: 'unavailable', title: 'Service unavailable' },
} as const

export type ProblemCode = keyof typeof problems

/** The problem+json body every error reply has. */
export const problemSchema = z
  .object({
    type: z.enum(Object.values(problems).map((p) => `urn:herald:problem:${p.type}`)),
    title: z.string(),
    status: z.number().int().min(400).max(599),
    detail: z.string(),
    errors: z
      .array(z.object({ path: z.string().describe('Like `body.to.users.0`.'), message: z.string() }))
      .optional()
      .describe('Validation failures, one per field.'),
  })
  .describe('application/problem+json (RFC 9457)')

/** Each service error's problem (service-errors.ts). */
const SERVICE_ERROR_PROBLEMS: ReadonlyArray<[new (...args: never[]) => ServiceError, ProblemCode]> = [
  [InvalidFieldsError, 'validation'],
  [NotAllowedError, 'forbidden'],
  [NotFoundError, 'notFound'],
  [ConflictError, 'conflict'],
  [UnprocessableError, 'unprocessable'],
  [TooSoonError, 'tooManyRequests'],
]

/** An HTTP-level refusal a route or a hook throws on purpose (a bad header, a missing token, a full instance). */
export class HttpProblem extends Error {
  constructor(
    readonly code: ProblemCode,
    readonly detail: string,
    readonly errors?: FieldError[],
    readonly headers?: Record<string, string>,
  ) {
    super(detail)
  }
}

export function sendProblem(
  reply: FastifyReply,
  code: ProblemCode,
  detail: string,
  errors?: FieldError[],
  headers?: Record<string, string>,
) {
  const p = problems[code]
  if (headers) reply.headers(headers)
  return reply
    .code(p.status)
    .type('application/problem+json')
    .send({
      type: `urn:herald:problem:${p.type}`,
      title: p.title,
      status: p.status,
      detail,
      ...(errors ? { errors } : {}),
    })
}

/**
 * The logger's `err` serializer. A failed query is logged as the database's message and code only: drizzle's
 * error has the statement with every parameter in its message (for a batched statement, hundreds of
 * kilobytes of user ids), and PGlite's own error carries them as properties too. Other errors as pino logs them.
 */
export function serializeError(err: Error): { type: string; message: string; stack: string; [key: string]: unknown } {
  if (!(err instanceof Error) || !('query' in err)) return stdSerializers.err(err)
  const database = innermostError(err) as Error & { code?: unknown }
  const code = database.code === undefined ? {} : { code: String(database.code) }
  return { type: 'QueryError', message: database.message, stack: database.stack ?? '', ...code }
}

const fastifyCodes: Record<string, ProblemCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'tooLarge',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupportedMediaType',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'badRequest',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'badRequest',
  FST_ERR_CTP_INVALID_JSON_BODY: 'badRequest',
  FST_JWT_NO_AUTHORIZATION_IN_HEADER: 'unauthorized',
  FST_JWT_AUTHORIZATION_TOKEN_INVALID: 'unauthorized',
  FST_JWT_AUTHORIZATION_TOKEN_EXPIRED: 'unauthorized',
  FST_JWT_AUTHORIZATION_TOKEN_UNTRUSTED: 'unauthorized',
  FST_JWT_BAD_REQUEST: 'unauthorized',
  FST_ERR_VALIDATION: 'validation',
}

/**
 * The detail of an error the service did not raise itself. Fastify's and its plugins' errors (codes FST_...)
 * and http-errors marked `expose` are written for clients; any other message (a RangeError's "Maximum call
 * stack size exceeded", a driver's or a library's text) is internal and stays in the log: the title stands in.
 */
function clientDetail(err: FastifyError & { expose?: unknown }, code: ProblemCode): string {
  const forClients = err.code?.startsWith('FST_') || err.expose === true
  return forClients && err.message ? err.message : problems[code].title
}

/** An error that is the service's fault, whatever it is labelled (a validator that threw gets FST_ERR_VALIDATION). */
const isServerFault = (err: FastifyError) => err.statusCode !== undefined && err.statusCode >= 500

/** The one error handler: every failure leaves as application/problem+json; 5xx details stay in the log. */
export function registerErrorHandling(app: FastifyInstance) {
  app.setErrorHandler((err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    if (err instanceof HttpProblem) return sendProblem(reply, err.code, err.detail, err.errors, err.headers)
    const service = SERVICE_ERROR_PROBLEMS.find(([type]) => err instanceof type)
    if (service) {
      const fields = err instanceof InvalidFieldsError ? err.fields : undefined
      const headers = err instanceof TooSoonError ? { 'retry-after': String(err.retryAfterS) } : undefined
      return sendProblem(reply, service[1], (err as unknown as ServiceError).detail, fields, headers)
    }
    if (hasZodFastifySchemaValidationErrors(err)) {
      const errors = err.validation.map((v) => ({
        path: [err.validationContext, ...v.instancePath.split('/').filter(Boolean)].join('.'),
        message: v.message ?? 'invalid',
      }))
      return sendProblem(reply, 'validation', describeFieldErrors(errors), errors)
    }
    if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
      return sendProblem(reply, 'badRequest', 'The body is not valid JSON.')
    }
    const mapped = err.code && !isServerFault(err) ? fastifyCodes[err.code] : undefined
    if (mapped) return sendProblem(reply, mapped, clientDetail(err, mapped))
    if (isDatabaseUnavailable(err)) {
      request.log.warn({ err }, 'database unavailable')
      return sendProblem(reply, 'unavailable', 'The database cannot be reached; retry shortly.', undefined, {
        'retry-after': String(DATABASE_DOWN_RETRY_AFTER_S),
      })
    }
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      const code = (Object.keys(problems) as ProblemCode[]).find((k) => problems[k].status === err.statusCode)
      return sendProblem(reply, code ?? 'badRequest', clientDetail(err, code ?? 'badRequest'))
    }
    request.log.error({ err }, 'unhandled error')
    return sendProblem(reply, 'internal', 'Something went wrong on our side; it has been logged.')
  })

  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, 'notFound', `No route for ${request.method} ${request.url.split('?')[0]}.`),
  )
}
