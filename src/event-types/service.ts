import { sql } from 'drizzle-orm'
import { type Caller, requireScope } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { canonicalLocale } from '../directory/model.ts'
import {
  DEFAULT_EVENT_TTL_S,
  type EventRequest,
  finalEventIssues,
  MAX_BODY_CHARS,
  MAX_TITLE_CHARS,
  type NewEvent,
} from '../events/model.ts'
import { type FieldError, InvalidFieldsError, NotFoundError } from '../service-errors.ts'
import type { EventType, EventTypeRegistration, Templates, TypeDefaults } from './model.ts'
import { cutTo, renderTemplate } from './templates.ts'

/**
 * How long this instance trusts its copy of a tenant's types. A PUT or DELETE here drops the copy at once; one on
 * another instance is seen within this.
 */
export const TYPE_CACHE_MS = 5_000
/** Tenants whose types are kept at once; past it the copies are dropped (and read again when needed). */
const MAX_CACHED_TENANTS = 10_000

interface TypeRow {
  type: string
  description: string | null
  category: string | null
  defaults: string
  inbox: boolean
  push: boolean
  live_only: boolean
  templates: string | null
  updated_at: Date | string
}

const typeOf = (r: TypeRow): EventType => ({
  type: r.type,
  description: r.description,
  category: r.category,
  defaults: JSON.parse(r.defaults) as TypeDefaults,
  inbox: r.inbox,
  push: r.push,
  liveOnly: r.live_only,
  templates: r.templates === null ? null : (JSON.parse(r.templates) as Templates),
  updatedAt: new Date(r.updated_at).toISOString(),
})

/** The templates as stored: locale tags as Intl writes them (`fr-ch` → `fr-CH`), so lookups can be exact. */
function storedTemplates(t: Templates | null | undefined): Templates | null {
  if (!t) return null
  const locales = t.locales && Object.entries(t.locales).map(([tag, l]) => [canonicalLocale(tag) ?? tag, l] as const)
  return {
    title: t.title,
    ...(t.body != null && { body: t.body }),
    ...(locales?.length && { locales: Object.fromEntries(locales) }),
  }
}

/** Rendered text as it can be stored: no NUL, no lone surrogate, at most `max` characters. */
const storable = (text: string, max: number) => cutTo(text.replaceAll('\u0000', '').toWellFormed(), max)

/** Where a field of the `i`th event is in the request: `body.title`, or `body.events.3.title` in a batch. */
export type PublishKind = 'single' | 'batch'
const fieldPath = (kind: PublishKind, i: number, field: string) =>
  kind === 'single' ? `body.${field}` : `body.events.${i}.${field}`

/**
 * A tenant's event types (`/v1/event-types`): their registration, and what they do to a publish (resolve): its
 * defaults, its title and body rendered from `data` (per locale), whether it goes to the inbox, may push, or is
 * live-only. Types are read per publish through a small per-tenant cache (TYPE_CACHE_MS).
 */
export class EventTypeService {
  private readonly cache = new Map<string, { until: number; types: Promise<Map<string, EventType>> }>()

  constructor(
    private readonly database: Database,
    /** TENANT_STRICT_TYPES: a publish of a type not registered in its tenant is refused. */
    private readonly strict: boolean,
  ) {}

  /** The caller's tenant's types, by name. */
  async list(caller: Caller): Promise<EventType[]> {
    const rows = await this.database.query<TypeRow>(sql`${selectTypes} where tenant = ${caller.tenant} order by type`)
    return rows.map(typeOf)
  }

  /** Registers or replaces (whole) a type of the caller's tenant (`admin`); `created` tells which. */
  async put(
    caller: Caller,
    type: string,
    registration: EventTypeRegistration,
  ): Promise<{ eventType: EventType; created: boolean }> {
    requireScope(caller, 'admin', 'Registering an event type')
    const r = registration
    const defaults = JSON.stringify(r.defaults)
    const templates = storedTemplates(r.templates)
    // As text, cast by the database: a driver given jsonb itself may encode the text once more.
    const [row] = await this.database.query<TypeRow & { created: boolean }>(sql`
      insert into event_types (tenant, type, description, category, defaults, inbox, push, live_only, templates)
      values (${caller.tenant}, ${type}, ${r.description ?? null}, ${r.category ?? null}, ${defaults}::text::jsonb,
        ${r.inbox}, ${r.push}, ${r.liveOnly}, ${templates === null ? null : JSON.stringify(templates)}::text::jsonb)
      on conflict (tenant, type) do update set description = excluded.description, category = excluded.category,
        defaults = excluded.defaults, inbox = excluded.inbox, push = excluded.push, live_only = excluded.live_only,
        templates = excluded.templates, updated_at = now()
      returning type, description, category, defaults::text as defaults, inbox, push, live_only,
        templates::text as templates, updated_at, (xmax = 0) as created`)
    this.cache.delete(caller.tenant)
    return { eventType: typeOf(row), created: row.created }
  }

  /** Removes a type of the caller's tenant (`admin`); events already published keep what it gave them. */
  async remove(caller: Caller, type: string): Promise<void> {
    requireScope(caller, 'admin', 'Removing an event type')
    const rows = await this.database.query(
      sql`delete from event_types where tenant = ${caller.tenant} and type = ${type} returning type`,
    )
    this.cache.delete(caller.tenant)
    if (!rows.length) throw new NotFoundError(`No event type "${type}" is registered.`)
  }

  /**
   * The events of a publish in `tenant` as they will be published: each registered type's defaults where the
   * publisher left the field out, `title` and `body` rendered from `data` where the publisher gave none (with
   * every locale's into `localizedJson`), the type's inbox, push and live-only switches; then the checks that
   * depend on the final values. A 400 names the field (`body.events.N.title` in a batch).
   */
  async resolve(tenant: string, events: readonly EventRequest[], kind: PublishKind): Promise<NewEvent[]> {
    const types = await this.typesOf(tenant)
    const errors: FieldError[] = []
    const resolved = events.map((e, i) => {
      const type = types.get(e.type)
      if (!type && this.strict) {
        errors.push({
          path: fieldPath(kind, i, 'type'),
          message: `"${e.type}" is not a registered event type of this tenant (GET /v1/event-types lists them)`,
        })
      }
      const event = applyType(e, type)
      if (event.title === '') {
        errors.push({
          path: fieldPath(kind, i, 'title'),
          message: type?.templates
            ? `the type's title template rendered no text from this event's data: give a title, or the data it reads`
            : type
              ? `is required: the type "${e.type}" has no title template`
              : 'is required (or register the type with a title template: PUT /v1/event-types/{type})',
        })
      }
      for (const issue of finalEventIssues(event)) {
        errors.push({ path: fieldPath(kind, i, issue.path), message: issue.message })
      }
      return event
    })
    if (errors.length) throw new InvalidFieldsError(errors)
    return resolved
  }

  /** The tenant's types, from this instance's copy while it is fresh. */
  private typesOf(tenant: string): Promise<Map<string, EventType>> {
    const now = Date.now()
    const cached = this.cache.get(tenant)
    if (cached && cached.until > now) return cached.types
    if (this.cache.size >= MAX_CACHED_TENANTS) this.cache.clear()
    const types = this.database
      .query<TypeRow>(sql`${selectTypes} where tenant = ${tenant}`)
      .then((rows) => new Map(rows.map((r) => [r.type, typeOf(r)])))
    this.cache.set(tenant, { until: now + TYPE_CACHE_MS, types })
    // A failed read is not kept: the next publish reads again.
    types.catch(() => {
      if (this.cache.get(tenant)?.types === types) this.cache.delete(tenant)
    })
    return types
  }
}

const selectTypes = sql`select type, description, category, defaults::text as defaults, inbox, push, live_only,
  templates::text as templates, updated_at from event_types`

/** One event with its type applied (none: the built-in defaults only). An empty title: none could be had. */
function applyType(e: EventRequest, type: EventType | undefined): NewEvent {
  const d = type?.defaults ?? {}
  const templates = type?.templates
  const data = e.data
  const render = (template: string | null | undefined, max: number) =>
    template == null ? null : storable(renderTemplate(template, data), max)
  const title = e.title ?? render(templates?.title, MAX_TITLE_CHARS) ?? ''
  const body = e.body !== undefined ? e.body : render(templates?.body, MAX_BODY_CHARS)
  // Per locale, what the publisher did not give: rendered from that locale's templates (a body from the fallback's
  // body template when the locale has none of its own).
  const locales = templates?.locales && (e.title === undefined || e.body === undefined) ? templates.locales : {}
  const localized = Object.entries(locales).map(([tag, l]) => [
    tag,
    {
      title: e.title ?? (render(l.title, MAX_TITLE_CHARS) || title),
      body: e.body !== undefined ? (e.body ?? null) : render(l.body ?? templates?.body, MAX_BODY_CHARS),
    },
  ])
  return {
    ...e,
    title,
    ...(body !== undefined && { body }),
    priority: e.priority ?? d.priority ?? 'normal',
    ttl: e.ttl ?? d.ttl ?? DEFAULT_EVENT_TTL_S,
    // Set by the publisher, even to null (none), it wins.
    ...(e.collapseKey === undefined && d.collapseKey !== undefined && { collapseKey: d.collapseKey }),
    ...(e.actions === undefined && d.actions !== undefined && { actions: d.actions }),
    ...(localized.length && { localizedJson: JSON.stringify(Object.fromEntries(localized)) }),
    ...(type && !type.inbox && { inInbox: false as const }),
    ...(type && !type.push && { mayPush: false as const }),
    ...(type?.liveOnly && { store: false }),
  }
}
