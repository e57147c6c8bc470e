import type { UserOverLimit } from '../cluster/presence.ts'
import type { EventRow } from '../db/schema.ts'
import type { LiveEvent } from '../events/live.ts'
import type { InAppFilter } from '../events/preference-rules.ts'
import type { ReceiptNotice, RollCallNotice } from '../events/receipts.ts'
import type { Metrics } from '../metrics.ts'
import { Frame, HEARTBEAT_FRAME, liveFrame, logFrame, RowFrames, receiptFrame, rollCallFrame } from '../wire-format.ts'
import type { DeliveryLog, JoinedEvents, StreamConnection } from './connection.ts'

/** A row of the log as its frame: an event (`notification`), an edit of one (`update`) or a recall (`delete`). */
const eventFrame = (e: EventRow) => new Frame(logFrame(e))

/** A live-only event as the user's in-app preferences judge it. */
const ruledLive = (e: LiveEvent) => ({
  tenant: e.tenant,
  type: e.type,
  priority: e.priority ?? 'normal',
  toTopics: e.toTopics,
})

/** Broadcasts that come together are joined into one write per stream up to about this many characters. */
const MAX_JOINED_LENGTH = 16_384

/**
 * A fan-out writes to sockets for at most about this long before the event loop gets a turn (a publish request
 * read, a statement's answer), then goes on where it was. Written in one go, 10,000 streams held the loop for
 * about 120 ms, and a publish arriving meanwhile waited for all of it before its statement could even start.
 * Short turns keep a steady publisher's answers fast, so its next events arrive while the fan-out runs and go
 * out joined: at 1,000 streams and one publish in flight, 0.1 ms gave 102,000-143,000 deliveries /s at 5-8 µs
 * of CPU each, 2 ms gave 64,000-80,000 at 11-13.5 µs (bench/HISTORY.md, Session 17). A turn costs a few µs.
 */
const FAN_OUT_SLICE_MS = 0.1
/** Streams written between two looks at the clock (a write takes 5-15 µs). */
const WRITES_PER_CHECK = 8
/**
 * Rows waiting for fan-out past which dispatch asks the log tail to wait before it reads more: a fan-out slower
 * than the publishes holds the backlog in the database, not in memory.
 */
const MAX_WAITING_ROWS = 2_000

/** Rows of the log, or live-only events, waiting for the fan-out under way to end. */
type WaitingFanOut =
  | { kind: 'rows'; items: EventRow[] }
  | { kind: 'live'; items: LiveEvent[] }
  /** Frames about events (receipts, roll-calls, nudges): each writes its own, after the events' fan-out. */
  | { kind: 'notices'; items: Array<() => void> }

/** How often streams past their token's `exp` are looked for: a stream outlives its token by at most this. */
const EXPIRY_SWEEP_MS = 1_000

/**
 * The open streams of one user, role or topic: the stream itself while there is one (most users have one
 * stream per instance, and a Set of its own costs about 130 bytes per stream), a Set from the second on.
 */
type Streams = StreamConnection | Set<StreamConnection>

/** Open streams of one tenant, indexed by who they are, so a publish touches only the streams it names. */
class TenantStreams {
  readonly all = new Set<StreamConnection>()
  readonly byUser = new Map<string, Streams>()
  readonly byRole = new Map<string, Streams>()
  readonly byTopic = new Map<string, Streams>()
  /** Streams following a `prefix*` pattern: few, so matched by scanning. */
  readonly withPrefixes = new Set<StreamConnection>()
}

/** Whether `row` can join a run of broadcasts to `tenant` (JoinedRun): one of them, neither recalled nor per locale. */
const joinsRun = (row: EventRow | undefined, tenant: string): boolean =>
  row?.toTenant === true && row.localizedJson === null && row.tenant === tenant && !row.recalledAt

/** Broadcasts to one tenant written to each stream together: their frames, joined from any one on when needed. */
class JoinedRun implements JoinedEvents {
  readonly events: Array<{ id: number; frame: Frame; row: EventRow }> = []
  /** Characters of all the frames. */
  length = 0
  private joined: Array<Frame | undefined> = []

  constructor(first: EventRow) {
    this.add(first)
  }

  add(row: EventRow): void {
    const frame = eventFrame(row)
    this.events.push({ id: row.id, frame, row })
    this.length += frame.text.length
    this.joined = []
  }

  joinedFrom(first: number): Frame {
    if (first === this.events.length - 1) return this.events[first].frame
    let frame = this.joined[first]
    if (!frame) {
      let text = ''
      for (let i = first; i < this.events.length; i++) text += this.events[i].frame.text
      frame = this.joined[first] = new Frame(text)
    }
    return frame
  }
}

const NO_STREAMS: readonly StreamConnection[] = []

/** The streams of one entry, to iterate. */
function streamsIn(streams: Streams | undefined): Iterable<StreamConnection> {
  if (streams instanceof Set) return streams
  return streams ? [streams] : NO_STREAMS
}

function addTo<K>(map: Map<K, Streams>, key: K, c: StreamConnection) {
  const streams = map.get(key)
  if (!streams) map.set(key, c)
  else if (streams instanceof Set) streams.add(c)
  else if (streams !== c) map.set(key, new Set([streams, c]))
}

function removeFrom<K>(map: Map<K, Streams>, key: K, c: StreamConnection) {
  const streams = map.get(key)
  if (streams === c) map.delete(key)
  else if (streams instanceof Set) {
    streams.delete(c)
    if (streams.size === 0) map.delete(key)
  }
}

/** The largest of some event ids (as the API writes them); 0 for none. */
const maxId = (ids: readonly string[]) => ids.reduce((max, id) => Math.max(max, Number(id)), 0)

/** The per-instance registry of open streams and the fan-out of live events to them. */
export class StreamHub {
  private readonly tenants = new Map<string, TenantStreams>()
  /** Every open stream, once: a director's stream is in the index of each tenant it carries. */
  private readonly streams = new Set<StreamConnection>()
  private heartbeat: NodeJS.Timeout
  private expirySweep: NodeJS.Timeout
  /** Set by closeAll: streams still opening when shutdown began are ended as soon as they register. */
  private shuttingDown = false
  size = 0
  /** Where the streams record what they were sent (the roll-call's "delivered"); nothing is recorded unset. */
  deliveryLog: DeliveryLog | undefined
  /** The fan-out under way (set from its start to its end, across slices), and what waits for it, oldest first. */
  private current: Iterator<void> | undefined
  private readonly waiting: WaitingFanOut[] = []
  private waitingRows = 0
  /** Resolved once the rows waiting are fewer than MAX_WAITING_ROWS again (dispatch's backpressure). */
  private roomWaiters: Array<() => void> = []
  /** Notices about events the log tail has not read yet, in arrival order: each goes out after its events' fan-out. */
  private held: Array<{ upTo: number; send: () => void }> = []
  /** How far the log tail has read (its cursor; set by the events plugin). Unset: every event counts as read. */
  readUpTo: () => number = () => Number.POSITIVE_INFINITY
  /** How long a fan-out runs before the event loop's turn, and how many streams it writes between looks at the clock. */
  fanOutSlice = { ms: FAN_OUT_SLICE_MS, writesPerCheck: WRITES_PER_CHECK }

  constructor(
    heartbeatMs: number,
    private readonly maxPerUser: number,
    private readonly metrics: Metrics,
    /** A fan-out that threw (a bug): it is dropped, and the ones after it go on. */
    private readonly onFanOutError: (err: unknown) => void,
  ) {
    this.heartbeat = setInterval(() => this.broadcastAll(HEARTBEAT_FRAME), heartbeatMs)
    this.heartbeat.unref()
    this.expirySweep = setInterval(() => this.closeExpired(), EXPIRY_SWEEP_MS)
    this.expirySweep.unref()
  }

  /**
   * Adds a stream; past the per-user limit the user's oldest stream here is evicted. (Across instances the
   * limit is kept by evictAcross, when presence has written the stream's count.)
   */
  add(c: StreamConnection): void {
    let t = this.tenants.get(c.tenant)
    if (!t) this.tenants.set(c.tenant, (t = new TenantStreams()))
    if (this.countIn(t, c.userId) >= this.maxPerUser) this.evictOldest(c.tenant, c.userId, 1)
    c.deliveryLog = this.deliveryLog
    this.streams.add(c)
    t.all.add(c)
    addTo(t.byUser, c.userId, c)
    for (const role of c.roles) addTo(t.byRole, role, c)
    for (const topic of c.exactTopics) addTo(t.byTopic, topic, c)
    if (c.topicPrefixes.length) t.withPrefixes.add(c)
    // The other tenants its token covers: by user and the roles there (topics are the current tenant's only).
    for (const [tenant, roles] of c.otherTenants) {
      let other = this.tenants.get(tenant)
      if (!other) this.tenants.set(tenant, (other = new TenantStreams()))
      other.all.add(c)
      addTo(other.byUser, c.userId, c)
      for (const role of roles) addTo(other.byRole, role, c)
    }
    this.size++
    this.metrics.openStreams.inc()
    this.metrics.streamsOpened.inc()
    c.onClose(this.removeClosed)
    if (this.shuttingDown) c.close('shutdown')
  }

  /** Every stream's close listener here: one function, not a closure per stream. */
  private readonly removeClosed = (c: StreamConnection) => this.remove(c)

  private remove(c: StreamConnection): void {
    if (!this.streams.delete(c)) return
    for (const tenant of c.tenants) {
      const t = this.tenants.get(tenant)
      if (!t?.all.delete(c)) continue
      removeFrom(t.byUser, c.userId, c)
      for (const role of c.rolesIn(tenant)) removeFrom(t.byRole, role, c)
      if (tenant === c.tenant) {
        for (const topic of c.exactTopics) removeFrom(t.byTopic, topic, c)
        t.withPrefixes.delete(c)
      }
      if (t.all.size === 0) this.tenants.delete(tenant)
    }
    this.size--
    this.metrics.openStreams.dec()
    if (c.closeReason) this.metrics.streamsClosed.inc({ reason: c.closeReason })
  }

  /**
   * Fans committed rows of the log out, in id order. Each is serialized once. An edit or a recall has the
   * tenant and audience of its event, so it reaches the streams its event reached; an event recalled before it
   * was read here is not sent at all (its recall follows). Returns a promise while too many rows wait for
   * the fan-out under way: the log tail reads on once it settles.
   */
  dispatch(rows: readonly EventRow[]): Promise<void> | undefined {
    this.waitingRows += rows.length
    this.queueFanOut({ kind: 'rows', items: [...rows] })
    const last = rows.at(-1)
    if (last && this.held.length) {
      const ready = this.held.filter((h) => h.upTo <= last.id)
      this.held = this.held.filter((h) => h.upTo > last.id)
      if (ready.length) this.queueFanOut({ kind: 'notices', items: ready.map((h) => h.send) })
    }
    if (this.waitingRows < MAX_WAITING_ROWS) return undefined
    return new Promise((resolve) => this.roomWaiters.push(resolve))
  }

  /**
   * A live-only event (`store: false`, events/live.ts) to this instance's streams that match it by the rules of
   * dispatch (users, roles, topics and patterns, the tenant; the user's in-app preferences), its frame built once.
   * It has no id: a stream named twice (as user and by role, say) is written once by a set of this dispatch's
   * streams, and one that is behind or full drops it (StreamConnection.writeLive).
   */
  dispatchLive(e: LiveEvent): void {
    this.dispatchLiveAll([e])
  }

  /**
   * Several live-only events, in order (those sent together here, or a bus message from another instance). As in
   * dispatch, tenant broadcasts that come together go to each stream in one write (a burst of them cost a write
   * per event per stream, twice the CPU per delivery of stored broadcasts, which the log tail joins).
   */
  dispatchLiveAll(events: readonly LiveEvent[]): void {
    this.queueFanOut({ kind: 'live', items: [...events] })
  }

  /**
   * Fans out after what is queued before, in slices of about `fanOutSlice.ms` with the event loop's turn between
   * them (setImmediate: after pending I/O). What arrives while a fan-out runs waits, and goes out with whatever
   * else arrived meanwhile as one fan-out: tenant broadcasts among it are joined into one write per stream, as
   * for a burst. Broadcasts next in line also join a run of broadcasts to their tenant being written, for the
   * streams it has not reached yet (joinWaiting). A stream gets the rows of one fan-out before those of the next,
   * so in id order. A stream that registers meanwhile starts above the tail's cursor, which covers every row
   * queued (open-stream.ts): deliver() drops them for it, and its replay brings them. A stream that closes
   * meanwhile drops them too.
   */
  private queueFanOut(next: WaitingFanOut): void {
    const last = this.waiting.at(-1)
    // The same kind as the last waiting: one fan-out for both (the union's item types match by kind).
    if (last?.kind === next.kind) (last.items as unknown[]).push(...next.items)
    else this.waiting.push(next)
    if (!this.current) this.runFanOuts()
  }

  private readonly runFanOuts = (): void => {
    const until = performance.now() + this.fanOutSlice.ms
    for (;;) {
      if (!this.current) {
        const next = this.waiting.shift()
        if (!next) break
        if (next.kind === 'rows') {
          this.current = this.fanOut(next.items)
          this.waitingRows -= next.items.length
          if (this.waitingRows < MAX_WAITING_ROWS) this.releaseTail()
        } else if (next.kind === 'live') this.current = this.fanOutLive(next.items)
        else this.current = this.sendNotices(next.items)
      }
      let done: boolean | undefined
      try {
        done = this.current.next().done
      } catch (err) {
        done = true
        this.onFanOutError(err)
      }
      if (done) this.current = undefined
      else if (performance.now() >= until) {
        setImmediate(this.runFanOuts)
        return
      }
    }
  }

  /** Each notice's frames, pausing every `writesPerCheck` notices. */
  private *sendNotices(notices: ReadonlyArray<() => void>): Generator<void> {
    const perCheck = this.fanOutSlice.writesPerCheck
    for (let i = 0; i < notices.length; i++) {
      notices[i]()
      if ((i + 1) % perCheck === 0) yield
    }
  }

  /**
   * Sends a notice about events up to `upTo` once the streams here have been sent them: after the fan-outs under
   * way or waiting (an ack can come back from one stream while the event is still being written to the user's
   * others), and after the event's own fan-out when the log tail has not read it yet (an ack made through
   * another instance).
   */
  private afterEvents(upTo: number, send: () => void): void {
    if (upTo > this.readUpTo()) this.held.push({ upTo, send })
    else this.queueFanOut({ kind: 'notices', items: [send] })
  }

  /** Lets the log tail read on (dispatch's backpressure). */
  private releaseTail(): void {
    for (const resolve of this.roomWaiters.splice(0)) resolve()
  }

  /** dispatch's fan-out, pausing (yield) every `writesPerCheck` streams. */
  private *fanOut(rows: readonly EventRow[]): Generator<void> {
    const perCheck = this.fanOutSlice.writesPerCheck
    let writes = 0
    for (let i = 0; i < rows.length; i++) {
      const e = rows[i]
      const t = this.tenants.get(e.tenant)
      if (!t || e.recalledAt) continue
      if (e.toTenant && e.localizedJson === null) {
        // Broadcasts to one tenant that come together (a burst) go to each stream in one write, up to a size
        // that keeps a slow reader's share of memory where a single event would put it.
        const run = new JoinedRun(e)
        while (run.length < MAX_JOINED_LENGTH && joinsRun(rows[i + 1], e.tenant)) run.add(rows[++i])
        // Broadcasts waiting behind this fan-out may join the run only if nothing else of it comes after.
        const lastOfFanOut = i === rows.length - 1
        let taken = 0
        for (const c of t.all) {
          // A stream whose user turned some of these off (preferences, `inApp: false`) gets the others one by one.
          if (c.inApp && run.events.some((r) => c.hides(r.row))) {
            for (const r of run.events) if (!c.hides(r.row)) c.deliver(r.id, r.frame)
          } else c.deliverAll(run)
          if (++writes % perCheck === 0) {
            yield
            if (lastOfFanOut) taken = this.joinWaiting(run, e.tenant, taken)
          }
        }
        continue
      }
      // The row's frame in each stream's locale (one for all when its text is not per locale), each built once.
      const frames = new RowFrames(e, (text) => new Frame(text))
      const send = (c: StreamConnection) => {
        if (!c.hides(e)) c.deliver(e.id, frames.of(c.locale))
      }
      // A broadcast whose text is per locale: one by one (a stream's locale picks its frame), never joined.
      if (e.toTenant) {
        for (const c of t.all) {
          send(c)
          if (++writes % perCheck === 0) yield
        }
        continue
      }
      // A stream named twice (as user and by role, say) gets the event once: deliver() skips repeated ids.
      const named = [
        ...e.toUsers.map((user) => t.byUser.get(user)),
        ...e.toRoles.map((role) => t.byRole.get(role)),
        ...e.toTopics.map((topic) => t.byTopic.get(topic)),
      ]
      for (const streams of named) {
        for (const c of streamsIn(streams)) {
          send(c)
          if (++writes % perCheck === 0) yield
        }
      }
      if (e.toTopics.length) for (const c of t.withPrefixes) if (c.followsAnyTopic(e.toTopics)) send(c)
    }
  }

  /**
   * Broadcasts to the run's tenant that the log tail read while the run is being written join it for the streams
   * it has not reached yet: those get them in this write, not one whole fan-out later, and the fan-out that then
   * goes out for them skips what a stream has (StreamConnection.deliverAll). Only rows next in line: the first
   * rows of the next waiting fan-out, each a broadcast of this tenant, none recalled or per locale. `taken`:
   * how many of that fan-out's rows the run holds already; returns how many it holds now.
   */
  private joinWaiting(run: JoinedRun, tenant: string, taken: number): number {
    const next = this.waiting[0]
    if (next?.kind !== 'rows') return taken
    while (taken < next.items.length && run.length < MAX_JOINED_LENGTH && joinsRun(next.items[taken], tenant)) {
      run.add(next.items[taken++])
    }
    return taken
  }

  /** dispatchLiveAll's fan-out, pausing (yield) every `writesPerCheck` streams. */
  private *fanOutLive(events: readonly LiveEvent[]): Generator<void> {
    const perCheck = this.fanOutSlice.writesPerCheck
    let writes = 0
    for (let i = 0; i < events.length; i++) {
      const e = events[i]
      if (!e.toTenant) {
        this.dispatchLiveTo(e)
        continue
      }
      const run = [e]
      let length = e.json.length
      while (length < MAX_JOINED_LENGTH && events[i + 1]?.toTenant && events[i + 1].tenant === e.tenant) {
        run.push(events[++i])
        length += events[i].json.length
      }
      const t = this.tenants.get(e.tenant)
      if (!t) continue
      const frames = run.map((r) => new Frame(liveFrame(r.json)))
      const joined = frames.length === 1 ? frames[0] : new Frame(frames.map((f) => f.text).join(''))
      const ruled = run.map(ruledLive)
      for (const c of t.all) {
        // A stream whose user turned some of these off (preferences, `inApp: false`) gets the others one by one.
        if (c.inApp && ruled.some((r) => c.hides(r))) {
          for (const [k, r] of ruled.entries()) if (!c.hides(r)) c.writeLive(frames[k])
        } else c.writeLive(joined)
        if (++writes % perCheck === 0) yield
      }
    }
  }

  /** A live-only event to named users, roles and topics (dispatchLive). */
  private dispatchLiveTo(e: LiveEvent): void {
    const t = this.tenants.get(e.tenant)
    if (!t) return
    const frame = new Frame(liveFrame(e.json))
    const ruled = ruledLive(e)
    const written = new Set<StreamConnection>()
    const send = (c: StreamConnection) => {
      if (written.has(c)) return
      written.add(c)
      if (!c.hides(ruled)) c.writeLive(frame)
    }
    for (const user of e.toUsers) for (const c of streamsIn(t.byUser.get(user))) send(c)
    for (const role of e.toRoles) for (const c of streamsIn(t.byRole.get(role))) send(c)
    for (const topic of e.toTopics) for (const c of streamsIn(t.byTopic.get(topic))) send(c)
    if (e.toTopics.length) for (const c of t.withPrefixes) if (c.followsAnyTopic(e.toTopics)) send(c)
  }

  /**
   * The user's topic subscriptions changed: their streams that follow their subscriptions (opened without
   * `?topics=`) follow the change from now on. Streams opened with `?topics=` keep the topics they asked for.
   */
  applySubscriptionChange(tenant: string, userId: string, topic: string, subscribed: boolean): void {
    const t = this.tenants.get(tenant)
    if (!t) return
    for (const c of streamsIn(t.byUser.get(userId))) {
      // A director's stream of another current tenant is indexed here too: its topics are that tenant's.
      if (c.tenant !== tenant || !c.followsSubscriptions || !c.setFollows(topic, subscribed)) continue
      if (subscribed) addTo(t.byTopic, topic, c)
      else removeFrom(t.byTopic, topic, c)
    }
  }

  /**
   * The user's preferences changed: their streams here leave out what `filter` hides (none: nothing) from the
   * next event on, live and in any replay after.
   */
  setInAppFilter(tenant: string, userId: string, filter: InAppFilter | undefined): void {
    for (const c of streamsIn(this.tenants.get(tenant)?.byUser.get(userId))) if (c.tenant === tenant) c.inApp = filter
  }

  /** The users of a tenant with open streams here. */
  usersOf(tenant: string): string[] {
    return [...(this.tenants.get(tenant)?.byUser.keys() ?? [])]
  }

  /** The tenants with an open stream here that follows `topic` by name (the admin overview's topic). */
  tenantsFollowing(topic: string): string[] {
    const tenants: string[] = []
    for (const [tenant, t] of this.tenants) if (t.byTopic.has(topic)) tenants.push(tenant)
    return tenants
  }

  /** An ack or read of the user's to every open stream of theirs here, after the events it is about. */
  sendReceipt(tenant: string, userId: string, notice: ReceiptNotice): void {
    const frame = receiptFrame(notice)
    this.writeToUserAfter(tenant, userId, 'upTo' in notice ? Number(notice.upTo) : maxId(notice.ids), frame)
  }

  /** To a publisher's open streams here: recipients acked or read their events (after those events). */
  sendRollCall(tenant: string, userId: string, notice: RollCallNotice): void {
    this.writeToUserAfter(tenant, userId, maxId(notice.ids), rollCallFrame(notice))
  }

  /** A frame to every open stream of the user here, once the events up to `upTo` have been sent (afterEvents). */
  private writeToUserAfter(tenant: string, userId: string, upTo: number, frame: string): void {
    this.afterEvents(upTo, () => {
      for (const c of streamsIn(this.tenants.get(tenant)?.byUser.get(userId))) c.write(frame)
    })
  }

  /**
   * A nudge about the event `e` to the open streams here of `users`: only to streams that carry the event (the
   * same rule as dispatch), so a nudge shows no one an event their token does not let them see. `frameFor` builds
   * the frame in a locale (an event whose type rendered its text per locale), once per locale used.
   */
  nudge(e: EventRow, users: readonly string[], frameFor: (locale: string | undefined) => string): void {
    this.afterEvents(e.id, () => this.nudgeNow(e, users, frameFor))
  }

  private nudgeNow(e: EventRow, users: readonly string[], frameFor: (locale: string | undefined) => string): void {
    const t = this.tenants.get(e.tenant)
    if (!t) return
    const frames = new Map<string | undefined, string>()
    const frameOf = (c: StreamConnection) => {
      const locale = e.localizedJson === null ? undefined : c.locale
      let frame = frames.get(locale)
      if (frame === undefined) frames.set(locale, (frame = frameFor(locale)))
      return frame
    }
    for (const user of users) {
      for (const c of streamsIn(t.byUser.get(user))) {
        if (c.carries(e) && !c.hides(e)) c.write(frameOf(c))
      }
    }
  }

  /** Bytes held for all open streams, not yet taken by their sockets. */
  bufferedBytes(): number {
    let total = 0
    for (const c of this.streams) total += c.bufferedBytes
    return total
  }

  /** The user's open streams on this instance. */
  streamsOf(tenant: string, userId: string): StreamConnection[] {
    return [...streamsIn(this.tenants.get(tenant)?.byUser.get(userId))]
  }

  /** When the user's oldest open stream here opened (ms), or undefined. Sets iterate in insertion order. */
  oldestOpenedAt(tenant: string, userId: string): number | undefined {
    const streams = this.tenants.get(tenant)?.byUser.get(userId)
    if (streams instanceof Set) return streams.values().next().value?.openedAt
    return streams?.openedAt
  }

  /** Evicts the user's `count` oldest streams here (fewer if there are fewer), telling each why. */
  evictOldest(tenant: string, userId: string, count: number): void {
    // A copy: each eviction removes its stream from the set being read.
    const oldestFirst = this.streamsOf(tenant, userId).slice(0, count)
    for (const c of oldestFirst) c.evict(this.maxPerUser)
  }

  /**
   * Brings a user back to the limit across instances: evicts the oldest of their streams, here or elsewhere,
   * until maxPerUser remain; returns how many each other instance must evict (through the bus).
   * Another instance is known only by its count and when its oldest stream opened, so all of its streams are
   * taken as that old: when more than one must go (a burst of opens), the ones chosen between instances may
   * not be exactly the oldest. Streams still opening here are the newest, not candidates: add() keeps the
   * limit here when they arrive.
   */
  evictAcross(over: UserOverLimit): Map<string, number> {
    let excess = over.elsewhere.reduce((n, e) => n + e.streams, over.here) - this.maxPerUser
    const here = this.streamsOf(over.tenant, over.userId)
    const elsewhere = [...over.elsewhere].sort((a, b) => a.oldestAt - b.oldestAt)
    const requests = new Map<string, number>()
    let h = 0
    let e = 0
    for (; excess > 0 && (h < here.length || e < elsewhere.length); excess--) {
      const other = elsewhere[e]
      if (h < here.length && (!other || here[h].openedAt <= other.oldestAt)) {
        here[h++].evict(this.maxPerUser)
        continue
      }
      const asked = (requests.get(other.instanceId) ?? 0) + 1
      requests.set(other.instanceId, asked)
      if (asked >= other.streams) e++
    }
    return requests
  }

  countForUser(tenant: string, userId: string): number {
    const t = this.tenants.get(tenant)
    return t ? this.countIn(t, userId) : 0
  }

  private countIn(t: TenantStreams, userId: string): number {
    const streams = t.byUser.get(userId)
    return streams instanceof Set ? streams.size : streams ? 1 : 0
  }

  /** Ends streams whose token has expired (a pass over 50,000 streams takes well under a millisecond). */
  private closeExpired() {
    const now = Date.now()
    const expired: StreamConnection[] = []
    for (const c of this.streams) if (c.expiresAt <= now) expired.push(c)
    for (const c of expired) c.close('expired')
  }

  private broadcastAll(frame: Frame) {
    for (const c of this.streams) c.write(frame)
  }

  /** Ends every stream (shutdown); clients reconnect elsewhere and resume. Returns the streams it ended. */
  closeAll(): StreamConnection[] {
    this.shuttingDown = true
    this.releaseTail()
    clearInterval(this.heartbeat)
    clearInterval(this.expirySweep)
    const ended = [...this.streams]
    for (const c of ended) c.close('shutdown')
    return ended
  }
}
