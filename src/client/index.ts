// The typed client for application backends (`herald/client`): publish (now or later), edit and recall events,
// follow and cancel scheduled publishes, read delivery status, manage topic members, the user directory and event
// types, mint tokens and stream tickets. Its request and reply types are the service's own zod schemas (type-only imports:
// nothing of the server is loaded), so they cannot drift from what the service validates and documents; a test
// holds each method to its OpenAPI operation.
import type { z } from 'zod'
import type { DirectoryListQuery, directoryBatchSchema, directoryUserFields } from '../directory/model.ts'
import type { eventTypeRegistrationSchema } from '../event-types/model.ts'
import type { batchSchema, eventEditFields, newEventSchema } from '../events/model.ts'
import type { tenantSettingsSchema, userSettingsSchema } from '../events/preference-rules.ts'
import type { problemSchema } from '../problems.ts'
import type { connectionPage } from '../routes/audit.ts'
import type { directoryBatchReply, directoryPage, directoryUserReply } from '../routes/directory.ts'
import type { eventTypeReply } from '../routes/event-types.ts'
import type { tenantPreferencesReply, userPreferencesReply } from '../routes/preferences.ts'
import type {
  batchPublished,
  deliveryStatusReply,
  eventSchema,
  liveSent,
  nudgeReply,
  published,
  recipientsQuery,
  recipientsReply,
  scheduledItem,
  scheduledPage,
  scheduledReply,
  streamTicketReply,
  topicMemberList,
  topicMembersChanged,
} from '../routes/schemas.ts'
import type { statsReply } from '../routes/stats.ts'
import type { systemEventBody, systemPublished } from '../routes/system.ts'
import type { createdWebhook, deliveryPage, webhookList, webhookSchema } from '../routes/webhooks.ts'
import { mintToken as mint, type TokenClaims } from '../tokens.ts'
import type { newWebhookSchema } from '../webhooks/model.ts'
import type { WebhookType } from '../webhooks/outbox.ts'

/** An event to publish, as `POST /v1/events` takes it (defaults such as `priority` may be left out). */
export type NewEvent = z.input<typeof newEventSchema>
/** A button of an event: `{ action: 'ack' | 'read' | 'open', title, url? }` (`url` for `open` only). */
export type EventAction = NonNullable<NewEvent['actions']>[number]
export type Published = z.output<typeof published> & {
  /** True when an Idempotency-Key matched an earlier publish. */ replayed: boolean
}
export type BatchPublished = z.output<typeof batchPublished> & { replayed: boolean }
/** A platform broadcast (`publishSystem`): `tenants` (a list, or `'*'` for every tenant) and the event. */
export type SystemEvent = z.input<typeof systemEventBody>
/** A platform broadcast published: how many tenants, and each tenant's own event id. */
export type SystemPublished = z.output<typeof systemPublished> & { replayed: boolean }
/** A live-only publish (`publishLive`, `store: false`): sent to the open streams, nothing stored. */
export type LiveSent = z.output<typeof liveSent>
/** A publish accepted for later (`deliverAt`): the same again for a retry with its Idempotency-Key. */
export type Scheduled = z.output<typeof scheduledReply>
export type ScheduledPage = z.output<typeof scheduledPage>
export type ScheduledPublish = z.output<typeof scheduledItem>
export type DeliveryStatus = z.output<typeof deliveryStatusReply>
/** A page of an event's roll-call: its recipients and what became of the event for each, and the totals. */
export type RecipientPage = z.output<typeof recipientsReply>
export type RecipientQuery = Partial<z.input<typeof recipientsQuery>>
export type NudgeResult = z.output<typeof nudgeReply>
/** What an edit changes: any of `title`, `body`, `data` and `url` (null clears `body`, `data` or `url`). */
export type EventEdit = z.input<typeof eventEditFields>
/** An event as every client sees it (`revision`: how many times it was edited). */
export type HeraldEvent = z.output<typeof eventSchema>
export type StreamTicket = z.output<typeof streamTicketReply>
/** A user's notification preferences, as `PUT /v1/me/preferences` takes them (defaults may be left out). */
export type UserPreferences = z.input<typeof userSettingsSchema>
/** A tenant's defaults, as `PUT /v1/tenant/preferences` takes them: a user's preferences and `urgentBypass`. */
export type TenantPreferences = z.input<typeof tenantSettingsSchema>
export type StoredUserPreferences = z.output<typeof userPreferencesReply>
export type StoredTenantPreferences = z.output<typeof tenantPreferencesReply>
export type Problem = z.output<typeof problemSchema>
/** A webhook endpoint to register: `{ url, events, description? }`. */
export type NewWebhook = z.input<typeof newWebhookSchema>
/** A webhook endpoint as its tenant's admins see it, with its health (`failingSince`, `disabledAt`). */
export type WebhookEndpoint = z.output<typeof webhookSchema>
/** A webhook endpoint just registered: with its signing `secret`, shown only then. */
export type CreatedWebhook = z.output<typeof createdWebhook>
/** A page of an endpoint's deliveries, newest first (`next`: pass as `cursor`). */
export type WebhookDeliveryPage = z.output<typeof deliveryPage>
export type { WebhookType }
/** A page of the tenant's audited stream connections, newest first (`next`: pass as `cursor`). */
export type ConnectionPage = z.output<typeof connectionPage>
/** `GET /v1/audit/connections`'s filters: `from` and `to` are a date (`2025-03-01`) or an ISO date-time. */
export interface ConnectionQuery {
  user?: string
  from?: string
  to?: string
  cursor?: string
  limit?: number
}
/** The tenant's statistics per UTC day and event type, and who is online now. */
export type Stats = z.output<typeof statsReply>
/** A user as `PUT /v1/directory/users/{id}` takes them (whole: what is left out is cleared). */
export type DirectoryUserInput = z.input<typeof directoryUserFields>
/** A user of the directory as the service holds them. */
export type DirectoryUser = z.output<typeof directoryUserReply>
/** One operation of a directory batch: `{ op: 'upsert', id, roles, topics, ... }` or `{ op: 'delete', id }`. */
export type DirectoryBatchOperation = z.input<typeof directoryBatchSchema>['operations'][number]
export type DirectoryBatchResult = z.output<typeof directoryBatchReply>
export type DirectoryPage = z.output<typeof directoryPage>
/** An event type as `PUT /v1/event-types/{type}` takes it (whole: what is left out is cleared or defaulted). */
export type EventTypeInput = z.input<typeof eventTypeRegistrationSchema>
/** A registered event type as the service answers it. */
export type EventType = z.output<typeof eventTypeReply>
/** What `listDirectoryUsers` narrows by, and where it starts (`cursor`: a page's `next`). */
export type DirectoryQuery = Partial<Pick<DirectoryListQuery, 'role' | 'topic' | 'cursor' | 'limit'>>
export type { TokenClaims }

export interface HeraldServerClientOptions {
  /** The service, e.g. `https://notify.example.com`. */
  baseUrl: string
  /** The publisher's JWT (scopes `events:publish`, `events:broadcast`), or a function returning one. */
  token: string | (() => string | Promise<string>)
  /** Defaults to the global fetch. */
  fetch?: typeof fetch
  /**
   * The tenant calls act in, sent as `X-Herald-Tenant`: one the token's `tenants` claim covers (a director of
   * several schools). Defaults to the token's `tenant`. For one call, `client.inTenant(tenant).publish(...)`.
   */
  tenant?: string
}

/** The service answered with a problem (RFC 9457): its fields, and Retry-After in seconds where given. */
/** How a publish is sent: its Idempotency-Key. */
export interface PublishOptions {
  idempotencyKey?: string
}

/**
 * A publish for later: `deliverAt` as a Date or an RFC 3339 string with an offset, in the future and at most 30
 * days ahead. The service checks the events now and publishes them then.
 */
export interface ScheduleOptions extends PublishOptions {
  deliverAt: Date | string
}

export class HeraldError extends Error {
  override name = 'HeraldError'
  constructor(
    readonly status: number,
    readonly problem: Problem | undefined,
    readonly retryAfterS: number | undefined,
  ) {
    super(problem ? `${problem.title}: ${problem.detail}` : `HTTP ${status}`)
  }
  /** The problem's stable type, e.g. `urn:herald:problem:validation`. */
  get type(): string | undefined {
    return this.problem?.type
  }
}

/**
 * The routes this client calls, with their OpenAPI operationIds: the client uses exactly these, and a test holds
 * them to the service's OpenAPI document.
 */
export const CLIENT_OPERATIONS = {
  publish: { method: 'POST', path: '/v1/events', operationId: 'publishEvent' },
  publishBatch: { method: 'POST', path: '/v1/events/batch', operationId: 'publishEvents' },
  publishSystem: { method: 'POST', path: '/v1/system/events', operationId: 'publishSystemEvent' },
  status: { method: 'GET', path: '/v1/events/{id}/status', operationId: 'getEventStatus' },
  recipients: { method: 'GET', path: '/v1/events/{id}/recipients', operationId: 'getEventRecipients' },
  nudge: { method: 'POST', path: '/v1/events/{id}/nudge', operationId: 'nudgeEvent' },
  edit: { method: 'PATCH', path: '/v1/events/{id}', operationId: 'editEvent' },
  recall: { method: 'DELETE', path: '/v1/events/{id}', operationId: 'recallEvent' },
  listScheduled: { method: 'GET', path: '/v1/scheduled', operationId: 'listScheduledPublishes' },
  getScheduled: { method: 'GET', path: '/v1/scheduled/{id}', operationId: 'getScheduledPublish' },
  cancelScheduled: { method: 'DELETE', path: '/v1/scheduled/{id}', operationId: 'cancelScheduledPublish' },
  streamTicket: { method: 'POST', path: '/v1/stream/tickets', operationId: 'createStreamTicket' },
  topicMembers: { method: 'GET', path: '/v1/topics/{topic}/members', operationId: 'listTopicMembers' },
  addTopicMembers: { method: 'PUT', path: '/v1/topics/{topic}/members', operationId: 'addTopicMembers' },
  removeTopicMembers: { method: 'DELETE', path: '/v1/topics/{topic}/members', operationId: 'removeTopicMembers' },
  tenantPreferences: { method: 'GET', path: '/v1/tenant/preferences', operationId: 'getTenantPreferences' },
  setTenantPreferences: { method: 'PUT', path: '/v1/tenant/preferences', operationId: 'setTenantPreferences' },
  userPreferences: { method: 'GET', path: '/v1/me/preferences', operationId: 'getMyPreferences' },
  setUserPreferences: { method: 'PUT', path: '/v1/me/preferences', operationId: 'setMyPreferences' },
  createWebhook: { method: 'POST', path: '/v1/webhooks', operationId: 'createWebhook' },
  listWebhooks: { method: 'GET', path: '/v1/webhooks', operationId: 'listWebhooks' },
  deleteWebhook: { method: 'DELETE', path: '/v1/webhooks/{id}', operationId: 'deleteWebhook' },
  enableWebhook: { method: 'POST', path: '/v1/webhooks/{id}/enable', operationId: 'enableWebhook' },
  webhookDeliveries: { method: 'GET', path: '/v1/webhooks/{id}/deliveries', operationId: 'listWebhookDeliveries' },
  listEventTypes: { method: 'GET', path: '/v1/event-types', operationId: 'listEventTypes' },
  putEventType: { method: 'PUT', path: '/v1/event-types/{type}', operationId: 'putEventType' },
  deleteEventType: { method: 'DELETE', path: '/v1/event-types/{type}', operationId: 'deleteEventType' },
  putDirectoryUser: { method: 'PUT', path: '/v1/directory/users/{id}', operationId: 'putDirectoryUser' },
  getDirectoryUser: { method: 'GET', path: '/v1/directory/users/{id}', operationId: 'getDirectoryUser' },
  deleteDirectoryUser: { method: 'DELETE', path: '/v1/directory/users/{id}', operationId: 'deleteDirectoryUser' },
  directoryBatch: { method: 'POST', path: '/v1/directory/users/batch', operationId: 'batchDirectoryUsers' },
  listDirectoryUsers: { method: 'GET', path: '/v1/directory/users', operationId: 'listDirectoryUsers' },
  auditConnections: { method: 'GET', path: '/v1/audit/connections', operationId: 'listStreamConnections' },
  stats: { method: 'GET', path: '/v1/stats', operationId: 'getStats' },
} as const

const pathOf = (template: string, params: Record<string, string> = {}) =>
  template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(params[name]))

/** A path with the query parameters that are set. */
function withQuery(path: string, query: Record<string, string | number | undefined>): string {
  const params = new URLSearchParams()
  for (const [name, value] of Object.entries(query)) if (value !== undefined) params.set(name, String(value))
  const search = params.toString()
  return search ? `${path}?${search}` : path
}

export function createHeraldServerClient(options: HeraldServerClientOptions) {
  const doFetch = options.fetch ?? fetch
  const base = options.baseUrl.replace(/\/$/, '')
  const tokenOf = async () => (typeof options.token === 'function' ? options.token() : options.token)

  async function call<T>(
    method: string,
    path: string,
    init: { body?: unknown; headers?: Record<string, string>; token?: string } = {},
  ): Promise<{ status: number; body: T }> {
    const res = await doFetch(`${base}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${init.token ?? (await tokenOf())}`,
        ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
        // The client's tenant is its own token's: a user's token passed for one call acts in that user's tenant.
        ...(options.tenant && init.token === undefined ? { 'x-herald-tenant': options.tenant } : {}),
        ...init.headers,
      },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    })
    const text = await res.text()
    if (!res.ok) {
      const retryAfter = res.headers.get('retry-after')
      let problem: Problem | undefined
      try {
        problem = JSON.parse(text) as Problem
      } catch {
        problem = undefined
      }
      throw new HeraldError(res.status, problem, retryAfter === null ? undefined : Number(retryAfter))
    }
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T }
  }

  const keyHeader = (idempotencyKey: string | undefined): Record<string, string> =>
    idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}
  /** `deliverAt` as the body takes it, when the publish is for later. */
  const deliverAtOf = (opts: PublishOptions | ScheduleOptions) => {
    const at = 'deliverAt' in opts ? opts.deliverAt : undefined
    return at === undefined ? {} : { deliverAt: at instanceof Date ? at.toISOString() : at }
  }

  /**
   * `POST /v1/events` (operation `publishEvent`): answers once the event is committed; with `deliverAt`, once
   * it is accepted for then (202, a `scheduledId`).
   */
  function publish(event: NewEvent, opts: ScheduleOptions): Promise<Scheduled>
  function publish(event: NewEvent, opts?: PublishOptions): Promise<Published>
  async function publish(event: NewEvent, opts: PublishOptions | ScheduleOptions = {}): Promise<Published | Scheduled> {
    const op = CLIENT_OPERATIONS.publish
    const { status, body } = await call<z.output<typeof published> | Scheduled>(op.method, op.path, {
      body: { ...event, ...deliverAtOf(opts) },
      headers: keyHeader(opts.idempotencyKey),
    })
    return 'scheduledId' in body ? body : { ...body, replayed: status === 200 }
  }

  /**
   * `POST /v1/events/batch` (operation `publishEvents`): up to 1,000 events, all or nothing; with `deliverAt`,
   * all of them then.
   */
  function publishBatch(events: z.input<typeof batchSchema>['events'], opts: ScheduleOptions): Promise<Scheduled>
  function publishBatch(events: z.input<typeof batchSchema>['events'], opts?: PublishOptions): Promise<BatchPublished>
  async function publishBatch(
    events: z.input<typeof batchSchema>['events'],
    opts: PublishOptions | ScheduleOptions = {},
  ): Promise<BatchPublished | Scheduled> {
    const op = CLIENT_OPERATIONS.publishBatch
    const { status, body } = await call<z.output<typeof batchPublished> | Scheduled>(op.method, op.path, {
      body: { events, ...deliverAtOf(opts) },
      headers: keyHeader(opts.idempotencyKey),
    })
    return 'scheduledId' in body ? body : { ...body, replayed: status === 200 }
  }

  /**
   * `POST /v1/events` (operation `publishEvent`) with `store: false`: a live-only update (progress, a counter),
   * sent to the matching open streams as `event: live` and never stored, listed, pushed or replayed. Answers
   * `{ live: true }` once every instance has it. No `deliverAt` or `escalate`; an Idempotency-Key would be ignored.
   */
  async function publishLive(event: Omit<NewEvent, 'store' | 'escalate'>): Promise<LiveSent> {
    const op = CLIENT_OPERATIONS.publish
    const { body } = await call<LiveSent>(op.method, op.path, { body: { ...event, store: false } })
    return body
  }

  /**
   * `POST /v1/system/events` (operation `publishSystemEvent`), for the platform's operators (a token with
   * `events:system`): the event published as its own in each tenant listed, or in every tenant with
   * `tenants: '*'`, all or none. Answers with each tenant's event id.
   */
  async function publishSystem(event: SystemEvent, opts: PublishOptions = {}): Promise<SystemPublished> {
    const op = CLIENT_OPERATIONS.publishSystem
    const { status, body } = await call<z.output<typeof systemPublished>>(op.method, op.path, {
      body: event,
      headers: keyHeader(opts.idempotencyKey),
    })
    return { ...body, replayed: status === 200 }
  }

  const client = {
    publish,
    publishBatch,
    publishSystem,
    publishLive,

    /** `GET /v1/scheduled` (operation `listScheduledPublishes`): pending scheduled publishes, a page at a time. */
    async listScheduled(query: { after?: string; limit?: number } = {}): Promise<ScheduledPage> {
      const op = CLIENT_OPERATIONS.listScheduled
      const params = new URLSearchParams()
      if (query.after !== undefined) params.set('after', query.after)
      if (query.limit !== undefined) params.set('limit', String(query.limit))
      const search = params.toString()
      return (await call<ScheduledPage>(op.method, search ? `${op.path}?${search}` : op.path)).body
    },

    /** `GET /v1/scheduled/{id}` (operation `getScheduledPublish`): its state, events, and event ids once published. */
    async getScheduled(id: string): Promise<ScheduledPublish> {
      const op = CLIENT_OPERATIONS.getScheduled
      return (await call<ScheduledPublish>(op.method, pathOf(op.path, { id }))).body
    },

    /**
     * `DELETE /v1/scheduled/{id}` (operation `cancelScheduledPublish`): cancels a pending one. One published
     * already is a HeraldError with status 409, its event ids in the problem's detail.
     */
    async cancelScheduled(id: string): Promise<void> {
      const op = CLIENT_OPERATIONS.cancelScheduled
      await call<undefined>(op.method, pathOf(op.path, { id }))
    },

    /** `GET /v1/events/{id}/status` (operation `getEventStatus`): for the event's publisher or an admin. */
    async status(id: string): Promise<DeliveryStatus> {
      const op = CLIENT_OPERATIONS.status
      return (await call<DeliveryStatus>(op.method, pathOf(op.path, { id }))).body
    },

    /**
     * `GET /v1/events/{id}/recipients` (operation `getEventRecipients`): the event's roll-call, for its publisher or
     * an admin. `state` picks all (default), unread, read or acked; pass the page's `next` as `cursor` for more.
     */
    async recipients(id: string, query: RecipientQuery = {}): Promise<RecipientPage> {
      const op = CLIENT_OPERATIONS.recipients
      const search = new URLSearchParams(
        Object.entries(query).flatMap(([k, v]): Array<[string, string]> => (v === undefined ? [] : [[k, String(v)]])),
      ).toString()
      return (await call<RecipientPage>(op.method, `${pathOf(op.path, { id })}${search ? `?${search}` : ''}`)).body
    },

    /**
     * `POST /v1/events/{id}/nudge` (operation `nudgeEvent`): reminds the recipients who have not read the event (a
     * push again, a `nudge` on their streams). Sooner than NUDGE_MIN_INTERVAL_S after the last: a HeraldError with
     * status 429 and the wait in its `retryAfterS`.
     */
    async nudge(id: string): Promise<NudgeResult> {
      const op = CLIENT_OPERATIONS.nudge
      return (await call<NudgeResult>(op.method, pathOf(op.path, { id }))).body
    },

    /**
     * `PATCH /v1/events/{id}` (operation `editEvent`): for the event's publisher or an admin of its tenant.
     * Returns the event as it now stands; its streams get an `update`, and a device it was pushed to gets the
     * new text in place of the old, without alerting again.
     */
    async edit(id: string, changes: EventEdit): Promise<HeraldEvent> {
      const op = CLIENT_OPERATIONS.edit
      return (await call<HeraldEvent>(op.method, pathOf(op.path, { id }), { body: changes })).body
    },

    /**
     * `DELETE /v1/events/{id}` (operation `recallEvent`): for the event's publisher or an admin of its tenant. The
     * event is gone from every inbox; its streams get a `delete`, a push not sent yet is cancelled. Recalling it
     * again is a HeraldError with status 404.
     */
    async recall(id: string): Promise<void> {
      const op = CLIENT_OPERATIONS.recall
      await call<undefined>(op.method, pathOf(op.path, { id }))
    },

    /** `GET /v1/topics/{topic}/members` (operation `listTopicMembers`, `admin` scope): the topic's members. */
    async topicMembers(topic: string): Promise<string[]> {
      const op = CLIENT_OPERATIONS.topicMembers
      return (await call<z.output<typeof topicMemberList>>(op.method, pathOf(op.path, { topic }))).body.users
    },

    /**
     * `PUT /v1/topics/{topic}/members` (operation `addTopicMembers`, `admin` scope): up to 1,000 users follow the
     * topic from now on (their open streams included); returns how many did not follow it yet.
     */
    async addTopicMembers(topic: string, users: string[]): Promise<number> {
      const op = CLIENT_OPERATIONS.addTopicMembers
      const { body } = await call<z.output<typeof topicMembersChanged>>(op.method, pathOf(op.path, { topic }), {
        body: { users },
      })
      return body.changed
    },

    /** `DELETE /v1/topics/{topic}/members` (operation `removeTopicMembers`, `admin` scope): returns how many followed it. */
    async removeTopicMembers(topic: string, users: string[]): Promise<number> {
      const op = CLIENT_OPERATIONS.removeTopicMembers
      const { body } = await call<z.output<typeof topicMembersChanged>>(op.method, pathOf(op.path, { topic }), {
        body: { users },
      })
      return body.changed
    },

    /** `GET /v1/tenant/preferences` (operation `getTenantPreferences`, `admin` scope): the tenant's defaults. */
    async tenantPreferences(): Promise<StoredTenantPreferences> {
      const op = CLIENT_OPERATIONS.tenantPreferences
      return (await call<StoredTenantPreferences>(op.method, op.path)).body
    },

    /**
     * `PUT /v1/tenant/preferences` (operation `setTenantPreferences`, `admin` scope): replaces the tenant's defaults,
     * which every user's own preferences override; `urgentBypass: false` makes `urgent` events follow them too.
     * A bad field is a HeraldError with status 400 whose problem's `errors` name it.
     */
    async setTenantPreferences(preferences: TenantPreferences): Promise<StoredTenantPreferences> {
      const op = CLIENT_OPERATIONS.setTenantPreferences
      return (await call<StoredTenantPreferences>(op.method, op.path, { body: preferences })).body
    },

    /**
     * `GET /v1/me/preferences` (operation `getMyPreferences`) with a user's token: that user's own preferences
     * (for a settings page your backend serves).
     */
    async userPreferences(userToken: string): Promise<StoredUserPreferences> {
      const op = CLIENT_OPERATIONS.userPreferences
      return (await call<StoredUserPreferences>(op.method, op.path, { token: userToken })).body
    },

    /** `PUT /v1/me/preferences` (operation `setMyPreferences`) with a user's token: replaces that user's own. */
    async setUserPreferences(userToken: string, preferences: UserPreferences): Promise<StoredUserPreferences> {
      const op = CLIENT_OPERATIONS.setUserPreferences
      return (await call<StoredUserPreferences>(op.method, op.path, { body: preferences, token: userToken })).body
    },

    /**
     * `PUT /v1/directory/users/{id}` (operation `putDirectoryUser`, `admin` scope): creates or replaces the user
     * whole; `created` tells which. A bad field is a HeraldError with status 400 whose problem's `errors` name it.
     */
    async putDirectoryUser(id: string, user: DirectoryUserInput): Promise<DirectoryUser & { created: boolean }> {
      const op = CLIENT_OPERATIONS.putDirectoryUser
      const { status, body } = await call<DirectoryUser>(op.method, pathOf(op.path, { id }), { body: user })
      return { ...body, created: status === 201 }
    },

    /** `GET /v1/directory/users/{id}` (operation `getDirectoryUser`, `admin`): a HeraldError with status 404 if absent. */
    async getDirectoryUser(id: string): Promise<DirectoryUser> {
      const op = CLIENT_OPERATIONS.getDirectoryUser
      return (await call<DirectoryUser>(op.method, pathOf(op.path, { id }))).body
    },

    /** `DELETE /v1/directory/users/{id}` (operation `deleteDirectoryUser`, `admin`): a HeraldError with status 404 if absent. */
    async deleteDirectoryUser(id: string): Promise<void> {
      const op = CLIENT_OPERATIONS.deleteDirectoryUser
      await call<undefined>(op.method, pathOf(op.path, { id }))
    },

    /**
     * `POST /v1/directory/users/batch` (operation `batchDirectoryUsers`, `admin`): up to 5,000 upserts and deletes,
     * all or nothing (a bad one is a HeraldError with status 400 naming `body.operations.<index>.<field>`).
     */
    async directoryBatch(operations: DirectoryBatchOperation[]): Promise<DirectoryBatchResult> {
      const op = CLIENT_OPERATIONS.directoryBatch
      return (await call<DirectoryBatchResult>(op.method, op.path, { body: { operations } })).body
    },

    /**
     * `GET /v1/directory/users` (operation `listDirectoryUsers`, `admin`): a page of the tenant's users in id
     * order, those with `role` and, or, `topic`; pass its `next` as `cursor` for the following page.
     */
    async listDirectoryUsers(query: DirectoryQuery = {}): Promise<DirectoryPage> {
      const op = CLIENT_OPERATIONS.listDirectoryUsers
      const params = new URLSearchParams()
      for (const [name, value] of Object.entries(query)) if (value !== undefined) params.set(name, String(value))
      const search = params.toString()
      return (await call<DirectoryPage>(op.method, search ? `${op.path}?${search}` : op.path)).body
    },

    /** The tenant's event types (docs/event-types.md): defaults, switches and templates a publish of each gets. */
    eventTypes: {
      /** `GET /v1/event-types` (operation `listEventTypes`): any token of the tenant. */
      async list(): Promise<EventType[]> {
        const op = CLIENT_OPERATIONS.listEventTypes
        return (await call<{ eventTypes: EventType[] }>(op.method, op.path)).body.eventTypes
      },
      /**
       * `PUT /v1/event-types/{type}` (operation `putEventType`, `admin` scope): registers or replaces the type
       * whole; `created` tells which. A bad field or template is a HeraldError with status 400 naming it.
       */
      async put(type: string, registration: EventTypeInput): Promise<EventType & { created: boolean }> {
        const op = CLIENT_OPERATIONS.putEventType
        const { status, body } = await call<EventType>(op.method, pathOf(op.path, { type }), { body: registration })
        return { ...body, created: status === 201 }
      },
      /** `DELETE /v1/event-types/{type}` (operation `deleteEventType`, `admin`): a HeraldError with status 404 if absent. */
      async remove(type: string): Promise<void> {
        const op = CLIENT_OPERATIONS.deleteEventType
        await call<undefined>(op.method, pathOf(op.path, { type }))
      },
    },

    /**
     * `POST /v1/webhooks` (operation `createWebhook`, `admin` scope): registers an endpoint for the event types
     * given. Keep the returned `secret` (shown only now) to verify deliveries with a Standard Webhooks library. A
     * URL the rules refuse is a HeraldError with status 400 whose problem's `errors` name `body.url`.
     */
    async createWebhook(webhook: NewWebhook): Promise<CreatedWebhook> {
      const op = CLIENT_OPERATIONS.createWebhook
      return (await call<CreatedWebhook>(op.method, op.path, { body: webhook })).body
    },

    /** `GET /v1/webhooks` (operation `listWebhooks`, `admin` scope): the tenant's endpoints, with their health. */
    async listWebhooks(): Promise<WebhookEndpoint[]> {
      const op = CLIENT_OPERATIONS.listWebhooks
      return (await call<z.output<typeof webhookList>>(op.method, op.path)).body.webhooks
    },

    /** `DELETE /v1/webhooks/{id}` (operation `deleteWebhook`, `admin` scope): removes it, pending deliveries too. */
    async deleteWebhook(id: string): Promise<void> {
      const op = CLIENT_OPERATIONS.deleteWebhook
      await call<undefined>(op.method, pathOf(op.path, { id }))
    },

    /**
     * `POST /v1/webhooks/{id}/enable` (operation `enableWebhook`, `admin` scope): enables an endpoint disabled
     * after failing for WEBHOOK_DISABLE_AFTER_H; its pending deliveries go out at once.
     */
    async enableWebhook(id: string): Promise<WebhookEndpoint> {
      const op = CLIENT_OPERATIONS.enableWebhook
      return (await call<WebhookEndpoint>(op.method, pathOf(op.path, { id }))).body
    },

    /**
     * `GET /v1/webhooks/{id}/deliveries` (operation `listWebhookDeliveries`, `admin` scope): its recent
     * deliveries, newest first; `cursor` is a page's `next`.
     */
    async webhookDeliveries(id: string, query: { cursor?: string; limit?: number } = {}): Promise<WebhookDeliveryPage> {
      const op = CLIENT_OPERATIONS.webhookDeliveries
      const params = new URLSearchParams()
      if (query.cursor !== undefined) params.set('cursor', query.cursor)
      if (query.limit !== undefined) params.set('limit', String(query.limit))
      const search = params.toString()
      const path = pathOf(op.path, { id })
      return (await call<WebhookDeliveryPage>(op.method, search ? `${path}?${search}` : path)).body
    },

    /** The connection audit (`admin` scope). */
    audit: {
      /**
       * `GET /v1/audit/connections` (operation `listStreamConnections`): the tenant's stream connections, newest
       * first, `limit` at a time; `cursor` is a page's `next`. A bad `from`, `to` or `cursor` is a HeraldError with
       * status 400 naming it.
       */
      async connections(query: ConnectionQuery = {}): Promise<ConnectionPage> {
        const op = CLIENT_OPERATIONS.auditConnections
        return (await call<ConnectionPage>(op.method, withQuery(op.path, { ...query }))).body
      },
    },

    /**
     * `GET /v1/stats` (operation `getStats`, `admin` scope): per UTC day and event type over [from, to) (the last
     * 7 days by default, at most 92), what became of the tenant's events; and its open streams and online users now.
     */
    async stats(query: { from?: string; to?: string; type?: string } = {}): Promise<Stats> {
      const op = CLIENT_OPERATIONS.stats
      return (await call<Stats>(op.method, withQuery(op.path, query))).body
    },

    /**
     * `POST /v1/stream/tickets` (operation `createStreamTicket`) with a user's token: a single-use ticket that
     * opens that user's stream within 30 s, for a page that should not hold the JWT in a URL.
     */
    async streamTicket(userToken: string): Promise<StreamTicket> {
      const op = CLIENT_OPERATIONS.streamTicket
      return (await call<StreamTicket>(op.method, op.path, { token: userToken })).body
    },
  }
  return Object.assign(client, {
    /** The same client acting in `tenant` (`X-Herald-Tenant`), one its token's `tenants` claim covers. */
    inTenant: (tenant: string): typeof client => createHeraldServerClient({ ...options, tenant }),
  })
}

export type HeraldServerClient = ReturnType<typeof createHeraldServerClient>

/**
 * Mints an HS256 JWT for a user with the service's `JWT_SECRET`, valid for `ttlSeconds` (keep it short: at most
 * the service's JWT_MAX_TTL_S, a day by default). With RS256/ES256, sign with your own JWT library instead.
 */
export function mintToken(secret: string, claims: TokenClaims, ttlSeconds = 3600): string {
  return mint(secret, claims, ttlSeconds)
}
