import { and, eq, gt, isNull, or, type SQL, sql } from 'drizzle-orm'
import type { Caller } from '../auth.ts'
import { events, topicSubscriptions } from '../db/schema.ts'
import type { InAppFilter } from './preference-rules.ts'

/** Who is looking: a user of a tenant, with roles, and the topics (or `prefix*` patterns) they follow. */
export interface Viewer {
  tenant: string
  userId: string
  roles: readonly string[]
  topicPatterns: readonly string[]
  /**
   * Also the topics an admin made the user follow (topic_subscriptions), whatever their claims: the user's own
   * subscriptions are within their claims, which `topicPatterns` covers.
   */
  withSubscriptions?: boolean
  /** The viewer's preferences leave these events out (`inApp: false`): stored, but not theirs to see. */
  inApp?: InAppFilter
  /** The viewer's locale (BCP 47, as Intl writes it): the title and body replays show (wire-format.ts localizedRow). */
  locale?: string
  /**
   * Other tenants the viewer's token covers (a stream of a director of several schools), with their roles in
   * each: there they see what is sent to the tenant, to them, or to those roles (topics are the current tenant's).
   */
  otherTenants?: ReadonlyMap<string, readonly string[]>
}

/**
 * REST reads see every topic the token allows and every topic the user follows (a stream sees the topics it
 * follows: StreamConnection.viewer).
 */
export const viewerOf = (caller: Caller, inApp?: InAppFilter): Viewer => ({
  tenant: caller.tenant,
  userId: caller.userId,
  roles: caller.roles,
  topicPatterns: caller.topics,
  withSubscriptions: true,
  inApp,
})

/**
 * SQL: the topic pattern `pattern` (a topic, or a prefix ending in `*`, as in a token's `topics` claim or the
 * directory) matches the topic `topic`; auth.ts topicMatches in JavaScript.
 */
export const topicPatternMatches = (pattern: SQL, topic: SQL | string) =>
  sql`(${pattern} = ${topic} or (right(${pattern}, 1) = '*' and starts_with(${topic}, left(${pattern}, -1))))`

const textArray = (values: readonly string[]) =>
  sql`array[${sql.join(
    values.map((v) => sql`${v}`),
    sql`, `,
  )}]::text[]`

/**
 * The one definition of "this viewer may see this event", as SQL: same tenant, not expired, and named by
 * user, role, tenant or topic, and not left out by the viewer's preferences (`inApp`). The stream's in-memory
 * index (stream/hub.ts) implements the same rule.
 */
export function visibleTo(viewer: Viewer): SQL {
  const audiences: SQL[] = [sql`${events.toTenant}`, sql`${events.toUsers} && ${textArray([viewer.userId])}`]
  if (viewer.roles.length) audiences.push(sql`${events.toRoles} && ${textArray(viewer.roles)}`)
  const exact = viewer.topicPatterns.filter((p) => !p.endsWith('*'))
  const prefixes = viewer.topicPatterns.filter((p) => p.endsWith('*')).map((p) => p.slice(0, -1))
  if (exact.length) audiences.push(sql`${events.toTopics} && ${textArray(exact)}`)
  if (prefixes.length) {
    const anyPrefix = sql.join(
      prefixes.map((p) => sql`starts_with(t.topic, ${p})`),
      sql` or `,
    )
    audiences.push(sql`exists (select 1 from unnest(${events.toTopics}) as t(topic) where ${anyPrefix})`)
  }
  if (viewer.withSubscriptions) {
    audiences.push(
      sql`(cardinality(${events.toTopics}) > 0 and exists (select 1 from ${topicSubscriptions} ts
        where ts.tenant = ${viewer.tenant} and ts.user_id = ${viewer.userId} and ts.added_by = 'admin'
          and ts.topic = any(${events.toTopics})))`,
    )
  }
  const inTenant = and(eq(events.tenant, viewer.tenant), or(...audiences), viewer.inApp?.shownSql()) as SQL
  // One clause per tenant, ORed: a replay across a director's schools reads them in one pass, in id order.
  const elsewhere = [...(viewer.otherTenants ?? [])].map(([tenant, roles]) => {
    const seen = [sql`${events.toTenant}`, sql`${events.toUsers} && ${textArray([viewer.userId])}`]
    if (roles.length) seen.push(sql`${events.toRoles} && ${textArray(roles)}`)
    return and(eq(events.tenant, tenant), or(...seen)) as SQL
  })
  return and(gt(events.expiresAt, sql`now()`), elsewhere.length ? or(inTenant, ...elsewhere) : inTenant) as SQL
}

/**
 * The rows of the log that are events as they stand: published (not an edit's or a recall's row, which only
 * streams carry) and not recalled. History, reads, counts and receipts see these only.
 */
export const isCurrentEvent = and(eq(events.kind, 'event'), isNull(events.recalledAt)) as SQL

/** visibleTo, of events as they stand (isCurrentEvent): what the inbox lists, counts, gets and marks. */
export const visibleEventTo = (viewer: Viewer): SQL => and(visibleTo(viewer), isCurrentEvent) as SQL
