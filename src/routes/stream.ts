import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { topicAllowed } from '../auth.ts'
import { HttpProblem } from '../errors.ts'
import { eventIdSchema, parseEventId } from '../events/model.ts'
import { openStream, type StreamDeps } from '../stream/open-stream.ts'
import { streamQuery } from './schemas.ts'

/** Topics one stream may follow. */
const MAX_STREAM_TOPICS = 100

export async function streamRoutes(
  fastify: FastifyInstance,
  deps: Omit<StreamDeps, 'database' | 'hub' | 'tail' | 'presence'>,
) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const streamDeps: StreamDeps = {
    ...deps,
    database: app.database,
    hub: app.hub,
    tail: app.logTail,
    presence: app.presence,
  }

  app.get(
    '/v1/stream',
    { config: { tokenInQuery: true }, schema: { querystring: streamQuery }, onRequest: app.authenticate },
    async (request, reply) => {
      const { caller } = request
      const topics = [
        ...new Set(
          (request.query.topics ?? '')
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean),
        ),
      ]
      if (topics.length > MAX_STREAM_TOPICS)
        throw new HttpProblem('badRequest', `At most ${MAX_STREAM_TOPICS} topics per stream.`)
      const refused = topics.filter((t) => !topicAllowed(caller.topics, t))
      if (refused.length)
        throw new HttpProblem('forbidden', `Your token does not allow the topics: ${refused.join(', ')}.`)

      // The header wins: a reconnecting EventSource sends it and keeps its original URL (and its old ?lastEventId).
      const header = request.headers['last-event-id']
      const raw = typeof header === 'string' && header.trim() !== '' ? header.trim() : request.query.lastEventId
      let lastEventId: number | undefined
      if (raw !== undefined && raw !== '') {
        if (!eventIdSchema.safeParse(raw).success) {
          throw new HttpProblem('badRequest', 'Last-Event-ID must be a decimal event id.', [
            { path: 'headers.last-event-id', message: 'must be a decimal event id' },
          ])
        }
        lastEventId = parseEventId(raw)
      }
      await openStream(streamDeps, request, reply, caller, topics, lastEventId)
    },
  )
}
