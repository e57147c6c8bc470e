import { readFileSync } from 'node:fs'
import fastifySwagger, { type SwaggerTransform } from '@fastify/swagger'
import fastifySwaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import { jsonSchemaTransform } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { problemSchema } from './routes/schemas.ts'

/** Where the UI is served; the document itself is at `/docs/json` (and `/docs/yaml`). */
export const DOCS_PREFIX = '/docs'

/** 3.1: its schemas are JSON Schema 2020-12, what zod emits (`null` types, `const`), with no lossy conversion. */
const OPENAPI_VERSION = '3.1.0'

/** The document's version is the package's. */
const VERSION: string = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version

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
        version: VERSION,
        description:
          'Real-time notifications for multi-tenant apps: SSE streams with gapless resume, REST acks, Web Push fallback. ' +
          'Every error is `application/problem+json` (RFC 9457).',
      },
      tags: [
        { name: 'events', description: 'Publish, list, acknowledge and read events.' },
        { name: 'stream', description: 'The live Server-Sent Events stream.' },
        { name: 'push', description: 'Web Push: VAPID key and device subscriptions.' },
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
              'A JWT minted by your application backend (HS256, RS256 or ES256): `sub`, `tenant`, and optionally ' +
              '`roles`, `topics`, `scope` (`events:publish`, `events:broadcast`, `admin`), `exp`.',
          },
          accessTokenQuery: {
            type: 'apiKey',
            in: 'query',
            name: 'access_token',
            description: 'GET /v1/stream only: the same JWT in the URL, for EventSource, which cannot set headers.',
          },
        },
        // A JSON Schema 2020-12 is an OpenAPI 3.1 schema; zod's type for it is only wider than openapi-types'.
        schemas: {
          Problem: z.toJSONSchema(problemSchema, { target: 'draft-2020-12', io: 'output' }) as Record<string, unknown>,
        },
      },
      // Routes that need no token say `security: []`.
      security: [{ bearerAuth: [] }],
    },
    transform,
  })
  await app.register(fastifySwaggerUi, { routePrefix: DOCS_PREFIX })
}

/** Every error leaves as problem+json (errors.ts): documented once per operation, as its default reply. */
const problemReply = () => ({
  description: 'An error (4xx, 5xx), as application/problem+json.',
  content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
})

const transform: SwaggerTransform = (input) => {
  const { schema = {}, url } = jsonSchemaTransform(input)
  if (schema.hide) return { schema, url }
  return { schema: { ...schema, response: { ...(schema.response as object), default: problemReply() } }, url }
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
