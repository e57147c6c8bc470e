import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { documentedReplies } from '../docs.ts'
import { preferredLocale } from '../event-types/locale.ts'
import { parseEventId } from '../events/model.ts'
import { rawDataOfBatch, rawDataOfEvent } from '../events/raw-json.ts'
import { deliverAtOf } from '../events/scheduled.ts'
import {
  batchBody,
  batchPublished,
  bulkReadBody,
  deliveryStatusReply,
  editBody,
  eventPage,
  eventSchema,
  idempotencyHeaders,
  idParams,
  listedEvent,
  listQuery,
  liveSent,
  noContent,
  nudgeReply,
  publishBody,
  published,
  recipientsQuery,
  recipientsReply,
  replayedBatch,
  replayedPublish,
  scheduledReply,
  unreadCountReply,
} from './schemas.ts'

/** The answer to a live-only publish: nothing was stored, so there is no id to give. */
const LIVE_SENT = { live: true } as const

/** The event routes: HTTP over EventService (events/service.ts). */
export async function eventRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const events = app.eventService

  app.post(
    '/v1/events',
    {
      schema: {
        summary: 'Publish an event, now or at `deliverAt`',
        description:
          'Needs `events:publish` for users and topics, `events:broadcast` for roles and the tenant. With ' +
          '`deliverAt`, the event is checked now and published then (202). With `store: false` (or a type ' +
          'registered live-only), it is a live-only update: sent to the matching open streams as `event: live` ' +
          'and never stored (202 `{"live":true}`).',
        tags: ['events'],
        body: publishBody,
        headers: idempotencyHeaders,
        response: { 200: replayedPublish, 201: published, 202: z.union([scheduledReply, liveSent]) },
      },
      onRequest: app.authenticate,
      config: { rateLimit: app.limits.publish },
    },
    async (request, reply) => {
      const { deliverAt, ...sent } = request.body
      // The type's defaults and templates, then the checks on the final values (event-types/service.ts).
      const [event] = await app.eventTypes.resolve(request.caller.tenant, [sent], 'single')
      const options = {
        idempotencyKey: request.headers['idempotency-key'],
        kind: 'single' as const,
        rawData: request.rawJson === undefined ? undefined : [rawDataOfEvent(request.rawJson)],
      }
      if (deliverAt !== undefined) {
        const scheduled = await events.schedule(request.caller, [event], {
          ...options,
          deliverAt: deliverAtOf(deliverAt),
        })
        return reply.code(202).send(scheduledAnswer(scheduled))
      }
      const result = await events.publish(request.caller, [event], options)
      if (result.live !== undefined) return reply.code(202).send(LIVE_SENT)
      return reply
        .code(result.replayed ? 200 : 201)
        .send({ id: String(result.ids[0]), createdAt: result.createdAt.toISOString() })
    },
  )

  app.post(
    '/v1/events/batch',
    {
      schema: {
        summary: 'Publish up to 1,000 events, all or nothing, now or at `deliverAt`',
        description:
          'With `deliverAt`, the events are checked now and published together then (202). With `store: false` on ' +
          'every event, they are live-only updates, sent to the open streams and never stored (202 `{"live":true}`); ' +
          'a batch cannot mix live-only and stored events.',
        tags: ['events'],
        body: batchBody,
        headers: idempotencyHeaders,
        response: { 200: replayedBatch, 201: batchPublished, 202: z.union([scheduledReply, liveSent]) },
      },
      onRequest: app.authenticate,
      config: { rateLimit: app.limits.publish },
    },
    async (request, reply) => {
      const { deliverAt, events: sent } = request.body
      const batch = await app.eventTypes.resolve(request.caller.tenant, sent, 'batch')
      const options = {
        idempotencyKey: request.headers['idempotency-key'],
        kind: 'batch' as const,
        rawData: request.rawJson === undefined ? undefined : rawDataOfBatch(request.rawJson),
      }
      if (deliverAt !== undefined) {
        const scheduled = await events.schedule(request.caller, batch, {
          ...options,
          deliverAt: deliverAtOf(deliverAt),
        })
        return reply.code(202).send(scheduledAnswer(scheduled))
      }
      const result = await events.publish(request.caller, batch, options)
      if (result.live !== undefined) return reply.code(202).send(LIVE_SENT)
      return reply.code(result.replayed ? 200 : 201).send({ ids: result.ids.map(String) })
    },
  )

  const listSchema = {
    summary: 'List the caller’s events',
    description:
      '`after`: events with a larger id, ascending (the polling fallback). `before` (or neither): history, newest first.',
    tags: ['events'],
    querystring: listQuery,
  }
  // The reply is JSON text built by eventJson (data byte for byte): documented, never re-serialized.
  const listConfig = { swaggerTransform: documentedReplies({ 200: eventPage }) }
  app.get(
    '/v1/events',
    { schema: listSchema, config: listConfig, onRequest: app.authenticate },
    async (request, reply) => {
      const { query } = request
      const json = await events.list(
        request.caller,
        {
          after: query.after === undefined ? undefined : parseEventId(query.after),
          before: query.before === undefined ? undefined : parseEventId(query.before),
          limit: query.limit,
          unread: query.unread === 'true',
        },
        readerLocale(app, request),
      )
      return reply.type('application/json').send(json)
    },
  )

  const unreadSchema = {
    summary: 'Count the caller’s unread events',
    tags: ['events'],
    response: { 200: unreadCountReply },
  }
  app.get('/v1/events/unread-count', { schema: unreadSchema, onRequest: app.authenticate }, async (request) => ({
    unread: await events.unreadCount(request.caller),
  }))

  const getSchema = { summary: 'One of the caller’s events (404 when not visible)', tags: ['events'], params: idParams }
  const getConfig = { swaggerTransform: documentedReplies({ 200: listedEvent }) }
  app.get(
    '/v1/events/:id',
    { schema: getSchema, config: getConfig, onRequest: app.authenticate },
    async (request, reply) => {
      const json = await events.get(request.caller, parseEventId(request.params.id), readerLocale(app, request))
      return reply.type('application/json').send(json)
    },
  )

  const editSchema = {
    summary: 'Edit an event: its publisher, or an admin',
    description:
      'Changes any of `title`, `body`, `data` and `url` (null clears `body`, `data` or `url`) and answers the ' +
      'event as it now stands, one `revision` more. The streams it went to get an `update`; a push of it not sent ' +
      'yet sends the new text, one sent already is replaced without alerting again.',
    tags: ['events'],
    params: idParams,
    body: editBody,
  }
  // The reply is JSON text built by eventJson (data byte for byte): documented, never re-serialized.
  const editConfig = {
    swaggerTransform: documentedReplies({ 200: eventSchema.describe('The event as the edit left it.') }),
    rateLimit: app.limits.publish,
  }
  app.patch(
    '/v1/events/:id',
    { schema: editSchema, config: editConfig, onRequest: app.authenticate },
    async (request, reply) => {
      const raw = request.rawJson === undefined ? undefined : rawDataOfEvent(request.rawJson)
      const json = await events.edit(request.caller, parseEventId(request.params.id), request.body, raw)
      return reply.type('application/json').send(json)
    },
  )

  const recallSchema = {
    summary: 'Recall an event: its publisher, or an admin',
    description:
      'The event is gone from every inbox, list and count; the streams it went to get a `delete`, a push of it ' +
      'not sent yet is cancelled, and a device it was pushed to is told to close its notification.',
    tags: ['events'],
    params: idParams,
    response: { 204: noContent },
  }
  app.delete(
    '/v1/events/:id',
    { schema: recallSchema, config: { rateLimit: app.limits.publish }, onRequest: app.authenticate },
    async (request, reply) => {
      await events.recall(request.caller, parseEventId(request.params.id))
      return reply.code(204).send()
    },
  )

  for (const state of ['acked', 'read'] as const) {
    const path = state === 'acked' ? '/v1/events/:id/ack' : '/v1/events/:id/read'
    // The service worker acks and reads with the push's ackToken instead of the user's JWT.
    const schema = {
      summary: state === 'acked' ? 'Acknowledge an event (delivered)' : 'Mark an event read (implies acked)',
      description: 'Idempotent. Takes the user’s JWT, or the `ackToken` of this event’s push payload.',
      tags: ['events'],
      params: idParams,
      response: { 204: noContent },
    }
    // Limited per user, ackToken or JWT alike (an ackToken's caller is its user).
    const options = { schema, config: { rateLimit: app.limits.receipts }, onRequest: app.authenticateOrAckToken }
    app.post(path, options, async (request, reply) => {
      await events.mark(request.caller, parseEventId(request.params.id), state)
      return reply.code(204).send()
    })
  }

  app.post(
    '/v1/events/read',
    {
      schema: {
        summary: 'Mark many events read: some ids, or everything up to an id',
        tags: ['events'],
        body: bulkReadBody,
        response: { 204: noContent },
      },
      onRequest: app.authenticate,
      config: { rateLimit: app.limits.bulkRead },
    },
    async (request, reply) => {
      const { body } = request
      await events.markRead(
        request.caller,
        'upTo' in body ? { upTo: parseEventId(body.upTo) } : { ids: body.ids.map(parseEventId) },
      )
      return reply.code(204).send()
    },
  )

  const statusSchema = {
    summary: 'Delivery status of an event: its publisher, or an admin',
    tags: ['events'],
    params: idParams,
    response: { 200: deliveryStatusReply },
  }
  app.get('/v1/events/:id/status', { schema: statusSchema, onRequest: app.authenticate }, async (request) => {
    return events.deliveryStatus(request.caller, parseEventId(request.params.id))
  })

  app.get(
    '/v1/events/:id/recipients',
    {
      schema: {
        summary: 'Roll-call of an event: who it was for, and who got, acked and read it',
        description:
          'For its publisher or a tenant admin. Recipients are resolved when the event is published: named users, ' +
          'role holders and topic members (the directory, else their current token claims), topic followers, and ' +
          'for the tenant everyone the service knows in it.',
        tags: ['events'],
        params: idParams,
        querystring: recipientsQuery,
        response: { 200: recipientsReply },
      },
      onRequest: app.authenticate,
    },
    async (request) => {
      const { state, cursor, limit } = request.query
      const page = await events.rollCall(request.caller, parseEventId(request.params.id), { state, cursor, limit })
      return {
        recipients: page.recipients.map((r) => ({
          userId: r.userId,
          displayName: r.displayName,
          deliveredAt: r.deliveredAt?.toISOString() ?? null,
          pushedAt: r.pushedAt?.toISOString() ?? null,
          ackedAt: r.ackedAt?.toISOString() ?? null,
          readAt: r.readAt?.toISOString() ?? null,
        })),
        totals: page.totals,
        next: page.next,
      }
    },
  )

  app.post(
    '/v1/events/:id/nudge',
    {
      schema: {
        summary: 'Remind the recipients who have not read an event',
        description:
          'For its publisher or a tenant admin. Pushes the event again to the devices of recipients who have not ' +
          'read it (as their preferences allow) and sends their open streams a `nudge`; no new event, and no one ' +
          'who read it is reminded. At most once per NUDGE_MIN_INTERVAL_S per event.',
        tags: ['events'],
        params: idParams,
        response: { 200: nudgeReply },
      },
      onRequest: app.authenticate,
    },
    async (request) => events.nudge(request.caller, parseEventId(request.params.id)),
  )
}

/**
 * The reader's locale, for events whose type rendered their text per locale: the directory's, else the request's
 * Accept-Language. Looked up only when a reply holds such an event (LocaleOf).
 */
const readerLocale = (app: FastifyInstance, request: FastifyRequest) => async () =>
  (await app.directory.localeOf(request.caller.tenant, request.caller.userId)) ??
  preferredLocale(request.headers['accept-language'])

/** The 202 of a publish accepted for later. */
const scheduledAnswer = (s: { scheduledId: number; deliverAt: Date }) => ({
  scheduledId: String(s.scheduledId),
  deliverAt: s.deliverAt.toISOString(),
})
