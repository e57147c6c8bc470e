import { and, asc, eq, getTableColumns, gt, type SQL, sql } from 'drizzle-orm'
import { type Caller, requireScope } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { directoryUsers } from '../db/schema.ts'
import { topicPatternMatches } from '../events/visibility.ts'
import { NotFoundError } from '../service-errors.ts'
import { cursorOfUser, userOfCursor } from '../user-cursor.ts'
import {
  type BatchResult,
  canonicalLocale,
  type DirectoryListQuery,
  type DirectoryOperation,
  type DirectoryPage,
  type DirectoryUser,
  type DirectoryUserFields,
} from './model.ts'

type Row = typeof directoryUsers.$inferSelect

const userOf = (row: Row): DirectoryUser => ({
  id: row.userId,
  roles: row.roles,
  topics: row.topics,
  displayName: row.displayName,
  locale: row.locale,
  timeZone: row.timeZone,
  updatedAt: row.updatedAt.toISOString(),
})

/** The fields as stored: roles and topics without repeats (in the order first given), the locale as Intl writes it. */
const stored = (f: DirectoryUserFields) => ({
  roles: [...new Set(f.roles)],
  topics: [...new Set(f.topics)],
  displayName: f.displayName ?? null,
  locale: f.locale == null ? null : (canonicalLocale(f.locale) ?? f.locale),
  timeZone: f.timeZone ?? null,
})

/** Users whose topics include `topic`, exactly or by a pattern of theirs ending in `*`. */
const hasTopic = (topic: string): SQL =>
  sql`exists (select 1 from unnest(${directoryUsers.topics}) as member(pattern)
    where ${topicPatternMatches(sql`member.pattern`, topic)})`

/**
 * The user directory: who exists in a tenant, with their roles, topics, name, locale and time zone, kept by the
 * tenant's backend (server to server, the `admin` scope). Always the caller's tenant. Who receives role and topic
 * audiences is decided from it elsewhere; what a connected user may see stays with their token's claims.
 */
export class DirectoryService {
  constructor(private readonly database: Database) {}

  /**
   * The user's locale as the directory has it (as Intl writes it), or undefined: one primary-key lookup. What the
   * text of events rendered per locale (event-types/) is shown in.
   */
  async localeOf(tenant: string, userId: string): Promise<string | undefined> {
    const [row] = await this.database.db
      .select({ locale: directoryUsers.locale })
      .from(directoryUsers)
      .where(and(eq(directoryUsers.tenant, tenant), eq(directoryUsers.userId, userId)))
    return row?.locale ?? undefined
  }

  /** One user of the caller's tenant. */
  async get(caller: Caller, id: string): Promise<DirectoryUser> {
    requireScope(caller, 'admin', 'Reading the user directory')
    const [row] = await this.database.db
      .select()
      .from(directoryUsers)
      .where(and(eq(directoryUsers.tenant, caller.tenant), eq(directoryUsers.userId, id)))
    if (!row) throw new NotFoundError(`No user "${id}" in the directory.`)
    return userOf(row)
  }

  /** Creates or replaces (whole) one user; `created` tells which. */
  async put(
    caller: Caller,
    id: string,
    fields: DirectoryUserFields,
  ): Promise<{ user: DirectoryUser; created: boolean }> {
    requireScope(caller, 'admin', 'Changing the user directory')
    const values = stored(fields)
    const [row] = await this.database.db
      .insert(directoryUsers)
      .values({ tenant: caller.tenant, userId: id, ...values })
      .onConflictDoUpdate({
        target: [directoryUsers.tenant, directoryUsers.userId],
        set: { ...values, updatedAt: sql`now()` },
      })
      // xmax is 0 on a row version an insert made, the updating transaction's id on one an update made.
      .returning({ ...getTableColumns(directoryUsers), created: sql<boolean>`(xmax = 0)` })
    const { created, ...user } = row
    return { user: userOf(user), created: Boolean(created) }
  }

  /** Removes one user; a user that is not there is a NotFoundError. */
  async remove(caller: Caller, id: string): Promise<void> {
    requireScope(caller, 'admin', 'Changing the user directory')
    const removed = await this.database.db
      .delete(directoryUsers)
      .where(and(eq(directoryUsers.tenant, caller.tenant), eq(directoryUsers.userId, id)))
      .returning({ id: directoryUsers.userId })
    if (!removed.length) throw new NotFoundError(`No user "${id}" in the directory.`)
  }

  /**
   * Applies up to MAX_BATCH_OPERATIONS upserts and deletes, validated beforehand (the route's schema), in one
   * statement, hence one transaction: all of them or, should the database refuse anything, none. Of the operations
   * on one id, the last counts (as if they were applied in order).
   */
  async batch(caller: Caller, operations: readonly DirectoryOperation[]): Promise<BatchResult> {
    requireScope(caller, 'admin', 'Changing the user directory')
    const last = new Map<string, DirectoryOperation>()
    for (const op of operations) {
      last.delete(op.id) // keeps the map in the order of each id's last operation
      last.set(op.id, op)
    }
    const upserts: Array<Record<string, unknown>> = []
    const deletes: string[] = []
    for (const op of last.values()) {
      if (op.op === 'delete') deletes.push(op.id)
      else {
        const v = stored(op)
        upserts.push({
          user_id: op.id,
          roles: v.roles,
          topics: v.topics,
          display_name: v.displayName,
          locale: v.locale,
          time_zone: v.timeZone,
        })
      }
    }
    // The upserted and the deleted ids are apart (one operation per id), so the two parts never touch one row.
    const [counts] = await this.database.query<{ upserted: number; deleted: number }>(sql`
      with upserts as (
        select * from json_to_recordset(${JSON.stringify(upserts)}::json)
          as u(user_id text, roles text[], topics text[], display_name text, locale text, time_zone text)
      ), upserted as (
        insert into ${directoryUsers} (tenant, user_id, roles, topics, display_name, locale, time_zone)
        select ${caller.tenant}, user_id, roles, topics, display_name, locale, time_zone from upserts
        on conflict (tenant, user_id) do update set roles = excluded.roles, topics = excluded.topics,
          display_name = excluded.display_name, locale = excluded.locale, time_zone = excluded.time_zone,
          updated_at = now()
        returning 1
      ), deleted as (
        delete from ${directoryUsers}
        where tenant = ${caller.tenant}
          and user_id in (select json_array_elements_text(${JSON.stringify(deletes)}::json))
        returning 1
      )
      select (select count(*) from upserted)::int as upserted, (select count(*) from deleted)::int as deleted`)
    return { upserted: Number(counts.upserted), deleted: Number(counts.deleted) }
  }

  /** The tenant's users in id order, a page at a time, optionally those with a role and, or, a topic. */
  async list(caller: Caller, query: DirectoryListQuery): Promise<DirectoryPage> {
    requireScope(caller, 'admin', 'Reading the user directory')
    const after = query.cursor === undefined ? undefined : userOfCursor(query.cursor)
    const rows = await this.database.db
      .select()
      .from(directoryUsers)
      .where(
        and(
          eq(directoryUsers.tenant, caller.tenant),
          // `@>` is what the roles' GIN index serves.
          query.role === undefined ? undefined : sql`${directoryUsers.roles} @> array[${query.role}]::text[]`,
          query.topic === undefined ? undefined : hasTopic(query.topic),
          after === undefined ? undefined : gt(directoryUsers.userId, after),
        ),
      )
      .orderBy(asc(directoryUsers.userId))
      .limit(query.limit + 1)
    const page = rows.slice(0, query.limit)
    const next = rows.length > query.limit ? cursorOfUser(page[page.length - 1].userId) : null
    return { users: page.map(userOf), next }
  }
}
