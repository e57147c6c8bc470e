import type { FastifyBaseLogger } from 'fastify'
import type { Caller } from '../auth.ts'
import type { Database, Db } from '../db/client.ts'
import { refusedByDatabase } from '../db/errors.ts'
import type { NewEvent } from './model.ts'
import { PeriodicPass } from './periodic-pass.ts'
import type { Published } from './publish.ts'
import { type AcceptedEvent, anyDue, claimDue, markPublished } from './scheduled.ts'

/**
 * Look for due scheduled publishes this often: an item goes out within about this long after its `deliverAt`.
 * The look is one indexed query while nothing is due.
 */
export const SCHEDULER_POLL_MS = 1_000

/** What the scheduler publishes with: EventService's publish statement and what follows a publish. */
export interface DuePublishing {
  /** The publish statement of the item's events, in the claim's transaction. */
  publishAccepted(tx: Db, caller: Caller, events: AcceptedEvent[]): Promise<Published>
  /** After the commit: wake the log tail and the push dispatcher, count the events. */
  followUp(result: Published, batch: ReadonlyArray<Pick<NewEvent, 'priority'>>): void
}

export interface SchedulerOptions {
  database: Database
  events: DuePublishing
  log: FastifyBaseLogger
  /** The scheduler's clock: an item is due when its `deliverAt` is at or before `now()`. Tests move it. */
  now: () => Date
  pollMs?: number
}

/** A scheduled item published by a pass, with its events' ids. */
export interface PublishedItem {
  scheduledId: number
  ids: number[]
}

/**
 * Publishes scheduled items (`deliverAt`) when they are due, exactly once whatever the number of instances and
 * restarts. Each item is claimed `for update skip locked`, published by the ordinary publish statement (events,
 * push plan, NOTIFY) and marked published, all in one transaction: another instance's claim skips it while
 * that is open and finds it published after, and a crash before the commit leaves it pending for the next
 * pass, here or anywhere. Its events take their ids in that transaction, so the log's id order and the tail's
 * watermark work as for any publish. Every instance runs one; passes here never overlap.
 */
export class Scheduler {
  private readonly passes: PeriodicPass<PublishedItem[]>

  constructor(private readonly options: SchedulerOptions) {
    this.passes = new PeriodicPass(
      () => this.publishDue(),
      options.pollMs ?? SCHEDULER_POLL_MS,
      (err) => options.log.warn({ err }, 'publishing scheduled events failed; retrying at the next poll'),
    )
  }

  start(): void {
    this.passes.start()
  }

  /** Stops polling, and resolves once a pass in flight has finished (its transaction committed or rolled back). */
  stop(): Promise<void> {
    return this.passes.stop()
  }

  /**
   * One pass, once the pass in flight (if any) has finished: publishes every item due by the clock's now, and
   * resolves with them. Rejects when the database fails (the items stay pending for a later pass).
   */
  runDue(): Promise<PublishedItem[]> {
    return this.passes.runNow()
  }

  private async publishDue(): Promise<PublishedItem[]> {
    const { database, now } = this.options
    const dueBy = now()
    if (this.passes.stopped || !(await anyDue(database, dueBy))) return []
    const done: PublishedItem[] = []
    /** Items whose publish the database refused in this pass: left pending, tried again at the next pass. */
    const refused: number[] = []
    while (!this.passes.stopped) {
      const outcome = await this.publishOne(dueBy, refused)
      if (outcome === undefined) break
      if (outcome !== 'refused') done.push(outcome)
    }
    return done
  }

  /** Claims, publishes and marks one due item in one transaction; then wakes what follows a publish. */
  private async publishOne(dueBy: Date, refused: number[]): Promise<PublishedItem | 'refused' | undefined> {
    const { database, events, log } = this.options
    /** The item claimed, once it is: what a refusal names. */
    const attempt: { id?: number } = {}
    let outcome: { events: AcceptedEvent[]; result: Published } | undefined
    try {
      outcome = await database.db.transaction(async (tx) => {
        const item = await claimDue(database, tx, dueBy, refused)
        if (!item) return undefined
        attempt.id = item.id
        const result = await events.publishAccepted(tx, item.caller, item.events)
        await markPublished(tx, item.id, result.ids)
        return { events: item.events, result }
      })
    } catch (err) {
      // One item the database will not take (what it refuses, it refuses every time) must not hold up the rest.
      if (attempt.id === undefined || !refusedByDatabase(err)) throw err
      log.error({ err, scheduledId: attempt.id }, 'the database refused a scheduled publish; it stays pending')
      refused.push(attempt.id)
      return 'refused'
    }
    if (!outcome || attempt.id === undefined) return undefined
    events.followUp(
      outcome.result,
      outcome.events.map((e) => e.event),
    )
    return { scheduledId: attempt.id, ids: outcome.result.ids }
  }
}
