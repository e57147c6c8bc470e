import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { eventIdSchema, MAX_BATCH_EVENTS, nameSchema, newEventSchema } from '../events/model.ts'
import { rawDataOfEvent } from '../events/raw-json.ts'
import { MAX_LISTED_TENANTS } from '../events/system-broadcasts.ts'
import { groupedDigits } from '../grouped-digits.ts'
import { idempotencyHeaders } from './schemas.ts'

/** Who gets a platform broadcast: a list of tenants, or "*" for every tenant the service knows. */
const tenantsSchema = z
  .union(
    [
      z.literal('*'),
      z
        .array(nameSchema)
        .min(1, 'name at least one tenant, or "*" for every tenant')
        .max(MAX_LISTED_TENANTS, `at most ${MAX_LISTED_TENANTS} tenants by name; "*" reaches every tenant`),
    ],
    // Zod says only "Invalid input" when neither form fits: say what the list got wrong, else what is expected.
    { error: (issue) => (issue.code === 'invalid_union' ? unionMessage(issue.errors) : undefined) },
  )
  .describe(
    `The tenants to publish in: a list (at most ${groupedDigits(MAX_LISTED_TENANTS)}, duplicates once), or ` +
      '"*" for every tenant the service knows (its directory, users seen through tokens, devices, open streams, ' +
      'events in the log).',
  )

/** The message of a `tenants` that is neither "*" nor a fitting list: the list's fault (too long), else both forms. */
function unionMessage(errors: ReadonlyArray<ReadonlyArray<{ code: string; message: string }>>): string {
  const listIssue = errors[1]?.[0]
  return listIssue && listIssue.code !== 'invalid_type'
    ? listIssue.message
    : 'must be "*" (every tenant) or a list of tenant names'
}

/** `POST /v1/system/events`: the tenants, and the event as a publish gives it (complete: no type defaults apply). */
export const systemEventBody = newEventSchema.omit({ store: true }).extend({
  tenants: tenantsSchema,
  store: z
    .literal(true, { error: 'a platform broadcast is always stored (live-only events are a tenant’s own)' })
    .optional()
    .describe('Always stored: a live-only broadcast across tenants is not offered.'),
  title: newEventSchema.shape.title
    .unwrap()
    .describe('Required: a tenant’s registered event types do not fill in a platform broadcast.'),
})

export const systemPublished = z
  .object({
    tenants: z.number().int().describe('How many tenants got the event (each its own copy).'),
    createdAt: z.string().meta({ format: 'date-time' }).nullable().describe('When it was committed; null for none.'),
    events: z
      .array(z.object({ tenant: z.string(), id: eventIdSchema }))
      .describe(
        'Each tenant’s copy: its event id in that tenant (what the tenant’s admins see in status and roll-call).',
      ),
  })
  .describe('The event is committed in every tenant, or in none.')

/** Platform routes: for operators of the service (scope `events:system`), across tenants. */
export async function systemRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()

  app.post(
    '/v1/system/events',
    {
      schema: {
        summary: 'Publish one event into many tenants (platform operators)',
        description:
          'Needs the `events:system` scope, which only the platform’s operators get (a tenant’s `admin` or ' +
          '`events:broadcast` is a 403). Each tenant gets its own copy of the event (its own id, the operator as ' +
          'publisher), delivered, pushed, acked, read and reported to that tenant’s webhooks as any event it ' +
          'published; nothing in it names the other tenants. All tenants or none are published, in one ' +
          `transaction of one statement per ${groupedDigits(MAX_BATCH_EVENTS)} tenants. The ` +
          'Idempotency-Key works as for a batch (scoped to the operator’s tenant and user).',
        tags: ['system'],
        body: systemEventBody,
        headers: idempotencyHeaders,
        response: {
          200: systemPublished.describe('The same Idempotency-Key within 24 h: the first answer; nothing new.'),
          201: systemPublished,
        },
      },
      onRequest: app.authenticate,
      config: { rateLimit: app.limits.publish },
    },
    async (request, reply) => {
      const { tenants, ...event } = request.body
      const result = await app.systemBroadcasts.publish(request.caller, {
        tenants,
        event,
        rawData: request.rawJson === undefined ? undefined : rawDataOfEvent(request.rawJson),
        idempotencyKey: request.headers['idempotency-key'],
      })
      return reply.code(result.replayed ? 200 : 201).send({
        tenants: result.ids.length,
        createdAt: result.ids.length ? result.createdAt.toISOString() : null,
        events: result.ids.map((id, i) => ({ tenant: result.tenants[i], id: String(id) })),
      })
    },
  )
}
