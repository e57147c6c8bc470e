import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { HttpProblem } from '../errors.ts'
import { getEvent, listEvents, unreadCount } from '../events/inbox.ts'
import { batchSchema, newEventSchema, parseEventId } from '../events/model.ts'
import { publishEvents } from '../events/publish.ts'
import { rawDataOfBatch, rawDataOfEvent } from '../events/raw-json.ts'
import { deliveryStatus, eventsUpTo, markEvents, oneEvent, type ReceiptNotice, someEvents } from '../events/receipts.ts'
import { receiptFrame } from '../stream/hub.ts'
import { bulkReadBody, idempotencyHeaders, idParams, listQuery } from './schemas.ts'

export async function eventRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const { database, hub, logTail, pushDispatcher, pushPolicy, bus } = app
  const published = (ids: number[]) => {
    logTail.wake()
    pushDispatcher.wake()
    bus.wakeOthers(ids[ids.length - 1])
  }
  /** Every open stream of the user, on this instance and the others, hears of an ack or read. */
  const tellUser = (tenant: string, userId: string, notice: ReceiptNotice) => {
    hub.sendToUser(tenant, userId, receiptFrame(notice))
    bus.receipt({ tenant, userId, notice })
  }

  app.post(
    '/v1/events',
    { schema: { body: newEventSchema, headers: idempotencyHeaders }, onRequest: app.authenticate },
    async (request, reply) => {
      const result = await publishEvents(database, request.caller, [request.body], {
        idempotencyKey: request.headers['idempotency-key'],
        kind: 'single',
        push: pushPolicy,
        rawData: request.rawJson === undefined ? undefined : [rawDataOfEvent(request.rawJson)],
      })
      if (!result.replayed) published(result.ids)
      return reply
        .code(result.replayed ? 200 : 201)
        .send({ id: String(result.ids[0]), createdAt: result.createdAt.toISOString() })
    },
  )

  app.post(
    '/v1/events/batch',
    { schema: { body: batchSchema, headers: idempotencyHeaders }, onRequest: app.authenticate },
    async (request, reply) => {
      const result = await publishEvents(database, request.caller, request.body.events, {
        idempotencyKey: request.headers['idempotency-key'],
        kind: 'batch',
        rawData: request.rawJson === undefined ? undefined : rawDataOfBatch(request.rawJson),
        push: pushPolicy,
      })
      if (!result.replayed) published(result.ids)
      return reply.code(result.replayed ? 200 : 201).send({ ids: result.ids.map(String) })
    },
  )

  app.get(
    '/v1/events',
    { schema: { querystring: listQuery }, onRequest: app.authenticate },
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

  app.get('/v1/events/unread-count', { onRequest: app.authenticate }, async (request) => ({
    unread: await unreadCount(database, request.caller),
  }))

  app.get('/v1/events/:id', { schema: { params: idParams }, onRequest: app.authenticate }, async (request, reply) => {
    const json = await getEvent(database, request.caller, parseEventId(request.params.id))
    if (json === undefined) throw new HttpProblem('notFound', `No event ${request.params.id} for you.`)
    return reply.type('application/json').send(json)
  })

  for (const state of ['acked', 'read'] as const) {
    const path = state === 'acked' ? '/v1/events/:id/ack' : '/v1/events/:id/read'
    // The service worker acks and reads with the push's ackToken instead of the user's JWT.
    app.post(path, { schema: { params: idParams }, onRequest: app.authenticateOrAckToken }, async (request, reply) => {
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
    { schema: { body: bulkReadBody }, onRequest: app.authenticate },
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

  app.get('/v1/events/:id/status', { schema: { params: idParams }, onRequest: app.authenticate }, async (request) => {
    const status = await deliveryStatus(database, request.caller, parseEventId(request.params.id))
    if (!status) throw new HttpProblem('notFound', `No event ${request.params.id} for you.`)
    return status
  })
}
