import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { tenantSettingsSchema, userSettingsSchema } from '../events/preference-rules.ts'
import type { Stored } from '../events/preferences.ts'

/** `PUT /v1/me/preferences`: a user's own settings; `urgentBypass` is a tenant's to say. */
export const userPreferencesBody = userSettingsSchema.extend({
  urgentBypass: z
    .never({ error: 'only a tenant’s defaults say this (PUT /v1/tenant/preferences, admin)' })
    .optional()
    .describe('Not here: a tenant’s defaults say whether `urgent` events ignore preferences.'),
})

const updatedAt = z
  .string()
  .meta({ format: 'date-time' })
  .nullable()
  .describe('When these settings were last set; null: never (or they were set to nothing).')

export const userPreferencesReply = userSettingsSchema
  .extend({ updatedAt })
  .describe('The caller’s own preferences; what they leave out, the tenant’s defaults decide.')

export const tenantPreferencesReply = tenantSettingsSchema
  .extend({ updatedAt })
  .describe('The tenant’s defaults: its users’ own preferences override them.')

const reply = <S>({ settings, updatedAt }: Stored<S>) => ({ ...settings, updatedAt: updatedAt?.toISOString() ?? null })

const RULES_HELP =
  '`rules` match events by type pattern (`grades.*`, `attendance.absent`, `*`) or by topic (`class:7A`, `class:*`); ' +
  'for each of `inApp` (streamed, listed, counted as unread) and `push`, the first rule that matches and says it ' +
  'decides, the user’s before the tenant’s. `push` is the push switch with a minimum priority; `quietHours` hold ' +
  '`normal` and `high` pushes until the window ends. `urgent` events ignore all of it unless the tenant’s ' +
  '`urgentBypass` is false.'

/** Notification preferences: the caller's own, and the tenant's defaults for admins. */
export async function preferenceRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const preferences = app.preferences

  const getMine = {
    summary: 'The caller’s notification preferences',
    description: RULES_HELP,
    tags: ['preferences'],
    response: { 200: userPreferencesReply },
  }
  app.get('/v1/me/preferences', { schema: getMine, onRequest: app.authenticate }, async (request) =>
    reply(await preferences.mine(request.caller)),
  )

  const putMine = {
    summary: 'Set the caller’s notification preferences',
    description:
      `Replaces them whole (\`{}\`: the tenant’s defaults decide everything). ${RULES_HELP} ` +
      'Applies at once to the caller’s history, unread count and open streams, on every instance.',
    tags: ['preferences'],
    body: userPreferencesBody,
    response: { 200: userPreferencesReply },
  }
  app.put('/v1/me/preferences', { schema: putMine, onRequest: app.authenticate }, async (request) => {
    const { urgentBypass: _, ...settings } = request.body
    return reply(await preferences.setMine(request.caller, settings))
  })

  const getTenant = {
    summary: 'The tenant’s default notification preferences (admin)',
    description: RULES_HELP,
    tags: ['preferences'],
    response: { 200: tenantPreferencesReply },
  }
  app.get('/v1/tenant/preferences', { schema: getTenant, onRequest: app.authenticate }, async (request) =>
    reply(await preferences.tenantDefaults(request.caller)),
  )

  const putTenant = {
    summary: 'Set the tenant’s default notification preferences (admin)',
    description:
      `Replaces them whole. ${RULES_HELP} A user’s own rules come before these; their own \`push\` and ` +
      '`quietHours`, when they set them, replace these.',
    tags: ['preferences'],
    body: tenantSettingsSchema,
    response: { 200: tenantPreferencesReply },
  }
  app.put('/v1/tenant/preferences', { schema: putTenant, onRequest: app.authenticate }, async (request) =>
    reply(await preferences.setTenantDefaults(request.caller, request.body)),
  )
}
