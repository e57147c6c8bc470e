import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { LogReader } from './log-reader.ts'
import { LogTail } from './log-tail.ts'
import type { PlanPushes } from './publish.ts'
import { schedulePruning } from './retention.ts'
import { EventService } from './service.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Follows the event log and hands each committed event to the open streams. */
    logTail: LogTail
    logReader: LogReader
    eventService: EventService
  }
}

export interface EventsPluginOptions {
  events: Config['events']
  /** Plans a publish's pushes (push/outbox.ts), in the publish statement. */
  planPushes: PlanPushes
  /** A publish planned pushes. */
  onPushesPlanned: () => void
}

/**
 * The event log: publishing and reading it (EventService), following it into the open streams (LogTail), the
 * reads of replays (LogReader), and pruning.
 */
export const eventsPlugin = fp(
  async (app: FastifyInstance, options: EventsPluginOptions) => {
    const { database, hub, bus, metrics } = app
    const { logPollMs, retentionDays, pruneIntervalS } = options.events
    const tail = new LogTail(database, (rows) => hub.dispatch(rows), app.log, logPollMs)
    app.decorate('logTail', tail)
    app.decorate('logReader', new LogReader(database))
    app.decorate(
      'eventService',
      new EventService({
        database,
        tail,
        metrics,
        planPushes: options.planPushes,
        onPushesPlanned: options.onPushesPlanned,
        announce: bus.announcePublish,
        // Every open stream of the user, on this instance and the others, hears of an ack or read.
        tellUser: (tenant, userId, notice) => {
          hub.sendReceipt(tenant, userId, notice)
          bus.receipt({ tenant, userId, notice })
        },
      }),
    )
    await tail.start()
    bus.onWake(() => tail.wake())
    const stopPruning = schedulePruning(database, retentionDays, pruneIntervalS, app.log)
    app.addHook('onClose', async () => {
      stopPruning()
      tail.stop()
    })
  },
  { name: 'events', dependencies: ['database', 'stream', 'cluster'], decorators: { fastify: ['metrics'] } },
)
