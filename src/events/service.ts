import type { SQL } from 'drizzle-orm'
import type { Caller } from '../auth.ts'
import type { Database, Db } from '../db/client.ts'
import type { Metrics } from '../metrics.ts'
import { ConflictError, InvalidFieldsError, NotFoundError, TooSoonError } from '../service-errors.ts'
import { cursorOfUser, userOfCursor } from '../user-cursor.ts'
import { eventJson } from '../wire-format.ts'
import { type Change, type ChangePushes, changeEvent, editedData } from './changes.ts'
import { getEvent, type ListQuery, type LocaleOf, listEvents, unreadCount } from './inbox.ts'
import { type LiveEvent, liveEventOf } from './live.ts'
import type { LogTail } from './log-tail.ts'
import type { EventEdit, NewEvent, Priority } from './model.ts'
import type { InAppFilter } from './preference-rules.ts'
import {
  type Announce,
  createPublisher,
  type PlanPushes,
  type Published,
  type PublishedInTenants,
  type Publisher,
  type PublishOptions,
  type Scheduled,
  type ScheduleOptions,
} from './publish.ts'
import {
  type DeliveryStatus,
  deliveryStatus,
  eventsUpTo,
  type Marked,
  markEvents,
  oneEvent,
  type ReceiptNotice,
  type ReceiptState,
  type RollCallNotice,
  someEvents,
} from './receipts.ts'
import { eventOfPublisher, type RollCallQuery, rollCall, takeNudge } from './recipients.ts'
import {
  type AcceptedEvent,
  cancelScheduled,
  listScheduled,
  type ScheduledListQuery,
  type ScheduledSummary,
  scheduledJson,
} from './scheduled.ts'

export interface EventServiceDeps {
  database: Database
  tail: LogTail
  metrics: Pick<Metrics, 'publishSeconds' | 'eventsPublished'>
  /** SQL that plans the pushes of the events a publish inserts (push/outbox.ts), run in the publish statement. */
  planPushes: PlanPushes
  /** A publish planned pushes: the push dispatcher should look now, not at its next poll. */
  onPushesPlanned: () => void
  /** SQL that cancels and plans the pushes of an edit or a recall (push/outbox.ts), run in its statement. */
  changePushes: ChangePushes
  /** SQL that tells the other instances of a publish, in the same statement (cluster/bus.ts). */
  announce: Announce | undefined
  /** An ack or read of the user's, for every open stream of theirs, on this instance and the others. */
  tellUser: (tenant: string, userId: string, notice: ReceiptNotice) => void
  /** Recipients acked or read some of a publisher's events: every open stream of the publisher hears of it. */
  tellPublisher: (tenant: string, publisher: string, notice: RollCallNotice) => void
  /** SQL that plans a nudge's pushes to `users` (a JSON array) of the event (push/outbox.ts). */
  nudgePushes: (eventId: number, users: string) => SQL
  /** Nudges the users' open streams that carry the event, on this instance and the others. */
  nudgeStreams: (tenant: string, eventId: number, users: string[]) => void
  /** Seconds between two nudges of one event (NUDGE_MIN_INTERVAL_S). */
  nudgeMinIntervalS: number
  /** Acks or reads enqueued webhooks: their dispatcher may look now rather than at its next poll. */
  onWebhooksEnqueued: () => void
  /** The events the user's preferences leave out of their reads (`inApp: false`; preferences.ts); none: undefined. */
  inAppOf: (caller: Caller) => Promise<InAppFilter | undefined>
  /** Live-only events to the matching open streams of every instance (LiveEvents.sendAll, live.ts). */
  sendLive: (events: readonly LiveEvent[]) => Promise<void>
}

/** What `POST /v1/events/read` marks: some events, or everything up to one. */
export type BulkRead = { ids: number[] } | { upTo: number }

/**
 * The event log as its users see it: publishing, the inbox, and receipts. Owns what follows a publish (waking
 * the log tail and the push dispatcher, the metrics) and the fan-out of receipts to the user's streams.
 */
export class EventService {
  private readonly publisher: Publisher

  constructor(private readonly deps: EventServiceDeps) {
    this.publisher = createPublisher(deps.database, deps.planPushes, deps.announce)
  }

  /**
   * Stores the events (all or none) and their planned pushes; their delivery starts once this returns. Live-only
   * events (`store: false`) are sent instead, never stored (sendLive).
   */
  async publish(caller: Caller, batch: NewEvent[], options: PublishOptions): Promise<Published> {
    if (batch.some((e) => e.store === false)) return this.sendLive(caller, batch, options)
    const done = this.deps.metrics.publishSeconds.startTimer() // a refused publish is not a latency
    const result = await this.publisher.publishEvents(caller, batch, options)
    done()
    if (!result.replayed) this.followUp(result, batch)
    return result
  }

  /**
   * What follows a committed publish, immediate or scheduled (the scheduler calls this after its commit): the
   * log tail and the push dispatcher are woken, the events counted.
   */
  followUp(result: Published, batch: ReadonlyArray<Pick<NewEvent, 'priority'>>): void {
    const { tail, metrics } = this.deps
    // Offered to the tail, not handed to the hub: the tail takes them only when it is idle and they are next in
    // the log, and otherwise reads them back, so that under load one read carries every publish committed
    // meanwhile and a burst of broadcasts goes to each stream in a few writes, not one per publish (handing each
    // publish's rows to the hub directly doubled fan-out's CPU per delivery).
    if (result.committed) tail.offer(result.committed)
    else tail.wake()
    if (result.pushes) this.deps.onPushesPlanned() // delayed pushes and other instances' are found by its poll
    // Tallied first: a batch of 1,000 is four counter updates, not 1,000.
    const byPriority = new Map<Priority, number>()
    for (const e of batch) byPriority.set(e.priority, (byPriority.get(e.priority) ?? 0) + 1)
    for (const [priority, n] of byPriority) metrics.eventsPublished.inc({ priority }, n)
  }

  /**
   * A platform broadcast (system-broadcasts.ts): the event as its own in each tenant `resolve` names, in one
   * transaction; followed up as any publish (the log tail and push dispatcher woken, each copy counted).
   */
  async publishInTenants(
    caller: Caller,
    named: readonly string[] | '*',
    resolve: (tx: Db) => Promise<readonly string[]>,
    event: NewEvent,
    options: { idempotencyKey?: string; rawData?: string },
  ): Promise<PublishedInTenants> {
    const done = this.deps.metrics.publishSeconds.startTimer()
    const result = await this.publisher.publishInTenants(caller, named, resolve, event, options)
    done()
    // Each tenant's copy counts as a publish of its own.
    const copies = result.ids.map(() => event)
    if (!result.replayed && copies.length) this.followUp(result, copies)
    return result
  }

  /**
   * Live-only events (`store: false`): checked as a publish is (fields, sizes, scopes), then sent to the matching
   * open streams of every instance, and nothing more: no row, recipients, pushes or webhooks. A batch is all live
   * or all stored (a 400 names each event that is not). An Idempotency-Key is ignored: with nothing stored, a
   * retry has nothing to be matched against, and sends again. Resolves once every instance has been told.
   */
  private async sendLive(caller: Caller, batch: NewEvent[], options: PublishOptions): Promise<Published> {
    const stored = batch.flatMap((e, i) => (e.store === false ? [] : [i]))
    if (stored.length) {
      throw new InvalidFieldsError(
        stored.map((i) => ({
          path: `body.events.${i}.store`,
          message:
            'a batch is all live-only (store: false) or all stored: send live-only events in a batch of their own',
        })),
      )
    }
    const at = new Date()
    const accepted = this.publisher.acceptLive(caller, batch, options)
    await this.deps.sendLive(accepted.map(({ event, dataJson }) => liveEventOf(caller, event, dataJson, at)))
    return { ids: [], createdAt: at, replayed: false, pushes: 0, live: accepted.length }
  }

  /** Accepts the events for publishing at `options.deliverAt`, checked as a publish is (fields, sizes, scopes). */
  schedule(caller: Caller, batch: NewEvent[], options: ScheduleOptions): Promise<Scheduled> {
    if (batch.some((e) => e.store === false)) {
      throw new InvalidFieldsError([
        {
          path: 'body.deliverAt',
          message: 'a live-only event (store: false) cannot be scheduled: it goes to the streams open when it is sent',
        },
      ])
    }
    return this.publisher.scheduleEvents(caller, batch, options)
  }

  /**
   * Publishes a due scheduled item's events as their publisher, in the scheduler's claim transaction `tx`. The
   * scheduler calls `followUp` once `tx` has committed.
   */
  publishAccepted(tx: Db, caller: Caller, events: AcceptedEvent[]): Promise<Published> {
    return this.publisher.publishAccepted(tx, caller, events)
  }

  /** The caller's pending scheduled publishes (an admin's: the tenant's). */
  listScheduled(
    caller: Caller,
    query: ScheduledListQuery,
  ): Promise<{ scheduled: ScheduledSummary[]; next: string | null }> {
    return listScheduled(this.deps.database, caller, query)
  }

  /** One of the caller's scheduled publishes (an admin: of the tenant) as JSON text. */
  async getScheduled(caller: Caller, id: number): Promise<string> {
    const json = await scheduledJson(this.deps.database, caller, id)
    if (json === undefined) throw noScheduled(id)
    return json
  }

  /** Cancels a pending scheduled publish; one that went out already cannot be (its event ids say which). */
  async cancelScheduled(caller: Caller, id: number): Promise<void> {
    const outcome = await cancelScheduled(this.deps.database, caller, id)
    if (outcome.state === 'not-found') throw noScheduled(id)
    if (outcome.state === 'published') {
      const ids = outcome.eventIds
      throw new ConflictError(
        `Scheduled publish ${id} was published already, as event${ids.length === 1 ? '' : 's'} ${ids.join(', ')}; it cannot be cancelled.`,
      )
    }
  }

  /** The caller's events as JSON text (see listEvents). */
  async list(caller: Caller, query: Omit<ListQuery, 'upTo'>, localeOf?: LocaleOf): Promise<string> {
    const { database, tail } = this.deps
    const inApp = await this.deps.inAppOf(caller)
    if (query.after === undefined) return listEvents(database, caller, query, inApp, localeOf)
    // A poller must not step over an event whose transaction is still open: read up to the settled watermark.
    await tail.sync()
    return listEvents(database, caller, { ...query, upTo: tail.cursor }, inApp, localeOf)
  }

  /** One of the caller's events as JSON text. */
  async get(caller: Caller, id: number, localeOf?: LocaleOf): Promise<string> {
    const json = await getEvent(this.deps.database, caller, id, await this.deps.inAppOf(caller), localeOf)
    if (json === undefined) throw noEvent(id)
    return json
  }

  async unreadCount(caller: Caller): Promise<number> {
    return unreadCount(this.deps.database, caller, await this.deps.inAppOf(caller))
  }

  /** Acks or reads one event: the user's own, or the one event of an ackToken. */
  async mark(caller: Caller, id: number, state: ReceiptState): Promise<void> {
    if (caller.ackEventId !== undefined && caller.ackEventId !== id) throw noEvent(id)
    const { marked, webhooks } = await markEvents(this.deps.database, caller, oneEvent(id), state)
    if (!marked.length) throw noEvent(id)
    this.deps.tellUser(caller.tenant, caller.userId, { ids: [String(id)], state })
    this.tellPublishers(caller, marked, state, webhooks)
  }

  /**
   * The publishers of the events the caller marked follow their roll-calls (one notice per publisher); the webhook
   * dispatcher looks now if the marking enqueued messages.
   */
  private tellPublishers(caller: Caller, marked: Marked[], state: ReceiptState, webhooks: number) {
    if (webhooks) this.deps.onWebhooksEnqueued()
    const byPublisher = new Map<string, string[]>()
    for (const m of marked) byPublisher.set(m.actor, [...(byPublisher.get(m.actor) ?? []), String(m.id)])
    for (const [publisher, ids] of byPublisher) {
      this.deps.tellPublisher(caller.tenant, publisher, { ids, userId: caller.userId, state })
    }
  }

  /** Marks some of the caller's events read, or all of them up to an id. */
  async markRead(caller: Caller, which: BulkRead): Promise<void> {
    const { database, tellUser } = this.deps
    if ('upTo' in which) {
      const { marked, webhooks } = await markEvents(database, caller, eventsUpTo(which.upTo), 'read')
      tellUser(caller.tenant, caller.userId, { upTo: String(which.upTo), state: 'read' })
      this.tellPublishers(caller, marked, 'read', webhooks)
      return
    }
    const { marked, webhooks } = await markEvents(database, caller, someEvents(which.ids), 'read')
    if (marked.length) tellUser(caller.tenant, caller.userId, { ids: marked.map((m) => String(m.id)), state: 'read' })
    this.tellPublishers(caller, marked, 'read', webhooks)
  }

  /**
   * Edits one of the caller's events (an admin: of the tenant's) and returns its JSON as it now stands. Its
   * streams get an `update`; a push not sent yet sends the new text, one sent already is replaced.
   * `rawData`: `data` as the caller wrote it (raw-json.ts).
   */
  async edit(caller: Caller, id: number, edit: EventEdit, rawData: string | undefined): Promise<string> {
    const changed = await this.change(caller, id, { kind: 'update', edit, dataJson: editedData(edit, rawData) })
    return eventJson(changed.event)
  }

  /**
   * Recalls one of the caller's events (an admin: of the tenant's): gone from every inbox, its streams get a
   * `delete`, a push not sent yet is cancelled and one sent already is followed by a recall.
   */
  async recall(caller: Caller, id: number): Promise<void> {
    await this.change(caller, id, { kind: 'delete' })
  }

  private async change(caller: Caller, id: number, change: Change) {
    const { database, changePushes, announce, tail } = this.deps
    const changed = await changeEvent(database, caller, id, change, changePushes, announce)
    tail.wake()
    if (changed.pushes) this.deps.onPushesPlanned()
    return changed
  }

  /**
   * The roll-call of an event, for its publisher or an admin of its tenant: its recipients (a page, in user id
   * order, of those in `query.state`), what became of it for each, and the totals.
   */
  async rollCall(caller: Caller, id: number, query: Omit<RollCallQuery, 'after'> & { cursor?: string }) {
    const after = query.cursor === undefined ? undefined : userOfCursor(query.cursor)
    if (!(await eventOfPublisher(this.deps.database, caller, id))) throw noEvent(id)
    const page = await rollCall(this.deps.database, caller.tenant, id, {
      state: query.state,
      limit: query.limit,
      after,
    })
    return { ...page, next: page.next === null ? null : cursorOfUser(page.next) }
  }

  /**
   * Nudges the recipients who have not read the event, and no one else: their devices get the event pushed
   * again (as their preferences allow), their open streams a `nudge`. No new event. At most once per
   * NUDGE_MIN_INTERVAL_S per event. Returns how many recipients were nudged and how many pushes were planned.
   */
  async nudge(caller: Caller, id: number): Promise<{ nudged: number; pushes: number }> {
    const { database, nudgeMinIntervalS } = this.deps
    const event = await eventOfPublisher(database, caller, id)
    if (!event) throw noEvent(id)
    if (event.recalled) throw new ConflictError(`Event ${id} was recalled: there is nothing to remind anyone of.`)
    const outcome = await database.db.transaction(async (tx) => {
      const taken = await takeNudge(database, tx, caller.tenant, id, nudgeMinIntervalS)
      if ('retryAfterS' in taken || !taken.users.length) return { taken, pushes: 0 }
      const planned = await database.query(this.deps.nudgePushes(id, JSON.stringify(taken.users)), tx)
      return { taken, pushes: planned.length }
    })
    const { taken, pushes } = outcome
    if ('retryAfterS' in taken) {
      throw new TooSoonError(
        `Event ${id} was nudged less than ${nudgeMinIntervalS} s ago; the next nudge may go in ${taken.retryAfterS} s.`,
        taken.retryAfterS,
      )
    }
    if (pushes) this.deps.onPushesPlanned()
    if (taken.users.length) this.deps.nudgeStreams(caller.tenant, id, taken.users)
    return { nudged: taken.users.length, pushes }
  }

  /** Delivery figures of an event, for its publisher or an admin of its tenant. */
  async deliveryStatus(caller: Caller, id: number): Promise<DeliveryStatus> {
    const status = await deliveryStatus(this.deps.database, caller, id)
    if (!status) throw noEvent(id)
    return status
  }
}

const noEvent = (id: number) => new NotFoundError(`No event ${id} for you.`)
const noScheduled = (id: number) => new NotFoundError(`No scheduled publish ${id} for you.`)
