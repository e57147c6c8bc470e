import { sql } from 'drizzle-orm'
import { type Caller, requireScope } from '../auth.ts'
import { userKey } from '../db/batched-reads.ts'
import type { Database } from '../db/client.ts'
import {
  type EffectivePreferences,
  effectivePreferences,
  type InAppFilter,
  inAppFilterOf,
  NO_PREFERENCES,
  type TenantSettings,
  type UserSettings,
} from './preference-rules.ts'

/** The row of a tenant's defaults: its `user_id`. */
export const TENANT_DEFAULTS = ''

/** Settings and when they were last set (null: never, or reset to nothing). */
export interface Stored<S> {
  settings: S
  updatedAt: Date | null
}

/** Someone's preferences changed: a user's (`userId`), or a tenant's defaults (`userId` ''), which are everyone's. */
export interface PreferenceChange {
  tenant: string
  userId: string
}

/** Settings that say nothing: stored as no row, so that the push plan finds nothing to look at. */
const saysNothing = (s: UserSettings | TenantSettings) =>
  s.rules.length === 0 &&
  s.push === undefined &&
  !('quietHours' in s && s.quietHours !== undefined) &&
  (!('urgentBypass' in s) || s.urgentBypass)

/**
 * Notification preferences (`preferences`): each user's own, and each tenant's defaults, which the users' own
 * override. Reads and the live streams apply the in-app part (events/preference-rules.ts InAppFilter), the push
 * plan of a publish the push part (pushDecisionsSql), the dispatcher quiet hours (push/quiet-hours.ts).
 */
export class Preferences {
  constructor(
    private readonly database: Database,
    /**
     * Told of every change once it is stored, to update the open streams here and on the other instances;
     * awaited, so a change applies to this instance's streams before its request is answered.
     */
    private readonly onChange: (change: PreferenceChange) => Promise<void>,
  ) {}

  /** The caller's own settings (empty when they set none: the tenant's defaults apply). */
  async mine(caller: Caller): Promise<Stored<UserSettings>> {
    const row = await this.read(caller.tenant, caller.userId)
    return row ?? { settings: { rules: [] }, updatedAt: null }
  }

  /** Replaces the caller's own settings; empty settings remove them. */
  async setMine(caller: Caller, settings: UserSettings): Promise<Stored<UserSettings>> {
    return this.write(caller.tenant, caller.userId, settings)
  }

  /** The tenant's defaults, for its admins. */
  async tenantDefaults(caller: Caller): Promise<Stored<TenantSettings>> {
    requireScope(caller, 'admin', 'Reading the tenant’s preferences')
    const row = await this.read(caller.tenant, TENANT_DEFAULTS)
    return (
      (row as Stored<TenantSettings> | undefined) ?? { settings: { rules: [], urgentBypass: true }, updatedAt: null }
    )
  }

  /** Replaces the tenant's defaults (`admin`). */
  async setTenantDefaults(caller: Caller, settings: TenantSettings): Promise<Stored<TenantSettings>> {
    requireScope(caller, 'admin', 'Setting the tenant’s preferences')
    return this.write(caller.tenant, TENANT_DEFAULTS, settings)
  }

  /** What decides the events of each of `userIds` (one query, whatever their number). */
  async effective(tenant: string, userIds: readonly string[]): Promise<Map<string, EffectivePreferences>> {
    const all = await effectivePreferencesOf(
      this.database,
      userIds.map((userId) => ({ tenant, userId })),
    )
    return new Map(userIds.map((u) => [u, all.get(userKey(tenant, u)) ?? NO_PREFERENCES]))
  }

  /** The in-app filter of each of `userIds` (undefined for those who hide nothing). */
  async inAppFilters(tenant: string, userIds: readonly string[]): Promise<Map<string, InAppFilter | undefined>> {
    const all = await this.effective(tenant, userIds)
    return new Map([...all].map(([u, p]) => [u, inAppFilterOf(p)]))
  }

  /** One user's in-app filter: what their reads and streams leave out (undefined: nothing). */
  async inAppFilterOf(tenant: string, userId: string): Promise<InAppFilter | undefined> {
    return (await this.inAppFilters(tenant, [userId])).get(userId)
  }

  private async read(tenant: string, userId: string): Promise<Stored<UserSettings | TenantSettings> | undefined> {
    const [row] = await this.database.query<{ settings: string; updated_at: Date | string }>(sql`
      select settings::text as settings, updated_at from preferences where tenant = ${tenant} and user_id = ${userId}`)
    return row && { settings: JSON.parse(row.settings), updatedAt: new Date(row.updated_at) }
  }

  private async write<S extends UserSettings | TenantSettings>(
    tenant: string,
    userId: string,
    settings: S,
  ): Promise<Stored<S>> {
    let updatedAt: Date | null = null
    if (saysNothing(settings)) {
      await this.database.query(sql`delete from preferences where tenant = ${tenant} and user_id = ${userId}`)
    } else {
      // As text, cast by the database: a driver given jsonb itself may encode the text once more.
      const [row] = await this.database.query<{ updated_at: Date | string }>(sql`
        insert into preferences (tenant, user_id, settings)
        values (${tenant}, ${userId}, ${JSON.stringify(settings)}::text::jsonb)
        on conflict (tenant, user_id) do update set settings = excluded.settings, updated_at = now()
        returning updated_at`)
      updatedAt = new Date(row.updated_at)
    }
    await this.onChange({ tenant, userId })
    return { settings, updatedAt }
  }
}

/** The key of a user in the maps of effectivePreferencesOf. */
export { userKey }

/**
 * What decides the events of each user (by userKey), from their settings over their tenant's defaults: one query
 * for any number of users of any tenants (the push dispatcher asks for those of a claimed batch). With
 * `directoryTimeZones` (the push dispatcher's quiet hours), a user whose quiet hours are the tenant's (their own
 * name none) gets them in the time zone the user directory gives them, if any: one more query, only then.
 */
export async function effectivePreferencesOf(
  database: Database,
  users: ReadonlyArray<{ tenant: string; userId: string }>,
  options: { directoryTimeZones?: boolean } = {},
): Promise<Map<string, EffectivePreferences>> {
  const result = new Map<string, EffectivePreferences>()
  if (!users.length) return result
  const wanted = users.map((u) => ({ tenant: u.tenant, user_id: u.userId }))
  const rows = await database.query<{ tenant: string; user_id: string; settings: string }>(sql`
    select p.tenant, p.user_id, p.settings::text as settings from preferences p
    where (p.tenant, p.user_id) in (
      select w.tenant, w.user_id from json_to_recordset(${JSON.stringify(wanted)}::json) as w(tenant text, user_id text)
      union select w.tenant, ${TENANT_DEFAULTS}::text
      from json_to_recordset(${JSON.stringify(wanted)}::json) as w(tenant text, user_id text))`)
  const stored = new Map(rows.map((r) => [userKey(r.tenant, r.user_id), JSON.parse(r.settings)]))
  /** Users on their tenant's quiet hours, for the directory's time zones. */
  const onTenantHours: Array<{ tenant: string; user_id: string }> = []
  for (const { tenant, userId } of users) {
    const defaults = stored.get(userKey(tenant, TENANT_DEFAULTS)) as TenantSettings | undefined
    const own = stored.get(userKey(tenant, userId)) as UserSettings | undefined
    const effective = effectivePreferences(own, defaults)
    result.set(userKey(tenant, userId), effective)
    if (options.directoryTimeZones && effective.quietHours && !(own && 'quietHours' in own)) {
      onTenantHours.push({ tenant, user_id: userId })
    }
  }
  if (onTenantHours.length) await inDirectoryTimeZones(database, result, onTenantHours)
  return result
}

/** The tenant's quiet hours of these users, in the time zone the directory gives each (those it gives one). */
async function inDirectoryTimeZones(
  database: Database,
  result: Map<string, EffectivePreferences>,
  users: Array<{ tenant: string; user_id: string }>,
) {
  const zones = await database.query<{ tenant: string; user_id: string; time_zone: string }>(sql`
    select d.tenant, d.user_id, d.time_zone from directory_users d
    where d.time_zone is not null and (d.tenant, d.user_id) in (
      select w.tenant, w.user_id from json_to_recordset(${JSON.stringify(users)}::json) as w(tenant text, user_id text))`)
  for (const z of zones) {
    const key = userKey(z.tenant, z.user_id)
    const p = result.get(key)
    if (p?.quietHours) result.set(key, { ...p, quietHours: { ...p.quietHours, timeZone: z.time_zone } })
  }
}
