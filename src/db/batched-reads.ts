/** A user of a tenant: what most batched reads are keyed by. */
export interface UserRef {
  tenant: string
  userId: string
}

/** A user's key in maps of users of several tenants. */
export const userKey = (tenant: string, userId: string) => `${tenant}\u0000${userId}`
export const keyOfUser = (u: UserRef) => userKey(u.tenant, u.userId)

/** The users as one JSON parameter, for `json_to_recordset(...) as w(tenant text, user_id text)`. */
export const usersJson = (users: readonly UserRef[]) =>
  JSON.stringify(users.map((u) => ({ tenant: u.tenant, user_id: u.userId })))

type Waiter<V> = { resolve: (value: V) => void; reject: (err: unknown) => void }

/** Keys per query at most. */
const MAX_BATCH = 1_000
/**
 * Queries start at least this long apart. Under a reconnect storm a query came back every 1.6 ms with about
 * three keys, so each stream open cost the database most of a statement; spaced, the keys of a few
 * milliseconds share one. A key asked for after a quiet spell is read at once.
 */
export const MIN_QUERY_INTERVAL_MS = 5
/**
 * The most a batched statement waits after the one before ended, however long that one ran: a statement held up
 * on PostgreSQL (a lock, a busy server) must not hold the next opens up as long again.
 */
export const MAX_WAIT_AFTER_MS = 100

/**
 * The spacing of batched statements: each starts at least MIN_QUERY_INTERVAL_MS after the one before started, and
 * at least as long after the one before ended as that one ran. The second rule is for a database that runs one
 * statement at a time on this very thread (PGlite): while a statement runs nothing else moves, so the next, started
 * at once, would hold the one key that arrived meanwhile, and a reconnect storm would cost a statement per stream
 * (4.6 ms each there). Left idle as long as it ran, the database serves the other steps of the opens under way, and
 * their keys go together (the wait is MAX_WAIT_AFTER_MS at most). On PostgreSQL a statement ends well within the
 * first rule's interval.
 */
export class QuerySpacing {
  private lastStart = Number.NEGATIVE_INFINITY
  private lastEnd = Number.NEGATIVE_INFINITY

  /** Milliseconds until the next statement may start (0: now). */
  wait(): number {
    const now = performance.now()
    const ran = Math.min(MAX_WAIT_AFTER_MS, Math.max(0, this.lastEnd - this.lastStart))
    return Math.max(0, this.lastStart + MIN_QUERY_INTERVAL_MS - now, this.lastEnd + ran - now)
  }

  /** A statement starts now. */
  started(): void {
    this.lastStart = performance.now()
  }

  /** The statement started last has ended (answered or failed). */
  finished(): void {
    this.lastEnd = performance.now()
  }
}

/**
 * Reads of one key each, asked for together, made as one query for all their keys (the stream opens of a
 * reconnect storm, thousands a second, read their users' subscriptions, preferences and locale this way). One
 * query runs at a time: keys asked for while it runs wait for it and go together in the next, so the busier
 * the service, the larger the batches, and a quiet one reads each key at once. Queries start at least
 * MIN_QUERY_INTERVAL_MS apart. A key asked for twice is read once.
 */
export class BatchedReads<K, V> {
  private queued = new Map<string, { key: K; waiters: Waiter<V>[] }>()
  private running = false
  private readonly spacing = new QuerySpacing()
  /** The flush waiting for the spacing to pass. */
  private spaced: NodeJS.Timeout | undefined

  constructor(
    private readonly keyOf: (key: K) => string,
    /** The values of these keys, by keyOf; a key left out has the value `missing`. */
    private readonly readMany: (keys: K[]) => Promise<Map<string, V>>,
    private readonly missing: V,
  ) {}

  read(key: K): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      // The first of a turn: the others of this turn (a burst of requests parsed together) join it.
      if (this.queued.size === 0 && !this.running) setImmediate(() => this.flush())
      const k = this.keyOf(key)
      const queued = this.queued.get(k)
      if (queued) queued.waiters.push({ resolve, reject })
      else this.queued.set(k, { key, waiters: [{ resolve, reject }] })
    })
  }

  private flush() {
    if (this.running || this.spaced || this.queued.size === 0) return
    const wait = this.spacing.wait()
    if (wait > 0) {
      this.spaced = setTimeout(() => {
        this.spaced = undefined
        this.flush()
      }, wait)
      return
    }
    this.spacing.started()
    const all = [...this.queued]
    this.queued = new Map()
    this.running = true
    const reads: Promise<void>[] = []
    for (let i = 0; i < all.length; i += MAX_BATCH) {
      const batch = all.slice(i, i + MAX_BATCH)
      reads.push(
        this.readMany(batch.map(([, q]) => q.key)).then(
          (found) => {
            for (const [k, q] of batch) {
              const value = found.has(k) ? (found.get(k) as V) : this.missing
              for (const w of q.waiters) w.resolve(value)
            }
          },
          (err) => {
            for (const [, q] of batch) for (const w of q.waiters) w.reject(err)
          },
        ),
      )
    }
    void Promise.all(reads).then(() => {
      this.spacing.finished()
      this.running = false
      this.flush()
    })
  }
}
