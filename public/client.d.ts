/** Types of public/client.js, the herald browser client. */

export interface HeraldEvent {
  id: string
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
  /** Present on events from history and polling. */
  readAt?: string | null
  ackedAt?: string | null
}

/** A button of an event: `ack` acknowledges it, `read` marks it read, `open` opens a page and marks it read. */
export interface HeraldAction {
  action: 'ack' | 'read' | 'open'
  /** The button's label, at most 40 characters. */
  title: string
  /** `open` only: the page to open instead of the event's `url`; null for the event's. */
  url: string | null
}

export type HeraldReceipt = { ids: string[]; state: 'acked' | 'read' } | { upTo: string; state: 'read' }

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
  /** Each event once, in id order. Returns a function that removes the listener. */
  onNotification(listener: (event: HeraldEvent) => void): () => void
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
  ack(id: string): Promise<void>
  read(id: string): Promise<void>
  readAll(upTo?: string): Promise<void>
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
  enablePush(options?: { serviceWorkerUrl?: string }): Promise<{ id: string }>
  /**
   * Registers this browser's subscription again if push was enabled here before (renews the service worker's
   * renew token, which expires after RENEW_TOKEN_TTL_DAYS); resolves false when there was nothing to refresh.
   * `start()` calls it.
   */
  refreshPush(): Promise<boolean>
  disablePush(): Promise<void>
}

/** A topic the user follows. */
export interface HeraldTopicSubscription {
  topic: string
  /** `self`: the user followed it; `admin`: a tenant admin added them. */
  addedBy: 'self' | 'admin'
  createdAt: string
}

export function createHeraldClient(options: HeraldClientOptions): HeraldClient
