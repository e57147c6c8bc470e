import { z } from 'zod'
import { storableText } from '../db/storable-text.ts'
import { canonicalLocale } from '../directory/model.ts'
import {
  actionsSchema,
  collapseKeySchema,
  type EventAction,
  type Priority,
  prioritySchema,
  ttlSchema,
} from '../events/model.ts'
import { templateProblem } from './templates.ts'

/** Longest title template: room for tags around the 200 characters a title may have. */
const MAX_TITLE_TEMPLATE_CHARS = 1_000
/** Longest body template. */
const MAX_BODY_TEMPLATE_CHARS = 4_000
/** Locales one type may have templates for. */
const MAX_LOCALES = 50
/** Longest locale tag taken (as the directory's). */
const MAX_LOCALE_CHARS = 64

/** A Mustache template over `data`, refused at registration when it could read anything else or does not parse. */
const template = (max: number) =>
  storableText(max)
    .min(1)
    .superRefine((text, ctx) => {
      const problem = templateProblem(text)
      if (problem) ctx.addIssue({ code: 'custom', message: problem })
    })

const titleTemplate = template(MAX_TITLE_TEMPLATE_CHARS).describe(
  'Mustache over `data`, e.g. `{{data.student}} scored {{data.score}}`; the text is cut to 200 characters.',
)
const bodyTemplate = template(MAX_BODY_TEMPLATE_CHARS)
  .nullish()
  .describe('Mustache over `data`; the text is cut to 2,000 characters. Absent: no body.')

const localeTag = z
  .string()
  .max(MAX_LOCALE_CHARS, { abort: true })
  .refine((tag) => canonicalLocale(tag) !== undefined, 'must be a BCP 47 language tag, like "fr-CH" or "en"')

export const templatesSchema = z
  .strictObject({
    title: titleTemplate.describe('The fallback title: for recipients whose locale has no templates of its own.'),
    body: bodyTemplate.describe('The fallback body. A locale without a body of its own uses it too.'),
    locales: z
      .record(localeTag, z.strictObject({ title: titleTemplate, body: bodyTemplate }))
      .optional()
      .describe(
        `Templates per BCP 47 locale (\`fr\`, \`en-GB\`; at most ${MAX_LOCALES}), stored as Intl writes the tag. A ` +
          'recipient gets their exact locale, else its language (`fr-CH` gets `fr`), else the fallback.',
      ),
  })
  .superRefine((templates, ctx) => {
    const tags = Object.keys(templates.locales ?? {})
    if (tags.length > MAX_LOCALES) {
      ctx.addIssue({ code: 'custom', path: ['locales'], message: `at most ${MAX_LOCALES} locales` })
    }
    const seen = new Map<string, string>()
    for (const tag of tags) {
      const canonical = canonicalLocale(tag) ?? tag
      const other = seen.get(canonical)
      if (other !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['locales', tag], message: `is the same locale as "${other}"` })
      }
      seen.set(canonical, tag)
    }
  })

/** `PUT /v1/event-types/:type`: the type whole (what is left out is cleared, or gets its default). */
export const eventTypeRegistrationSchema = z.strictObject({
  description: storableText(500).min(1).nullish().describe('What the type is, for people (at most 500 characters).'),
  category: storableText(100).min(1).nullish().describe('A group to show types under (`grades`, `attendance`).'),
  defaults: z
    .strictObject({
      priority: prioritySchema.optional(),
      ttl: ttlSchema.optional(),
      collapseKey: collapseKeySchema.optional(),
      actions: actionsSchema.optional(),
    })
    .default({})
    .describe(
      'What a publish of the type gets when it does not set the field itself; each is checked as a publish’s is.',
    ),
  inbox: z
    .boolean()
    .default(true)
    .describe('false: events of the type are streamed and pushed, but never in history, the inbox or unread counts.'),
  push: z
    .boolean()
    .default(true)
    .describe(
      'false: events of the type are never pushed. true: pushed as usual, as each recipient’s preferences allow.',
    ),
  liveOnly: z
    .boolean()
    .default(false)
    .describe('true: events of the type are published live-only (`store: false`): streamed, never stored.'),
  templates: templatesSchema
    .nullish()
    .describe('Title and body rendered from `data` when the publisher does not give them; absent: none.'),
})

export type EventTypeRegistration = z.output<typeof eventTypeRegistrationSchema>
export type Templates = z.output<typeof templatesSchema>

/** The defaults a type gives, as stored. */
export interface TypeDefaults {
  priority?: Priority
  ttl?: number
  collapseKey?: string
  actions?: EventAction[]
}

/** A registered type as the service answers it. */
export interface EventType {
  type: string
  description: string | null
  category: string | null
  defaults: TypeDefaults
  inbox: boolean
  push: boolean
  liveOnly: boolean
  templates: Templates | null
  /** RFC 3339, UTC. */
  updatedAt: string
}
