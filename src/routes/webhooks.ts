import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { DEFAULT_DELIVERIES_PAGE, MAX_DELIVERIES_PAGE, newWebhookSchema, webhookIdSchema } from '../webhooks/model.ts'
import { WEBHOOK_TYPES } from '../webhooks/outbox.ts'
import { noContent, timestamp } from './schemas.ts'

export const webhookParams = z.object({ id: webhookIdSchema })

export const webhookSchema = z.object({
  id: webhookIdSchema,
  url: z.string(),
  events: z.array(z.enum(WEBHOOK_TYPES)),
  description: z.string().nullable(),
  createdBy: z.string().describe('The admin who registered it (`sub`).'),
  createdAt: timestamp,
  failingSince: timestamp
    .nullable()
    .describe('Since when every delivery has failed; null: the last one succeeded, or none was made yet.'),
  disabledAt: timestamp
    .nullable()
    .describe(
      'Set once every delivery failed for longer than WEBHOOK_DISABLE_AFTER_H (72 h by default): nothing is sent ' +
        'until it is enabled again (POST /v1/webhooks/{id}/enable).',
    ),
  disabledReason: z.string().nullable(),
})

export const createdWebhook = webhookSchema
  .extend({
    secret: z
      .string()
      .describe(
        'The signing secret (`whsec_` and base64): shown only now. Verify each delivery with a Standard Webhooks ' +
          'library, e.g. `new Webhook(secret).verify(body, headers)`.',
      ),
  })
  .describe('The endpoint is registered; deliveries of its event types start with the next change.')

export const webhookList = z
  .object({ webhooks: z.array(webhookSchema) })
  .describe('The tenant’s webhook endpoints, oldest first (secrets are never shown again).')

export const deliveriesQuery = z.object({
  cursor: webhookIdSchema.optional().describe('Deliveries older than this one (the previous page’s `next`).'),
  limit: z.coerce.number().int().min(1).max(MAX_DELIVERIES_PAGE).default(DEFAULT_DELIVERIES_PAGE),
})

export const deliveryPage = z
  .object({
    deliveries: z.array(
      z.object({
        id: z.string(),
        msgId: z.string().describe('The `webhook-id` header: the same for every attempt, for deduplication.'),
        type: z.enum(WEBHOOK_TYPES),
        state: z
          .enum(['pending', 'sent', 'failed'])
          .describe('`pending` until an attempt gets a 2xx (`sent`) or the last attempt fails (`failed`).'),
        attempts: z.number().int().min(0),
        lastStatus: z.number().int().nullable().describe('The last attempt’s HTTP status; null: no answer.'),
        lastError: z.string().nullable().describe('Why the last attempt failed.'),
        createdAt: timestamp,
        nextAttemptAt: timestamp.nullable().describe('When a pending delivery is attempted next.'),
        payload: z.unknown().describe('The body as sent: `{"type", "timestamp", "data"}`.'),
      }),
    ),
    next: z.string().nullable().describe('Pass as `cursor` for older deliveries; null when there are none.'),
  })
  .describe('The endpoint’s deliveries, newest first.')

const TAGS = ['webhooks']
const SIGNING =
  'Each delivery is a POST of `{"type","timestamp","data"}` JSON signed per Standard Webhooks (`webhook-id`, ' +
  '`webhook-timestamp`, `webhook-signature`); at least once, so deduplicate by `webhook-id`.'

/** A tenant's webhook endpoints, for its admins (`admin` scope). Another tenant's endpoint is a 404. */
export async function webhookRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const webhooks = app.webhookService

  const createSchema = {
    summary: 'Register a webhook endpoint (admin)',
    description:
      `${SIGNING} The URL must be https on a public host (http, or a private, loopback or link-local address, only ` +
      'for hosts WEBHOOK_URL_ALLOWLIST names), checked now, DNS included, and again before each attempt.',
    tags: TAGS,
    body: newWebhookSchema,
    response: { 201: createdWebhook },
  }
  app.post('/v1/webhooks', { schema: createSchema, onRequest: app.authenticate }, async (request, reply) =>
    reply.code(201).send(await webhooks.create(request.caller, request.body)),
  )

  const listSchema = {
    summary: 'The tenant’s webhook endpoints (admin)',
    description: 'With each one’s health: `failingSince`, and `disabledAt` with `disabledReason` once disabled.',
    tags: TAGS,
    response: { 200: webhookList },
  }
  app.get('/v1/webhooks', { schema: listSchema, onRequest: app.authenticate }, async (request) => ({
    webhooks: await webhooks.list(request.caller),
  }))

  const getSchema = {
    summary: 'A webhook endpoint (admin)',
    tags: TAGS,
    params: webhookParams,
    response: { 200: webhookSchema.describe('The endpoint, with its health.') },
  }
  app.get('/v1/webhooks/:id', { schema: getSchema, onRequest: app.authenticate }, async (request) =>
    webhooks.get(request.caller, request.params.id),
  )

  const deleteSchema = {
    summary: 'Remove a webhook endpoint (admin)',
    description: 'Its pending deliveries are dropped with it.',
    tags: TAGS,
    params: webhookParams,
    response: { 204: noContent },
  }
  app.delete('/v1/webhooks/:id', { schema: deleteSchema, onRequest: app.authenticate }, async (request, reply) => {
    await webhooks.remove(request.caller, request.params.id)
    return reply.code(204).send()
  })

  const enableSchema = {
    summary: 'Enable a disabled webhook endpoint (admin)',
    description:
      'Clears `disabledAt`, `disabledReason` and `failingSince`; its pending deliveries go out at once, and new ' +
      'changes are delivered again. Enabling one that is enabled changes nothing.',
    tags: TAGS,
    params: webhookParams,
    response: { 200: webhookSchema.describe('The endpoint, enabled.') },
  }
  app.post('/v1/webhooks/:id/enable', { schema: enableSchema, onRequest: app.authenticate }, async (request) =>
    webhooks.enable(request.caller, request.params.id),
  )

  const deliveriesSchema = {
    summary: 'A webhook endpoint’s recent deliveries (admin)',
    description: `Newest first, kept WEBHOOK_RETENTION_DAYS once sent or failed. ${SIGNING}`,
    tags: TAGS,
    params: webhookParams,
    querystring: deliveriesQuery,
    response: { 200: deliveryPage },
  }
  app.get('/v1/webhooks/:id/deliveries', { schema: deliveriesSchema, onRequest: app.authenticate }, async (request) =>
    webhooks.deliveries(request.caller, request.params.id, request.query),
  )
}
