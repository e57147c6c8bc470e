import { type SQL, sql } from 'drizzle-orm'
import { z } from 'zod'
import { events } from '../db/schema.ts'
import { storableText } from '../db/storable-text.ts'
import { type Priority, prioritySchema } from './model.ts'
import { isTimeZone, type QuietHours, TIME_OF_DAY, WEEKDAYS } from './quiet-hours.ts'

// Notification preferences: what a user (or a tenant, for its users) wants of each event. The settings' shape
// (as requests send them and the `preferences` table stores them), what they decide, in JavaScript for the live
// streams and the dispatcher, and as SQL for reads and for the push plan of a publish. The two are held to the
// same answers by test/preference-rules.test.ts.

/** Rules per settings (a user's, or a tenant's defaults). */
export const MAX_RULES = 50

const TYPE_WORD = '[a-z0-9]+(?:[_-][a-z0-9]+)*'

/** An event type pattern: a type (`attendance.absent`), a prefix and `.*` (`grades.*`: `grades.posted`...), or `*`. */
export const typePatternSchema = storableText(100).regex(
  new RegExp(`^(?:\\*|${TYPE_WORD}(?:\\.${TYPE_WORD})*(?:\\.\\*)?)$`),
  'must be an event type ("attendance.absent"), a prefix and ".*" ("grades.*"), or "*"',
)

/** A topic pattern: a topic (`class:7A`), or a prefix and `*` (`class:*`), as token claims write them. */
export const topicPatternSchema = storableText(200)
  .min(1)
  .regex(/^[^*\s,]*\*?$/, 'must be a topic ("class:7A") or a prefix and "*" ("class:*"), without commas or spaces')

export const ruleSchema = z
  .strictObject({
    type: typePatternSchema.optional().describe('Events whose type matches: `attendance.absent`, `grades.*`, `*`.'),
    topic: topicPatternSchema.optional().describe('Events to a matching topic: `class:7A`, `class:*`.'),
    inApp: z
      .boolean()
      .optional()
      .describe('false: such events are not streamed, listed or counted as unread for the user (still stored).'),
    push: z.boolean().optional().describe('false: such events are not pushed to the user’s devices.'),
  })
  .superRefine((rule, ctx) => {
    if ((rule.type === undefined) === (rule.topic === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['type'], message: 'give either type or topic (one of them)' })
    }
    if (rule.inApp === undefined && rule.push === undefined) {
      ctx.addIssue({ code: 'custom', path: ['inApp'], message: 'say inApp, push or both' })
    }
  })
  .describe(
    'Matches events by type pattern or by topic. For each of inApp and push, the first rule that matches an event ' +
      'and says it decides (the user’s rules before the tenant’s); none: true.',
  )

export type Rule = z.infer<typeof ruleSchema>

export const pushSettingsSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('false: nothing is pushed (but `urgent`, see urgentBypass).'),
    minPriority: prioritySchema
      .default('normal')
      .describe('Events of a lower priority are not pushed (`low` never is).'),
  })
  .describe('The push switch. Absent: the tenant’s; the tenant’s absent: on, from `normal`.')

export const quietHoursSchema = z
  .strictObject({
    start: z.string().regex(TIME_OF_DAY, 'must be a time of day as HH:MM (24 h), like "22:00"'),
    end: z.string().regex(TIME_OF_DAY, 'must be a time of day as HH:MM (24 h), like "07:00"'),
    timeZone: z
      .string()
      .max(100)
      .refine(isTimeZone, 'must be an IANA time zone, like "Europe/Paris" or "UTC"')
      .describe('An IANA time zone name: the window follows its wall clock, daylight saving time included.'),
    days: z
      .array(z.enum(WEEKDAYS))
      .min(1)
      .max(7)
      .refine((days) => new Set(days).size === days.length, 'must not name a day twice')
      .default([...WEEKDAYS])
      .describe('The days a window starts on (22:00 to 07:00 on `fri` quiets Friday night); all by default.'),
  })
  .refine((q) => q.start !== q.end, { path: ['end'], message: 'must differ from start' })
  .describe(
    'From `start` to `end` (an end before the start is the next day), `normal` and `high` pushes wait until the ' +
      'window ends, then go out if the event is still unread; several with one collapseKey go out as the latest.',
  )

const settingsShape = {
  rules: z.array(ruleSchema).max(MAX_RULES).default([]),
  push: pushSettingsSchema.optional(),
  quietHours: quietHoursSchema
    .nullable()
    .optional()
    .describe('Absent: the tenant’s; null: none, whatever the tenant’s.'),
}

/** A user's own settings (`PUT /v1/me/preferences`): what they leave out, the tenant's defaults decide. */
export const userSettingsSchema = z.strictObject(settingsShape)

/** A tenant's defaults (`PUT /v1/tenant/preferences`, `admin`): its users' own settings override them. */
export const tenantSettingsSchema = z.strictObject({
  ...settingsShape,
  quietHours: quietHoursSchema.nullable().optional().describe('Absent or null: none, unless a user sets theirs.'),
  urgentBypass: z
    .boolean()
    .default(true)
    .describe(
      'true: `urgent` events ignore every rule, push switch and quiet hours (a school closure gets through). ' +
        'false: they follow them like any other.',
    ),
})

export type UserSettings = z.infer<typeof userSettingsSchema>
export type TenantSettings = z.infer<typeof tenantSettingsSchema>

/** A user's settings over the tenant's defaults: what decides each of their events. */
export interface EffectivePreferences {
  /** The user's rules, then the tenant's. */
  rules: Rule[]
  push: { enabled: boolean; minPriority: Priority }
  quietHours: QuietHours | null
  urgentBypass: boolean
}

/** With nothing stored: every event shown and pushed by the service's own rules. */
export const NO_PREFERENCES: EffectivePreferences = {
  rules: [],
  push: { enabled: true, minPriority: 'low' },
  quietHours: null,
  urgentBypass: true,
}

export function effectivePreferences(
  own: UserSettings | undefined,
  defaults: TenantSettings | undefined,
): EffectivePreferences {
  return {
    rules: [...(own?.rules ?? []), ...(defaults?.rules ?? [])],
    push: own?.push ?? defaults?.push ?? NO_PREFERENCES.push,
    quietHours: own && 'quietHours' in own ? (own.quietHours ?? null) : (defaults?.quietHours ?? null),
    urgentBypass: defaults?.urgentBypass ?? true,
  }
}

/** What rules look at of an event. */
export interface RuledEvent {
  type: string
  priority: Priority
  toTopics: readonly string[]
}

const PRIORITIES: readonly Priority[] = prioritySchema.options

const topicMatches = (pattern: string, topic: string) =>
  pattern.endsWith('*') ? topic.startsWith(pattern.slice(0, -1)) : pattern === topic

/** Whether a rule matches an event (as pushPreferencesSql and InAppFilter.shownSql match it in SQL). */
export function ruleMatches(rule: Rule, e: RuledEvent): boolean {
  if (rule.type !== undefined) {
    const p = rule.type
    return p === '*' || p === e.type || (p.endsWith('.*') && e.type.startsWith(p.slice(0, -1)))
  }
  const topic = rule.topic ?? ''
  return e.toTopics.some((t) => topicMatches(topic, t))
}

/** What the first matching rule that says `field` says; true when none does. */
function decide(rules: readonly Rule[], field: 'inApp' | 'push', e: RuledEvent): boolean {
  for (const rule of rules) if (rule[field] !== undefined && ruleMatches(rule, e)) return rule[field]
  return true
}

const bypasses = (p: EffectivePreferences, e: RuledEvent) => e.priority === 'urgent' && p.urgentBypass

/** Whether the event is streamed, listed and counted for the user. */
export const shownInApp = (p: EffectivePreferences, e: RuledEvent) => bypasses(p, e) || decide(p.rules, 'inApp', e)

/** Whether the event may be pushed to the user's devices at all (the push switch, its minimum, the rules). */
export function mayPush(p: EffectivePreferences, e: RuledEvent): boolean {
  if (bypasses(p, e)) return true
  return (
    p.push.enabled &&
    PRIORITIES.indexOf(e.priority) >= PRIORITIES.indexOf(p.push.minPriority) &&
    decide(p.rules, 'push', e)
  )
}

/** Whether quiet hours hold the event's push back (`normal`, `high`; `urgent` unless the tenant says otherwise). */
export const quietHoursApply = (p: EffectivePreferences, e: RuledEvent) =>
  p.quietHours !== null && e.priority !== 'low' && !bypasses(p, e)

/**
 * The in-app part of a user's preferences, for reads and streams: which events they do not see. Made only when
 * some rule says `inApp: false` (see inAppFilterOf); most users have none, and their reads and streams pay nothing.
 */
export class InAppFilter {
  /** The rules that say inApp, up to the last one that says false (the rest cannot change an answer). */
  private readonly rules: Rule[]

  constructor(private readonly preferences: EffectivePreferences) {
    const saying = preferences.rules.filter((r) => r.inApp !== undefined)
    const last = saying.findLastIndex((r) => r.inApp === false)
    this.rules = saying.slice(0, last + 1)
  }

  /** True when the user does not see `e` (the live streams ask). */
  hides(e: RuledEvent): boolean {
    return !shownInApp(this.preferences, e)
  }

  /** The same as SQL over `events`: true for an event the user sees (reads and replays add it to visibleTo). */
  shownSql(): SQL {
    const cases = this.rules.map((r) => sql`when ${literalMatchSql(r)} then ${r.inApp ? sql`true` : sql`false`}`)
    const decided = sql`(case ${sql.join(cases, sql` `)} else true end)`
    return this.preferences.urgentBypass ? sql`(${events.priority} = 'urgent' or ${decided})` : decided
  }
}

/** The user's in-app filter, or undefined when they hide nothing. */
export function inAppFilterOf(p: EffectivePreferences): InAppFilter | undefined {
  return p.rules.some((r) => r.inApp === false) ? new InAppFilter(p) : undefined
}

/** A rule of known patterns, matched against `events`: plain comparisons, each pattern a parameter. */
function literalMatchSql(rule: Rule): SQL {
  if (rule.type !== undefined) {
    if (rule.type === '*') return sql`true`
    if (rule.type.endsWith('.*')) return sql`starts_with(${events.type}, ${rule.type.slice(0, -1)})`
    return sql`${events.type} = ${rule.type}`
  }
  const topic = rule.topic ?? ''
  if (!topic.endsWith('*')) return sql`${topic} = any(${events.toTopics})`
  return sql`exists (select 1 from unnest(${events.toTopics}) as ruled(topic)
    where starts_with(ruled.topic, ${topic.slice(0, -1)}))`
}

/** Where the columns of one (event, recipient) pair are, for pushPreferencesSql. */
export interface PushDecisionInput {
  tenant: SQL
  userId: SQL
  type: SQL
  priority: SQL
  topics: SQL
}

/** What the push plan adds to its select for the recipients' preferences: see pushPreferencesSql. */
export interface PushPreferences {
  /** Joins to add after the relation the input's columns come from. */
  joins: SQL
  /** True when the event may be pushed to the recipient (mayPush). */
  mayPush: SQL
  /** True when the recipient sees the event in the app (shownInApp). */
  inApp: SQL
}

/**
 * The recipients' preferences as the push plan of a publish applies them, set-based, in its one statement: each
 * (event, recipient) row is joined to the user's stored row and the tenant's (primary-key lookups), and the rules
 * of both, read in one pass as typed columns (jsonb_to_recordset), give the first that says `push` and the first
 * that says `inApp` (mayPush and shownInApp, as SQL). Without a stored row for the user or the tenant both are true.
 */
export function pushPreferencesSql(i: PushDecisionInput): PushPreferences {
  const own = sql.raw('pref_own.settings')
  const dflt = sql.raw('pref_dflt.settings')
  const pushOf = sql`coalesce(${own}->'push', ${dflt}->'push')`
  const priorities = sql.raw(`array[${PRIORITIES.map((p) => `'${p}'`).join(', ')}]`)
  const none = sql`(${own} is null and ${dflt} is null)`
  const bypass = sql`(${i.priority} = 'urgent' and coalesce((${dflt}->>'urgentBypass')::boolean, true))`
  // A rule as typed columns matched against the event: as ruleMatches.
  const matches = sql`(case when r.type is not null then
      r.type = '*' or r.type = ${i.type} or (right(r.type, 2) = '.*' and starts_with(${i.type}, left(r.type, -1)))
    else
      r.topic = any(${i.topics}) or (right(r.topic, 1) = '*' and exists (
        select 1 from unnest(${i.topics}) as ruled(topic) where starts_with(ruled.topic, left(r.topic, -1))))
    end)`
  return {
    joins: sql`
      left join preferences pref_own on pref_own.tenant = ${i.tenant} and pref_own.user_id = ${i.userId}
      left join preferences pref_dflt on pref_dflt.tenant = ${i.tenant} and pref_dflt.user_id = ''
      left join lateral (
        select (array_agg(r.push order by r.n) filter (where r.push is not null))[1] as push,
          (array_agg(r.in_app order by r.n) filter (where r.in_app is not null))[1] as in_app
        from rows from (jsonb_to_recordset(
            coalesce(${own}->'rules', '[]'::jsonb) || coalesce(${dflt}->'rules', '[]'::jsonb))
          as (type text, topic text, "inApp" boolean, push boolean)) with ordinality as r(type, topic, in_app, push, n)
        where ${matches}) pref_rule on true`,
    mayPush: sql`(case when ${none} or ${bypass} then true
      else coalesce((${pushOf}->>'enabled')::boolean, true)
        and array_position(${priorities}, ${i.priority}::text)
          >= array_position(${priorities}, coalesce(${pushOf}->>'minPriority', 'low'))
        and coalesce(pref_rule.push, true)
      end)`,
    inApp: sql`(case when ${none} or ${bypass} then true else coalesce(pref_rule.in_app, true) end)`,
  }
}
