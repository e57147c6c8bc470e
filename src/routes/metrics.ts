import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { bearerCredential } from '../auth.ts'
import { clusterMetrics, isWorker } from '../cluster/workers.ts'
import { HttpProblem } from '../problems.ts'

export interface MetricsRouteOptions {
  /** METRICS_TOKEN: when set, scrapes must send `Authorization: Bearer <token>`. Unset: /metrics is open. */
  token: string | undefined
}

// Both sides are hashed first: timingSafeEqual needs equal lengths, and a digest leaks neither the token's length nor its bytes.
const digest = (text: string) => createHash('sha256').update(text).digest()

/**
 * Prometheus scrapes the service's metrics (see metrics.ts) in the text exposition format: this instance's, or with
 * WORKERS > 1 every worker's, gathered by the primary (cluster/workers.ts).
 */
export async function metricsRoutes(app: FastifyInstance, options: MetricsRouteOptions) {
  const { registry } = app.metrics
  const expected = options.token === undefined ? undefined : digest(options.token)
  // In a worker of a WORKERS > 1 service, a scrape answers for every worker, not the one it happened to reach.
  const clusterWide = isWorker() ? clusterMetrics(registry) : undefined

  const schema = {
    summary: 'Prometheus metrics of the service',
    description: 'Text exposition format. When METRICS_TOKEN is set: `Authorization: Bearer <METRICS_TOKEN>`.',
    tags: ['operations'],
    security: [],
  }
  app.get('/metrics', { schema }, async (request, reply) => {
    if (expected) {
      const given = bearerCredential(request.headers.authorization)
      if (given === undefined || !timingSafeEqual(digest(given), expected)) {
        await app.limits.authFailed(request, reply) // guessing the token is throttled like any failed auth
        throw new HttpProblem('unauthorized', 'Metrics need Authorization: Bearer <METRICS_TOKEN>.', undefined, {
          'www-authenticate': 'Bearer',
        })
      }
    }
    const text = await (clusterWide ? clusterWide() : registry.metrics())
    return reply.type(registry.contentType).header('cache-control', 'no-store').send(text)
  })
}
