import { readFileSync } from 'node:fs'
import fastifySwagger, { type SwaggerTransform, type SwaggerTransformObject } from '@fastify/swagger'
import fastifySwaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance, FastifySchema, RouteOptions } from 'fastify'
import { jsonSchemaTransform } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { MAX_JSON_DEPTH } from './events/raw-json.ts'
import { PACKAGE_JSON } from './package-files.ts'
import { type ProblemCode, problemSchema, type problems } from './problems.ts'

/** Where the UI is served; the document itself is at `/docs/json` (and `/docs/yaml`). */
export const DOCS_PREFIX = '/docs'

/** 3.1: its schemas are JSON Schema 2020-12, what zod emits (`null` types, `const`), with no lossy conversion. */
const OPENAPI_VERSION = '3.1.0'

/** The document's version and licence are the package's. */
const PACKAGE: { version: string; license: string } = JSON.parse(readFileSync(PACKAGE_JSON, 'utf8'))

/**
 * The document is served by the service it describes: its operations are on the host it came from, whatever
 * name or proxy that host is reached through.
 */
const SERVERS = [{ url: '/', description: 'This service (the one serving this document)' }]

/** `X-Herald-Tenant` (auth.ts), which every operation that takes a token takes: shared, as a component. */
const TENANT_HEADER_PARAMETER = {
  name: 'X-Herald-Tenant',
  in: 'header',
  required: false,
  schema: { type: 'string', minLength: 1, maxLength: 200 },
  description:
    'The tenant the call acts in: the token’s `tenant` (the default), or one its `tenants` claim covers, with the ' +
    'roles it gives there. Any other tenant is a 403.',
} as const

/** Every operation that takes a token refers to the shared X-Herald-Tenant parameter (public ones say `security: []`). */
const withTenantHeader: SwaggerTransformObject = (document) => {
  if (!('openapiObject' in document)) return document.swaggerObject
  const { openapiObject } = document
  type Operation = { security?: unknown[]; parameters?: unknown[] }
  for (const path of Object.values(openapiObject.paths ?? {}) as Array<Record<string, Operation>>) {
    for (const [method, op] of Object.entries(path)) {
      if (!HTTP_METHODS.has(method) || op.security?.length === 0) continue
      op.parameters = [...(op.parameters ?? []), { $ref: '#/components/parameters/TenantHeader' }]
    }
  }
  return openapiObject
}

const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'])

/** A reply a route documents: a zod schema (JSON), or one zod schema per media type with a description. */
type DocumentedReply = z.ZodType | { description: string; content: Record<string, { schema: z.ZodType }> }

/**
 * The OpenAPI document at `/docs/json` and its UI at `/docs`, built from the zod schemas that validate requests
 * and serialize replies. Register before the routes: @fastify/swagger collects them as they are added.
 * Public: no token, no rate limit.
 */
export async function registerDocs(app: FastifyInstance) {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: OPENAPI_VERSION,
      info: {
        title: 'Herald',
        version: PACKAGE.version,
        // An SPDX identifier: what OpenAPI 3.1 takes in place of a licence URL.
        license: { name: PACKAGE.license, identifier: PACKAGE.license },
        description:
          'Real-time notifications for multi-tenant apps: SSE streams with gapless resume, REST acks, Web Push fallback. ' +
          'Every error is `application/problem+json` (RFC 9457). A call acts in its token’s `tenant`, or in another ' +
          'tenant its `tenants` claim covers, named by the `X-Herald-Tenant` header (a director of several schools).',
      },
      servers: SERVERS,
      tags: [
        { name: 'events', description: 'Publish, list, acknowledge and read events.' },
        { name: 'stream', description: 'The live Server-Sent Events stream.' },
        { name: 'push', description: 'Web Push: VAPID key and device subscriptions.' },
        { name: 'topics', description: 'Topic subscriptions: the topics a user follows, and a topic’s members.' },
        {
          name: 'preferences',
          description: 'Notification preferences: what each user sees and gets pushed, quiet hours, tenant defaults.',
        },
        {
          name: 'directory',
          description:
            'The user directory: who exists in a tenant, with their roles and topics (tenants’ backends, `admin`).',
        },
        {
          name: 'event-types',
          description:
            'A tenant’s event types: defaults, inbox and push switches, and title and body templates per locale.',
        },
        {
          name: 'webhooks',
          description:
            'Webhook endpoints a tenant’s admins register: signed deliveries of events, receipts and presence.',
        },
        {
          name: 'admin',
          description: 'For a tenant’s admins: the connection audit and statistics (the /admin page reads them live).',
        },
        {
          name: 'system',
          description: 'For the platform’s operators (`events:system`): one event into many tenants.',
        },
        { name: 'operations', description: 'Health, readiness and metrics.' },
        { name: 'demo', description: 'The demo page’s sign-in; only while the service uses a secret it generated.' },
      ],
      components: {
        securitySchemes: {
          bearerAuth: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description:
              'A JWT minted by your application backend (HS256, RS256 or ES256): `sub`, `tenant`, `exp` (at most ' +
              'JWT_MAX_TTL_S after `iat`, or after now without `iat`), and optionally `roles`, `topics`, `scope` ' +
              '(`events:publish`, `events:broadcast`, `admin`), `tenants` (every tenant the user works in, with ' +
              'their roles there: `{"school-b": ["director"]}`; at most 100), `iat`, `nbf`. Clocks may differ by 30 s.',
          },
          accessTokenQuery: {
            type: 'apiKey',
            in: 'query',
            name: 'access_token',
            description:
              'GET /v1/stream only: the same JWT in the URL, for EventSource, which cannot set headers. Less safe ' +
              'than a ticket: proxies and browser history may keep URLs.',
          },
          streamTicketQuery: {
            type: 'apiKey',
            in: 'query',
            name: 'ticket',
            description: 'GET /v1/stream only: a single-use ticket from POST /v1/stream/tickets, valid for 30 s.',
          },
        },
        parameters: { TenantHeader: TENANT_HEADER_PARAMETER },
        // A JSON Schema 2020-12 is an OpenAPI 3.1 schema; zod's type for it is only wider than openapi-types'.
        schemas: {
          Problem: z.toJSONSchema(problemSchema, { target: 'draft-2020-12', io: 'output' }) as Record<string, unknown>,
        },
      },
      // Routes that need no token say `security: []`.
      security: [{ bearerAuth: [] }],
    },
    transform,
    transformObject: withTenantHeader,
  })
  // The service's own Content-Security-Policy (app.ts) covers the UI, hence no staticCSP. Swagger UI's plain
  // layout: the standalone one's top bar draws its logo with a `<style>` element, which that policy refuses,
  // and offers to load any other document by URL, which this page has no use for.
  await app.register(fastifySwaggerUi, { routePrefix: DOCS_PREFIX, uiConfig: { layout: 'BaseLayout' } })
}

/** A status an error reply may have: one of errors.ts `problems`. */
type ErrorStatus = (typeof problems)[ProblemCode]['status']

/** When an operation answers each error status, in sentences written for a client's developer. */
type ErrorCauses = Partial<Record<ErrorStatus, string>>

/** What the document says of an operation that its route does not declare. */
export interface OperationDoc {
  /** The name generated clients give its method: a verb, then what it acts on. */
  operationId: string
  /** It queries the database, so it answers 503 while the database cannot be reached. */
  database: boolean
  /** Its own errors, beyond those its route implies (see `impliedErrors`); a cause here adds to those. */
  errors?: ErrorCauses
}

/** Why the errors a route's shape implies happen; entries reuse them where an operation has the same cause. */
const CAUSES = {
  invalid: 'A parameter, header or field breaks its rule (`validation`: each one is named in `errors`).',
  malformedBody: `The body is not JSON, or nests deeper than ${MAX_JSON_DEPTH} levels (\`bad-request\`).`,
  tooLarge: 'The body is larger than BODY_LIMIT.',
  notJson: 'The body is not `application/json`.',
  unauthenticated: 'No bearer token, or one that is malformed, expired, not yet valid or not trusted.',
  rateLimited: 'More requests than this route’s rate limit allows.',
  authFailures: 'Too many failed authentications from this IP address.',
  databaseDown: 'The database cannot be reached.',
} as const

/** The same rules hold for both publish routes; a key names the route it was first used on. */
const publishErrors = (otherRoute: string): ErrorCauses => ({
  403: 'The token lacks `events:publish` (to users or topics) or `events:broadcast` (to roles or the tenant).',
  409:
    'The Idempotency-Key’s first request is still in flight (retry once it is answered), ' +
    `or the key was used on ${otherRoute}.`,
  422: 'The Idempotency-Key was used for another request (another `deliverAt`, or none, counts): a new request needs a new key.',
})

/** The scheduled publishes a caller may see: their own, or an admin's tenant's. */
const noScheduled =
  'No scheduled publish with this id of the caller’s (for an `admin`: of the tenant); never 403, existence does not leak.'

/** Managing a topic's members is a tenant admin's. */
const notAdmin = 'The token lacks the `admin` scope.'

/** A webhook endpoint of another tenant is not found, like one that does not exist. */
const noWebhook = 'No webhook endpoint with this id in the caller’s tenant.'

/** Editing and recalling an event refuse alike. */
const changeErrors: ErrorCauses = {
  403: 'The caller can see the event but is neither its publisher nor an `admin` of its tenant.',
  404: 'No event with this id that the caller may see or publishes (never 403 then: existence does not leak), or it was recalled already or has expired.',
}

/** Acking and reading one event refuse alike. */
const receiptErrors: ErrorCauses = {
  404: 'No event with this id that the caller may see, or an ackToken of another event.',
}

/** What push/subscriptions.ts checks of a subscription beyond its shape, on registration and renewal alike. */
const badSubscription =
  'The endpoint is not an https URL of an allowed push service, or a key is not a valid P-256 key or secret.'

/** A push endpoint belongs to one device; another user's browser must subscribe again. */
const endpointTaken = 'The endpoint is registered to another user’s device: subscribe again in the browser.'

/**
 * Every operation, by `METHOD /path` as the document writes its path. The one place operationIds are given,
 * since the routes' owners edit their files freely: a route added without an entry here has no operationId,
 * which test/docs.test.ts and the lint in test/openapi.test.ts refuse.
 */
export const OPERATIONS: Readonly<Record<string, OperationDoc>> = {
  'POST /v1/events': { operationId: 'publishEvent', database: true, errors: publishErrors('the batch route') },
  'POST /v1/events/batch': {
    operationId: 'publishEvents',
    database: true,
    errors: publishErrors('the single-event route'),
  },
  'POST /v1/system/events': {
    operationId: 'publishSystemEvent',
    database: true,
    errors: {
      403: 'The token lacks `events:system` (a tenant’s `admin` or `events:broadcast` is not enough).',
      409: 'The Idempotency-Key’s first request is still in flight: retry once it is answered.',
      422: 'The Idempotency-Key was used for another request (another publish route counts): a new request needs a new key.',
    },
  },
  'GET /v1/events': { operationId: 'listEvents', database: true },
  'GET /v1/events/unread-count': { operationId: 'getUnreadCount', database: true },
  'GET /v1/events/{id}': {
    operationId: 'getEvent',
    database: true,
    errors: { 404: 'No event with this id that the caller may see (never 403: whether it exists does not leak).' },
  },
  'PATCH /v1/events/{id}': { operationId: 'editEvent', database: true, errors: changeErrors },
  'DELETE /v1/events/{id}': { operationId: 'recallEvent', database: true, errors: changeErrors },
  'POST /v1/events/{id}/ack': { operationId: 'ackEvent', database: true, errors: receiptErrors },
  'POST /v1/events/{id}/read': { operationId: 'readEvent', database: true, errors: receiptErrors },
  'POST /v1/events/read': { operationId: 'readEvents', database: true },
  'GET /v1/scheduled': { operationId: 'listScheduledPublishes', database: true },
  'GET /v1/scheduled/{id}': {
    operationId: 'getScheduledPublish',
    database: true,
    errors: { 404: noScheduled },
  },
  'DELETE /v1/scheduled/{id}': {
    operationId: 'cancelScheduledPublish',
    database: true,
    errors: {
      404: noScheduled,
      409: 'It was published already: the detail names its event id(s).',
    },
  },
  'GET /v1/me/topics': { operationId: 'listMyTopics', database: true },
  'PUT /v1/me/topics/{topic}': {
    operationId: 'subscribeToTopic',
    database: true,
    errors: { 403: 'The token’s `topics` claim does not allow the topic, or the caller follows 200 topics already.' },
  },
  'DELETE /v1/me/topics/{topic}': { operationId: 'unsubscribeFromTopic', database: true },
  'GET /v1/topics/{topic}/members': { operationId: 'listTopicMembers', database: true, errors: { 403: notAdmin } },
  'PUT /v1/topics/{topic}/members': { operationId: 'addTopicMembers', database: true, errors: { 403: notAdmin } },
  'DELETE /v1/topics/{topic}/members': {
    operationId: 'removeTopicMembers',
    database: true,
    errors: { 403: notAdmin },
  },
  'GET /v1/me/preferences': { operationId: 'getMyPreferences', database: true },
  'PUT /v1/me/preferences': { operationId: 'setMyPreferences', database: true },
  'GET /v1/tenant/preferences': { operationId: 'getTenantPreferences', database: true, errors: { 403: notAdmin } },
  'PUT /v1/tenant/preferences': { operationId: 'setTenantPreferences', database: true, errors: { 403: notAdmin } },
  'GET /v1/event-types': { operationId: 'listEventTypes', database: true },
  'PUT /v1/event-types/{type}': { operationId: 'putEventType', database: true, errors: { 403: notAdmin } },
  'DELETE /v1/event-types/{type}': {
    operationId: 'deleteEventType',
    database: true,
    errors: { 403: notAdmin, 404: 'No event type of this name is registered in the caller’s tenant.' },
  },
  'PUT /v1/directory/users/{id}': { operationId: 'putDirectoryUser', database: true, errors: { 403: notAdmin } },
  'GET /v1/directory/users/{id}': {
    operationId: 'getDirectoryUser',
    database: true,
    errors: { 403: notAdmin, 404: 'No user with this id in the caller’s tenant’s directory.' },
  },
  'DELETE /v1/directory/users/{id}': {
    operationId: 'deleteDirectoryUser',
    database: true,
    errors: { 403: notAdmin, 404: 'No user with this id in the caller’s tenant’s directory.' },
  },
  'POST /v1/directory/users/batch': {
    operationId: 'batchDirectoryUsers',
    database: true,
    errors: { 403: notAdmin, 413: 'For this route the limit is BODY_LIMIT or 8 MiB, whichever is larger.' },
  },
  'GET /v1/directory/users': {
    operationId: 'listDirectoryUsers',
    database: true,
    errors: { 400: 'The cursor is not one this listing gave.', 403: notAdmin },
  },
  'GET /v1/events/{id}/recipients': {
    operationId: 'getEventRecipients',
    database: true,
    errors: {
      400: 'The cursor is not one this listing gave.',
      404: 'No event with this id in the caller’s tenant, or the caller is neither its publisher nor an admin.',
    },
  },
  'POST /v1/events/{id}/nudge': {
    operationId: 'nudgeEvent',
    database: true,
    errors: {
      404: 'No event with this id in the caller’s tenant, or the caller is neither its publisher nor an admin.',
      409: 'The event was recalled.',
      429: 'The event was nudged less than NUDGE_MIN_INTERVAL_S ago; Retry-After says when the next may go.',
    },
  },
  'GET /v1/events/{id}/status': {
    operationId: 'getEventStatus',
    database: true,
    errors: {
      404: 'No event with this id in the caller’s tenant, or the caller is neither its publisher nor an admin.',
    },
  },
  'GET /v1/stream': {
    operationId: 'openStream',
    database: true,
    errors: {
      400: 'The request has a body, names more than 100 topics, or its Last-Event-ID is not an event id.',
      403: 'The token does not allow one of the topics.',
      401: 'No valid token, or a ticket that was used already or has expired.',
      503: 'This instance holds MAX_STREAMS streams.',
    },
  },
  'POST /v1/stream/tickets': { operationId: 'createStreamTicket', database: true },
  'GET /v1/push/vapid-public-key': { operationId: 'getVapidPublicKey', database: false },
  'POST /v1/push/subscriptions': {
    operationId: 'registerPushSubscription',
    database: true,
    errors: { 400: badSubscription, 409: endpointTaken },
  },
  'POST /v1/push/subscriptions/renew': {
    operationId: 'renewPushSubscription',
    database: true,
    errors: {
      400: badSubscription,
      401: 'No renew token as a bearer token, or one that is unknown or expired.',
      409: endpointTaken,
      429: CAUSES.authFailures,
    },
  },
  'GET /v1/push/subscriptions': { operationId: 'listPushSubscriptions', database: true },
  'DELETE /v1/push/subscriptions/{id}': {
    operationId: 'deletePushSubscription',
    database: true,
    errors: { 404: 'The caller has no device with this id.' },
  },
  'POST /v1/push/test': {
    operationId: 'sendTestPush',
    database: true,
    errors: { 404: 'The caller has no registered device.' },
  },
  'POST /v1/webhooks': {
    operationId: 'createWebhook',
    database: true,
    errors: {
      400: 'The URL breaks a rule (`body.url`: not https, or a host that is, or resolves to, a private, loopback or link-local address, or does not resolve), or an event type is unknown (`body.events.0`).',
      403: notAdmin,
      409: 'The tenant has 50 endpoints already.',
    },
  },
  'GET /v1/webhooks': { operationId: 'listWebhooks', database: true, errors: { 403: notAdmin } },
  'GET /v1/webhooks/{id}': { operationId: 'getWebhook', database: true, errors: { 403: notAdmin, 404: noWebhook } },
  'DELETE /v1/webhooks/{id}': {
    operationId: 'deleteWebhook',
    database: true,
    errors: { 403: notAdmin, 404: noWebhook },
  },
  'POST /v1/webhooks/{id}/enable': {
    operationId: 'enableWebhook',
    database: true,
    errors: { 403: notAdmin, 404: noWebhook },
  },
  'GET /v1/webhooks/{id}/deliveries': {
    operationId: 'listWebhookDeliveries',
    database: true,
    errors: { 403: notAdmin, 404: noWebhook },
  },
  'GET /v1/audit/connections': { operationId: 'listStreamConnections', database: true, errors: { 403: notAdmin } },
  'GET /v1/stats': { operationId: 'getStats', database: true, errors: { 403: notAdmin } },
  'GET /admin': { operationId: 'getAdminPage', database: false },
  'GET /health': { operationId: 'getHealth', database: false },
  'GET /ready': { operationId: 'getReadiness', database: true },
  'GET /metrics': {
    operationId: 'getMetrics',
    // A scrape while the database is down still answers: the pending pushes gauge reads NaN.
    database: false,
    errors: {
      401: 'METRICS_TOKEN is set, and the request does not send it as a bearer token.',
      429: CAUSES.authFailures,
    },
  },
  'GET /demo/config': { operationId: 'getDemoConfig', database: false },
  'POST /demo/token': { operationId: 'createDemoToken', database: false },
}

/** `POST /v1/events/:id` as the table writes it: `POST /v1/events/{id}`. */
const operationKey = (method: string, url: string) => `${method} ${url.replace(/:(\w+)/g, '{$1}')}`

/** Routes that need no token say `security: []`; every other one takes the document's bearer token. */
const isPublic = (schema: FastifySchema & { security?: unknown }) =>
  Array.isArray(schema.security) && schema.security.length === 0

/** The errors a route's own declaration implies: its inputs, whether it needs a token, its rate limit. */
function impliedErrors(route: RouteOptions, schema: FastifySchema, database: boolean): [ErrorStatus, string][] {
  const errors: [ErrorStatus, string][] = []
  const { body, querystring, params, headers } = schema
  if ([body, querystring, params, headers].some((input) => input !== undefined)) errors.push([400, CAUSES.invalid])
  if (body !== undefined) errors.push([400, CAUSES.malformedBody], [413, CAUSES.tooLarge], [415, CAUSES.notJson])
  const needsToken = !isPublic(schema)
  if (needsToken) errors.push([401, CAUSES.unauthenticated])
  if (route.config?.rateLimit) errors.push([429, CAUSES.rateLimited])
  // A bad token counts against its IP (auth.ts): past RATE_LIMIT_AUTH_FAILURES_PER_MIN, 429 instead of 401.
  if (needsToken) errors.push([429, CAUSES.authFailures])
  if (database) errors.push([503, CAUSES.databaseDown])
  return errors
}

/** The statuses that mean "later": each sends Retry-After (rate limits, errors.ts, the stream's cap). */
const STATUSES_WITH_RETRY_AFTER: ReadonlySet<ErrorStatus> = new Set([429, 503])
const RETRY_AFTER = {
  'Retry-After': { type: 'integer', minimum: 0, description: 'Seconds to wait before retrying.' },
}

const PROBLEM_CONTENT = { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } }

/** An error reply (errors.ts `sendProblem`): problem+json, and when it happens. */
const problemReply = (description: string, retryAfter = false) => ({
  description,
  content: PROBLEM_CONTENT,
  ...(retryAfter ? { headers: RETRY_AFTER } : {}),
})

/** What no table foresees, as every operation's `default`: a fault of ours, or the router refusing the URL. */
const UNEXPECTED_ERROR = problemReply(
  'Any other error: 500 is a fault on our side, logged under the request id; 400 or 414, a malformed or over-long URL.',
)

/** The operation's error replies by status, each described by all its causes (the implied ones first). */
function errorReplies(route: RouteOptions, schema: FastifySchema, operation: OperationDoc | undefined) {
  // An operation without an entry (a test fails for it) is assumed to use the database, like most.
  const own = Object.entries(operation?.errors ?? {}).map(([status, cause]): [ErrorStatus, string] => [
    Number(status) as ErrorStatus,
    cause,
  ])
  const byStatus = new Map<ErrorStatus, string[]>()
  for (const [status, cause] of [...impliedErrors(route, schema, operation?.database ?? true), ...own]) {
    byStatus.set(status, [...(byStatus.get(status) ?? []), cause])
  }
  return Object.fromEntries(
    [...byStatus].map(([status, causes]) => [
      status,
      problemReply(causes.join(' '), STATUSES_WITH_RETRY_AFTER.has(status)),
    ]),
  )
}

/** Each operation gets its operationId and its errors (OPERATIONS); replies it documents itself stay as they are. */
const transform: SwaggerTransform = (input) => {
  const { schema = {}, url } = jsonSchemaTransform(input)
  if (schema.hide) return { schema, url }
  // A route with several methods would be keyed `GET,POST`: it finds no entry, and the docs test says so.
  const operation = OPERATIONS[operationKey(String(input.route.method), url)]
  const response = {
    ...errorReplies(input.route, input.schema ?? {}, operation),
    ...(schema.response as object),
    default: UNEXPECTED_ERROR,
  }
  return { schema: { ...schema, ...(operation && { operationId: operation.operationId }), response }, url }
}

/**
 * For a route's `config.swaggerTransform`: documents replies that Fastify does not serialize (JSON text built
 * by `eventJson`, so `data` goes out byte for byte; a hijacked stream). Declared in `schema.response` they
 * would type the handler's `send` as an object; Fastify sends a string as it is either way.
 */
export const documentedReplies =
  (replies: Record<number, DocumentedReply>): SwaggerTransform =>
  (input) =>
    transform({ ...input, schema: { ...input.schema, response: { ...(input.schema.response as object), ...replies } } })
