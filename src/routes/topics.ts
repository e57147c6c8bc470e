import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import {
  noContent,
  topicMemberList,
  topicMembersBody,
  topicMembersChanged,
  topicParams,
  topicSubscriptionList,
} from './schemas.ts'

/** Topic subscriptions (the seeds' channels): the caller's own, and a topic's members for admins. */
export async function topicRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const topics = app.topicSubscriptions

  const listSchema = {
    summary: 'The topics the caller follows',
    description: 'A stream opened without `?topics=` gets these topics’ events; so do the caller’s devices.',
    tags: ['topics'],
    response: { 200: topicSubscriptionList },
  }
  app.get('/v1/me/topics', { schema: listSchema, onRequest: app.authenticate }, async (request) => ({
    topics: (await topics.of(request.caller.tenant, request.caller.userId)).map((s) => ({
      topic: s.topic,
      addedBy: s.addedBy,
      createdAt: s.createdAt.toISOString(),
    })),
  }))

  const subscribeSchema = {
    summary: 'Follow a topic',
    description:
      'Idempotent. The token’s `topics` claim must allow the topic (`class:7A`, or a pattern such as `class:*`). ' +
      'Open streams that follow the caller’s subscriptions get its events from now on, on every instance.',
    tags: ['topics'],
    params: topicParams,
    response: { 204: noContent },
  }
  app.put('/v1/me/topics/:topic', { schema: subscribeSchema, onRequest: app.authenticate }, async (request, reply) => {
    await topics.subscribe(request.caller, request.params.topic)
    return reply.code(204).send()
  })

  const unsubscribeSchema = {
    summary: 'Stop following a topic',
    description: 'Idempotent, whoever made the subscription (the caller or an admin).',
    tags: ['topics'],
    params: topicParams,
    response: { 204: noContent },
  }
  app.delete(
    '/v1/me/topics/:topic',
    { schema: unsubscribeSchema, onRequest: app.authenticate },
    async (request, reply) => {
      await topics.unsubscribe(request.caller, request.params.topic)
      return reply.code(204).send()
    },
  )

  const membersSchema = {
    summary: 'A topic’s members (admin)',
    tags: ['topics'],
    params: topicParams,
    response: { 200: topicMemberList },
  }
  app.get('/v1/topics/:topic/members', { schema: membersSchema, onRequest: app.authenticate }, async (request) => ({
    users: await topics.members(request.caller, request.params.topic),
  }))

  const addSchema = {
    summary: 'Add members to a topic (admin)',
    description: 'Up to 1,000 users a request; idempotent. An admin’s membership does not depend on the users’ claims.',
    tags: ['topics'],
    params: topicParams,
    body: topicMembersBody,
    response: { 200: topicMembersChanged },
  }
  app.put('/v1/topics/:topic/members', { schema: addSchema, onRequest: app.authenticate }, async (request) => ({
    changed: await topics.addMembers(request.caller, request.params.topic, request.body.users),
  }))

  const removeSchema = {
    summary: 'Remove members from a topic (admin)',
    description: 'Up to 1,000 users a request; idempotent.',
    tags: ['topics'],
    params: topicParams,
    body: topicMembersBody,
    response: { 200: topicMembersChanged },
  }
  app.delete('/v1/topics/:topic/members', { schema: removeSchema, onRequest: app.authenticate }, async (request) => ({
    changed: await topics.removeMembers(request.caller, request.params.topic, request.body.users),
  }))
}
