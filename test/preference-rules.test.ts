import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { Caller } from '../src/auth.ts'
import {
  inAppFilterOf,
  mayPush,
  pushPreferencesSql,
  type RuledEvent,
  shownInApp,
  type TenantSettings,
  tenantSettingsSchema,
  type UserSettings,
  userSettingsSchema,
} from '../src/events/preference-rules.ts'
import { Preferences } from '../src/events/preferences.ts'
import { describeEachBackend, freshDatabase, type TestDatabase } from './helpers/backends.ts'

// Issue 18, part 1: what preferences decide is written twice, in JavaScript (open streams, the dispatcher) and as
// SQL (reads and replays, the push plan of a publish). Both are held here to the same answers, on a real database,
// over every kind of rule: type patterns exact, by prefix and `*`; topics exact, by prefix and `*`; the user's rules
// before the tenant's; the push switch and its minimum; urgent with and without the tenant's bypass.

const TENANT = 'rules-school'

const tenantDefaults: TenantSettings = tenantSettingsSchema.parse({
  rules: [
    { type: 'lunch.*', inApp: false, push: false },
    { topic: 'club:*', push: false },
    { type: 'attendance.absent', inApp: true },
  ],
  push: { enabled: true, minPriority: 'normal' },
})

const users: Record<string, UserSettings> = {
  plain: userSettingsSchema.parse({}),
  hidesGrades: userSettingsSchema.parse({ rules: [{ type: 'grades.*', inApp: false }] }),
  overridesLunch: userSettingsSchema.parse({ rules: [{ type: 'lunch.menu', inApp: true, push: true }] }),
  topicRules: userSettingsSchema.parse({
    rules: [
      { topic: 'class:7A', inApp: false },
      { topic: '*', push: false },
      { topic: 'club:chess', push: true },
    ],
  }),
  everything: userSettingsSchema.parse({ rules: [{ type: '*', inApp: false }], push: { minPriority: 'high' } }),
  pushOff: userSettingsSchema.parse({ push: { enabled: false } }),
  exactType: userSettingsSchema.parse({ rules: [{ type: 'grades', inApp: false, push: false }] }),
}

const events: RuledEvent[] = []
for (const type of ['grades', 'grades.posted', 'grades.term.final', 'gradesx.posted', 'lunch.menu', 'lunch.late']) {
  for (const priority of ['low', 'normal', 'high', 'urgent'] as const) {
    for (const toTopics of [[], ['class:7A'], ['club:chess'], ['club:drama', 'class:7B']]) {
      events.push({ type, priority, toTopics })
    }
  }
}
events.push({ type: 'attendance.absent', priority: 'normal', toTopics: [] })

describeEachBackend('preference rules: JavaScript and SQL agree', (backend) => {
  let db: TestDatabase
  let preferences: Preferences
  beforeAll(async () => {
    db = await freshDatabase(backend)
    preferences = new Preferences(db.database, async () => {})
  })
  afterAll(() => db?.drop())

  const admin: Caller = { userId: 'head', tenant: TENANT, roles: [], topics: [], scopes: new Set(['admin']) }
  const userCaller = (userId: string): Caller => ({ userId, tenant: TENANT, roles: [], topics: [], scopes: new Set() })

  /** The push plan's SQL answers for every (user, event), from the stored rows. */
  async function sqlDecisions() {
    const pairs = Object.keys(users).flatMap((userId) =>
      events.map((e, i) => ({
        i,
        tenant: TENANT,
        user_id: userId,
        type: e.type,
        priority: e.priority,
        topics: e.toTopics,
      })),
    )
    const preferences = pushPreferencesSql({
      tenant: sql`e.tenant`,
      userId: sql`e.user_id`,
      type: sql`e.type`,
      priority: sql`e.priority`,
      topics: sql`e.topics`,
    })
    return db.database.query<{ i: number; user_id: string; may_push: boolean; in_app: boolean }>(sql`
      select e.i, e.user_id, ${preferences.mayPush} as may_push, ${preferences.inApp} as in_app
      from json_to_recordset(${JSON.stringify(pairs)}::json)
        as e(i int, tenant text, user_id text, type text, priority text, topics text[])
      ${preferences.joins}`)
  }

  it.each([
    ['with the tenant’s defaults stored', true],
    ['without them', false],
  ])(
    '%s, the push plan’s SQL, the reads’ SQL and the streams’ JavaScript give the same answers',
    async (_, withDefaults) => {
      await preferences.setTenantDefaults(admin, withDefaults ? tenantDefaults : tenantSettingsSchema.parse({}))
      for (const [userId, settings] of Object.entries(users)) await preferences.setMine(userCaller(userId), settings)
      const effective = await preferences.effective(TENANT, Object.keys(users))

      const decided = await sqlDecisions()
      expect(decided).toHaveLength(events.length * Object.keys(users).length)
      for (const row of decided) {
        const p = effective.get(row.user_id)
        if (!p) throw new Error(`no preferences for ${row.user_id}`)
        const e = events[row.i]
        const what = `${row.user_id}: ${JSON.stringify(e)}`
        expect(row.in_app, what).toBe(shownInApp(p, e))
        expect(row.may_push, what).toBe(mayPush(p, e))
      }

      // The reads' SQL (InAppFilter.shownSql, added to visibleTo) over the same events, stored.
      await db.database.query(sql`delete from events where tenant = ${TENANT}`)
      const rows = events.map((e, i) => ({ title: String(i), type: e.type, priority: e.priority, topics: e.toTopics }))
      await db.database.query(sql`
      insert into events (tenant, type, title, priority, actor, to_topics, to_tenant, expires_at)
      select ${TENANT}, r.type, r.title, r.priority, 'office', r.topics, true, now() + interval '1 day'
      from json_to_recordset(${JSON.stringify(rows)}::json) as r(title text, type text, priority text, topics text[])`)
      for (const userId of Object.keys(users)) {
        const p = effective.get(userId)
        if (!p) throw new Error(`no preferences for ${userId}`)
        const filter = inAppFilterOf(p)
        const expected = events.flatMap((e, i) => (shownInApp(p, e) ? [String(i)] : []))
        expect(filter === undefined, userId).toBe(expected.length === events.length)
        const shown = await db.database.query<{ title: string }>(sql`
        select title from events where tenant = ${TENANT} and ${filter ? filter.shownSql() : sql`true`} order by id`)
        expect(
          shown.map((r) => r.title),
          userId,
        ).toEqual(expected)
        for (const e of events)
          expect(filter?.hides(e) ?? false, `${userId}: ${JSON.stringify(e)}`).toBe(!shownInApp(p, e))
      }
    },
  )

  it('the answers are the ones the rules say, not merely the same twice', async () => {
    await preferences.setTenantDefaults(admin, tenantDefaults)
    const p = await preferences.effective(TENANT, Object.keys(users))
    const get = (u: string) => p.get(u) ?? expect.fail(u)
    const e = (type: string, priority: RuledEvent['priority'] = 'normal', toTopics: string[] = []) => ({
      type,
      priority,
      toTopics,
    })
    expect(shownInApp(get('hidesGrades'), e('grades.posted'))).toBe(false)
    expect(shownInApp(get('hidesGrades'), e('grades.term.final'))).toBe(false)
    expect(shownInApp(get('hidesGrades'), e('grades'))).toBe(true) // `grades.*` is what follows `grades.`
    expect(shownInApp(get('hidesGrades'), e('gradesx.posted'))).toBe(true)
    expect(shownInApp(get('hidesGrades'), e('grades.posted', 'urgent'))).toBe(true) // urgent gets through
    expect(shownInApp(get('plain'), e('lunch.menu'))).toBe(false) // the tenant's rule
    expect(shownInApp(get('overridesLunch'), e('lunch.menu'))).toBe(true) // the user's own comes first
    expect(shownInApp(get('overridesLunch'), e('lunch.late'))).toBe(false)
    expect(mayPush(get('plain'), e('notice', 'normal', ['club:chess']))).toBe(false) // the tenant's topic rule
    expect(mayPush(get('topicRules'), e('notice', 'normal', ['club:chess']))).toBe(false) // `*` comes first
    expect(mayPush(get('topicRules'), e('notice', 'normal', []))).toBe(true) // no topic: `*` matches nothing
    expect(shownInApp(get('topicRules'), e('notice', 'normal', ['class:7A']))).toBe(false)
    expect(mayPush(get('everything'), e('notice', 'normal'))).toBe(false) // under its minimum, high
    expect(mayPush(get('everything'), e('notice', 'high'))).toBe(true)
    expect(mayPush(get('pushOff'), e('notice', 'high'))).toBe(false)
    expect(mayPush(get('pushOff'), e('notice', 'urgent'))).toBe(true)
    expect(mayPush(get('plain'), e('notice', 'low'))).toBe(false) // the tenant's minimum: normal

    await preferences.setTenantDefaults(admin, { ...tenantDefaults, urgentBypass: false })
    const strict = await preferences.effective(TENANT, ['pushOff', 'hidesGrades'])
    expect(mayPush(strict.get('pushOff') ?? expect.fail(), e('notice', 'urgent'))).toBe(false)
    expect(shownInApp(strict.get('hidesGrades') ?? expect.fail(), e('grades.posted', 'urgent'))).toBe(false)
  })
})
