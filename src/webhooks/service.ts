import { randomBytes } from 'node:crypto'
import { and, desc, eq, lt, sql } from 'drizzle-orm'
import { type Caller, requireScope } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { webhookDeliveries, webhookEndpoints } from '../db/schema.ts'
import { ConflictError, InvalidFieldsError, NotFoundError } from '../service-errors.ts'
import { MAX_ENDPOINTS_PER_TENANT, type NewWebhook } from './model.ts'
import type { WebhookType } from './outbox.ts'
import { checkDestination, parseEndpointUrl, type Resolve, UrlRefused } from './urls.ts'

/** An endpoint as its tenant's admins see it (never its secret, but once, at registration). */
export interface WebhookView {
  id: string
  url: string
  events: WebhookType[]
  description: string | null
  createdBy: string
  createdAt: string
  /** Since when every delivery has failed; null: the last one succeeded, or none was made yet. */
  failingSince: string | null
  /** Set when it failed for longer than WEBHOOK_DISABLE_AFTER_H: nothing is sent until it is enabled again. */
  disabledAt: string | null
  disabledReason: string | null
}

/** One delivery as the listing shows it. */
export interface DeliveryView {
  id: string
  msgId: string
  type: WebhookType
  state: 'pending' | 'sent' | 'failed'
  attempts: number
  lastStatus: number | null
  lastError: string | null
  createdAt: string
  /** When a pending delivery is attempted next; null once it is sent or failed. */
  nextAttemptAt: string | null
  /** The body as sent: `{type, timestamp, data}`. */
  payload: unknown
}

export interface WebhookRules {
  /** Host patterns that may be http or private (WEBHOOK_URL_ALLOWLIST). */
  allowlist: readonly string[]
  /** DNS, for tests. */
  resolve?: Resolve
}

type EndpointRow = typeof webhookEndpoints.$inferSelect

const iso = (d: Date | null) => d?.toISOString() ?? null

const viewOf = (row: EndpointRow): WebhookView => ({
  id: String(row.id),
  url: row.url,
  events: row.events as WebhookType[],
  description: row.description,
  createdBy: row.createdBy,
  createdAt: row.createdAt.toISOString(),
  failingSince: iso(row.failingSince),
  disabledAt: iso(row.disabledAt),
  disabledReason: row.disabledReason,
})

/** A new signing secret: `whsec_` and 32 random bytes, base64 (what Standard Webhooks libraries take). */
export const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`

const WHAT = 'Managing webhooks'

/**
 * A tenant's webhook endpoints, for its admins (`admin` scope): registering them (URL rules checked, DNS
 * included), listing, removing, enabling one that was disabled, and its recent deliveries. Another tenant's
 * endpoint is not found.
 */
export class WebhookService {
  constructor(
    private readonly database: Database,
    private readonly rules: WebhookRules,
    /** Told when deliveries may be due at once (an endpoint enabled again). */
    private readonly onDue: () => void,
  ) {}

  async create(caller: Caller, input: NewWebhook): Promise<WebhookView & { secret: string }> {
    requireScope(caller, 'admin', WHAT)
    const url = await this.checkUrl(input.url)
    const secret = newSecret()
    // The cap is checked in the insert itself, so endpoints registered at once cannot pass it together by much.
    const [row] = await this.database.query<{ id: string | number }>(sql`
      insert into webhook_endpoints (tenant, url, events, description, secret, created_by)
      select ${caller.tenant}, ${url.href},
        array(select json_array_elements_text(${JSON.stringify([...new Set(input.events)])}::json)),
        ${input.description ?? null}, ${secret}, ${caller.userId}
      where (select count(*) from webhook_endpoints where tenant = ${caller.tenant}) < ${MAX_ENDPOINTS_PER_TENANT}
      returning id`)
    if (!row) {
      throw new ConflictError(
        `A tenant has at most ${MAX_ENDPOINTS_PER_TENANT} webhook endpoints: delete one before adding another.`,
      )
    }
    return { ...viewOf(await this.find(caller, String(row.id))), secret }
  }

  async list(caller: Caller): Promise<WebhookView[]> {
    requireScope(caller, 'admin', WHAT)
    const rows = await this.database.db
      .select()
      .from(webhookEndpoints)
      .where(eq(webhookEndpoints.tenant, caller.tenant))
      .orderBy(webhookEndpoints.id)
    return rows.map(viewOf)
  }

  async get(caller: Caller, id: string): Promise<WebhookView> {
    requireScope(caller, 'admin', WHAT)
    return viewOf(await this.find(caller, id))
  }

  async remove(caller: Caller, id: string): Promise<void> {
    requireScope(caller, 'admin', WHAT)
    const rows = await this.database.db
      .delete(webhookEndpoints)
      .where(and(eq(webhookEndpoints.tenant, caller.tenant), eq(webhookEndpoints.id, Number(id))))
      .returning({ id: webhookEndpoints.id })
    if (!rows.length) throw notFound(id)
  }

  /**
   * Enables an endpoint again (a no-op for one that is enabled): it is no longer failing, and its pending
   * deliveries are due at once.
   */
  async enable(caller: Caller, id: string): Promise<WebhookView> {
    requireScope(caller, 'admin', WHAT)
    const [row] = await this.database.query<{ id: string | number }>(sql`
      with before as (
        select id, disabled_at from webhook_endpoints where tenant = ${caller.tenant} and id = ${Number(id)} for update
      ), enabled as (
        update webhook_endpoints w
        set disabled_at = null, disabled_reason = null,
            failing_since = case when b.disabled_at is null then w.failing_since end
        from before b where w.id = b.id
        returning w.id, b.disabled_at as was_disabled
      ), due as (
        update webhook_deliveries d
        set next_attempt_at = least(d.next_attempt_at, now())
        from enabled e
        where d.endpoint_id = e.id and d.state = 'pending' and e.was_disabled is not null
      )
      select id from enabled`)
    if (!row) throw notFound(id)
    this.onDue()
    return this.get(caller, id)
  }

  /** The endpoint's deliveries, newest first, `limit` of them before `cursor` (a delivery id). */
  async deliveries(
    caller: Caller,
    id: string,
    page: { cursor?: string; limit: number },
  ): Promise<{ deliveries: DeliveryView[]; next: string | null }> {
    requireScope(caller, 'admin', WHAT)
    const endpoint = await this.find(caller, id)
    const d = webhookDeliveries
    const rows = await this.database.db
      .select()
      .from(d)
      .where(and(eq(d.endpointId, endpoint.id), page.cursor === undefined ? undefined : lt(d.id, Number(page.cursor))))
      .orderBy(desc(d.id))
      .limit(page.limit + 1)
    const more = rows.length > page.limit
    const shown = rows.slice(0, page.limit)
    return {
      deliveries: shown.map((r) => ({
        id: String(r.id),
        msgId: r.msgId,
        type: r.type as WebhookType,
        state: r.state,
        attempts: r.attempts,
        lastStatus: r.lastStatus,
        lastError: r.lastError,
        createdAt: r.createdAt.toISOString(),
        nextAttemptAt: r.state === 'pending' ? r.nextAttemptAt.toISOString() : null,
        payload: JSON.parse(r.payload),
      })),
      next: more ? String(shown[shown.length - 1].id) : null,
    }
  }

  private async find(caller: Caller, id: string): Promise<EndpointRow> {
    const [row] = await this.database.db
      .select()
      .from(webhookEndpoints)
      .where(and(eq(webhookEndpoints.tenant, caller.tenant), eq(webhookEndpoints.id, Number(id))))
    if (!row) throw notFound(id)
    return row
  }

  /** The URL rules, DNS included; a URL they refuse is a 400 naming `body.url`. */
  private async checkUrl(text: string): Promise<URL> {
    try {
      const url = parseEndpointUrl(text, this.rules.allowlist)
      await checkDestination(url, this.rules.allowlist, this.rules.resolve)
      return url
    } catch (err) {
      if (err instanceof UrlRefused) throw new InvalidFieldsError([{ path: 'body.url', message: err.message }])
      throw err
    }
  }
}

const notFound = (id: string) => new NotFoundError(`No webhook endpoint ${id} in your tenant.`)
