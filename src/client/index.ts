// The typed client for application backends (`herald/client`): publish (now or later), edit and recall events,
// follow and cancel scheduled publishes, read delivery status, manage topic members, mint tokens and stream
// tickets. Its request and reply types are the service's own zod schemas (type-only imports: nothing of the
// server is loaded), so they cannot drift from what the service validates and documents; a test holds each method
// to its OpenAPI operation.
import type { z } from 'zod'
import type { batchSchema, eventEditFields, newEventSchema } from '../events/model.ts'
import type { tenantSettingsSchema, userSettingsSchema } from '../events/preference-rules.ts'
import type { problemSchema } from '../problems.ts'
import type { tenantPreferencesReply, userPreferencesReply } from '../routes/preferences.ts'
import type {
  batchPublished,
  deliveryStatusReply,
  eventSchema,
  published,
  scheduledItem,
  scheduledPage,
  scheduledReply,
  streamTicketReply,
  topicMemberList,
  topicMembersChanged,
} from '../routes/schemas.ts'
import { mintToken as mint, type TokenClaims } from '../tokens.ts'

/** An event to publish, as `POST /v1/events` takes it (defaults such as `priority` may be left out). */
export type NewEvent = z.input<typeof newEventSchema>
/** A button of an event: `{ action: 'ack' | 'read' | 'open', title, url? }` (`url` for `open` only). */
export type EventAction = NonNullable<NewEvent['actions']>[number]
export type Published = z.output<typeof published> & {
  /** True when an Idempotency-Key matched an earlier publish. */ replayed: boolean
}
export type BatchPublished = z.output<typeof batchPublished> & { replayed: boolean }
/** A publish accepted for later (`deliverAt`): the same again for a retry with its Idempotency-Key. */
export type Scheduled = z.output<typeof scheduledReply>
export type ScheduledPage = z.output<typeof scheduledPage>
export type ScheduledPublish = z.output<typeof scheduledItem>
export type DeliveryStatus = z.output<typeof deliveryStatusReply>
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
export type { TokenClaims }

export interface HeraldServerClientOptions {
  /** The service, e.g. `https://notify.example.com`. */
  baseUrl: string
  /** The publisher's JWT (scopes `events:publish`, `events:broadcast`), or a function returning one. */
  token: string | (() => string | Promise<string>)
  /** Defaults to the global fetch. */
  fetch?: typeof fetch
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
  status: { method: 'GET', path: '/v1/events/{id}/status', operationId: 'getEventStatus' },
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
} as const

const pathOf = (template: string, params: Record<string, string> = {}) =>
  template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(params[name]))

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

  return {
    publish,
    publishBatch,

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
     * `POST /v1/stream/tickets` (operation `createStreamTicket`) with a user's token: a single-use ticket that
     * opens that user's stream within 30 s, for a page that should not hold the JWT in a URL.
     */
    async streamTicket(userToken: string): Promise<StreamTicket> {
      const op = CLIENT_OPERATIONS.streamTicket
      return (await call<StreamTicket>(op.method, op.path, { token: userToken })).body
    },
  }
}

export type HeraldServerClient = ReturnType<typeof createHeraldServerClient>

/**
 * Mints an HS256 JWT for a user with the service's `JWT_SECRET`, valid for `ttlSeconds` (keep it short: at most
 * the service's JWT_MAX_TTL_S, a day by default). With RS256/ES256, sign with your own JWT library instead.
 */
export function mintToken(secret: string, claims: TokenClaims, ttlSeconds = 3600): string {
  return mint(secret, claims, ttlSeconds)
}
