import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { requireScope } from '../auth.ts'
import { eventTypeRegistrationSchema, templatesSchema } from '../event-types/model.ts'
import { actionsSchema, eventTypeNameSchema, prioritySchema } from '../events/model.ts'
import { noContent } from './schemas.ts'

export const eventTypeParams = z.object({ type: eventTypeNameSchema.describe('The type, as events name it.') })

export const eventTypeBody = eventTypeRegistrationSchema.meta({
  examples: [
    {
      description: 'A grade was entered',
      category: 'grades',
      defaults: { priority: 'high', ttl: 86_400, actions: [{ action: 'open', title: 'See', url: '/grades' }] },
      inbox: true,
      push: true,
      templates: {
        title: '{{data.student}} scored {{data.score}}',
        body: '{{data.subject}}: {{data.score}}/{{data.outOf}}',
        locales: { fr: { title: '{{data.student}} a obtenu {{data.score}}' } },
      },
    },
  ],
})

const textTemplates = z.object({ title: z.string(), body: z.string().nullish() })

export const eventTypeReply = z
  .object({
    type: z.string(),
    description: z.string().nullable(),
    category: z.string().nullable(),
    defaults: z.object({
      priority: prioritySchema.optional(),
      ttl: z.number().int().optional(),
      collapseKey: z.string().optional(),
      actions: actionsSchema.optional(),
    }),
    inbox: z.boolean(),
    push: z.boolean(),
    liveOnly: z.boolean(),
    templates: textTemplates
      .extend({ locales: z.record(z.string(), textTemplates).optional() })
      .nullable()
      .describe(templatesSchema.description ?? 'The templates, locale tags as Intl writes them.'),
    updatedAt: z.string().meta({ format: 'date-time' }).describe('When it was last registered.'),
  })
  .describe('A registered event type.')

const TAGS = ['event-types']

/** A tenant's event types: any user lists them, admins register and remove them. HTTP over EventTypeService. */
export async function eventTypeRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const types = app.eventTypes
  // Before the body is read: a token without the admin scope is refused first.
  const adminOnly = async (request: FastifyRequest) => requireScope(request.caller, 'admin', 'Changing event types')
  const adminRequest = [app.authenticate, adminOnly]

  const listSchema = {
    summary: 'List the tenant’s event types',
    description: 'Any user of the tenant may read them (an app shows categories and descriptions from them).',
    tags: TAGS,
    response: { 200: z.object({ eventTypes: z.array(eventTypeReply) }) },
  }
  app.get('/v1/event-types', { schema: listSchema, onRequest: app.authenticate }, async (request) => ({
    eventTypes: await types.list(request.caller),
  }))

  const putSchema = {
    summary: 'Register or replace an event type (admin)',
    description:
      'Replaces the type whole. A publish of the type gets its `defaults` for the fields it leaves out, and its ' +
      'title and body rendered from `data` by the templates (Mustache, only `{{data…}}` names; no partials, no ' +
      'delimiter changes: a template that breaks these rules or does not parse is a 400 naming it). 201 when the ' +
      'type is new, 200 when it replaced one. Other instances see the change within 5 s.',
    tags: TAGS,
    params: eventTypeParams,
    body: eventTypeBody,
    response: {
      200: eventTypeReply.describe('The type was registered and is replaced.'),
      201: eventTypeReply.describe('The type is new.'),
    },
  }
  app.put('/v1/event-types/:type', { schema: putSchema, onRequest: adminRequest }, async (request, reply) => {
    const { eventType, created } = await types.put(request.caller, request.params.type, request.body)
    return reply.code(created ? 201 : 200).send(eventType)
  })

  const deleteSchema = {
    summary: 'Remove an event type (admin)',
    description: 'Events published before keep what the type gave them. A type that is not registered is a 404.',
    tags: TAGS,
    params: eventTypeParams,
    response: { 204: noContent },
  }
  app.delete('/v1/event-types/:type', { schema: deleteSchema, onRequest: adminRequest }, async (request, reply) => {
    await types.remove(request.caller, request.params.type)
    return reply.code(204).send()
  })
}
