import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { bearerCredential } from '../auth.ts'
import { HttpProblem } from '../problems.ts'
import { subscriptionSchema } from '../push/subscriptions.ts'
import { noContent, pushTestReply, registeredSubscription, subscriptionList, vapidKeyReply } from './schemas.ts'

const subscriptionIdParams = z.object({ id: z.string().regex(/^[1-9][0-9]{0,17}$/, 'must be a subscription id') })
/** The push routes: HTTP over PushService (push/service.ts). */
export async function pushRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const push = app.pushService

  const vapidSchema = {
    summary: 'The VAPID public key, for pushManager.subscribe',
    tags: ['push'],
    security: [],
    response: { 200: vapidKeyReply },
  }
  app.get('/v1/push/vapid-public-key', { schema: vapidSchema, config: { rateLimit: app.limits.perIp } }, async () => ({
    publicKey: push.vapidPublicKey,
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
      return reply.code(201).send(await push.register(request.caller, request.body))
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
      const renewToken = bearerCredential(request.headers.authorization)
      const renewed = renewToken && (await push.renew(renewToken, request.body))
      if (!renewed) {
        await app.limits.authFailed(request, reply)
        throw new HttpProblem('unauthorized', 'A valid renew token from registration is required as a Bearer token.')
      }
      return renewed
    },
  )

  const listSchema = { summary: 'The caller’s devices', tags: ['push'], response: { 200: subscriptionList } }
  app.get('/v1/push/subscriptions', { schema: listSchema, onRequest: app.authenticate }, async (request) => ({
    subscriptions: await push.list(request.caller),
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
      await push.remove(request.caller, Number(request.params.id))
      return reply.code(204).send()
    },
  )

  // Rate limited per user, as each one goes to every device of the user.
  const testSchema = {
    summary: 'Send a test notification to the caller’s devices, now',
    tags: ['push'],
    response: { 200: pushTestReply },
  }
  const testConfig = { rateLimit: app.limits.pushTest }
  app.post('/v1/push/test', { schema: testSchema, config: testConfig, onRequest: app.authenticate }, async (request) =>
    push.sendTest(request.caller),
  )
}
