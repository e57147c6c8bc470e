import type { FastifyInstance } from 'fastify'
import { DATABASE_DOWN_RETRY_AFTER_S, sendProblem } from '../problems.ts'

export async function healthRoutes(app: FastifyInstance) {
  app.get('/health', { schema: { summary: 'The process is alive', tags: ['operations'], security: [] } }, async () => ({
    status: 'ok',
  }))

  const ready = {
    summary: 'The database is reachable and migrated (else 503 with Retry-After)',
    tags: ['operations'],
    security: [],
  }
  app.get('/ready', { schema: ready }, async (_request, reply) => {
    const database = await app.checkDatabase()
    if (database.reachable) return { status: 'ready', database: database.kind, streams: app.hub.size }
    return sendProblem(reply, 'unavailable', 'The database cannot be reached.', undefined, {
      'retry-after': String(DATABASE_DOWN_RETRY_AFTER_S),
    })
  })
}
