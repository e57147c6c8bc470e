import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { HttpProblem } from '../errors.ts'
import {
  deleteSubscription,
  listSubscriptions,
  registerSubscription,
  renewSubscription,
  subscriptionSchema,
} from '../push/subscriptions.ts'
import { noContent, pushTestReply, registeredSubscription, subscriptionList, vapidKeyReply } from './schemas.ts'

const subscriptionIdParams = z.object({ id: z.string().regex(/^[1-9][0-9]{0,17}$/, 'must be a subscription id') })
/** A test notification lives a minute: it means "now" or nothing. */
const TEST_PUSH_TTL_S = 60
/** What a test notification shows: an event's shape without an event (nothing to ack, nothing to fetch). */
const TEST_PUSH_PAYLOAD = JSON.stringify({
  id: null,
  type: 'push.test',
  title: 'Test notification',
  body: 'Push notifications work on this device.',
  priority: 'normal',
  url: null,
})

export async function pushRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const { database, vapid, deviceRules, pushDispatcher } = app

  const vapidSchema = {
    summary: 'The VAPID public key, for pushManager.subscribe',
    tags: ['push'],
    security: [],
    response: { 200: vapidKeyReply },
  }
  app.get('/v1/push/vapid-public-key', { schema: vapidSchema, config: { rateLimit: app.limits.perIp } }, async () => ({
    publicKey: vapid.publicKey,
  }))

  app.post(
    '/v1/push/subscriptions',
    {
      schema: {
        summary: 'Register this browser’s PushSubscription (upsert by endpoint)',
        description: 'The endpoint must be an https URL of an allowed push service (PUSH_ENDPOINT_ALLOWLIST).',
        tags: ['push'],
        body: subscriptionSchema,
        response: { 201: registeredSubscription },
      },
      onRequest: app.authenticate,
      config: { rateLimit: app.limits.pushRegistration },
    },
    async (request, reply) => {
      const registered = await registerSubscription(database, request.caller, request.body, deviceRules)
      return reply.code(201).send(registered)
    },
  )

  // The service worker, after `pushsubscriptionchange`: authorized by the renew token from registration.
  app.post(
    '/v1/push/subscriptions/renew',
    {
      schema: {
        summary: 'Re-register after pushsubscriptionchange (service worker)',
        description: 'Authorized by `Authorization: Bearer <renewToken>` from registration, not by a JWT.',
        tags: ['push'],
        body: subscriptionSchema,
        response: { 200: registeredSubscription },
      },
      config: { rateLimit: app.limits.perIp },
    },
    async (request, reply) => {
      const match = /^Bearer\s+(\S+)$/i.exec(request.headers.authorization ?? '')
      const renewed = match && (await renewSubscription(database, match[1], request.body, deviceRules))
      if (!renewed) {
        await app.limits.authFailed(request, reply)
        throw new HttpProblem('unauthorized', 'A valid renew token from registration is required as a Bearer token.')
      }
      return renewed
    },
  )

  const listSchema = { summary: 'The caller’s devices', tags: ['push'], response: { 200: subscriptionList } }
  app.get('/v1/push/subscriptions', { schema: listSchema, onRequest: app.authenticate }, async (request) => ({
    subscriptions: await listSubscriptions(database, request.caller),
  }))

  app.delete(
    '/v1/push/subscriptions/:id',
    {
      schema: {
        summary: 'Remove one of the caller’s devices',
        tags: ['push'],
        params: subscriptionIdParams,
        response: { 204: noContent },
      },
      onRequest: app.authenticate,
    },
    async (request, reply) => {
      if (!(await deleteSubscription(database, request.caller, Number(request.params.id)))) {
        throw new HttpProblem('notFound', `No subscription ${request.params.id} of yours.`)
      }
      return reply.code(204).send()
    },
  )

  // Sent now (not through the outbox: there is no event), through the dispatcher's queue like every push, so
  // its bounds hold; rate limited per user, as each one goes to every device of the user.
  const testSchema = {
    summary: 'Send a test notification to the caller’s devices, now',
    tags: ['push'],
    response: { 200: pushTestReply },
  }
  const testConfig = { rateLimit: app.limits.pushTest }
  app.post(
    '/v1/push/test',
    { schema: testSchema, config: testConfig, onRequest: app.authenticate },
    async (request) => {
      const outcomes = await pushDispatcher.sendTest(request.caller, TEST_PUSH_PAYLOAD, {
        TTL: TEST_PUSH_TTL_S,
        urgency: 'normal',
      })
      if (!outcomes.length) throw new HttpProblem('notFound', 'You have no registered devices; register one first.')
      const results = outcomes.map(({ subscriptionId, outcome }) => ({
        id: String(subscriptionId),
        outcome: outcome.state === 'sent' ? ('sent' as const) : ('failed' as const),
        status: outcome.status ?? null,
      }))
      return {
        sent: results.filter((r) => r.outcome === 'sent').length,
        failed: results.filter((r) => r.outcome === 'failed').length,
        devices: results,
      }
    },
  )
}
