import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { requireScope } from '../auth.ts'
import {
  DEFAULT_LIST_LIMIT,
  directoryBatchSchema,
  directoryUserFields,
  directoryUserIdSchema,
  MAX_LIST_LIMIT,
} from '../directory/model.ts'
import { nameSchema } from '../events/model.ts'
import { topicPatternSchema } from '../events/preference-rules.ts'
import { noContent, timestamp } from './schemas.ts'

/** The batch route's body limit, when BODY_LIMIT is lower: 5,000 users with names, topics and zones fit. */
export const DIRECTORY_BATCH_BODY_LIMIT = 8 * 1024 * 1024

export const directoryUserParams = z.object({ id: directoryUserIdSchema })

export const directoryUserBody = directoryUserFields.meta({
  examples: [
    {
      roles: ['student'],
      topics: ['class:7A', 'club:*'],
      displayName: 'Kim Muller',
      locale: 'fr-CH',
      timeZone: 'Europe/Zurich',
    },
  ],
})

export const directoryBatchBody = directoryBatchSchema.meta({
  examples: [
    {
      operations: [
        { op: 'upsert', id: 'kim', roles: ['student'], topics: ['class:7A'], timeZone: 'Europe/Zurich' },
        { op: 'upsert', id: 'mr-lee', roles: ['teacher'], topics: ['class:*'], displayName: 'Mr Lee' },
        { op: 'delete', id: 'left-in-june' },
      ],
    },
  ],
})

export const directoryUserReply = z
  .object({
    id: z.string(),
    roles: z.array(z.string()),
    topics: z.array(z.string()),
    displayName: z.string().nullable(),
    locale: z.string().nullable().describe('As Intl writes it (`fr-CH`).'),
    timeZone: z.string().nullable(),
    updatedAt: timestamp.describe('When it was last written.'),
  })
  .describe('A user of the caller’s tenant, as the directory holds them.')

export const directoryBatchReply = z
  .object({
    upserted: z.number().int().min(0).describe('Users created or replaced (an id given twice counts once).'),
    deleted: z.number().int().min(0).describe('Users that were in the directory and were removed.'),
  })
  .describe('Every operation was applied, in one transaction.')

export const directoryListQuery = z.object({
  role: nameSchema.optional().describe('Only users holding this role.'),
  topic: topicPatternSchema
    .optional()
    .describe(
      'Only users whose topics include this one, exactly or by a pattern of theirs (`class:*` includes `class:7A`).',
    ),
  cursor: z.string().max(400).optional().describe('The previous page’s `next`, as it is.'),
  limit: z.coerce.number().int().min(1).max(MAX_LIST_LIMIT).default(DEFAULT_LIST_LIMIT),
})

export const directoryPage = z
  .object({
    users: z.array(directoryUserReply),
    next: z.string().nullable().describe('Pass as `cursor` for the next page; null on the last page.'),
  })
  .describe('A page of the tenant’s users, in id order.')

const TAGS = ['directory']

/**
 * The user directory, for tenants' backends (the `admin` scope): one user, a batch of upserts and deletes, the
 * listing. HTTP over DirectoryService (directory/directory.ts).
 */
export async function directoryRoutes(fastify: FastifyInstance, options: { batchBodyLimit: number }) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const directory = app.directory
  // Before the body is read: a token without the admin scope does not get to send 8 MiB first.
  const adminOnly = async (request: FastifyRequest) => requireScope(request.caller, 'admin', 'The user directory')
  const onRequest = [app.authenticate, adminOnly]

  const putSchema = {
    summary: 'Create or replace a user of the directory (admin)',
    description:
      'Replaces the user whole: a field left out is cleared. 201 when the user was not in the directory, 200 when ' +
      'they were. Roles and topics as token claims write them; their role and topic broadcasts follow these from now on.',
    tags: TAGS,
    params: directoryUserParams,
    body: directoryUserBody,
    response: {
      200: directoryUserReply.describe('The user was there and is replaced.'),
      201: directoryUserReply.describe('The user is new.'),
    },
  }
  app.put('/v1/directory/users/:id', { schema: putSchema, onRequest }, async (request, reply) => {
    const { user, created } = await directory.put(request.caller, request.params.id, request.body)
    return reply.code(created ? 201 : 200).send(user)
  })

  const getSchema = {
    summary: 'One user of the directory (admin)',
    tags: TAGS,
    params: directoryUserParams,
    response: { 200: directoryUserReply },
  }
  app.get('/v1/directory/users/:id', { schema: getSchema, onRequest }, async (request) =>
    directory.get(request.caller, request.params.id),
  )

  const deleteSchema = {
    summary: 'Remove a user from the directory (admin)',
    description: 'A user who is not there is a 404 (the batch route’s `delete` takes absent users silently).',
    tags: TAGS,
    params: directoryUserParams,
    response: { 204: noContent },
  }
  app.delete('/v1/directory/users/:id', { schema: deleteSchema, onRequest }, async (request, reply) => {
    await directory.remove(request.caller, request.params.id)
    return reply.code(204).send()
  })

  const batchSchema = {
    summary: 'Upsert and delete many users at once (admin)',
    description:
      'Up to 5,000 operations, all or nothing: one invalid operation is a 400 naming it ' +
      '(`body.operations.<index>.<field>`), and nothing is written. More than 5,000 is a 400 on `body.operations`. ' +
      'The body may be up to BODY_LIMIT or 8 MiB, whichever is larger.',
    tags: TAGS,
    body: directoryBatchBody,
    response: { 200: directoryBatchReply },
  }
  app.post(
    '/v1/directory/users/batch',
    { schema: batchSchema, onRequest, bodyLimit: options.batchBodyLimit },
    async (request) => directory.batch(request.caller, request.body.operations),
  )

  const listSchema = {
    summary: 'List the tenant’s users (admin)',
    description: 'In id order, a page at a time (`next`); `role` and `topic` narrow it, both: users matching both.',
    tags: TAGS,
    querystring: directoryListQuery,
    response: { 200: directoryPage },
  }
  app.get('/v1/directory/users', { schema: listSchema, onRequest }, async (request) =>
    directory.list(request.caller, request.query),
  )
}
