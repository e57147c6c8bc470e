import { and, eq, inArray, sql } from 'drizzle-orm'
import { type Caller, requireScope, topicAllowed } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { topicSubscriptions } from '../db/schema.ts'
import { NotAllowedError } from '../service-errors.ts'

/** At most this many members added or removed in one request. */
export const MAX_MEMBERS_PER_REQUEST = 1_000
/** Topics one user may follow: a school's classes, clubs and year groups, not a firehose. */
export const MAX_TOPICS_PER_USER = 200

/** One user's subscription changed (their open streams that follow their subscriptions must follow it). */
export interface SubscriptionChange {
  tenant: string
  userId: string
  topic: string
  subscribed: boolean
}

/** A topic the user follows, and who made the subscription. */
export interface Subscription {
  topic: string
  addedBy: 'self' | 'admin'
  createdAt: Date
}

/**
 * The topics users follow (the seeds' channels). A user subscribes within their token's `topics` claim (which
 * may hold patterns such as `class.*`); a tenant admin adds and removes members in bulk. Streams opened without
 * `?topics=` follow these, live, and topic events are pushed to the topics' subscribers.
 */
export class TopicSubscriptions {
  constructor(
    private readonly database: Database,
    /** Told of every change that took effect, to update open streams here and on the other instances. */
    private readonly onChange: (changes: SubscriptionChange[]) => void,
  ) {}

  /** The user's subscriptions, oldest first. */
  async of(tenant: string, userId: string): Promise<Subscription[]> {
    return this.database.db
      .select({
        topic: topicSubscriptions.topic,
        addedBy: topicSubscriptions.addedBy,
        createdAt: topicSubscriptions.createdAt,
      })
      .from(topicSubscriptions)
      .where(and(eq(topicSubscriptions.tenant, tenant), eq(topicSubscriptions.userId, userId)))
      .orderBy(topicSubscriptions.createdAt, topicSubscriptions.topic)
  }

  /** Subscribes the caller to `topic`, which their token's `topics` claim must allow. Idempotent. */
  async subscribe(caller: Caller, topic: string): Promise<void> {
    if (!topicAllowed(caller.topics, topic)) {
      throw new NotAllowedError(`Your token's topics claim does not allow subscribing to "${topic}".`)
    }
    const [{ n }] = await this.database.query<{ n: number }>(
      sql`select count(*)::int as n from ${topicSubscriptions}
          where ${topicSubscriptions.tenant} = ${caller.tenant} and ${topicSubscriptions.userId} = ${caller.userId}`,
    )
    if (n >= MAX_TOPICS_PER_USER) {
      throw new NotAllowedError(`You follow ${MAX_TOPICS_PER_USER} topics already; unsubscribe from one first.`)
    }
    await this.add(caller.tenant, [caller.userId], topic, 'self')
  }

  /** Unsubscribes the caller from `topic` (whoever subscribed them). Idempotent. */
  async unsubscribe(caller: Caller, topic: string): Promise<void> {
    await this.remove(caller.tenant, [caller.userId], topic)
  }

  /** A tenant admin adds members to a topic. Returns how many were not members yet. */
  async addMembers(caller: Caller, topic: string, userIds: readonly string[]): Promise<number> {
    requireScope(caller, 'admin', 'Managing a topic’s members')
    return this.add(caller.tenant, userIds, topic, 'admin')
  }

  /** A tenant admin removes members from a topic. Returns how many were members. */
  async removeMembers(caller: Caller, topic: string, userIds: readonly string[]): Promise<number> {
    requireScope(caller, 'admin', 'Managing a topic’s members')
    return this.remove(caller.tenant, userIds, topic)
  }

  /** A topic's members, for an admin. */
  async members(caller: Caller, topic: string): Promise<string[]> {
    requireScope(caller, 'admin', 'Listing a topic’s members')
    const rows = await this.database.db
      .select({ userId: topicSubscriptions.userId })
      .from(topicSubscriptions)
      .where(and(eq(topicSubscriptions.tenant, caller.tenant), eq(topicSubscriptions.topic, topic)))
      .orderBy(topicSubscriptions.userId)
    return rows.map((r) => r.userId)
  }

  private async add(tenant: string, userIds: readonly string[], topic: string, addedBy: 'self' | 'admin') {
    const added = await this.database.db
      .insert(topicSubscriptions)
      .values([...new Set(userIds)].map((userId) => ({ tenant, userId, topic, addedBy })))
      .onConflictDoNothing()
      .returning({ userId: topicSubscriptions.userId })
    this.onChange(added.map(({ userId }) => ({ tenant, userId, topic, subscribed: true })))
    return added.length
  }

  private async remove(tenant: string, userIds: readonly string[], topic: string) {
    const removed = await this.database.db
      .delete(topicSubscriptions)
      .where(
        and(
          eq(topicSubscriptions.tenant, tenant),
          eq(topicSubscriptions.topic, topic),
          inArray(topicSubscriptions.userId, [...new Set(userIds)]),
        ),
      )
      .returning({ userId: topicSubscriptions.userId })
    this.onChange(removed.map(({ userId }) => ({ tenant, userId, topic, subscribed: false })))
    return removed.length
  }
}
