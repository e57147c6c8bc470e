import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { documentedReplies } from '../docs.ts'
import { HttpProblem } from '../errors.ts'
import { getEvent, listEvents, unreadCount } from '../events/inbox.ts'
import { batchSchema, type NewEvent, newEventSchema, type Priority, parseEventId } from '../events/model.ts'
import { createPublisher, type Published } from '../events/publish.ts'
import { rawDataOfBatch, rawDataOfEvent } from '../events/raw-json.ts'
import { deliveryStatus, eventsUpTo, markEvents, oneEvent, type ReceiptNotice, someEvents } from '../events/receipts.ts'
import { receiptFrame } from '../stream/hub.ts'
import {
  batchPublished,
  bulkReadBody,
  deliveryStatusReply,
  eventPage,
  idempotencyHeaders,
  idParams,
  listedEvent,
  listQuery,
  noContent,
  published as publishedReply,
  replayedBatch,
  replayedPublish,
  unreadCountReply,
} from './schemas.ts'

export async function eventRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const { database, hub, logTail, pushDispatcher, pushPolicy, bus, metrics } = app
  const publishEvents = createPublisher(database, pushPolicy, bus.announcePublish)
  /** publishEvents, timed for the publish latency histogram (a refused publish is not a latency). */
  const publish: typeof publishEvents = async (...args) => {
    const done = metrics.publishSeconds.startTimer()
    const result = await publishEvents(...args)
    done()
    return result
  }
  /** After a publish committed (its statement has woken the other instances already). */
  const published = ({ pushes }: Published, batch: readonly NewEvent[]) => {
    // The tail reads the events back rather than taking them from here: under load one read carries every
    // publish committed meanwhile, and a burst of broadcasts goes to each stream in a few writes, not one per
    // publish (handing each publish's rows to the hub directly doubled fan-out's CPU per delivery).
    logTail.wake()
    if (pushes) pushDispatcher.wake() // delayed pushes and other instances' are found by its poll
    // Tallied first: a batch of 1,000 is four counter updates, not 1,000.
    const byPriority = new Map<Priority, number>()
    for (const e of batch) byPriority.set(e.priority, (byPriority.get(e.priority) ?? 0) + 1)
    for (const [priority, n] of byPriority) metrics.eventsPublished.inc({ priority }, n)
  }
  /** Every open stream of the user, on this instance and the others, hears of an ack or read. */
  const tellUser = (tenant: string, userId: string, notice: ReceiptNotice) => {
    hub.sendToUser(tenant, userId, receiptFrame(notice))
    bus.receipt({ tenant, userId, notice })
  }

  app.post(
    '/v1/events',
    {
      schema: {
        summary: 'Publish an event',
        description: 'Needs `events:publish` for users and topics, `events:broadcast` for roles and the tenant.',
        tags: ['events'],
        body: newEventSchema,
        headers: idempotencyHeaders,
        response: { 200: replayedPublish, 201: publishedReply },
      },
      onRequest: app.authenticate,
      config: { rateLimit: app.limits.perUser },
    },
    async (request, reply) => {
      const result = await publish(request.caller, [request.body], {
        idempotencyKey: request.headers['idempotency-key'],
        kind: 'single',
        rawData: request.rawJson === undefined ? undefined : [rawDataOfEvent(request.rawJson)],
      })
      if (!result.replayed) published(result, [request.body])
      return reply
        .code(result.replayed ? 200 : 201)
        .send({ id: String(result.ids[0]), createdAt: result.createdAt.toISOString() })
    },
  )

  app.post(
    '/v1/events/batch',
    {
      schema: {
        summary: 'Publish up to 1,000 events, all or nothing',
        tags: ['events'],
        body: batchSchema,
        headers: idempotencyHeaders,
        response: { 200: replayedBatch, 201: batchPublished },
      },
      onRequest: app.authenticate,
      config: { rateLimit: app.limits.perUser },
    },
    async (request, reply) => {
      const result = await publish(request.caller, request.body.events, {
        idempotencyKey: request.headers['idempotency-key'],
        kind: 'batch',
        rawData: request.rawJson === undefined ? undefined : rawDataOfBatch(request.rawJson),
      })
      if (!result.replayed) published(result, request.body.events)
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
      const q = request.query
      const after = q.after === undefined ? undefined : parseEventId(q.after)
      // A poller must not step over an event whose transaction is still open: read up to the settled watermark.
      if (after !== undefined) await logTail.sync()
      const json = await listEvents(database, request.caller, {
        after,
        before: q.before === undefined ? undefined : parseEventId(q.before),
        limit: q.limit,
        unread: q.unread === 'true',
        upTo: after === undefined ? undefined : logTail.cursor,
      })
      return reply.type('application/json').send(json)
    },
  )

  const unreadSchema = {
    summary: 'Count the caller’s unread events',
    tags: ['events'],
    response: { 200: unreadCountReply },
  }
  app.get('/v1/events/unread-count', { schema: unreadSchema, onRequest: app.authenticate }, async (request) => ({
    unread: await unreadCount(database, request.caller),
  }))

  const getSchema = { summary: 'One of the caller’s events (404 when not visible)', tags: ['events'], params: idParams }
  const getConfig = { swaggerTransform: documentedReplies({ 200: listedEvent }) }
  app.get(
    '/v1/events/:id',
    { schema: getSchema, config: getConfig, onRequest: app.authenticate },
    async (request, reply) => {
      const json = await getEvent(database, request.caller, parseEventId(request.params.id))
      if (json === undefined) throw new HttpProblem('notFound', `No event ${request.params.id} for you.`)
      return reply.type('application/json').send(json)
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
      const id = parseEventId(request.params.id)
      const { ackEventId } = request.caller
      if (ackEventId !== undefined && ackEventId !== id) throw new HttpProblem('notFound', `No event ${id} for you.`)
      const marked = await markEvents(database, request.caller, oneEvent(id), state)
      if (!marked.length) throw new HttpProblem('notFound', `No event ${request.params.id} for you.`)
      tellUser(request.caller.tenant, request.caller.userId, { ids: marked.map(String), state })
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
      const body = request.body
      const { caller } = request
      if ('upTo' in body) {
        await markEvents(database, caller, eventsUpTo(parseEventId(body.upTo)), 'read')
        tellUser(caller.tenant, caller.userId, { upTo: body.upTo, state: 'read' })
      } else {
        const marked = await markEvents(database, caller, someEvents(body.ids.map(parseEventId)), 'read')
        if (marked.length) tellUser(caller.tenant, caller.userId, { ids: marked.map(String), state: 'read' })
      }
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
    const status = await deliveryStatus(database, request.caller, parseEventId(request.params.id))
    if (!status) throw new HttpProblem('notFound', `No event ${request.params.id} for you.`)
    return status
  })
}
