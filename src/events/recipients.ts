import { and, eq, type SQL, sql } from 'drizzle-orm'
import type { Caller } from '../auth.ts'
import type { Database, Db } from '../db/client.ts'
import { type EventRow, events } from '../db/schema.ts'
import type { NewEvent } from './model.ts'
import { topicPatternMatches } from './visibility.ts'

/**
 * SQL: the recipients of the events in `inserted` (a relation with their id, tenant and audience), as rows
 * (event_id, tenant, user_id), each user once per event. Resolved when the event is published, through:
 *  - users: as named;
 *  - roles: the directory's holders (directory_users); a user not in the directory by the claims of their latest
 *    token while it is current (user_claims);
 *  - topics: the directory's members (a name or a `prefix*` of theirs); and the topic's followers
 *    (topic_subscriptions): one an admin added counts as it is, one the user made while their current claims
 *    (or the directory) still allow it;
 *  - the tenant: every user the service knows in it: the directory, users seen through tokens, and devices.
 * The directory decides for the users it lists: a token's roles never add a listed user to a role's recipients.
 * What a connected user may see stays their token's (visibility.ts): being a recipient widens nothing.
 */
export function recipientsSql(inserted: SQL, statement: RecipientStatement): SQL {
  const { tenants, audiences } = statement
  // The statement's tenants as constants (almost always one): each table is read through its tenant index, with
  // estimates for that tenant. Joined on `e.tenant` alone, the planner reads every tenant's directory.
  const ofTenants = (column: SQL) =>
    sql`${column} in (${sql.join(
      tenants.map((t) => sql`${t}`),
      sql`, `,
    )})`
  // Only the kinds of audience the statement's events name: a publish to users alone is one unnest.
  const parts: SQL[] = [
    sql`select e.id as event_id, e.tenant, u.user_id
    from ${inserted} e cross join lateral unnest(e.to_users) as u(user_id)`,
  ]
  if (audiences.has('roles')) {
    parts.push(
      sql`select e.id, e.tenant, d.user_id
    from ${inserted} e join directory_users d on d.tenant = e.tenant and d.roles && e.to_roles
    where cardinality(e.to_roles) > 0 and ${ofTenants(sql`d.tenant`)}`,
      sql`select e.id, e.tenant, c.user_id
    from ${inserted} e join user_claims c on c.tenant = e.tenant and c.roles && e.to_roles and c.expires_at > now()
    where cardinality(e.to_roles) > 0 and ${ofTenants(sql`c.tenant`)}
      and not exists (select 1 from directory_users d where d.tenant = c.tenant and d.user_id = c.user_id)`,
    )
  }
  if (audiences.has('topics')) {
    parts.push(
      sql`select named.id, named.tenant, d.user_id
    from (select e.id, e.tenant, unnest(e.to_topics) as topic from ${inserted} e) named
    join directory_users d on d.tenant = named.tenant and ${ofTenants(sql`d.tenant`)}
    where exists (select 1 from unnest(d.topics) as m(pattern) where ${topicPatternMatches(sql`m.pattern`, sql`named.topic`)})`,
      sql`select named.id, named.tenant, ts.user_id
    from (select e.id, e.tenant, unnest(e.to_topics) as topic from ${inserted} e) named
    join topic_subscriptions ts on ts.tenant = named.tenant and ts.topic = named.topic and ${ofTenants(sql`ts.tenant`)}
    left join user_claims c on c.tenant = ts.tenant and c.user_id = ts.user_id and c.expires_at > now()
    where ts.added_by = 'admin'
      or exists (select 1 from unnest(c.topics) as claim(pattern) where ${topicPatternMatches(sql`claim.pattern`, sql`ts.topic`)})`,
    )
  }
  if (audiences.has('tenant')) {
    // An event to the tenant and to others besides. One to the tenant alone takes its tenant's roster (below).
    // `union all`: the union of the parts below removes repeats once, for all of them (a second pass over a
    // tenant of 10,000 was a fifth of a broadcast's statement).
    parts.push(sql`select e.id, e.tenant, known.user_id
    from ${inserted} e cross join lateral (${knownUsers(sql`e.tenant`, sql`union all`)}) known
    where e.to_tenant and not ${toTenantOnly(sql`e`)}`)
  }
  return sql.join(parts, sql` union `)
}

/** The users known in `tenant`: the directory's, those seen through tokens, and devices' users. */
const knownUsers = (tenant: SQL, union: SQL) => sql`
  select user_id from directory_users where tenant = ${tenant}
  ${union} select user_id from user_claims where tenant = ${tenant}
  ${union} select user_id from push_subscriptions where tenant = ${tenant}`

/** SQL: event `e` is to its whole tenant and no one else: its recipients are the tenant's roster. */
export const toTenantOnly = (e: SQL) =>
  sql`(${e}.to_tenant and cardinality(${e}.to_users) = 0 and cardinality(${e}.to_roles) = 0 and cardinality(${e}.to_topics) = 0)`

/**
 * SQL: CTEs (to follow others in a WITH) that end in `roster` (tenant, user_ids): for the tenant of each event in
 * `inserted` to its tenant alone, every user known there (knownUsers) as one array in user id order. The tenant's
 * stored roster while it was built at the current roster version (bumped by triggers on the three tables, see
 * db/schema.ts tenantRosterVersions); otherwise resolved now and stored for the next broadcast. A broadcast to
 * 10,000 users then records a stored array instead of reading, de-duplicating and sorting them (bench scenario
 * 10). Consistent with the statement's snapshot: a user added by a transaction it does not see has bumped a
 * version it does not see either.
 */
export function rosterCtes(inserted: SQL): SQL {
  return sql`roster_state as materialized (
      select t.tenant, coalesce(v.version, 0) as version,
        case when r.built_version = coalesce(v.version, 0) then r.user_ids end as user_ids
      from (select distinct e.tenant from ${inserted} e where ${toTenantOnly(sql`e`)}) t
      left join tenant_roster_versions v on v.tenant = t.tenant
      left join tenant_rosters r on r.tenant = t.tenant
    ), roster_built as materialized (
      select st.tenant, st.version,
        array(select user_id from (${knownUsers(sql`st.tenant`, sql`union`)}) known order by user_id collate "C") as user_ids
      from roster_state st where st.user_ids is null
    ), roster_stored as (
      -- Only ever to a later version: of two broadcasts that resolved the roster at once, the second keeps the first's.
      insert into tenant_rosters (tenant, built_version, user_ids)
      select tenant, version, user_ids from roster_built
      on conflict (tenant) do update set built_version = excluded.built_version, user_ids = excluded.user_ids
      where tenant_rosters.built_version < excluded.built_version
    ), roster as (
      select tenant, user_ids from roster_state where user_ids is not null
      union all select tenant, user_ids from roster_built
    )`
}

/**
 * What recipientsSql needs to know of a statement's events: their tenants, and the kinds of audience they name
 * (`tenant`: to the tenant and to others; an event to its tenant alone is `roster`'s).
 */
export interface RecipientStatement {
  tenants: readonly string[]
  audiences: ReadonlySet<'roles' | 'topics' | 'tenant' | 'roster'>
}

/** The tenants of a statement's events and the kinds of audience they name (toTenantOnly's rule, in JavaScript). */
export function recipientStatementOf(
  rows: ReadonlyArray<{ tenant: string; event: { to: NewEvent['to'] } }>,
): RecipientStatement {
  const audiences = new Set<'roles' | 'topics' | 'tenant' | 'roster'>()
  for (const { event } of rows) {
    const { users, roles, topics, tenant } = event.to
    if (roles?.length) audiences.add('roles')
    if (topics?.length) audiences.add('topics')
    if (tenant) audiences.add(users?.length || roles?.length || topics?.length ? 'tenant' : 'roster')
  }
  return { tenants: [...new Set(rows.map((r) => r.tenant))], audiences }
}

/**
 * SQL: the statement's recipients to plan pushes for (rows of event_id, tenant, user_id): `recipients` (the
 * relation recipientsSql resolved), and for an event to its tenant alone, of its roster's users those with
 * devices: the tenant's devices' users, in the same snapshot.
 */
export function recipientsToPush(inserted: SQL, recipients: SQL, statement: RecipientStatement): SQL {
  if (!statement.audiences.has('roster')) return recipients
  return sql`(select event_id, tenant, user_id from ${recipients}
    union all select distinct e.id, s.tenant, s.user_id
    from ${inserted} e join push_subscriptions s on s.tenant = e.tenant where ${toTenantOnly(sql`e`)})`
}

/** What a roll-call lists: everyone, or those who have (not) read or acked the event. */
export type RecipientState = 'all' | 'unread' | 'read' | 'acked'

/** One recipient of an event, and what became of the event for them. */
export interface Recipient {
  userId: string
  /** The directory's name for the user, if it has one. */
  displayName: string | null
  /** First sent on one of their open streams (live or in a replay; within a second). */
  deliveredAt: Date | null
  /** First pushed to one of their devices (accepted by the push service). */
  pushedAt: Date | null
  ackedAt: Date | null
  readAt: Date | null
}

export interface RecipientTotals {
  recipients: number
  delivered: number
  pushed: number
  acked: number
  read: number
  unread: number
}

export interface RollCallQuery {
  state: RecipientState
  /** The last user id of the previous page. */
  after?: string
  limit: number
}

/**
 * The recipients of an event as an array: as recorded when it was published (event_recipients), or, for an event
 * to named users only (which keeps no such row until it is nudged), its `to_users`.
 */
const recipientsOf = (eventId: number) => sql`coalesce(
  (select user_ids from event_recipients where event_id = ${eventId}),
  (select to_users from events where id = ${eventId} and kind = 'event'))`

/**
 * The recipients of one event with their states: one row per recipient, from the event's recipients (one
 * array), the stream deliveries recorded for it, its sent pushes and its receipts, each read by event id.
 */
const rollCallRows = (tenant: string, eventId: number) => sql`
  with recipient as (
    select unnest(${recipientsOf(eventId)}) as user_id
  ), streamed as (
    select u.user_id, min(sd.delivered_at) as at
    from stream_deliveries sd cross join lateral unnest(sd.user_ids) as u(user_id)
    where sd.event_id = ${eventId} group by u.user_id
  ), pushed as (
    select user_id, min(updated_at) as at from push_deliveries
    where event_id = ${eventId} and state = 'sent' group by user_id
  ), receipt as (
    select user_id, acked_at, read_at from receipts where event_id = ${eventId} and tenant = ${tenant}
  )
  select r.user_id, d.display_name, s.at as delivered_at, p.at as pushed_at, rc.acked_at, rc.read_at
  from recipient r
  left join streamed s on s.user_id = r.user_id
  left join pushed p on p.user_id = r.user_id
  left join receipt rc on rc.user_id = r.user_id
  left join directory_users d on d.tenant = ${tenant} and d.user_id = r.user_id`

const stateFilter: Record<RecipientState, SQL> = {
  all: sql`true`,
  unread: sql`read_at is null`,
  read: sql`read_at is not null`,
  acked: sql`acked_at is not null`,
}

interface RollCallRow {
  user_id: string
  display_name: string | null
  delivered_at: Date | string | null
  pushed_at: Date | string | null
  acked_at: Date | string | null
  read_at: Date | string | null
}

const dateOrNull = (value: Date | string | null) => (value === null ? null : new Date(value))

/**
 * An event the caller may take the roll-call of (its publisher, or an admin of its tenant): an event as
 * published (not an edit's or recall's row of the log). Undefined otherwise (a 404: not theirs, or none).
 */
export async function eventOfPublisher(
  database: Database,
  caller: Caller,
  id: number,
): Promise<{ id: number; recalled: boolean } | undefined> {
  const [event] = await database.db
    .select({ actor: events.actor, recalledAt: events.recalledAt })
    .from(events)
    .where(and(eq(events.id, id), eq(events.tenant, caller.tenant), eq(events.kind, 'event')))
  if (!event || (event.actor !== caller.userId && !caller.scopes.has('admin'))) return undefined
  return { id, recalled: event.recalledAt !== null }
}

/** A page of an event's recipients in user id order, those in `query.state`, and the totals of all of them. */
export async function rollCall(
  database: Database,
  tenant: string,
  eventId: number,
  query: RollCallQuery,
): Promise<{ recipients: Recipient[]; totals: RecipientTotals; next: string | null }> {
  const after = query.after === undefined ? sql`true` : sql`user_id collate "C" > ${query.after}`
  const [rows, totals] = await Promise.all([
    database.query<RollCallRow>(sql`
      select * from (${rollCallRows(tenant, eventId)}) rc
      where ${stateFilter[query.state]} and ${after}
      order by user_id collate "C" limit ${query.limit + 1}`),
    recipientTotals(database, tenant, eventId),
  ])
  const page = rows.slice(0, query.limit)
  return {
    recipients: page.map((r) => ({
      userId: r.user_id,
      displayName: r.display_name,
      deliveredAt: dateOrNull(r.delivered_at),
      pushedAt: dateOrNull(r.pushed_at),
      ackedAt: dateOrNull(r.acked_at),
      readAt: dateOrNull(r.read_at),
    })),
    totals,
    next: rows.length > query.limit ? page[page.length - 1].user_id : null,
  }
}

/** How many recipients the event has, and how many of them it was delivered and pushed to, acked and read by. */
export async function recipientTotals(database: Database, tenant: string, eventId: number): Promise<RecipientTotals> {
  const [row] = await database.query<Record<keyof Omit<RecipientTotals, 'unread'>, string | number>>(sql`
    select count(*) as recipients, count(delivered_at) as delivered, count(pushed_at) as pushed,
      count(acked_at) as acked, count(read_at) as read
    from (${rollCallRows(tenant, eventId)}) rc`)
  const recipients = Number(row.recipients)
  const read = Number(row.read)
  return {
    recipients,
    delivered: Number(row.delivered),
    pushed: Number(row.pushed),
    acked: Number(row.acked),
    read,
    unread: recipients - read,
  }
}

/** Recipients of the event who have not read it (a nudge's and an escalation's audience), as SQL rows (user_id). */
export const unreadRecipientsSql = (tenant: string | SQL, eventId: number | SQL, unless: SQL = sql`'read'`) => sql`
  select u.user_id from event_recipients er cross join lateral unnest(er.user_ids) as u(user_id)
  where er.event_id = ${eventId} and not exists (
    select 1 from receipts rc where rc.tenant = ${tenant} and rc.user_id = u.user_id and rc.event_id = er.event_id
      and (case when ${unless} = 'acked' then rc.acked_at else rc.read_at end) is not null)`

/**
 * Takes the event's nudge slot: records now as its last nudge and returns the unread recipients, unless the
 * last nudge was less than `minIntervalS` ago: then returns how many seconds until the next may go.
 */
export async function takeNudge(
  database: Database,
  tx: Db,
  tenant: string,
  eventId: number,
  minIntervalS: number,
): Promise<{ users: string[] } | { retryAfterS: number }> {
  // An event to named users only has no row yet: its first nudge records its recipients (its to_users).
  const taken = await database.query<{ event_id: string | number }>(
    sql`
    insert into event_recipients (event_id, tenant, user_ids, nudged_at)
    select id, tenant, to_users, now() from events where id = ${eventId} and kind = 'event'
    on conflict (event_id) do update set nudged_at = now()
      where event_recipients.nudged_at is null
        or event_recipients.nudged_at <= now() - make_interval(secs => ${minIntervalS})
    returning event_id`,
    tx,
  )
  if (!taken.length) {
    const [row] = await database.query<{ wait: string | number | null }>(
      sql`
      select ceil(extract(epoch from nudged_at + make_interval(secs => ${minIntervalS}) - now())) as wait
      from event_recipients where event_id = ${eventId}`,
      tx,
    )
    if (!row || row.wait === null) return { users: [] }
    return { retryAfterS: Math.max(1, Number(row.wait)) }
  }
  const rows = await database.query<{ user_id: string }>(unreadRecipientsSql(tenant, eventId), tx)
  return { users: rows.map((r) => r.user_id) }
}

/** The unread recipients of an event among `users` (those with open streams on an instance). */
export async function unreadAmong(database: Database, tenant: string, eventId: number, users: string[]) {
  if (!users.length) return []
  const rows = await database.query<{ user_id: string }>(sql`
    select user_id from (${unreadRecipientsSql(tenant, eventId)}) unread
    where user_id in (select json_array_elements_text(${JSON.stringify(users)}::json))`)
  return rows.map((r) => r.user_id)
}

/** The event as stored (a nudge's frame shows it as it stands), or undefined. */
export async function eventRow(database: Database, id: number): Promise<EventRow | undefined> {
  const [row] = await database.db.select().from(events).where(eq(events.id, id))
  return row
}
