import type { EventRow } from '../../src/db/schema.ts'

/**
 * A row of the log as the log tail hands it over: an event of tenant `t` to user `u`, published at `now`, kept for
 * an hour, with `over` on top.
 */
export function eventRow(id: number, over: Partial<EventRow> = {}, now = Date.now()): EventRow {
  return {
    id,
    tenant: 't',
    type: 'test.event',
    title: `Event ${id}`,
    body: null,
    dataJson: null,
    priority: 'normal',
    url: null,
    collapseKey: null,
    actionsJson: null,
    icon: null,
    image: null,
    badge: null,
    actor: 'publisher',
    kind: 'event',
    refId: null,
    revision: 0,
    recalledAt: null,
    toUsers: ['u'],
    toRoles: [],
    toTopics: [],
    toTenant: false,
    localizedJson: null,
    inInbox: true,
    mayPush: true,
    superseded: false,
    createdAt: new Date(now),
    expiresAt: new Date(now + 3_600_000),
    ...over,
  }
}
