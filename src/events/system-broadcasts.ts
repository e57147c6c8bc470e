import { type SQL, sql } from 'drizzle-orm'
import { type Caller, requireScope } from '../auth.ts'
import type { Database, Db } from '../db/client.ts'
import { InvalidFieldsError } from '../service-errors.ts'
import { DEFAULT_EVENT_TTL_S, type EventRequest, finalEventIssues, type NewEvent } from './model.ts'
import type { PublishedInTenants } from './publish.ts'
import type { EventService } from './service.ts'

/** Most tenants a broadcast may list by name (a list this long is about 100 KB of JSON); `"*"` has no limit. */
export const MAX_LISTED_TENANTS = 10_000

/** A platform broadcast as requested: the tenants (a list, or `"*"` for every tenant known), and one event. */
export interface SystemBroadcast {
  tenants: readonly string[] | '*'
  /** The event as sent: complete (a title), no live-only `store: false`. */
  event: Omit<EventRequest, 'store' | 'title'> & { title: string }
  /** The event's `data` as the operator wrote it (raw-json.ts). */
  rawData?: string
  idempotencyKey?: string
}

/** The tables that know a tenant, each through an index that starts with `tenant`. */
const TENANT_TABLES = ['directory_users', 'user_claims', 'push_subscriptions', 'stream_presence', 'events'] as const

/**
 * The distinct tenants of one table by a "loose index scan": PostgreSQL has no skip scan, so `select distinct
 * tenant` would read every row (10 million events); this recursive CTE jumps from one tenant to the next through
 * the table's (tenant, ...) index instead, one index probe per tenant. Ends with a null row (no next tenant).
 */
const tenantsOf = (table: (typeof TENANT_TABLES)[number]) => {
  const t = sql.raw(table)
  const cte = sql.raw(`${table}_tenants`)
  return sql`${cte}(tenant) as (
    (select tenant from ${t} order by tenant limit 1)
    union all
    select (select x.tenant from ${t} x where x.tenant > p.tenant order by x.tenant limit 1)
    from ${cte} p where p.tenant is not null
  )`
}

/**
 * Every tenant the service knows, in one statement: those with users in the directory, users seen through tokens,
 * devices, open streams, or events in the log (which is pruned past each event's ttl, so these are the tenants
 * with events within their retention). One index probe per tenant and table, whatever the tables' sizes: on
 * PostgreSQL 2,000 tenants over 200,000 directory users, 100,000 claims and 2 million events take 130 ms (cold:
 * 230 ms), where `select distinct` over the same tables takes 4.6 s and spills to disk.
 */
export const EVERY_TENANT: SQL = sql`
  with recursive ${sql.join(TENANT_TABLES.map(tenantsOf), sql`, `)}
  select tenant from (${sql.join(
    TENANT_TABLES.map((table) => sql`select tenant from ${sql.raw(`${table}_tenants`)}`),
    sql` union `,
  )}) known
  where tenant is not null
  order by tenant`

/** Every tenant the service knows (EVERY_TENANT). */
export async function everyTenant(database: Database, tx?: Db): Promise<string[]> {
  const rows = await database.query<{ tenant: string }>(EVERY_TENANT, tx)
  return rows.map((r) => r.tenant)
}

/**
 * Platform broadcasts: an operator (scope `events:system`) publishes one event into many tenants (maintenance
 * windows, outages). Each tenant gets its own copy: one `events` row, its own id, actor the operator; its
 * recipients, pushes, webhooks, acks, reads, status and roll-call are that tenant's as for any event it published,
 * and nothing in it names the other tenants. The copies are inserted by the publish statement itself (publish.ts
 * publishInTenants), MAX_BATCH_EVENTS tenants a statement, all in one transaction.
 */
export class SystemBroadcasts {
  constructor(
    private readonly database: Database,
    private readonly events: Pick<EventService, 'publishInTenants'>,
  ) {}

  async publish(caller: Caller, broadcast: SystemBroadcast): Promise<PublishedInTenants> {
    requireScope(caller, 'events:system', 'Publishing to other tenants')
    const event = completeEvent(broadcast.event)
    const named = broadcast.tenants === '*' ? '*' : [...new Set(broadcast.tenants)]
    // A list as given (duplicates once, in the order named); "*" as the database orders the tenants it knows.
    const resolve = named === '*' ? (tx: Db) => everyTenant(this.database, tx) : async () => named
    return this.events.publishInTenants(caller, named, resolve, event, {
      idempotencyKey: broadcast.idempotencyKey,
      rawData: broadcast.rawData,
    })
  }
}

/**
 * The event as stored: as sent, with the defaults of a publish (priority `normal`, a 7-day ttl). A tenant's
 * registered event types do not apply: the operator's text is the same in every tenant. 400 for what only the
 * final values show (an escalation past the ttl, an `open` action without a url).
 */
function completeEvent(sent: SystemBroadcast['event']): NewEvent {
  const event: NewEvent = {
    ...sent,
    priority: sent.priority ?? 'normal',
    ttl: sent.ttl ?? DEFAULT_EVENT_TTL_S,
    store: true,
  }
  const issues = finalEventIssues(event)
  if (issues.length) throw new InvalidFieldsError(issues.map((i) => ({ ...i, path: `body.${i.path}` })))
  return event
}
