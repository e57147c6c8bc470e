import { sql } from 'drizzle-orm'
import type { Caller } from '../auth.ts'
import { topicAllowed } from '../auth.ts'
import { BatchedReads, keyOfUser, type UserRef, userKey, usersJson } from '../db/batched-reads.ts'
import type { Database } from '../db/client.ts'
import { effectivePreferences, type InAppFilter, inAppFilterOf } from './preference-rules.ts'
import { TENANT_DEFAULTS } from './preferences.ts'
import type { Subscription } from './topic-subscriptions.ts'

/** What a stream needs to know of its user as it opens. */
export interface StreamProfile {
  /** The user's topic subscriptions, oldest first (followed by a stream opened without `?topics=`). */
  subscriptions: readonly Subscription[]
  /** What the user's preferences leave out of their streams (`inApp: false`); undefined: nothing. */
  inApp: InAppFilter | undefined
  /** The user's locale in the directory (as Intl writes it), if it has one. */
  locale: string | undefined
}

const NOBODY: StreamProfile = { subscriptions: [], inApp: undefined, locale: undefined }

/**
 * The profiles of users whose streams open, read for all the streams opening together in one query (the three
 * reads of a reconnect storm's thousands of opens a second: subscriptions, preferences and locale, each a query
 * per stream before). What each holds is what TopicSubscriptions.of, Preferences.inAppFilterOf and
 * DirectoryService.localeOf read one at a time.
 */
export class StreamProfiles {
  private readonly reads = new BatchedReads<UserRef, StreamProfile>(keyOfUser, (users) => this.readMany(users), NOBODY)

  constructor(private readonly database: Database) {}

  of(tenant: string, userId: string): Promise<StreamProfile> {
    return this.reads.read({ tenant, userId })
  }

  private async readMany(users: UserRef[]): Promise<Map<string, StreamProfile>> {
    const rows = await this.database.query<{
      tenant: string
      user_id: string
      subscriptions: string
      own: string | null
      defaults: string | null
      locale: string | null
    }>(sql`
      select w.tenant, w.user_id,
        (select coalesce(json_agg(json_build_object('topic', s.topic, 'addedBy', s.added_by, 'createdAt', s.created_at)
            order by s.created_at, s.topic), '[]')
          from topic_subscriptions s where s.tenant = w.tenant and s.user_id = w.user_id)::text as subscriptions,
        (select p.settings::text from preferences p where p.tenant = w.tenant and p.user_id = w.user_id) as own,
        (select p.settings::text from preferences p where p.tenant = w.tenant and p.user_id = ${TENANT_DEFAULTS})
          as defaults,
        (select d.locale from directory_users d where d.tenant = w.tenant and d.user_id = w.user_id) as locale
      from json_to_recordset(${usersJson(users)}::json) as w(tenant text, user_id text)`)
    return new Map(
      rows.map((r) => [
        userKey(r.tenant, r.user_id),
        {
          subscriptions: (
            JSON.parse(r.subscriptions) as Array<Omit<Subscription, 'createdAt'> & { createdAt: string }>
          ).map((s) => ({ ...s, createdAt: new Date(s.createdAt) })),
          inApp: inAppFilterOf(
            effectivePreferences(
              r.own === null ? undefined : JSON.parse(r.own),
              r.defaults === null ? undefined : JSON.parse(r.defaults),
            ),
          ),
          locale: r.locale ?? undefined,
        },
      ]),
    )
  }
}

/**
 * The topics a stream follows when it names none: the user's subscriptions that count for this token, those an
 * admin made and those of the user's own that its `topics` claim still allows (as pushes count them).
 */
export const followedTopics = (caller: Caller, subscriptions: readonly Subscription[]): string[] =>
  subscriptions.filter((s) => s.addedBy === 'admin' || topicAllowed(caller.topics, s.topic)).map((s) => s.topic)
