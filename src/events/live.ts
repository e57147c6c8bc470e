import type { FastifyBaseLogger } from 'fastify'
import type { Caller } from '../auth.ts'
import { liveEventJson, liveFrame } from '../wire-format.ts'
import type { NewEvent, Priority } from './model.ts'

// Live-only events (`store: false`): dashboard updates (progress, counters, "exam submitted") that are not
// notifications. Never inserted: they go from the publish request to the matching open streams here, and over
// the cluster bus to those of every other instance, as `event: live` frames without an id.

export { liveFrame }

/** A live-only event on its way to the streams: its audience, as a stored event's, and the JSON clients get. */
export interface LiveEvent {
  tenant: string
  type: string
  toUsers: readonly string[]
  toRoles: readonly string[]
  toTopics: readonly string[]
  toTenant: boolean
  /** What the client gets as the `data:` of its `event: live` frame (wire-format.ts liveEventJson). */
  json: string
  /** For the recipients' in-app preferences (`urgent` passes them where the tenant says so); absent: `normal`. */
  priority?: Priority
}

/** A publish's event as a live one: the caller's tenant, `data` as it would have been stored (publish.ts). */
export function liveEventOf(caller: Caller, e: NewEvent, dataJson: string | null, at = new Date()): LiveEvent {
  const actions = e.actions?.length
    ? JSON.stringify(e.actions.map((a) => ({ action: a.action, title: a.title, url: a.url ?? null })))
    : null
  return {
    tenant: caller.tenant,
    type: e.type,
    toUsers: [...new Set(e.to.users ?? [])],
    toRoles: [...new Set(e.to.roles ?? [])],
    toTopics: [...new Set(e.to.topics ?? [])],
    toTenant: e.to.tenant ?? false,
    priority: e.priority,
    json: liveEventJson({
      tenant: caller.tenant,
      type: e.type,
      title: e.title,
      body: e.body ?? null,
      dataJson,
      priority: e.priority,
      url: e.url ?? null,
      collapseKey: e.collapseKey ?? null,
      actionsJson: actions,
      icon: e.icon ?? null,
      image: e.image ?? null,
      badge: e.badge ?? null,
      actor: caller.userId,
      at,
    }),
  }
}

/** How live events reach the other instances (cluster/bus.ts): text in order, or nothing on a single process. */
export interface LiveBus {
  /** Whether there are other instances to tell (PostgreSQL); false on PGlite. */
  readonly clustered: boolean
  /** Text up to this many bytes rides in one NOTIFY; more goes through the `live_events` table. */
  readonly liveNotifyBytes: number
  /** Sends `text` to every other instance; resolves once sent (or failed, logged), never rejects. */
  sendLive(text: string): Promise<void>
}

/**
 * Delivers live events on every instance. On PostgreSQL every instance, this one included, hands them to its
 * streams as they come back on the bus: NOTIFYs reach every listener in one order (their commits'), so all
 * instances show live events in the same order, and a publisher that waits for each answer sees them in the order
 * it sent them, whichever instances it sent them to (delivered here at once, a later event sent to another
 * instance could overtake an earlier one still on its way here: seen in CI). One bus message is in flight at a
 * time; those sent meanwhile ride together in the next (as many as fit in one NOTIFY), so a burst costs a few
 * NOTIFYs, not one each. On PGlite (one process) they go to this instance's streams directly (`here`).
 */
export class LiveEvents {
  private readonly queue: Array<{ text: string; bytes: number; sent: () => void }> = []
  private sending = false
  /** Sent here since the last turn of the event loop: handed to the streams together (see deliverHere). */
  private local: LiveEvent[] = []

  constructor(
    /** The streams of this instance: several events at once, in order (the hub's dispatchLiveAll). */
    private readonly here: (events: readonly LiveEvent[]) => void,
    private readonly bus: LiveBus,
    private readonly log: FastifyBaseLogger,
  ) {}

  /** To the matching open streams of every instance. Resolves once every instance has been told. */
  send(e: LiveEvent): Promise<void> {
    return this.sendAll([e])
  }

  /** Several, in order. */
  sendAll(events: readonly LiveEvent[]): Promise<void> {
    if (!events.length) return Promise.resolve()
    if (!this.bus.clustered) {
      this.deliverHere(events)
      return Promise.resolve()
    }
    const sent = events.map(
      (e) =>
        new Promise<void>((resolve) => {
          const text = JSON.stringify(e)
          this.queue.push({ text, bytes: Buffer.byteLength(text), sent: resolve })
        }),
    )
    if (!this.sending) void this.drain()
    return Promise.all(sent).then(() => {})
  }

  /**
   * To this instance's streams, at the end of this turn of the event loop with whatever else was sent meanwhile:
   * a burst of publishes (several in flight) then reaches each stream in one write rather than one per event.
   */
  private deliverHere(events: readonly LiveEvent[]) {
    if (!this.local.length) {
      setImmediate(() => {
        const due = this.local
        this.local = []
        this.here(due)
      })
    }
    this.local.push(...events)
  }

  /** A bus message (a JSON array of live events, from any instance, this one included): to this instance's streams. */
  receive(text: string): void {
    let events: unknown
    try {
      events = JSON.parse(text)
    } catch (err) {
      this.log.warn({ err }, 'ignoring a malformed live event message')
      return
    }
    if (!Array.isArray(events)) return
    const valid = events.filter(isLiveEvent)
    if (valid.length < events.length) this.log.warn('ignoring a malformed live event')
    this.here(valid)
  }

  private async drain() {
    this.sending = true
    try {
      while (this.queue.length) {
        // As many as fit in one NOTIFY (the brackets and commas counted); one larger goes alone, by the table.
        let bytes = 2 + this.queue[0].bytes
        let n = 1
        while (n < this.queue.length && bytes + 1 + this.queue[n].bytes <= this.bus.liveNotifyBytes) {
          bytes += 1 + this.queue[n].bytes
          n++
        }
        const taken = this.queue.splice(0, n)
        await this.bus.sendLive(`[${taken.map((t) => t.text).join(',')}]`)
        for (const t of taken) t.sent()
      }
    } finally {
      this.sending = false
    }
  }
}

const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string')

function isLiveEvent(e: unknown): e is LiveEvent {
  const o = e as Partial<Record<keyof LiveEvent, unknown>> | null
  return (
    typeof o === 'object' &&
    o !== null &&
    typeof o.tenant === 'string' &&
    typeof o.type === 'string' &&
    typeof o.json === 'string' &&
    typeof o.toTenant === 'boolean' &&
    isStrings(o.toUsers) &&
    isStrings(o.toRoles) &&
    isStrings(o.toTopics)
  )
}
