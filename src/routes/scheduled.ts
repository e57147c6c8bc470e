import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { documentedReplies } from '../docs.ts'
import { noContent, scheduledIdParams, scheduledItem, scheduledListQuery, scheduledPage } from './schemas.ts'

/**
 * The routes of scheduled publishes (publishing with `deliverAt` is the publish routes'): list, show, cancel.
 * HTTP over EventService (events/service.ts).
 */
export async function scheduledRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const events = app.eventService

  const listSchema = {
    summary: 'List the caller’s pending scheduled publishes',
    description: 'An `admin` sees every pending one of the tenant.',
    tags: ['events'],
    querystring: scheduledListQuery,
    response: { 200: scheduledPage },
  }
  app.get('/v1/scheduled', { schema: listSchema, onRequest: app.authenticate }, async (request) => {
    const { after, limit } = request.query
    return events.listScheduled(request.caller, { after: after === undefined ? undefined : Number(after), limit })
  })

  const getSchema = {
    summary: 'One scheduled publish: its state, its events, and their ids once published',
    description: 'The caller’s own, or for an `admin` any of the tenant (404 otherwise).',
    tags: ['events'],
    params: scheduledIdParams,
  }
  // JSON text: each event's `data` goes out byte for byte, as it will be published.
  const getConfig = { swaggerTransform: documentedReplies({ 200: scheduledItem }) }
  app.get(
    '/v1/scheduled/:id',
    { schema: getSchema, config: getConfig, onRequest: app.authenticate },
    async (request, reply) => {
      const json = await events.getScheduled(request.caller, Number(request.params.id))
      return reply.type('application/json').send(json)
    },
  )

  const cancelSchema = {
    summary: 'Cancel a pending scheduled publish',
    description: 'Idempotent: cancelling a cancelled one is done too. One that was published already is a 409.',
    tags: ['events'],
    params: scheduledIdParams,
    response: { 204: noContent },
  }
  app.delete('/v1/scheduled/:id', { schema: cancelSchema, onRequest: app.authenticate }, async (request, reply) => {
    await events.cancelScheduled(request.caller, Number(request.params.id))
    return reply.code(204).send()
  })
}
