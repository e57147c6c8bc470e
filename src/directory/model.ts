import { z } from 'zod'
import { storableText } from '../db/storable-text.ts'
import { nameSchema } from '../events/model.ts'
import { topicPatternSchema } from '../events/preference-rules.ts'
import { isTimeZone } from '../events/quiet-hours.ts'
import { groupedDigits } from '../grouped-digits.ts'
import { MAX_BATCH_OPERATIONS } from './limits.ts'

// The user directory's rules: what a directory user is made of, and what the batch and the listing take. The
// routes document these schemas, the service (directory.ts) relies on them, the backend client types with them.

export { MAX_BATCH_OPERATIONS }

/** Roles and topics of one user: as many as a token's claims may hold (auth.ts). */
export const MAX_ROLES = 100
export const MAX_TOPICS = 100
/** Users per page of the listing. */
export const DEFAULT_LIST_LIMIT = 100
export const MAX_LIST_LIMIT = 1_000
/** Longest locale tag taken: BCP 47 asks implementations to handle 35 characters; extensions make some longer. */
const MAX_LOCALE_CHARS = 64

/** A user id (`sub`), as tokens carry it. */
export const directoryUserIdSchema = nameSchema.describe('The user’s id: the `sub` of their tokens.')

/** The locale tag as Intl writes it (`fr-ch` → `fr-CH`), or undefined when it is not a BCP 47 tag. */
export function canonicalLocale(tag: string): string | undefined {
  try {
    const [canonical] = Intl.getCanonicalLocales(tag)
    return canonical
  } catch {
    return undefined
  }
}

const roles = z
  .array(nameSchema)
  .max(MAX_ROLES)
  .describe(`Roles, as a token’s \`roles\` claim (at most ${MAX_ROLES}, each 1 to 200 characters).`)
const topics = z
  .array(topicPatternSchema)
  .max(MAX_TOPICS)
  .describe(
    `Topics the user is a member of, as a token’s \`topics\` claim: names (\`class:7A\`) or a prefix and \`*\` ` +
      `(\`club:*\`); at most ${MAX_TOPICS}.`,
  )
const displayName = storableText(200)
  .min(1)
  .nullable()
  .optional()
  .describe('How people see the user’s name (1 to 200 characters); absent or null: none.')
const locale = z
  .string()
  .max(MAX_LOCALE_CHARS, { abort: true })
  .refine((tag) => canonicalLocale(tag) !== undefined, 'must be a BCP 47 language tag, like "fr-CH" or "en"')
  .nullable()
  .optional()
  .describe(
    'A BCP 47 language tag (`fr-CH`), stored as Intl writes it (`fr-ch` becomes `fr-CH`); absent or null: none.',
  )
const timeZone = z
  .string()
  .max(100, { abort: true })
  .refine(isTimeZone, 'must be an IANA time zone, like "Europe/Paris" or "UTC"')
  .nullable()
  .optional()
  .describe(
    'An IANA time zone (`Europe/Zurich`). Quiet hours from the tenant’s defaults follow its wall clock for this ' +
      'user (their own quiet hours name their own zone); absent or null: none.',
  )

/** What `PUT /v1/directory/users/{id}` takes: the user whole (what is left out is cleared). */
export const directoryUserFields = z.strictObject({ roles, topics, displayName, locale, timeZone })
export type DirectoryUserFields = z.output<typeof directoryUserFields>

export const upsertOperation = directoryUserFields
  .extend({ op: z.literal('upsert'), id: directoryUserIdSchema })
  .describe('Creates or replaces the user, as PUT /v1/directory/users/{id} does.')
export const deleteOperation = z
  .strictObject({ op: z.literal('delete'), id: directoryUserIdSchema })
  .describe('Removes the user; one that is not there is no error (it is not counted).')

export const directoryOperation = z.discriminatedUnion('op', [upsertOperation, deleteOperation])
export type DirectoryOperation = z.output<typeof directoryOperation>

export const directoryBatchSchema = z.strictObject({
  operations: z
    .array(directoryOperation)
    .min(1)
    .max(MAX_BATCH_OPERATIONS)
    .describe(
      `At most ${groupedDigits(MAX_BATCH_OPERATIONS)} operations, applied in one transaction: all of them, ` +
        'or (when any is invalid) none. An id given more than once: its last operation counts.',
    ),
})

/** A directory user as the service answers it. */
export interface DirectoryUser {
  id: string
  roles: string[]
  topics: string[]
  displayName: string | null
  locale: string | null
  timeZone: string | null
  /** RFC 3339, UTC. */
  updatedAt: string
}

export interface DirectoryListQuery {
  /** Users holding this role. */
  role?: string
  /** Users whose topics include this one, exactly or by a pattern of theirs (`class:*` includes `class:7A`). */
  topic?: string
  /** The previous page's `next`. */
  cursor?: string
  limit: number
}

export interface DirectoryPage {
  users: DirectoryUser[]
  /** Pass as `cursor` for the next page; null on the last page. */
  next: string | null
}

export interface BatchResult {
  /** Users written (created or replaced); an id upserted twice counts once. */
  upserted: number
  /** Users that were there and were removed. */
  deleted: number
}
