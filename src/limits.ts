import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from './config.ts'
import { HttpProblem } from './problems.ts'

/** The rate limits, as config.ts reads them. */
export type LimitOptions = Config['limits']

declare module 'fastify' {
  interface FastifyInstance {
    /** Route configs, as in `config: { rateLimit: app.limits.publish }`. */
    limits: {
      /** Publishing (single and batch), per user. */
      publish: PerUserLimit
      /** Registering push devices, per user. */
      pushRegistration: PerUserLimit
      /** `POST /v1/push/test`, per user. */
      pushTest: PerUserLimit
      /** Acking and reading one event, per user. */
      receipts: PerUserLimit
      /** `POST /v1/events/read`, per user. */
      bulkRead: PerUserLimit
      perIp: { max: number; timeWindow: number }
      /** Counts one failed authentication of this request's IP; throws 429 past the limit. */
      authFailed: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
    }
  }
}

interface PerUserLimit {
  max: number
  timeWindow: number
  keyGenerator: (request: FastifyRequest) => string
}

/**
 * Rate limits through @fastify/rate-limit (in memory, per instance): per user on publishing, per IP on the
 * routes that need no token and on failed authentication. Past a limit: 429 problem+json with Retry-After.
 */
export const limitsPlugin = fp(
  async (app: FastifyInstance, options: LimitOptions) => {
    await app.register(rateLimit, {
      global: false,
      // After authentication (an onRequest hook), so per-user limits know the user.
      hook: 'preHandler',
      errorResponseBuilder: (_request, context) =>
        new HttpProblem(
          'tooManyRequests',
          `Rate limit reached: at most ${context.max} requests in ${options.windowMs / 1000} s. Retry in ${context.after}.`,
        ),
    })
    const authFailures = app.rateLimit({
      max: options.authFailuresPerMinute,
      timeWindow: options.windowMs,
      keyGenerator: (request) => `auth-failure:${request.ip}`,
    })
    /**
     * A limit counted per user (the caller is known: limits run after authentication), in its own bucket. Each
     * route it is put on counts apart (@fastify/rate-limit keeps a store per route): ack and read, or single and
     * batch publish, each allow `max`.
     */
    const perUser = (bucket: string, max: number): PerUserLimit => ({
      max,
      timeWindow: options.windowMs,
      keyGenerator: (request: FastifyRequest) => `${bucket}:${request.caller.tenant}\u0000${request.caller.userId}`,
    })
    app.decorate('limits', {
      publish: perUser('publish', options.publishPerMinute),
      pushRegistration: perUser('push-registration', options.pushRegistrationsPerMinute),
      pushTest: perUser('push-test', options.pushTestsPerMinute),
      receipts: perUser('receipts', options.receiptsPerMinute),
      bulkRead: perUser('bulk-read', options.bulkReadsPerMinute),
      perIp: { max: options.anonymousPerMinute, timeWindow: options.windowMs },
      authFailed: async (request: FastifyRequest, reply: FastifyReply) => {
        await (authFailures as (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>).call(
          app,
          request,
          reply,
        )
      },
    })
  },
  { name: 'limits' },
)
