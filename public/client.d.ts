/** Types of public/client.js, the herald browser client. */

export interface HeraldEvent {
  id: string
  /**
   * The event's tenant. A token whose `tenants` claim covers several (a director of several schools) gets all of
   * theirs on one stream; act on one in its tenant (`setTenant`).
   */
  tenant: string
  type: string
  title: string
  body: string | null
  data: unknown
  priority: 'low' | 'normal' | 'high' | 'urgent'
  url: string | null
  collapseKey: string | null
  /**
   * At most 2 buttons, in order. Do what each names with `client.ack(id)` / `client.read(id)`, or open its
   * `url` (else the event's `url`) and `client.read(id)` for `open`; the service worker does the same on a
   * notification's buttons.
   */
  actions: HeraldAction[] | null
  /** Pictures (https URLs or paths on the service's origin): a small icon, a large image, a monochrome badge. */
  icon: string | null
  image: string | null
  badge: string | null
  actor: string
  createdAt: string
  expiresAt: string
  /** How many times the event was edited: 0 as published. A higher one is the newer version of the same event. */
  revision: number
  /** Present on events from history and polling. */
  readAt?: string | null
  ackedAt?: string | null
}

/**
 * A live-only event (`onLive`): a dashboard's update (progress, a counter, "exam submitted"), published with
 * `store: false`. It has no id: it is not stored, never in the inbox, and not replayed after a reconnect, so
 * re-read what it updates when the stream comes back (`onStatus` says `live`).
 */
export interface HeraldLiveEvent<Data = unknown> {
  type: string
  tenant: string
  title: string
  body: string | null
  data: Data
  priority: 'low' | 'normal' | 'high' | 'urgent'
  url: string | null
  collapseKey: string | null
  actions: HeraldAction[] | null
  icon: string | null
  image: string | null
  badge: string | null
  actor: string
  /** When it was sent. */
  at: string
}

/** A button of an event: `ack` acknowledges it, `read` marks it read, `open` opens a page and marks it read. */
export interface HeraldAction {
  action: 'ack' | 'read' | 'open'
  /** The button's label, at most 40 characters. */
  title: string
  /** `open` only: the page to open instead of the event's `url`; null for the event's. */
  url: string | null
}

/** An event that was recalled (`onDelete`): it is gone from every inbox; remove it from view. */
export interface HeraldDeletion {
  id: string
}

/** What `edit` changes: any of these (at least one); null clears `body`, `data` or `url`. */
export interface HeraldEdit {
  title?: string
  body?: string | null
  data?: unknown
  url?: string | null
}

export type HeraldReceipt = { ids: string[]; state: 'acked' | 'read' } | { upTo: string; state: 'read' }

/**
 * To a publisher (`onRollCall`): `userId`, one of the recipients, acked or read these of the publisher's events.
 * Refetch their roll-call (`recipients`) to show it.
 */
export interface HeraldRollCallNotice {
  ids: string[]
  userId: string
  state: 'acked' | 'read'
}

/** What became of an event for all its recipients (resolved when it was published). */
export interface HeraldRecipientTotals {
  /** Who the event was for. */
  recipients: number
  /** Sent it on an open stream (live or in a replay); recorded about once a second. */
  delivered: number
  /** Pushed to one of their devices. */
  pushed: number
  acked: number
  read: number
  /** `recipients - read`. */
  unread: number
}

/** One recipient of an event, and when it reached them (each null: not yet). */
export interface HeraldRecipient {
  userId: string
  /** The directory's name for the user, when it has one. */
  displayName: string | null
  /** First sent on one of their open streams (to about a second). */
  deliveredAt: string | null
  /** First pushed to one of their devices. */
  pushedAt: string | null
  ackedAt: string | null
  readAt: string | null
}

export interface HeraldRecipientsPage {
  /** In user id order. */
  recipients: HeraldRecipient[]
  /** Of all the recipients, whatever the `state` listed. */
  totals: HeraldRecipientTotals
  /** Pass as `cursor` for the next page; null on the last. */
  next: string | null
}

export interface HeraldRecipientsQuery {
  /** Which recipients to list: everyone (default), those who have not read it, read it, or acked it. */
  state?: 'all' | 'unread' | 'read' | 'acked'
  /** `next` of the previous page. */
  cursor?: string
  /** 1 to 1,000; defaults to 100. */
  limit?: number
}

/** The answer of `nudge`. */
export interface HeraldNudge {
  /** Recipients who had not read the event, each reminded (a `nudge` on their open streams). */
  nudged: number
  /** Pushes planned to their devices (as their preferences allow). */
  pushes: number
}

/** The service's problem+json (RFC 9457), on an error a call rejects with. */
export interface HeraldProblem {
  type?: string
  title?: string
  status?: number
  detail?: string
  /** Validation failures, one per field (`path` like `body.quietHours.timeZone`). */
  errors?: Array<{ path: string; message: string }>
}

/**
 * What a REST call of the client rejects with when the service refuses: the message is the problem's `detail`.
 * A network failure rejects with the browser's TypeError instead.
 */
export interface HeraldError extends Error {
  /** The HTTP status. */
  status: number
  problem: HeraldProblem
  /**
   * Seconds to wait before trying again, from `Retry-After` (429, 503). From another origin the browser shows the
   * header only when the service exposes it (`Access-Control-Expose-Headers`).
   */
  retryAfter?: number
}

/**
 * `live`: streaming. `reconnecting`: the stream dropped and is being reopened. `polling`: streaming keeps failing.
 * A tab sharing another tab's stream (`shareAcrossTabs`) has that stream's status.
 * `evicted`: the service closed this stream because the user opened more than its MAX_CONNECTIONS_PER_USER
 * (across all its instances; the oldest streams go). The client does not reconnect; `start()` does, and may
 * then evict the user's oldest stream in turn.
 */
export type HeraldStatus = 'stopped' | 'connecting' | 'live' | 'reconnecting' | 'polling' | 'evicted'

/** Why the service closed the stream (the data of its `evicted` event). */
export interface HeraldEviction {
  reason: 'too-many-streams'
  /** The service's MAX_CONNECTIONS_PER_USER. */
  max: number
}

export interface HeraldClientOptions {
  /** Where the service is, e.g. `https://notify.example.com`. Defaults to this page's origin. */
  baseUrl?: string
  /** Returns a JWT for the signed-in user from your backend; called again when the token is about to expire. */
  getToken: () => string | Promise<string>
  /** Topics (or `prefix*` patterns) to follow, within the token's `topics` claim. */
  topics?: string[]
  /** Polling interval when streaming is not possible. Defaults to 5,000 ms. */
  pollIntervalMs?: number
  /** Consecutive stream failures before polling. Defaults to 3. */
  failuresBeforePolling?: number
  /** While polling, how often to try streaming again. Defaults to 30,000 ms. */
  streamRetryMs?: number
  /** Where the last event id is remembered across reloads. Defaults to localStorage. */
  storage?: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>
  /**
   * How the stream's URL carries the credential (EventSource cannot send headers). `ticket`: a single-use
   * ticket from `POST /v1/stream/tickets`, so the JWT stays out of URLs (which proxies and browser history may
   * keep); the client reopens a dropped stream itself, with a new ticket. `access_token`: the JWT itself.
   * Defaults to `'ticket'`.
   */
  streamAuth?: 'ticket' | 'access_token'
  /**
   * Share one stream among all tabs of this origin that follow the same service, user and topics: one tab
   * streams (chosen with Web Locks) and passes everything on to the others (BroadcastChannel); when it closes,
   * another takes over where it left off. Each tab's listeners fire as if it had its own stream; REST calls stay
   * per tab. Browsers open at most 6 connections per host over HTTP/1.1, so a stream per tab soon stalls the
   * pages. Where Web Locks (secure contexts only) or BroadcastChannel are missing, each tab streams on its own.
   * Defaults to `true`.
   */
  shareAcrossTabs?: boolean
  /**
   * The tenant REST calls act in, sent as `X-Herald-Tenant`: one the token's `tenants` claim covers. Defaults to
   * the token's `tenant`. See `setTenant`.
   */
  tenant?: string
}

/** One call in another tenant than the client's (`setTenant`): one the token's `tenants` claim covers. */
export interface HeraldInTenant {
  tenant?: string
}

export interface HistoryPage {
  events: HeraldEvent[]
  /** Pass as `before` for the next (older) page; null at the end. */
  next: string | null
}

export interface HeraldClient {
  start(): void
  stop(): void
  readonly status: HeraldStatus
  readonly lastEventId: string | undefined
  /** The tenant REST calls act in (`X-Herald-Tenant`); undefined: the token's `tenant`. */
  readonly tenant: string | undefined
  /**
   * Makes REST calls (history, unreadCount, ack, read, readAll, edit, recall...) act in `tenant`, one the token's
   * `tenants` claim covers; undefined: the token's `tenant`. The stream is not reopened: it carries every tenant
   * the token covers, each event with its `tenant`. The stream's ticket, polling and push registration stay in the
   * token's tenant.
   */
  setTenant(tenant: string | undefined): void
  /**
   * Each event once, in id order. Returns a function that removes the listener. Edits and recalls of events are
   * not events: they go to onUpdate and onDelete.
   */
  onNotification(listener: (event: HeraldEvent) => void): () => void
  /**
   * An event was edited (by its publisher or an admin): its new version, with the same `id` and a higher
   * `revision`. Replace the one shown. Each edit once, in order with the events, also after a reload, and in
   * every tab that shares the stream. While the client polls (streaming blocked), edits and recalls are not seen:
   * events polled come as they now stand, and `history()` shows every event as it stands.
   */
  onUpdate(listener: (event: HeraldEvent) => void): () => void
  /**
   * An event was recalled: remove it (it is gone from history and the unread count too). Its notification, if
   * this page's service worker shows one, is closed.
   */
  onDelete(listener: (deletion: HeraldDeletion) => void): () => void
  /** Acks and reads made on other tabs and devices of this user. */
  onReceipt(listener: (receipt: HeraldReceipt) => void): () => void
  onStatus(listener: (status: HeraldStatus) => void): () => void
  /** The server no longer has events from where this client left off; history is refetched. */
  onReset(listener: () => void): () => void
  /**
   * This client's stream was closed for being one too many of the user's (another device, or a tab that does not
   * share, opened one): the status is now `evicted` and nothing reconnects, in any tab that shared the stream.
   * Tell the user ("open in another tab"), and call `start()` if they want this one back. The remembered last event id is kept: `start()` resumes from it.
   */
  onEvicted(listener: (eviction: HeraldEviction) => void): () => void
  /**
   * The publisher of an event this user has not read reminds them of it (`nudge`): the event, as it now stands. It
   * is no new event (it came through onNotification before): point it out again. Sent to open streams only (in
   * every tab that shares one), never replayed; devices get the push again.
   */
  onNudge(listener: (event: HeraldEvent) => void): () => void
  /**
   * To a publisher: a recipient acked or read some of the events this user published. A roll-call on screen
   * refetches (`recipients`); deliveries are not told, so poll it too while it is shown.
   */
  onRollCall(listener: (notice: HeraldRollCallNotice) => void): () => void
  /**
   * Live-only events of `type` (`'*'`: of every type) as they arrive on the stream. Returns a function that stops
   * listening.
   */
  onLive<Data = unknown>(type: string, listener: (event: HeraldLiveEvent<Data>) => void): () => void
  /** `tenant`: the event's, when it is not the one REST calls act in (`setTenant`); an event's own `tenant`. */
  ack(id: string, options?: HeraldInTenant): Promise<void>
  read(id: string, options?: HeraldInTenant): Promise<void>
  /** Marks every event up to `upTo` (default: the newest id this client received) read. */
  readAll(upTo?: string): Promise<void>
  /**
   * Edits an event this user published (with the `admin` scope: any of the tenant's); resolves to its new version.
   * Anyone else gets an error with status 403 (an event they can see) or 404.
   */
  edit(id: string, changes: HeraldEdit, options?: HeraldInTenant): Promise<HeraldEvent>
  /** Recalls an event this user published (with the `admin` scope: any of the tenant's). Again: status 404. */
  recall(id: string, options?: HeraldInTenant): Promise<void>
  /**
   * Who an event this user published (with the `admin` scope: any of the tenant's) was for, and who got, acked and
   * read it: a page of recipients and the totals. Anyone else gets an error with status 404.
   */
  recipients(id: string, query?: HeraldRecipientsQuery): Promise<HeraldRecipientsPage>
  /**
   * Reminds the recipients who have not read an event this user published: their open streams get a `nudge`
   * (onNudge), their devices the event again. At most once per NUDGE_MIN_INTERVAL_S (10 min) per event: sooner
   * rejects with a HeraldError of status 429 whose `retryAfter` says how many seconds to wait. A recalled event:
   * status 409; another's: 404.
   */
  nudge(id: string): Promise<HeraldNudge>
  unreadCount(): Promise<number>
  history(options?: { before?: string; limit?: number; unread?: boolean }): Promise<HistoryPage>
  /**
   * The topics this user follows. A stream opened without `topics` gets their events and follows changes live;
   * so do the user's devices.
   */
  topics(): Promise<HeraldTopicSubscription[]>
  /** Follows a topic, which the token's `topics` claim must allow (else a 403 error). Idempotent. */
  follow(topic: string): Promise<void>
  /** Stops following a topic (also one an admin added). Idempotent. */
  unfollow(topic: string): Promise<void>
  /** This user's own notification preferences; what they leave out, the tenant's defaults decide. */
  preferences(): Promise<HeraldStoredPreferences>
  /**
   * Replaces this user's preferences (`{}`: the tenant's defaults decide everything) and resolves with them as
   * stored. They apply at once: history, the unread count and open streams (in every tab and on every device).
   * A bad field rejects with an error whose `status` is 400 and whose `problem.errors` name the field, e.g.
   * `body.quietHours.timeZone`.
   */
  setPreferences(preferences: HeraldPreferences): Promise<HeraldStoredPreferences>
  enablePush(options?: { serviceWorkerUrl?: string }): Promise<{ id: string }>
  /**
   * Registers this browser's subscription again if push was enabled here before (renews the service worker's
   * renew token, which expires after RENEW_TOKEN_TTL_DAYS); resolves false when there was nothing to refresh.
   * `start()` calls it.
   */
  refreshPush(): Promise<boolean>
  disablePush(): Promise<void>
}

/**
 * Matches events by type pattern (`attendance.absent`, `grades.*`, `*`) or by topic (`class:7A`, `class:*`): give
 * one of `type` and `topic`. For each of `inApp` and `push`, the first rule that matches an event and says it
 * decides (the user's rules before the tenant's); none says: true.
 */
export interface HeraldPreferenceRule {
  type?: string
  topic?: string
  /** false: such events are not streamed, listed or counted as unread (they are still stored). */
  inApp?: boolean
  /** false: such events are not pushed to this user's devices. */
  push?: boolean
}

export type HeraldWeekday = 'mon' | 'tue' | 'wed' | 'thu' | 'fri' | 'sat' | 'sun'

/**
 * From `start` to `end` (`HH:MM`; an end before the start is the next day) in `timeZone` (IANA, e.g.
 * `Europe/Paris`), on the days a window starts: `normal` and `high` pushes wait until the window ends, then go
 * out if still unread (several with one collapseKey as the latest).
 */
export interface HeraldQuietHours {
  start: string
  end: string
  timeZone: string
  /** Defaults to every day. */
  days?: HeraldWeekday[]
}

/** A user's notification preferences. `urgent` events ignore them unless the tenant's defaults say otherwise. */
export interface HeraldPreferences {
  rules?: HeraldPreferenceRule[]
  /** The push switch; absent: the tenant's. `minPriority` defaults to `normal`. */
  push?: { enabled?: boolean; minPriority?: 'low' | 'normal' | 'high' | 'urgent' }
  /** Absent: the tenant's; null: none. */
  quietHours?: HeraldQuietHours | null
}

/** Preferences as stored (defaults filled in), and when they were set (null: never). */
export interface HeraldStoredPreferences extends HeraldPreferences {
  rules: HeraldPreferenceRule[]
  updatedAt: string | null
}

/** A topic the user follows. */
export interface HeraldTopicSubscription {
  topic: string
  /** `self`: the user followed it; `admin`: a tenant admin added them. */
  addedBy: 'self' | 'admin'
  createdAt: string
}

export function createHeraldClient(options: HeraldClientOptions): HeraldClient
