import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises'
import type { SQL } from 'drizzle-orm'
import { PgDialect } from 'drizzle-orm/pg-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BatchedReads, MAX_WAIT_AFTER_MS, MIN_QUERY_INTERVAL_MS } from '../src/db/batched-reads.ts'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { live, publish, streams, unique, waitForId } from './helpers/stream-fixtures.ts'

// Reads of one key each made together share a query (db/batched-reads.ts): what keeps a reconnect storm, thousands
// of stream opens a second, from costing the database a query per stream for its users' profiles.

/** A BatchedReads over a fake store that records each call of readMany. */
function recorded(store: Record<string, number>, fail?: () => Error | undefined) {
  const calls: string[][] = []
  let release: (() => void) | undefined
  const reads = new BatchedReads<string, number>(
    (key) => key,
    async (keys) => {
      calls.push([...keys])
      if (release === undefined) await new Promise<void>((resolve) => (release = resolve))
      const err = fail?.()
      if (err) throw err
      return new Map(keys.filter((k) => k in store).map((k) => [k, store[k]]))
    },
    -1,
  )
  return {
    reads,
    calls,
    /** Lets every read (the one waiting and those after) answer. */
    answer: () => {
      const r = release
      release = () => {}
      r?.()
    },
  }
}

describe('BatchedReads', () => {
  it('reads asked for in one turn are one read of their distinct keys; each caller gets its own value', async () => {
    const { reads, calls, answer } = recorded({ a: 1, b: 2 })
    const asked = [reads.read('a'), reads.read('b'), reads.read('a'), reads.read('nobody')]
    await nextTurn()
    answer()
    expect(await Promise.all(asked)).toEqual([1, 2, 1, -1])
    expect(calls).toEqual([['a', 'b', 'nobody']])
  })

  it('one read at a time: keys asked for while one runs go together in the next', async () => {
    const { reads, calls, answer } = recorded({ a: 1, b: 2, c: 3, d: 4 })
    const first = reads.read('a')
    await nextTurn()
    expect(calls).toEqual([['a']])
    const later = [reads.read('b'), reads.read('c')]
    await nextTurn()
    const last = reads.read('d')
    await nextTurn()
    expect(calls).toEqual([['a']]) // still waiting on the first
    answer()
    expect(await first).toBe(1)
    expect(await Promise.all([...later, last])).toEqual([2, 3, 4])
    expect(calls).toEqual([['a'], ['b', 'c', 'd']])
  })

  it('queries start MIN_QUERY_INTERVAL_MS apart: keys asked for one by one meanwhile share the next', async () => {
    const { reads, calls, answer } = recorded({ a: 1, b: 2, c: 3 })
    answer() // every read answers at once: only the interval keeps b and c apart from a
    const started = performance.now()
    expect(await reads.read('a')).toBe(1)
    const b = reads.read('b')
    await nextTurn() // without the interval, b would be read alone here
    const c = reads.read('c')
    expect(await Promise.all([b, c])).toEqual([2, 3])
    expect(calls).toEqual([['a'], ['b', 'c']])
    expect(performance.now() - started).toBeGreaterThanOrEqual(MIN_QUERY_INTERVAL_MS - 1)
  })

  /** A BatchedReads whose every read takes `ranMs`; `calls`: each read's keys and when it started. */
  function slow(ranMs: number) {
    const calls: Array<{ keys: string[]; at: number }> = []
    const reads = new BatchedReads<string, string>(
      (key) => key,
      async (keys) => {
        calls.push({ keys: [...keys], at: performance.now() })
        await sleep(ranMs)
        return new Map(keys.map((k) => [k, k.toUpperCase()]))
      },
      '',
    )
    return { reads, calls }
  }

  it('after a read that ran long, the next waits as long again: keys asked for meanwhile share it', async () => {
    // PGlite runs each read on this thread: while one runs, the opens that would queue keys cannot move.
    const RAN_MS = MAX_WAIT_AFTER_MS
    const { reads, calls } = slow(RAN_MS)
    expect(await reads.read('a')).toBe('A')
    const ended = performance.now()
    const b = reads.read('b')
    await sleep(RAN_MS / 5) // past MIN_QUERY_INTERVAL_MS: without the rule, b would be read alone by now
    const c = reads.read('c')
    expect(await Promise.all([b, c])).toEqual(['B', 'C'])
    expect(calls.map((call) => call.keys)).toEqual([['a'], ['b', 'c']])
    expect(calls[1].at - ended).toBeGreaterThanOrEqual(RAN_MS - 5)
  })

  it('however long a read ran, the next waits at most MAX_WAIT_AFTER_MS after it', async () => {
    const RAN_MS = 3 * MAX_WAIT_AFTER_MS
    const { reads, calls } = slow(RAN_MS)
    expect(await reads.read('a')).toBe('A')
    const ended = performance.now()
    expect(await reads.read('b')).toBe('B')
    const waited = calls[1].at - ended
    expect(waited).toBeGreaterThanOrEqual(MAX_WAIT_AFTER_MS - 5)
    expect(waited).toBeLessThan(2 * MAX_WAIT_AFTER_MS)
  })

  it('a failed read fails its callers only; the next batch reads again', async () => {
    let failing = true
    const { reads, calls, answer } = recorded({ a: 1, b: 2 }, () => (failing ? new Error('database down') : undefined))
    const failed = reads.read('a')
    await nextTurn()
    answer()
    await expect(failed).rejects.toThrow('database down')
    failing = false
    expect(await reads.read('b')).toBe(2)
    expect(calls).toEqual([['a'], ['b']])
  })
})

describeEachBackend('stream opens share their profile reads', (backend) => {
  let t: TestApp
  const statements: string[] = []
  const dialect = new PgDialect()
  /** A text only StreamProfiles' read of a batch of users has. */
  const PROFILE_READ = 'from topic_subscriptions s where s.tenant = w.tenant'
  beforeAll(async () => {
    t = await startApp(backend)
    // Every statement the service runs, as text. Each profile read takes 50 ms more, as on a busy database: the
    // opens that arrive meanwhile must share the next read, however slowly the machine lets them arrive (under
    // the parallel suites' load they arrive over hundreds of milliseconds, and 2 ms reads shared little).
    const query = t.database.query.bind(t.database)
    t.database.query = async (statement: SQL, ...rest) => {
      const text = dialect.sqlToQuery(statement).sql
      statements.push(text)
      if (text.includes(PROFILE_READ)) await sleep(50)
      return query(statement, ...rest)
    }
  })
  afterAll(() => t.close())
  const open = streams(() => t)

  it('40 streams opening at once read their 40 users’ subscriptions, preferences and locale in a few statements', async () => {
    const tenant = unique('storm')
    const users = Array.from({ length: 40 }, (_, i) => `user-${i}`)
    statements.length = 0
    const opened = await Promise.all(users.map((sub) => open({ sub, tenant }).then(live)))
    const profileReads = statements.filter((s) => s.includes(PROFILE_READ))
    expect(profileReads.length).toBeGreaterThanOrEqual(1)
    // PGlite runs each statement on the event loop itself, so the requests are read one by one between them: the
    // sharing is PostgreSQL's (where a storm's opens wait on round trips together).
    // At most one statement per two streams (one a stream was the way before; typically 2-5 here).
    expect(profileReads.length).toBeLessThanOrEqual(backend === 'postgres' ? users.length / 2 : users.length)
    // And each stream is what it should be: live, with what is published to it.
    const id = await publish(t, tenant, { to: { tenant: true } })
    await Promise.all(opened.map((s) => waitForId(s, id)))
  })
})
