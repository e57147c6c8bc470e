import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { ADMIN_TOPIC } from '../audit/overview.ts'
import { topicAllowed, topicMatches } from '../auth.ts'
import { commaList } from '../config.ts'
import { documentedReplies } from '../docs.ts'
import { preferredLocale } from '../event-types/locale.ts'
import { eventIdSchema, parseEventId } from '../events/model.ts'
import { followedTopics } from '../events/stream-profiles.ts'
import { DATABASE_DOWN_RETRY_AFTER_S, HttpProblem } from '../problems.ts'
import { openStream, type StreamDeps } from '../stream/open-stream.ts'
import { STREAM_TICKET_TTL_S } from '../stream-tickets.ts'
import { EVICTED_EVENT_ID } from '../wire-format.ts'
import { sseStream, streamHeaders, streamQuery, streamTicketReply } from './schemas.ts'

/** The answer to a stream that comes back after its eviction. */
const evictedReply = z
  .undefined()
  .describe(
    'Last-Event-ID was `evicted`: the stream was closed for being over MAX_CONNECTIONS_PER_USER (its last frame ' +
      'was `id: evicted`, `event: evicted`), and an EventSource coming back on its own stops here. ' +
      'A new stream (no Last-Event-ID) opens as usual.',
  )

/** Topics one stream may follow. */
const MAX_STREAM_TOPICS = 100
/** Seconds a client should wait before opening a stream again on a full instance: as long as when the database is down. */
const FULL_RETRY_AFTER_S = DATABASE_DOWN_RETRY_AFTER_S

export async function streamRoutes(
  fastify: FastifyInstance,
  {
    maxStreams,
    ...deps
  }: Omit<StreamDeps, 'reader' | 'hub' | 'tail' | 'presence' | 'metrics'> & {
    /** Past this many open streams on this instance, new ones get 503. */
    maxStreams: number
  },
) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const streamDeps: StreamDeps = {
    ...deps,
    reader: app.logReader,
    hub: app.hub,
    tail: app.logTail,
    presence: app.presence,
    metrics: app.metrics,
    audit: app.connectionAudit,
  }

  /** A stream opens with a single-use ticket (`?ticket=`), or with the JWT as every route takes it. */
  async function authenticateStream(request: FastifyRequest, reply: FastifyReply) {
    const { ticket } = request.query as { ticket?: unknown }
    if (typeof ticket !== 'string' || ticket === '') return app.authenticate(request, reply)
    const caller = await app.streamTickets.redeem(ticket)
    if (caller) {
      request.caller = caller
      return
    }
    await app.limits.authFailed(request, reply)
    throw new HttpProblem('unauthorized', 'The stream ticket is not valid: used already, or expired.', undefined, {
      'www-authenticate': 'Bearer',
    })
  }

  app.post(
    '/v1/stream/tickets',
    {
      schema: {
        summary: 'A single-use ticket that opens the caller’s stream within 30 s',
        description:
          'For EventSource, which cannot set headers: the ticket goes in the stream URL instead of the JWT, ' +
          'so a URL that ends up in a proxy log or the browser history opens nothing. The stream runs with this ' +
          'token’s claims and ends when the token expires.',
        tags: ['stream'],
        response: { 201: streamTicketReply },
      },
      onRequest: app.authenticate,
    },
    async (request, reply) => {
      const ticket = await app.streamTickets.issue(request.caller)
      return reply.code(201).send({ ticket, expiresIn: STREAM_TICKET_TTL_S })
    },
  )

  app.get(
    '/v1/stream',
    {
      // HEAD would run the whole stream handler and never answer (Node sends no head for HEAD).
      exposeHeadRoute: false,
      config: {
        tokenInQuery: true,
        // Written by the stream itself after reply.hijack() (stream/connection.ts): documented, never serialized.
        swaggerTransform: documentedReplies({
          200: { description: 'The stream.', content: { 'text/event-stream': { schema: sseStream } } },
          204: evictedReply,
        }),
      },
      schema: {
        summary: 'The caller’s notifications, live, as Server-Sent Events',
        description:
          'The token goes in `Authorization: Bearer`; EventSource, which cannot set headers, passes a single-use ' +
          '`?ticket=` (POST /v1/stream/tickets), or the JWT itself as `?access_token=`. ' +
          'A topic the token does not allow is a 403 before the stream opens. A token with a `tenants` claim gets ' +
          'the events of every tenant it covers on this one stream, each with its `tenant`, in id order.',
        tags: ['stream'],
        querystring: streamQuery,
        headers: streamHeaders,
        security: [{ bearerAuth: [] }, { streamTicketQuery: [] }, { accessTokenQuery: [] }],
      },
      onRequest: authenticateStream,
    },
    async (request, reply) => {
      const { caller } = request
      // The header wins: a reconnecting EventSource sends it and keeps its original URL (and its old ?lastEventId).
      const header = request.headers['last-event-id']
      const raw = typeof header === 'string' && header.trim() !== '' ? header.trim() : request.query.lastEventId
      // An EventSource whose stream was evicted (connection.ts) reconnects on its own after `retry:`: a 204
      // stops it for good, where a stream would evict the next oldest, and so on.
      if (raw === EVICTED_EVENT_ID) return reply.code(204).send()
      // A body left unread would also keep Node from reading the socket, so a client that leaves would go
      // unnoticed (and stay registered) until a write to it failed.
      const { 'content-length': length, 'transfer-encoding': chunked } = request.headers
      if (chunked !== undefined || (length !== undefined && length !== '0'))
        throw new HttpProblem('badRequest', 'A stream request takes no body.')
      if (app.hub.size >= maxStreams) {
        throw new HttpProblem(
          'unavailable',
          'This instance holds as many streams as it may; retry shortly.',
          undefined,
          {
            'retry-after': String(FULL_RETRY_AFTER_S),
          },
        )
      }
      const topics = [...new Set(commaList(request.query.topics))]
      if (topics.length > MAX_STREAM_TOPICS)
        throw new HttpProblem('badRequest', `At most ${MAX_STREAM_TOPICS} topics per stream.`)
      // The admin overview's topic is the service's own: any admin of the tenant may follow it, no one else, not
      // even through a pattern (`*`) their topics claim allows.
      const isAdmin = caller.scopes.has('admin')
      const adminOnly = isAdmin ? [] : topics.filter((t) => topicMatches(t, ADMIN_TOPIC))
      if (adminOnly.length)
        throw new HttpProblem(
          'forbidden',
          `Only a token with the "admin" scope may follow ${ADMIN_TOPIC} (asked for: ${adminOnly.join(', ')}).`,
        )
      const refused = topics.filter((t) => !(isAdmin && t === ADMIN_TOPIC) && !topicAllowed(caller.topics, t))
      if (refused.length)
        throw new HttpProblem('forbidden', `Your token does not allow the topics: ${refused.join(', ')}.`)

      let lastEventId: number | undefined
      if (raw !== undefined && raw !== '') {
        if (!eventIdSchema.safeParse(raw).success) {
          throw new HttpProblem('badRequest', 'Last-Event-ID must be a decimal event id.', [
            { path: 'headers.last-event-id', message: 'must be a decimal event id' },
          ])
        }
        lastEventId = parseEventId(raw)
      }
      // Without `?topics=`, the stream follows the user's topic subscriptions, and their changes, live. What the
      // user's preferences leave out of their streams (`inApp: false`) is neither streamed nor replayed. Events
      // rendered per locale (event-types/) come in the directory's locale, else the browser's. One read for all
      // three, shared with the streams opening at the same time.
      const followsSubscriptions = topics.length === 0
      const profile = await app.streamProfiles.of(caller.tenant, caller.userId)
      const followed = followsSubscriptions ? followedTopics(caller, profile.subscriptions) : topics
      // A subscription to the admin topic (an admin may subscribe anyone to any topic) counts for admins only.
      const allowed = isAdmin ? followed : followed.filter((t) => !topicMatches(t, ADMIN_TOPIC))
      const locale = profile.locale ?? preferredLocale(request.headers['accept-language'])
      await openStream(
        streamDeps,
        request,
        reply,
        caller,
        allowed,
        lastEventId,
        followsSubscriptions,
        profile.inApp,
        locale,
      )
    },
  )
}
