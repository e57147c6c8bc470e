// The typed client for application backends (`herald/client`): publish, read delivery status, mint tokens and
// stream tickets. Its request and reply types are the service's own zod schemas (type-only imports: nothing of
// the server is loaded), so they cannot drift from what the service validates and documents; a test holds each
// method to its OpenAPI operation.
import type { z } from 'zod'
import type { batchSchema, newEventSchema } from '../events/model.ts'
import type { problemSchema } from '../problems.ts'
import type { batchPublished, deliveryStatusReply, published, streamTicketReply } from '../routes/schemas.ts'
import { mintToken as mint, type TokenClaims } from '../tokens.ts'

/** An event to publish, as `POST /v1/events` takes it (defaults such as `priority` may be left out). */
export type NewEvent = z.input<typeof newEventSchema>
export type Published = z.output<typeof published> & {
  /** True when an Idempotency-Key matched an earlier publish. */ replayed: boolean
}
export type BatchPublished = z.output<typeof batchPublished> & { replayed: boolean }
export type DeliveryStatus = z.output<typeof deliveryStatusReply>
export type StreamTicket = z.output<typeof streamTicketReply>
export type Problem = z.output<typeof problemSchema>
export type { TokenClaims }

export interface HeraldServerClientOptions {
  /** The service, e.g. `https://notify.example.com`. */
  baseUrl: string
  /** The publisher's JWT (scopes `events:publish`, `events:broadcast`), or a function returning one. */
  token: string | (() => string | Promise<string>)
  /** Defaults to the global fetch. */
  fetch?: typeof fetch
}

/** The service answered with a problem (RFC 9457): its fields, and Retry-After in seconds where given. */
export class HeraldError extends Error {
  override name = 'HeraldError'
  constructor(
    readonly status: number,
    readonly problem: Problem | undefined,
    readonly retryAfterS: number | undefined,
  ) {
    super(problem ? `${problem.title}: ${problem.detail}` : `HTTP ${status}`)
  }
  /** The problem's stable type, e.g. `urn:herald:problem:validation`. */
  get type(): string | undefined {
    return this.problem?.type
  }
}

/**
 * The routes this client calls, with their OpenAPI operationIds: the client uses exactly these, and a test holds
 * them to the service's OpenAPI document.
 */
export const CLIENT_OPERATIONS = {
  publish: { method: 'POST', path: '/v1/events', operationId: 'publishEvent' },
  publishBatch: { method: 'POST', path: '/v1/events/batch', operationId: 'publishEvents' },
  status: { method: 'GET', path: '/v1/events/{id}/status', operationId: 'getEventStatus' },
  streamTicket: { method: 'POST', path: '/v1/stream/tickets', operationId: 'createStreamTicket' },
} as const

const pathOf = (template: string, params: Record<string, string> = {}) =>
  template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(params[name]))

export function createHeraldServerClient(options: HeraldServerClientOptions) {
  const doFetch = options.fetch ?? fetch
  const base = options.baseUrl.replace(/\/$/, '')
  const tokenOf = async () => (typeof options.token === 'function' ? options.token() : options.token)

  async function call<T>(
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string>; token?: string } = {},
  ): Promise<{ status: number; body: T }> {
    const res = await doFetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${init.token ?? (await tokenOf())}`,
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...init.headers,
      },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    })
    const text = await res.text()
    if (!res.ok) {
      const retryAfter = res.headers.get('retry-after')
      let problem: Problem | undefined
      try {
        problem = JSON.parse(text) as Problem
      } catch {
        problem = undefined
      }
      throw new HeraldError(res.status, problem, retryAfter === null ? undefined : Number(retryAfter))
    }
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T }
  }

  const keyHeader = (idempotencyKey: string | undefined): Record<string, string> =>
    idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}

  return {
    /** `POST /v1/events` (operation `publishEvent`): answers once the event is committed. */
    async publish(event: NewEvent, opts: { idempotencyKey?: string } = {}): Promise<Published> {
      const op = CLIENT_OPERATIONS.publish
      const { status, body } = await call<z.output<typeof published>>(op.method, op.path, {
        body: event,
        headers: keyHeader(opts.idempotencyKey),
      })
      return { ...body, replayed: status === 200 }
    },

    /** `POST /v1/events/batch` (operation `publishEvents`): up to 1,000 events, all or nothing. */
    async publishBatch(
      events: z.input<typeof batchSchema>['events'],
      opts: { idempotencyKey?: string } = {},
    ): Promise<BatchPublished> {
      const op = CLIENT_OPERATIONS.publishBatch
      const { status, body } = await call<z.output<typeof batchPublished>>(op.method, op.path, {
        body: { events },
        headers: keyHeader(opts.idempotencyKey),
      })
      return { ...body, replayed: status === 200 }
    },

    /** `GET /v1/events/{id}/status` (operation `getEventStatus`): for the event's publisher or an admin. */
    async status(id: string): Promise<DeliveryStatus> {
      const op = CLIENT_OPERATIONS.status
      return (await call<DeliveryStatus>(op.method, pathOf(op.path, { id }))).body
    },

    /**
     * `POST /v1/stream/tickets` (operation `createStreamTicket`) with a user's token: a single-use ticket that
     * opens that user's stream within 30 s, for a page that should not hold the JWT in a URL.
     */
    async streamTicket(userToken: string): Promise<StreamTicket> {
      const op = CLIENT_OPERATIONS.streamTicket
      return (await call<StreamTicket>(op.method, op.path, { token: userToken })).body
    },
  }
}

export type HeraldServerClient = ReturnType<typeof createHeraldServerClient>

/**
 * Mints an HS256 JWT for a user with the service's `JWT_SECRET`, valid for `ttlSeconds` (keep it short: at most
 * the service's JWT_MAX_TTL_S, a day by default). With RS256/ES256, sign with your own JWT library instead.
 */
export function mintToken(secret: string, claims: TokenClaims, ttlSeconds = 3600): string {
  return mint(secret, claims, ttlSeconds)
}
