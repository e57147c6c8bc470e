import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { INSTANT_FORMAT } from '../audit/period.ts'
import { DEFAULT_STATS_DAYS, MAX_STATS_DAYS } from '../audit/stats.ts'
import { timestamp } from './schemas.ts'

const count = z.number().int().min(0)

export const statsQuery = z.object({
  from: z
    .string()
    .optional()
    .describe(
      `Events published at or after this: ${INSTANT_FORMAT}. Default: ${DEFAULT_STATS_DAYS} UTC days ago at 00:00.`,
    ),
  to: z
    .string()
    .optional()
    .describe(`Events published before this (default: now); at most ${MAX_STATS_DAYS} days after \`from\`.`),
  type: z.string().min(1).max(200).optional().describe('One event type only.'),
})

export const statsReply = z
  .object({
    from: timestamp,
    to: timestamp,
    days: z
      .array(
        z.object({
          day: z.string().describe('The UTC day the events were published, `YYYY-MM-DD`.'),
          type: z.string(),
          published: count.describe('Events published (recalled ones included).'),
          deliveredOnStreams: count.describe(
            'Recipients whose open streams were sent the event, live or in a replay, summed over the events.',
          ),
          pushed: count.describe('Pushes a push service accepted, per device.'),
          pushFailures: count.describe('Pushes that failed for good, per device.'),
          acked: count.describe('Recipients who acknowledged, summed over the events.'),
          read: count.describe('Recipients who read, summed over the events.'),
          medianTimeToReadS: z
            .number()
            .nullable()
            .describe('Median of the time from publish to read, seconds, over the reads; null without reads.'),
        }),
      )
      .describe('One entry per UTC day and event type that had events, by day then type.'),
    now: z
      .object({
        openStreams: count.describe('The tenant’s open streams now, on every live instance.'),
        onlineUsers: count.describe('Users with at least one open stream now.'),
      })
      .describe('At the time of the request, whatever the period.'),
  })
  .describe('What became of the tenant’s events, per day and type, and who is online now.')

/** Statistics of a tenant's events, for its admins (`admin` scope). */
export async function statsRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const schema = {
    summary: 'Statistics of the tenant’s events per day and type (admin)',
    description:
      `Per UTC day and event type over [from, to) (by default the last ${DEFAULT_STATS_DAYS} days, at most ` +
      `${MAX_STATS_DAYS}): published, delivered on streams, pushed, push failures, acked and read, with the ` +
      'median time to read; and the open streams and online users now, across instances. Counts are as of now ' +
      '(an event read today counts on the day it was published). A bad `from` or `to` is a 400 naming it.',
    tags: ['admin'],
    querystring: statsQuery,
    response: { 200: statsReply },
  }
  app.get('/v1/stats', { schema, onRequest: app.authenticate }, async (request) => {
    const stats = await app.auditService.stats(request.caller, request.query)
    return { ...stats, from: stats.from.toISOString(), to: stats.to.toISOString() }
  })
}
