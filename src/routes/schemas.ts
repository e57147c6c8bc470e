import { z } from 'zod'
import { DEFAULT_PAGE, MAX_PAGE } from '../events/inbox.ts'
import { eventIdSchema } from '../events/model.ts'

export const idParams = z.object({ id: eventIdSchema })

export const listQuery = z
  .object({
    after: eventIdSchema.optional(),
    before: eventIdSchema.optional(),
    limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(DEFAULT_PAGE),
    unread: z.enum(['true', 'false']).optional(),
  })
  .refine((q) => q.after === undefined || q.before === undefined, {
    message: 'use either after (polling) or before (history), not both',
    path: ['before'],
  })

export const bulkReadBody = z.union([
  z.strictObject({ ids: z.array(eventIdSchema).min(1).max(1_000) }),
  z.strictObject({ upTo: eventIdSchema }),
])

export const idempotencyHeaders = z.object({
  'idempotency-key': z.string().min(1).max(200).optional(),
})

export const streamQuery = z.object({
  topics: z.string().max(4_000).optional(),
  lastEventId: z.string().max(100).optional(),
  access_token: z.string().optional(),
})

export const published = z.object({ id: z.string(), createdAt: z.string() })
