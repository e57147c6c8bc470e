import { and, eq, gt, type SQL, sql } from 'drizzle-orm'
import type { Caller } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { type EventRow, events } from '../db/schema.ts'
import { InvalidFieldsError, NotAllowedError, NotFoundError } from '../service-errors.ts'
import { eventRowOf, PUBLISH_LOCK, type TailRow } from './log-tail.ts'
import { type EventEdit, MAX_DATA_BYTES } from './model.ts'
import type { Announce } from './publish.ts'
import { isCurrentEvent, viewerOf, visibleTo } from './visibility.ts'

// Edits and recalls of published events. Each changes the event's row in place (its new text and revision, or
// its recall time) and appends a row to the log in the same statement: an `update` row, a copy of the event as
// the edit left it, or a `delete` row that names it. The appended row has its event's tenant and audience, so
// the log tail and the hub take it to the streams the event went to, and a stream resuming with Last-Event-ID
// replays it in order with everything else (log-reader.ts). Its id is new; `ref_id` is the event's. It is no
// event: history, reads, counts, receipts and delivery status leave it out (visibility.ts isCurrentEvent).

/**
 * The pushes a change calls for, as SQL run in its statement (push/outbox.ts; injected, as a publish's plan is:
 * events/ does not know push/).
 */
export interface ChangePushes {
  /**
   * Cancels the pushes not yet sent of the events in `recalled` (a relation with their `id`). A single
   * data-modifying statement (it runs as a CTE of the change's statement).
   */
  cancel: (recalled: SQL) => SQL
  /**
   * Plans the pushes of the log rows in `changes` (a relation with their `id`, `ref_id` and `kind`): a
   * replacement or a recall to each device the event was pushed to. Returns the event id of each push planned.
   */
  plan: (changes: SQL) => SQL
}

/** An edit, or a recall. */
export type Change = { kind: 'update'; edit: EventEdit; dataJson: string | undefined } | { kind: 'delete' }

/** A change made: the log row that records it, the event as it now stands, and the pushes planned. */
export interface Changed {
  logId: number
  event: EventRow
  pushes: number
}

/**
 * `data` of an edit as it will be stored and sent: the caller's text as written (raw-json.ts), else
 * JSON.stringify of the parsed value; undefined when the edit leaves `data` alone. MAX_DATA_BYTES applies to
 * these bytes, as for a publish: over it is a 400 naming `body.data`.
 */
export function editedData(edit: EventEdit, rawData: string | undefined): string | undefined {
  if (!('data' in edit)) return undefined
  const text = rawData ?? JSON.stringify(edit.data ?? null)
  const bytes = Buffer.byteLength(text)
  if (bytes > MAX_DATA_BYTES) {
    throw new InvalidFieldsError([
      {
        path: 'body.data',
        message: `must be at most ${MAX_DATA_BYTES} bytes of JSON as sent (whitespace outside strings not counted); it is ${bytes}`,
      },
    ])
  }
  return text
}

const WHAT = { update: 'edit', delete: 'recall' } as const

/**
 * Whether `caller` may change event `id`: its publisher or an admin of its tenant may. Anyone else gets 404 for
 * an event they cannot see (its existence does not leak) and 403 for one they can. An event that is recalled,
 * expired, of another tenant, or a row of an edit or a recall is 404 for everyone.
 */
async function assertMayChange(database: Database, caller: Caller, id: number, change: Change) {
  const [row] = await database.db
    .select({
      actor: events.actor,
      actionsJson: events.actionsJson,
      visible: sql<boolean>`${visibleTo(viewerOf(caller))}`.mapWith(Boolean),
    })
    .from(events)
    .where(and(eq(events.id, id), eq(events.tenant, caller.tenant), gt(events.expiresAt, sql`now()`), isCurrentEvent))
  if (!row) throw noEvent(id)
  if (row.actor !== caller.userId && !caller.scopes.has('admin')) {
    if (!row.visible) throw noEvent(id)
    throw new NotAllowedError(
      `Only the publisher of event ${id} or an admin of its tenant may ${WHAT[change.kind]} it.`,
    )
  }
  // As at publishing: an `open` button without a url of its own opens the event's, which must stay.
  if (change.kind === 'update' && 'url' in change.edit && change.edit.url == null && row.actionsJson !== null) {
    const actions = JSON.parse(row.actionsJson) as Array<{ action: string; url: string | null }>
    if (actions.some((a) => a.action === 'open' && a.url === null)) {
      throw new InvalidFieldsError([
        { path: 'body.url', message: 'the event has an "open" button that opens its url: it cannot be cleared' },
      ])
    }
  }
}

/**
 * Edits or recalls event `id` as `caller`, in one statement: the event's row changes, the change's row is
 * appended to the log (under PUBLISH_LOCK, as a publish's rows are: see log-tail.ts), the pushes it calls for
 * are cancelled and planned, and with `announce` the other instances are woken. The caller wakes the log tail
 * and the push dispatcher once it returns.
 */
export async function changeEvent(
  database: Database,
  caller: Caller,
  id: number,
  change: Change,
  pushes: ChangePushes,
  announce: Announce | undefined,
): Promise<Changed> {
  await assertMayChange(database, caller, id, change)
  const mayChange = caller.scopes.has('admin') ? sql`true` : sql`e.actor = ${caller.userId}`
  const updates = change.kind === 'update' ? editSets(change) : sql`recalled_at = now()`
  // A recall's row carries nothing of the event but whom it went to and when it expires.
  const content =
    change.kind === 'update'
      ? sql`c.title, c.body, c.data_json, c.url, c.actions_json, c.icon, c.image, c.badge, c.localized_json`
      : sql`'', null, null, null, null, null, null, null, null`
  const [row] = await database.query<ChangedRow>(sql`
    with publish_lock as materialized (
      select pg_advisory_xact_lock_shared(${sql.raw(`${PUBLISH_LOCK.classId}, ${PUBLISH_LOCK.objId}`)})
    ), changed as (
      update events e set ${updates}
      where e.id = ${id} and e.tenant = ${caller.tenant} and e.kind = 'event' and e.recalled_at is null
        and e.expires_at > now() and ${mayChange}
      returning e.*
    ), superseded as (
      -- The event's earlier edits are obsolete now (the statement sees the log as it was: not this change's row).
      update events u set superseded = true
      where u.ref_id = ${id} and u.kind = 'update' and not u.superseded and exists (select 1 from changed)
    ), logged as (
      insert into events (tenant, type, title, body, data_json, url, actions_json, icon, image, badge, localized_json,
        priority, collapse_key, actor, kind, ref_id, revision, to_users, to_roles, to_topics, to_tenant, created_at, expires_at)
      select c.tenant, c.type, ${content}, c.priority, c.collapse_key, c.actor, ${change.kind}, c.id, c.revision,
        c.to_users, c.to_roles, c.to_topics, c.to_tenant, c.created_at, c.expires_at
      from publish_lock, changed c
      returning id, ref_id, kind
    ), cancelled as (
      ${pushes.cancel(sql`(select ref_id as id from logged where kind = 'delete')`)}
    ), planned as (${pushes.plan(sql`logged`)})
    ${announce ? sql`, announced as materialized (${announce(sql`(select max(id) from logged)`)})` : sql``}
    select l.id as log_id, (select count(*) from planned) as pushes, c.*
    from logged l join changed c on c.id = l.ref_id
    ${announce ? sql`cross join announced` : sql``}`)
  // Changed or recalled since it was checked (a request racing this one): it is not there to change any more.
  if (!row) throw noEvent(id)
  return { logId: Number(row.log_id), event: eventRowOf(row), pushes: Number(row.pushes) }
}

/** The columns an edit sets: those it gives, and one more revision. */
function editSets(change: Extract<Change, { kind: 'update' }>): SQL {
  const { edit, dataJson } = change
  const sets: SQL[] = []
  if (edit.title !== undefined) sets.push(sql`title = ${edit.title}`)
  if ('body' in edit) sets.push(sql`body = ${edit.body ?? null}`)
  if (dataJson !== undefined) sets.push(sql`data_json = ${dataJson}`)
  if ('url' in edit) sets.push(sql`url = ${edit.url ?? null}`)
  // A new title or body is everyone's: the text its type rendered per locale (event-types/) no longer applies.
  if (edit.title !== undefined || 'body' in edit) sets.push(sql`localized_json = null`)
  sets.push(sql`revision = e.revision + 1`)
  return sql.join(sets, sql`, `)
}

/** The changed event as raw SQL returns it, with the change's log id and push count. */
type ChangedRow = TailRow & { log_id: string | number; pushes: string | number }

const noEvent = (id: number) => new NotFoundError(`No event ${id} for you.`)
