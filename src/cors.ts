import cors from '@fastify/cors'
import type { FastifyInstance, FastifyRequest } from 'fastify'

const allowed = (origins: string[], origin: string | undefined) =>
  Boolean(origin) && (origins.includes('*') || origins.includes(origin as string))

/** CORS for the REST routes through @fastify/cors, for `origins` (CORS_ORIGINS; `*` for any). */
export async function registerCors(app: FastifyInstance, origins: string[]) {
  if (!origins.length) return
  await app.register(cors, {
    origin: (origin, done) => done(null, allowed(origins, origin)),
    // Every method a route takes (PUT and PATCH too: preferences, topics, the directory, edits).
    methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    // x-herald-tenant: the tenant a call acts in, of those the token covers (auth.ts).
    allowedHeaders: ['authorization', 'content-type', 'idempotency-key', 'last-event-id', 'x-herald-tenant'],
    // A 429's or 503's wait, which the browser client reads (`retryAfter`).
    exposedHeaders: ['retry-after'],
    maxAge: 600,
  })
}

/**
 * CORS headers for the stream, whose response is written by hand after `reply.hijack()`: Fastify's hooks
 * (and so @fastify/cors) never touch that response.
 */
export function streamCorsHeaders(origins: string[]) {
  return (request: FastifyRequest): Record<string, string> => {
    const origin = request.headers.origin
    if (!allowed(origins, origin)) return {}
    return { 'Access-Control-Allow-Origin': origin as string, Vary: 'Origin' }
  }
}
