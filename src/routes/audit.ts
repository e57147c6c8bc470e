import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { MAX_USER_AGENT } from '../audit/connections.ts'
import { INSTANT_FORMAT } from '../audit/period.ts'
import { timestamp } from './schemas.ts'

const DEFAULT_PAGE = 100
const MAX_PAGE = 1_000

export const connectionsQuery = z.object({
  user: z.string().min(1).max(200).optional().describe('One user’s connections only.'),
  from: z.string().optional().describe(`Opened at or after this: ${INSTANT_FORMAT}.`),
  to: z.string().optional().describe(`Opened before this: ${INSTANT_FORMAT}.`),
  cursor: z.string().optional().describe('Older connections than the previous page’s last (its `next`, as given).'),
  limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(DEFAULT_PAGE),
})

export const connectionPage = z
  .object({
    connections: z.array(
      z.object({
        id: z.string().describe('The connection’s own id (not a stream id clients see).'),
        user: z.string(),
        instance: z.string().describe('The instance that held the stream (its presence id).'),
        openedAt: timestamp,
        closedAt: timestamp
          .nullable()
          .describe('Null while it is open (or for about a second after it closed: closes are written each second).'),
        closeReason: z
          .string()
          .nullable()
          .describe(
            '`client` (the client left), `evicted` (over MAX_CONNECTIONS_PER_USER), `expired` (the token did), ' +
              '`slow` (did not read), `shutdown` (the instance stopped), `error`.',
          ),
        userAgent: z.string().nullable().describe(`The User-Agent header, cut to ${MAX_USER_AGENT} characters.`),
        clientIp: z
          .string()
          .nullable()
          .describe('The client’s address: from X-Forwarded-For where TRUST_PROXY trusts the proxy, else the peer’s.'),
      }),
    ),
    next: z.string().nullable().describe('Pass as `cursor` for older connections; null when there are none.'),
  })
  .describe('The tenant’s stream connections, newest first.')

/**
 * The connection audit, for a tenant's admins (`admin` scope): their own tenant's streams only; and the /admin
 * page (public/admin.html), the live overview they watch.
 */
export async function auditRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  app.get(
    '/admin',
    {
      schema: {
        summary: 'The admin page (HTML)',
        description:
          'For a tenant’s admins: streams and users online, publish, delivery and read rates, push failures and the ' +
          'latest events with their roll-call, live (it follows the `herald:admin` topic). It signs in like the demo ' +
          'page, or takes a token with the `admin` scope.',
        tags: ['admin'],
        security: [],
      },
    },
    // A static page; it signs in and reads the API like any client (public/admin.js).
    (_request, reply) => reply.sendFile('admin.html'),
  )
  const schema = {
    summary: 'The tenant’s stream connections (admin)',
    description:
      'Every stream opened, newest first: who, from which address and browser, on which instance, when it ' +
      'opened and closed and why. Kept AUDIT_RETENTION_DAYS (30 by default). Recorded within a second of the ' +
      'open and close. A bad `from`, `to` or `cursor` is a 400 naming it.',
    tags: ['admin'],
    querystring: connectionsQuery,
    response: { 200: connectionPage },
  }
  app.get('/v1/audit/connections', { schema, onRequest: app.authenticate }, async (request) => {
    const page = await app.auditService.connections(request.caller, request.query)
    return {
      connections: page.connections.map((c) => ({
        ...c,
        openedAt: c.openedAt.toISOString(),
        closedAt: c.closedAt?.toISOString() ?? null,
      })),
      next: page.next,
    }
  })
}
