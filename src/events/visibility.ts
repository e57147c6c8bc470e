import { and, eq, gt, or, type SQL, sql } from 'drizzle-orm'
import type { Caller } from '../auth.ts'
import { events, topicSubscriptions } from '../db/schema.ts'

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
}

/**
 * REST reads see every topic the token allows and every topic the user follows (a stream sees the topics it
 * follows: StreamConnection.viewer).
 */
export const viewerOf = (caller: Caller): Viewer => ({
  tenant: caller.tenant,
  userId: caller.userId,
  roles: caller.roles,
  topicPatterns: caller.topics,
  withSubscriptions: true,
})

const textArray = (values: readonly string[]) =>
  sql`array[${sql.join(
    values.map((v) => sql`${v}`),
    sql`, `,
  )}]::text[]`

/**
 * The one definition of "this viewer may see this event", as SQL: same tenant, not expired, and named by
 * user, role, tenant or topic. The stream's in-memory index (stream/hub.ts) implements the same rule.
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
  return and(eq(events.tenant, viewer.tenant), gt(events.expiresAt, sql`now()`), or(...audiences)) as SQL
}
