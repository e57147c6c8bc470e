import type { EventRow } from '../db/schema.ts'
import { RowFrames } from '../wire-format.ts'

/** A row the recent log holds, with its frames, built the first time a replay needs them and then kept. */
interface Held {
  row: EventRow
  /** Its frame, per locale for an event whose type rendered its text per locale, as replays asked for them. */
  frames: RowFrames<string>
}

/** The limits of what the recent log holds: the newest rows, at most this many, this many frame characters, this old. */
export interface RecentLogLimits {
  rows: number
  chars: number
  ageMs: number
}

/**
 * The newest rows of the event log, in memory, as the log tail delivered them: a stream that resumes from an
 * event among them (a reconnect after a deploy or a dropped Wi-Fi: seconds or minutes behind) is replayed from
 * here, without reading the database, each row's frame built once for all the streams that need it. A resume
 * from further back reads the database as before (stream/open-stream.ts).
 *
 * It holds every row with an id in (from, to], to being the tail's cursor: the tail hands over each settled row
 * once, in id order (ids rolled back never come, and are known not to exist). An edit or a recall changes a row
 * already held (the database's copy is updated in place, and a replay leaves out what a later change
 * superseded), so one empties the log and it starts again after the change: edits are rare.
 */
export class RecentLog {
  private held: Held[] = []
  /** Index of the oldest row still held in `held` (rows before it are dropped lazily, in one splice). */
  private start = 0
  private chars = 0
  /** Every row with an id in (from, to] is held. */
  from = 0
  to = 0

  constructor(private readonly limits: RecentLogLimits) {}

  /** Where the log begins: ids up to `cursor` are settled, and none is held. */
  reset(cursor: number): void {
    this.held = []
    this.start = 0
    this.chars = 0
    this.from = this.to = cursor
  }

  /** The tail's rows, settled and in id order, each once, right after the last ones appended. */
  append(rows: readonly EventRow[]): void {
    if (this.limits.rows === 0 || !rows.length) {
      if (rows.length) this.reset(rows[rows.length - 1].id)
      return
    }
    for (const row of rows) {
      // An edit or a recall: the rows held before it may no longer be what a replay would show.
      if (row.kind !== 'event') this.reset(row.id - 1)
      this.held.push({ row, frames: new RowFrames(row, (text) => text) })
      this.chars += sizeOf(row)
      this.to = row.id
    }
    this.trim(Date.now())
  }

  /**
   * Where a client resumes from, as LogReader.resumePoint would say, when the recent log can tell: an id in
   * (from, to] is `kept` if its row is held and has not expired, else `gone` (rolled back, or expired). Otherwise
   * undefined: ask the database.
   */
  resumePoint(id: number, now = Date.now()): 'kept' | 'gone' | undefined {
    this.trim(now)
    if (id <= this.from || id > this.to) return undefined
    const held = this.find(id)
    return held && held.row.expiresAt.getTime() > now ? 'kept' : 'gone'
  }

  /**
   * The rows in (after, upTo] for a replay, when all of them are held (undefined otherwise): events as they
   * stand (not recalled, not expired), their edits and recalls. The caller picks those its stream may see.
   */
  between(after: number, upTo: number, now = Date.now()): RecentRow[] | undefined {
    this.trim(now)
    if (after < this.from || upTo > this.to) return undefined
    const rows: RecentRow[] = []
    for (let i = this.indexAfter(after); i < this.held.length; i++) {
      const h = this.held[i]
      if (h.row.id > upTo) break
      if (h.row.expiresAt.getTime() <= now || (h.row.kind === 'event' && h.row.recalledAt !== null)) continue
      rows.push(new RecentRow(h))
    }
    return rows
  }

  /** Rows held now (for tests and metrics). */
  get size(): number {
    return this.held.length - this.start
  }

  /** Drops the oldest rows past the limits. */
  private trim(now: number) {
    const oldest = now - this.limits.ageMs
    while (
      this.start < this.held.length &&
      (this.held.length - this.start > this.limits.rows ||
        this.chars > this.limits.chars ||
        this.held[this.start].row.createdAt.getTime() < oldest)
    ) {
      const dropped = this.held[this.start++]
      this.chars -= sizeOf(dropped.row)
      this.from = dropped.row.id
    }
    if (this.start > 1_024 && this.start * 2 > this.held.length) {
      this.held = this.held.slice(this.start)
      this.start = 0
    }
  }

  /** The first index in `held` of a row with an id above `id` (ids ascend: a binary search). */
  private indexAfter(id: number): number {
    let lo = this.start
    let hi = this.held.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.held[mid].row.id <= id) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  private find(id: number): Held | undefined {
    const i = this.indexAfter(id - 1)
    const h = this.held[i]
    return h?.row.id === id ? h : undefined
  }
}

/** A held row as a replay uses it: the row, and its frame in a locale (built once, shared by every replay). */
export class RecentRow {
  constructor(private readonly held: Held) {}

  get row(): EventRow {
    return this.held.row
  }

  frame(locale: string | undefined): string {
    return this.held.frames.of(locale)
  }
}

/** About the characters a row and its frame hold. */
const sizeOf = (row: EventRow) =>
  2 * (row.title.length + (row.body?.length ?? 0) + (row.dataJson?.length ?? 0) + (row.actionsJson?.length ?? 0)) +
  (row.localizedJson?.length ?? 0) +
  256
