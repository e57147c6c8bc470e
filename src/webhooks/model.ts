import { z } from 'zod'
import { storableText } from '../db/storable-text.ts'
import { WEBHOOK_TYPES } from './outbox.ts'
import { MAX_URL_CHARS } from './urls.ts'

/** Endpoints per tenant: a few integrations each, not a fan-out machine. */
export const MAX_ENDPOINTS_PER_TENANT = 50
/** Deliveries listed per page, by default and at most. */
export const DEFAULT_DELIVERIES_PAGE = 20
export const MAX_DELIVERIES_PAGE = 100

const typeList = WEBHOOK_TYPES.map((t) => `\`${t}\``).join(', ')

/** `POST /v1/webhooks`. */
export const newWebhookSchema = z.strictObject({
  url: storableText(MAX_URL_CHARS)
    .min(1)
    .describe(
      'Where deliveries are POSTed: an https URL of a public host. http, and hosts that are or resolve to private, ' +
        'loopback or link-local addresses, only for hosts WEBHOOK_URL_ALLOWLIST names. Redirects are not followed.',
    ),
  events: z
    .array(z.enum(WEBHOOK_TYPES))
    .min(1)
    .max(WEBHOOK_TYPES.length * 2)
    .describe(`The event types the endpoint receives: ${typeList}.`),
  description: storableText(500).optional().describe('Free text for the tenant’s admins.'),
})
export type NewWebhook = z.infer<typeof newWebhookSchema>

/** An endpoint id in a path. */
export const webhookIdSchema = z.string().regex(/^[1-9][0-9]{0,17}$/, 'must be a decimal webhook id')
