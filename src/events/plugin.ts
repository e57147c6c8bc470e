import type { SQL } from 'drizzle-orm'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { type Config, DEFAULT_REPLAY_MEMORY_EVENTS } from '../config.ts'
import { eventJson, localizedRow, nudgeFrame } from '../wire-format.ts'
import type { ChangePushes } from './changes.ts'
import { Escalator } from './escalation.ts'
import { LiveEvents } from './live.ts'
import { LogReader } from './log-reader.ts'
import { LogTail } from './log-tail.ts'
import { type PreferenceChange, Preferences, TENANT_DEFAULTS } from './preferences.ts'
import type { PlanPushes } from './publish.ts'
import { RecentLog } from './recent-log.ts'
import { eventRow, unreadAmong } from './recipients.ts'
import { schedulePruning } from './retention.ts'
import { Scheduler } from './scheduler.ts'
import { EventService } from './service.ts'
import { StreamDeliveries } from './stream-deliveries.ts'
import { StreamProfiles } from './stream-profiles.ts'
import { SystemBroadcasts } from './system-broadcasts.ts'
import { TopicSubscriptions } from './topic-subscriptions.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Follows the event log and hands each committed event to the open streams. */
    logTail: LogTail
    logReader: LogReader
    eventService: EventService
    /** Platform broadcasts: an operator's event published into many tenants (routes/system.ts). */
    systemBroadcasts: SystemBroadcasts
    /** Publishes scheduled publishes (`deliverAt`) when they are due. */
    scheduler: Scheduler
    /** The topics users follow (the seeds' channels). */
    topicSubscriptions: TopicSubscriptions
    /** Users' notification preferences and their tenants' defaults. */
    preferences: Preferences
    /** What an opening stream reads of its user (subscriptions, preferences, locale), batched across opens. */
    streamProfiles: StreamProfiles
    /** Reports recipients still unread when an event's escalation is due (`event.unread` webhooks). */
    escalator: Escalator
    /** Live-only events (`store: false`) to the matching open streams of every instance. */
    liveEvents: LiveEvents
  }
}

/** The recent log's other limits: about 32 MB of rows at most, and a resume within 15 minutes. */
const REPLAY_MEMORY_CHARS = 16_000_000
const REPLAY_MEMORY_AGE_MS = 15 * 60_000

export interface EventsPluginOptions {
  events: Config['events']
  /** Plans a publish's pushes (push/outbox.ts), in the publish statement. */
  planPushes: PlanPushes
  /** A publish planned pushes. */
  onPushesPlanned: () => void
  /** Cancels and plans the pushes of an edit or a recall (push/outbox.ts), in its statement. */
  changePushes: ChangePushes
  /** Plans the pushes of a nudge (push/outbox.ts). */
  nudgePushes: (eventId: number, users: string) => SQL
  /** Webhooks were enqueued outside a request (escalations): their dispatcher may look now. */
  onWebhooksEnqueued?: () => void
  /** The scheduler's clock (when a scheduled publish is due); real time unless a test moves it. */
  now?: () => Date
}

/**
 * The event log: publishing and reading it (EventService), following it into the open streams (LogTail), the
 * reads of replays (LogReader), publishing scheduled publishes when due (Scheduler, from when the app is ready),
 * and pruning.
 */
export const eventsPlugin = fp(
  async (app: FastifyInstance, options: EventsPluginOptions) => {
    const { database, hub, bus, metrics } = app
    const { logPollMs, retentionDays, auditRetentionDays, pruneIntervalS, nudgeMinIntervalS } = options.events
    const recent = new RecentLog({
      rows: options.events.replayMemoryEvents ?? DEFAULT_REPLAY_MEMORY_EVENTS,
      chars: REPLAY_MEMORY_CHARS,
      ageMs: REPLAY_MEMORY_AGE_MS,
    })
    const tail = new LogTail(database, (rows) => hub.dispatch(rows), app.log, logPollMs, recent)
    // What the streams here were sent, for the roll-call.
    const streamDeliveries = new StreamDeliveries(database, app.log)
    hub.deliveryLog = streamDeliveries
    // A nudge reaches the unread recipients' streams that carry the event, here and on every other instance.
    const nudgeHere = async (tenant: string, eventId: number, users: readonly string[]) => {
      const row = users.length ? await eventRow(database, eventId) : undefined
      if (row?.tenant === tenant && !row.recalledAt) {
        hub.nudge(row, users, (locale) => nudgeFrame(eventJson(localizedRow(row, locale))))
      }
    }
    bus.onNudge(({ tenant, eventId }) =>
      unreadAmong(database, tenant, eventId, hub.usersOf(tenant))
        .then((users) => nudgeHere(tenant, eventId, users))
        .catch((err) => app.log.warn({ err }, 'nudging streams failed')),
    )
    bus.onRollCall(({ tenant, userId, notice }) => hub.sendRollCall(tenant, userId, notice))
    app.decorate('logTail', tail)
    app.decorate('logReader', new LogReader(database, recent))
    // A change of preferences reaches the user's open streams here (before its request is answered) and, through
    // the bus, on every other instance; a change of a tenant's defaults, every stream of the tenant.
    const applyToStreams = async ({ tenant, userId }: PreferenceChange) => {
      const users = userId === TENANT_DEFAULTS ? hub.usersOf(tenant) : hub.countForUser(tenant, userId) ? [userId] : []
      if (!users.length) return
      for (const [user, filter] of await preferences.inAppFilters(tenant, users))
        hub.setInAppFilter(tenant, user, filter)
    }
    const preferences = new Preferences(database, async (change) => {
      await applyToStreams(change)
      bus.preferencesChanged(change)
    })
    bus.onPreferencesChanged((change) =>
      applyToStreams(change).catch((err) => app.log.warn({ err }, 'applying changed preferences to streams failed')),
    )
    app.decorate('preferences', preferences)
    app.decorate('streamProfiles', new StreamProfiles(database))
    // Live-only events: to the streams here at once, to the other instances' over the bus.
    const liveEvents = new LiveEvents((events) => hub.dispatchLiveAll(events), bus, app.log)
    bus.onLive((text) => liveEvents.receive(text))
    app.decorate('liveEvents', liveEvents)
    const eventService = new EventService({
      database,
      sendLive: (events) => liveEvents.sendAll(events),
      tail,
      metrics,
      planPushes: options.planPushes,
      onPushesPlanned: options.onPushesPlanned,
      changePushes: options.changePushes,
      announce: bus.announcePublish,
      // Every open stream of the user, on this instance and the others, hears of an ack or read.
      tellUser: (tenant, userId, notice) => {
        hub.sendReceipt(tenant, userId, notice)
        bus.receipt({ tenant, userId, notice })
      },
      inAppOf: (caller) => preferences.inAppFilterOf(caller.tenant, caller.userId),
      tellPublisher: (tenant, userId, notice) => {
        hub.sendRollCall(tenant, userId, notice)
        bus.rollCall({ tenant, userId, notice })
      },
      nudgePushes: options.nudgePushes,
      nudgeStreams: (tenant, eventId, users) => {
        nudgeHere(tenant, eventId, users).catch((err) => app.log.warn({ err }, 'nudging streams failed'))
        bus.nudge({ tenant, eventId })
      },
      nudgeMinIntervalS,
      onWebhooksEnqueued: () => options.onWebhooksEnqueued?.(),
    })
    app.decorate('eventService', eventService)
    app.decorate('systemBroadcasts', new SystemBroadcasts(database, eventService))
    const scheduler = new Scheduler({
      database,
      events: eventService,
      log: app.log,
      now: options.now ?? (() => new Date()),
    })
    app.decorate('scheduler', scheduler)
    const escalator = new Escalator({
      database,
      log: app.log,
      now: options.now ?? (() => new Date()),
      onReported: options.onWebhooksEnqueued,
    })
    app.decorate('escalator', escalator)
    app.decorate(
      'topicSubscriptions',
      new TopicSubscriptions(database, (changes) => {
        for (const c of changes) hub.applySubscriptionChange(c.tenant, c.userId, c.topic, c.subscribed)
        bus.subscriptionsChanged(changes)
      }),
    )
    await tail.start()
    // Receipts, roll-calls and nudges about events the tail has not read yet wait for those events' fan-out.
    hub.readUpTo = () => tail.cursor
    bus.onWake(() => tail.wake())
    const stopPruning = schedulePruning(database, retentionDays, pruneIntervalS, app.log, auditRetentionDays)
    // Once every subsystem is up: a due publish wakes the push dispatcher, which must be there to hear it.
    app.addHook('onReady', async () => {
      scheduler.start()
      escalator.start()
    })
    app.addHook('onClose', async () => {
      // A pass in flight finishes (commits or rolls back) before the database closes.
      await scheduler.stop()
      await escalator.stop()
      await streamDeliveries.stop()
      stopPruning()
      tail.stop()
    })
  },
  { name: 'events', dependencies: ['database', 'stream', 'cluster'], decorators: { fastify: ['metrics'] } },
)
