import { type SQL, sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Database } from '../db/client.ts'
import type { ReceiptNotice, RollCallNotice } from '../events/receipts.ts'

const EVENTS_CHANNEL = 'herald_events'
const RECEIPTS_CHANNEL = 'herald_receipts'
/** Rare (a user over MAX_CONNECTIONS_PER_USER across instances): every instance hears each, one acts on it. */
const EVICTIONS_CHANNEL = 'herald_evictions'
/** Topic subscriptions that changed: instances with the users' streams open update them. */
const SUBSCRIPTIONS_CHANNEL = 'herald_subscriptions'
/** A user's notification preferences changed, or a tenant's defaults: instances reload them for open streams. */
const PREFERENCES_CHANNEL = 'herald_preferences'
const NUDGES_CHANNEL = 'herald_nudges'
const ROLL_CALLS_CHANNEL = 'herald_roll_calls'
/** Live-only events (events/live.ts): their JSON, or the id of a `live_events` row holding a larger one. */
const LIVE_CHANNEL = 'herald_live'
/** A NOTIFY payload stops at 8,000 bytes: live events' text up to this (with the sender's id) rides in it. */
const LIVE_NOTIFY_PAYLOAD_BYTES = 7_900
/** Rows of `live_events` are read within moments of their NOTIFY; older than this they are pruned. */
const LIVE_ROWS_KEPT = '1 minute'
const LIVE_PRUNE_INTERVAL_MS = 30_000
/** NOTIFY payloads stop at 8,000 bytes: receipts naming many ids go out in chunks of this many. */
const RECEIPT_IDS_PER_NOTICE = 200
/** Bytes of subscription changes per notification, under NOTIFY's 8,000 with room for the envelope. */
const SUBSCRIPTION_BYTES_PER_NOTICE = 7_000

export interface ReceiptMessage {
  tenant: string
  userId: string
  /** The `receipt` event's data. */
  notice: ReceiptNotice
}

/** "Evict this user's `count` oldest streams": to the instance that holds them. */
export interface EvictMessage {
  to: string
  tenant: string
  userId: string
  count: number
}

/** One user's topic subscription changed (events/topic-subscriptions.ts). */
export interface SubscriptionMessage {
  tenant: string
  userId: string
  topic: string
  subscribed: boolean
}

/** Whose preferences changed: a user's, or (`userId` '') the tenant's defaults. The settings are read, not sent. */
export interface PreferencesMessage {
  tenant: string
  userId: string
}

/** A publisher nudged the unread recipients of an event: each instance nudges those with open streams there. */
export interface NudgeMessage {
  tenant: string
  eventId: number
}

/** A recipient acked or read events: their publishers' open streams follow the roll-call. */
export interface RollCallMessage {
  tenant: string
  /** The publisher. */
  userId: string
  notice: RollCallNotice
}

export interface BusHandlers {
  /** A user's topic subscriptions changed on another instance: update this instance's streams of that user. */
  onSubscriptionChange(message: SubscriptionMessage): void
  /** A user acked or read on another instance: tell this instance's streams of that user. */
  onReceipt(message: ReceiptMessage): void
  /** Another instance found a user over the per-user limit, with their oldest streams here. */
  onEvict(message: EvictMessage): void
}

/**
 * What instances tell each other, through PostgreSQL LISTEN/NOTIFY (no broker to run). A notification
 * carries only a wake-up, never a stored event: instances read events from the table, in order, in batches.
 * Live-only events, which are never stored, are the exception: they ride the bus itself (sendLive).
 * On PGlite (one process) there is nobody to tell, and every call is a no-op.
 */
export class ClusterBus {
  private unlisten: Array<() => Promise<void>> = []
  private readonly wakeListeners: Array<() => void> = []
  private readonly preferenceListeners: Array<(message: PreferencesMessage) => void> = []
  private readonly nudgeListeners: Array<(message: NudgeMessage) => void> = []
  private readonly rollCallListeners: Array<(message: RollCallMessage) => void> = []
  private readonly liveListeners: Array<(text: string) => void> = []
  /** Live messages from other instances, handed on in the order they came (a larger one is read from its table). */
  private liveChain: Promise<void> = Promise.resolve()
  private livePruning: NodeJS.Timeout | undefined

  constructor(
    private readonly database: Database,
    private readonly instanceId: string,
    private readonly log: FastifyBaseLogger,
  ) {}

  /** Something was committed somewhere (or the bus reconnected): `listener` should look at the database. */
  onWake(listener: () => void) {
    this.wakeListeners.push(listener)
  }

  /** Preferences changed on another instance: `listener` updates this instance's streams. */
  onPreferencesChanged(listener: (message: PreferencesMessage) => void) {
    this.preferenceListeners.push(listener)
  }

  onNudge(listener: (message: NudgeMessage) => void) {
    this.nudgeListeners.push(listener)
  }

  onRollCall(listener: (message: RollCallMessage) => void) {
    this.rollCallListeners.push(listener)
  }

  /** Live events from every instance, this one's too (a JSON array's text, events/live.ts), in the bus's order. */
  onLive(listener: (text: string) => void) {
    this.liveListeners.push(listener)
  }

  private wake() {
    for (const listener of this.wakeListeners) listener()
  }

  async start(handlers: BusHandlers) {
    const pg = this.database.pg
    if (!pg) return
    // postgres.js keeps one dedicated LISTEN connection and re-listens after it reconnects;
    // the callback on (re)connect covers what was published while it was away.
    const events = await pg.listen(
      EVENTS_CHANNEL,
      // Our own publishes woke this instance already (and would wake its push dispatcher for nothing).
      (payload) => {
        if (!payload.startsWith(`${this.instanceId} `)) this.wake()
      },
      () => this.wake(),
    )
    const receipts = await pg.listen(RECEIPTS_CHANNEL, (payload) => {
      try {
        const m = JSON.parse(payload) as ReceiptMessage & { from: string }
        if (m.from !== this.instanceId) handlers.onReceipt(m)
      } catch (err) {
        this.log.warn({ err }, 'ignoring a malformed receipt notification')
      }
    })
    const evictions = await pg.listen(EVICTIONS_CHANNEL, (payload) => {
      try {
        const m = JSON.parse(payload) as EvictMessage
        if (m.to === this.instanceId) handlers.onEvict(m)
      } catch (err) {
        this.log.warn({ err }, 'ignoring a malformed eviction notification')
      }
    })
    const subscriptions = await pg.listen(SUBSCRIPTIONS_CHANNEL, (payload) => {
      try {
        const m = JSON.parse(payload) as { from: string; changes: SubscriptionMessage[] }
        if (m.from !== this.instanceId) for (const change of m.changes) handlers.onSubscriptionChange(change)
      } catch (err) {
        this.log.warn({ err }, 'ignoring a malformed subscription notification')
      }
    })
    const preferences = await pg.listen(PREFERENCES_CHANNEL, (payload) => {
      try {
        const m = JSON.parse(payload) as PreferencesMessage & { from: string }
        if (m.from === this.instanceId) return
        for (const listener of this.preferenceListeners) listener({ tenant: m.tenant, userId: m.userId })
      } catch (err) {
        this.log.warn({ err }, 'ignoring a malformed preferences notification')
      }
    })
    /** A channel of JSON messages from other instances, each handed to `listeners`. */
    const relay = <M>(channel: string, listeners: Array<(message: M) => void>) =>
      pg.listen(channel, (payload) => {
        try {
          const { from, ...message } = JSON.parse(payload) as { from: string }
          if (from !== this.instanceId) for (const listener of listeners) listener(message as M)
        } catch (err) {
          this.log.warn({ err, channel }, 'ignoring a malformed notification')
        }
      })
    const nudges = await relay(NUDGES_CHANNEL, this.nudgeListeners)
    const rollCalls = await relay(ROLL_CALLS_CHANNEL, this.rollCallListeners)
    const live = await pg.listen(LIVE_CHANNEL, (payload) => this.receiveLive(payload))
    this.livePruning = setInterval(() => void this.pruneLive(), LIVE_PRUNE_INTERVAL_MS)
    this.livePruning.unref()
    this.unlisten = [
      live.unlisten,
      nudges.unlisten,
      rollCalls.unlisten,
      events.unlisten,
      receipts.unlisten,
      evictions.unlisten,
      subscriptions.unlisten,
      preferences.unlisten,
    ]
  }

  /**
   * SQL for a publish statement to wake the other instances with (undefined on PGlite): a NOTIFY taken in the
   * publish's own transaction, so it goes out when the events commit and never for a rolled-back publish,
   * without a round trip of its own. `newestId` is the statement's largest event id.
   * Best effort: a lost wake-up costs at most LOG_POLL_MS of latency.
   */
  get announcePublish(): ((newestId: SQL) => SQL) | undefined {
    if (!this.database.pg) return undefined
    return (newestId) => sql`select pg_notify(${EVENTS_CHANNEL}, ${this.instanceId}::text || ' ' || ${newestId})`
  }

  receipt(message: ReceiptMessage) {
    const { notice } = message
    if ('ids' in notice && notice.ids.length > RECEIPT_IDS_PER_NOTICE) {
      for (let i = 0; i < notice.ids.length; i += RECEIPT_IDS_PER_NOTICE) {
        this.receipt({ ...message, notice: { ...notice, ids: notice.ids.slice(i, i + RECEIPT_IDS_PER_NOTICE) } })
      }
      return
    }
    void this.notify(RECEIPTS_CHANNEL, JSON.stringify({ ...message, from: this.instanceId }))
  }

  /** Tells the other instances of topic subscriptions that changed. Best effort, as receipts. */
  subscriptionsChanged(changes: readonly SubscriptionMessage[]) {
    if (!this.database.pg) return
    const send = (chunk: SubscriptionMessage[]) =>
      void this.notify(SUBSCRIPTIONS_CHANNEL, JSON.stringify({ from: this.instanceId, changes: chunk }))
    let chunk: SubscriptionMessage[] = []
    let bytes = 0
    for (const change of changes) {
      const size = Buffer.byteLength(JSON.stringify(change)) + 1
      if (chunk.length && bytes + size > SUBSCRIPTION_BYTES_PER_NOTICE) {
        send(chunk)
        chunk = []
        bytes = 0
      }
      chunk.push(change)
      bytes += size
    }
    if (chunk.length) send(chunk)
  }

  /** Tells the other instances that someone's preferences changed. Best effort, as receipts. */
  preferencesChanged(message: PreferencesMessage) {
    void this.notify(PREFERENCES_CHANNEL, JSON.stringify({ ...message, from: this.instanceId }))
  }

  /** Tells the other instances to nudge the event's unread recipients with open streams there. Best effort. */
  nudge(message: NudgeMessage) {
    void this.notify(NUDGES_CHANNEL, JSON.stringify({ ...message, from: this.instanceId }))
  }

  /** Tells the publisher's streams on the other instances that recipients acked or read. Best effort, as receipts. */
  rollCall(message: RollCallMessage) {
    const { notice } = message
    if (notice.ids.length > RECEIPT_IDS_PER_NOTICE) {
      for (let i = 0; i < notice.ids.length; i += RECEIPT_IDS_PER_NOTICE) {
        this.rollCall({ ...message, notice: { ...notice, ids: notice.ids.slice(i, i + RECEIPT_IDS_PER_NOTICE) } })
      }
      return
    }
    void this.notify(ROLL_CALLS_CHANNEL, JSON.stringify({ ...message, from: this.instanceId }))
  }

  /**
   * Asks another instance to evict a user's oldest streams. Best effort: lost (or sent to an instance that
   * died, or one too old to listen), the user stays over the limit until their next stream opens.
   */
  evict(message: EvictMessage) {
    void this.notify(EVICTIONS_CHANNEL, JSON.stringify(message))
  }

  /** True when there are other instances to tell (PostgreSQL); on PGlite, one process, there are none. */
  get clustered(): boolean {
    return this.database.pg !== undefined
  }

  /** Live events' text up to this many bytes rides in the NOTIFY itself; larger text goes by `live_events`. */
  get liveNotifyBytes(): number {
    return LIVE_NOTIFY_PAYLOAD_BYTES - Buffer.byteLength(this.instanceId) - 1
  }

  /**
   * Sends live events' text (events/live.ts) to every instance, this one included: in the NOTIFY, or, over
   * liveNotifyBytes, stored in `live_events` with the NOTIFY naming its row, in one statement (the NOTIFY goes out
   * with the row's commit). The sender too delivers them as they come back, so every instance delivers them in
   * the bus's one order. Best effort, as receipts: resolves once sent or failed (logged), never rejects.
   */
  async sendLive(text: string): Promise<void> {
    const pg = this.database.pg
    if (!pg) return
    try {
      if (Buffer.byteLength(text) <= this.liveNotifyBytes) {
        await pg.notify(LIVE_CHANNEL, `${this.instanceId} ${text}`)
        return
      }
      await this.database.query(sql`with stored as (insert into live_events (payload) values (${text}) returning id)
        select pg_notify(${LIVE_CHANNEL}, ${this.instanceId}::text || ' #' || id) from stored`)
    } catch (err) {
      this.log.warn({ err }, 'sending live events to the other instances failed')
    }
  }

  private receiveLive(payload: string) {
    // `<sender's instance id> <text>` or `<sender's instance id> #<live_events id>`.
    const space = payload.indexOf(' ')
    if (space < 0) return
    const rest = payload.slice(space + 1)
    const hand = (text: string | undefined) => {
      if (text !== undefined) for (const listener of this.liveListeners) listener(text)
    }
    this.liveChain = this.liveChain
      .then(async () => hand(rest.startsWith('#') ? await this.storedLive(rest.slice(1)) : rest))
      .catch((err) => this.log.warn({ err }, 'receiving live events from another instance failed'))
  }

  /** The text of a `live_events` row (undefined once pruned: its events are a minute old, and dropped). */
  private async storedLive(id: string): Promise<string | undefined> {
    if (!/^[0-9]{1,19}$/.test(id)) return undefined
    const rows = await this.database.query<{ payload: string }>(
      sql`select payload from live_events where id = ${id}::bigint`,
    )
    return rows[0]?.payload
  }

  private async pruneLive() {
    try {
      await this.database.query(
        sql`delete from live_events where created_at < now() - interval '${sql.raw(LIVE_ROWS_KEPT)}'`,
      )
    } catch (err) {
      this.log.warn({ err }, 'pruning live events failed; retrying at the next turn')
    }
  }

  /** Sends a notification; resolves when it is sent or failed (logged), never rejects. */
  private notify(channel: string, payload: string) {
    return this.database.pg?.notify(channel, payload).catch((err) => this.log.warn({ err, channel }, 'NOTIFY failed'))
  }

  async stop() {
    clearInterval(this.livePruning)
    await Promise.all(this.unlisten.map((u) => u().catch(() => {})))
  }
}
