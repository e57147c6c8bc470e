import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Database, openDatabase } from '../src/db/client.ts'
import { runMigrations } from '../src/db/migrate.ts'
import { BLOCK_IDS } from '../src/events/log-blocks.ts'
import { prune } from '../src/events/retention.ts'
import { MIGRATIONS_FOLDER } from '../src/package-files.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import {
  type BackendName,
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

// The log is partitioned by event id in blocks of about a day (src/events/log-blocks.ts). What a user would
// notice: ids jump once a day and everything still works across the jump (live streams, resumes, REST); a day
// whose events have all expired leaves in one go, with its receipts, recipients and deliveries; a block with one
// event still to keep stays; an installation from before the blocks keeps its events when it upgrades.

const tables = ['events', 'receipts', 'event_recipients', 'stream_deliveries'] as const

async function count(database: Database, from: string): Promise<number> {
  const [{ n }] = await database.query<{ n: string | number }>(sql.raw(`select count(*) as n from ${from}`))
  return Number(n)
}

/** The partitions of `table` that exist, by name. */
async function partitionsOf(database: Database, table: string): Promise<string[]> {
  const rows = await database.query<{ name: string }>(sql`
    select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = ${table}::regclass order by 1`)
  return rows.map((r) => r.name)
}

// On PGlite the service does not roll blocks (retention.ts says why); the mechanism is tested there too.
describeEachBackend('the event log in blocks', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    // Rows are aged in the database behind the service's back: its memory of the newest rows is off.
    t = await startApp(backend, { config: { REPLAY_MEMORY_EVENTS: 0 } })
  })
  afterAll(() => t.close())

  const kim = () => t.token({ sub: 'kim' })
  const publish = async (title: string, extra: object = {}) => {
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'school', scope: PUBLISHER })}`)
      .send({ type: 'x.y', to: { tenant: true }, title, ...extra })
    expect(res.status).toBe(201)
    return res.body.id as string
  }
  /** Makes the first event of the block being written a day and an hour old. */
  const ageCurrentBlock = async (block: number) =>
    t.database.query(sql`update events set created_at = created_at - interval '25 hours'
      where id >= ${block * BLOCK_IDS} and id < ${(block + 1) * BLOCK_IDS}`)

  let a: string
  let b: string

  it('moves ids on to the next block once the current one is a day old, and streams, resumes and REST cross the jump', async () => {
    a = await publish('a')
    // Within the day nothing moves; the block after the current one is made ready.
    expect(await prune(t.database, 30, 30, true)).toMatchObject({ blocks: 0, events: 0 })
    expect(await partitionsOf(t.database, 'events')).toEqual(['events_b0', 'events_b1'])

    const live = await SseClient.open(t.url, { token: kim() })
    await ageCurrentBlock(0)
    let a2: string
    if (backend === 'pglite') {
      // The embedded database keeps its log in one block unless told otherwise.
      await prune(t.database, 30)
      a2 = await publish('a2')
      expect(Number(a2)).toBe(Number(a) + 1)
      await prune(t.database, 30, 30, true)
    } else {
      a2 = await publish('a2')
      expect(Number(a2)).toBe(Number(a) + 1)
      // On PostgreSQL, by default.
      await prune(t.database, 30)
    }
    b = await publish('b')
    expect(Number(b)).toBe(BLOCK_IDS)
    for (const table of tables)
      expect(await partitionsOf(t.database, table)).toEqual([`${table}_b0`, `${table}_b1`, `${table}_b2`])

    // A stream that was open gets b live; one resuming from a gets what followed it, with no reset.
    await live.waitForNotifications(2)
    expect(live.notificationIds).toEqual([a2, b])
    const resumed = await SseClient.open(t.url, { token: kim(), lastEventId: a })
    await resumed.waitForNotifications(2)
    expect(resumed.events.map((e) => e.event)).not.toContain('reset')
    expect(resumed.notificationIds).toEqual([a2, b])
    live.close()
    resumed.close()

    const got = await t.http().get(`/v1/events/${b}`).set('authorization', `Bearer ${kim()}`)
    expect(got.status).toBe(200)
    expect(got.body).toMatchObject({ id: b, title: 'b' })
    const after = await t.http().get(`/v1/events?after=${a}`).set('authorization', `Bearer ${kim()}`)
    expect(after.body.events.map((e: { id: string }) => e.id)).toEqual([a2, b])
    await t.http().post(`/v1/events/${b}/read`).set('authorization', `Bearer ${kim()}`).expect(204)
    const unread = await t.http().get('/v1/events/unread-count').set('authorization', `Bearer ${kim()}`)
    expect(unread.body.unread).toBe(2)
  })

  it('drops a block whose events have all expired at once, with their receipts, recipients and deliveries; a resume from it gets reset', async () => {
    await t.http().post(`/v1/events/${a}/read`).set('authorization', `Bearer ${kim()}`).expect(204)
    // A stream delivery and a push record of a, as the stream flusher and the push planner write them.
    await t.database.query(
      sql`insert into stream_deliveries (event_id, user_ids, delivered_at) values (${a}, array['kim'], now())`,
    )
    await t.database.query(
      sql`insert into push_deliveries (event_id, tenant, user_id, state) values (${a}, 't1', 'kim', 'sent')`,
    )
    expect(await count(t.database, `receipts where event_id = ${a}`)).toBe(1)
    expect(await count(t.database, `event_recipients where event_id = ${a}`)).toBe(1)
    await t.database.query(sql`update events set expires_at = now() - interval '1 second' where id < ${BLOCK_IDS}`)

    // Two instances prune at once (WORKERS, or several services): the block goes once, neither fails. (Its two
    // events may be counted by both: one drops the block while the other deletes its expired rows.)
    const [one, other] = await Promise.all([prune(t.database, 30, 30, true), prune(t.database, 30, 30, true)])
    expect(one.blocks + other.blocks).toBe(1)
    expect(one.events + other.events).toBeGreaterThanOrEqual(2)
    for (const table of tables) expect(await partitionsOf(t.database, table)).toEqual([`${table}_b1`, `${table}_b2`])
    expect(await count(t.database, `push_deliveries where event_id = ${a}`)).toBe(0)
    expect(await count(t.database, `receipts where event_id = ${b}`)).toBe(1)

    const history = await t.http().get('/v1/events').set('authorization', `Bearer ${kim()}`)
    expect(history.body.events.map((e: { id: string }) => e.id)).toEqual([b])
    const resumed = await SseClient.open(t.url, { token: kim(), lastEventId: a })
    await resumed.waitForNotifications(1)
    expect(resumed.events[0]).toMatchObject({ event: 'reset', data: '{"reason":"expired"}' })
    expect(resumed.notificationIds).toEqual([b])
    resumed.close()
    // A second run finds nothing more to do.
    expect(await prune(t.database, 30, 30, true)).toMatchObject({ blocks: 0, events: 0 })
  })

  it('keeps a block that still holds an event to keep, and deletes its expired events one by one', async () => {
    const short = await publish('short', { ttl: 60 })
    await ageCurrentBlock(1)
    await prune(t.database, 30, 30, true)
    const c = await publish('c')
    expect(Number(c)).toBe(2 * BLOCK_IDS)
    await t.database.query(sql`update events set expires_at = now() - interval '1 second' where id = ${short}`)

    expect(await prune(t.database, 30, 30, true)).toMatchObject({ blocks: 0, events: 1 })
    expect(await partitionsOf(t.database, 'events')).toEqual(['events_b1', 'events_b2', 'events_b3'])
    const history = await t.http().get('/v1/events').set('authorization', `Bearer ${kim()}`)
    expect(history.body.events.map((e: { id: string }) => e.id)).toEqual([c, b])
    // b's receipt stays with it.
    expect(await count(t.database, `receipts where event_id = ${b}`)).toBe(1)
  })
  it('rolls and drops in one pass, before the new block has an event: the next event starts it', async () => {
    // Everything so far has expired, and the block being written (2) is a day old.
    await t.database.query(sql`update events set expires_at = now() - interval '1 second'`)
    await ageCurrentBlock(2)
    expect(await prune(t.database, 30, 30, true)).toMatchObject({ blocks: 2 })
    expect(await partitionsOf(t.database, 'events')).toEqual(['events_b3', 'events_b4'])
    expect(Number(await publish('d'))).toBe(3 * BLOCK_IDS)
  })

  it('drops a block whose events are older than RETENTION_DAYS, though their ttl has not passed', async () => {
    await t.database.query(
      sql`update events set created_at = created_at - interval '31 days' where id >= ${3 * BLOCK_IDS}`,
    )
    expect(await prune(t.database, 30, 30, true)).toMatchObject({ blocks: 1, events: 1 })
    expect(await partitionsOf(t.database, 'events')).toEqual(['events_b4', 'events_b5'])
  })

  it('deletes the rows of a block expired partly by age and partly by ttl, and drops it, empty, at the next pass', async () => {
    const old = await publish('older than RETENTION_DAYS, ttl to come')
    const short = await publish('its ttl passed', { ttl: 60 })
    await ageCurrentBlock(4)
    await t.database.query(sql`update events set created_at = created_at - interval '31 days' where id = ${old}`)
    await t.database.query(sql`update events set expires_at = now() - interval '1 second' where id = ${short}`)

    expect(await prune(t.database, 30, 30, true)).toMatchObject({ blocks: 0, events: 2 })
    expect(await count(t.database, `events where id in (${old}, ${short})`)).toBe(0)
    expect(await partitionsOf(t.database, 'events')).toContain('events_b4')
    expect(await prune(t.database, 30, 30, true)).toMatchObject({ blocks: 1, events: 0 })
    expect(await partitionsOf(t.database, 'events')).not.toContain('events_b4')
  })
})

describePostgres('a block a long query is reading when the prune would drop it', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp('postgres', { config: { REPLAY_MEMORY_EVENTS: 0 } })
  })
  afterAll(() => t.close())

  it('is tried for a moment a few times without holding publishing up, and dropped once the query is done', async () => {
    const publish = async () => {
      const started = Date.now()
      const res = await t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${t.token({ sub: 'school', scope: PUBLISHER })}`)
        .send({ type: 'x.y', to: { tenant: true }, title: 'now' })
      expect(res.status).toBe(201)
      return Date.now() - started
    }
    await publish()
    await t.database.query(sql`update events set created_at = created_at - interval '25 hours'`)
    await prune(t.database, 30)
    await t.database.query(sql`update events set expires_at = now() - interval '1 second' where id < ${BLOCK_IDS}`)

    // A long read of block 0 (statistics over a month, say) holds it while the prune runs.
    const pg = t.database.pg
    if (!pg) throw new Error('no PostgreSQL client')
    const reader = await pg.reserve()
    try {
      await reader`begin`
      await reader`select count(*) from events_b0`
      let pruning = true
      const waits: number[] = []
      const publishing = (async () => {
        while (pruning) waits.push(await publish())
      })()
      const started = Date.now()
      const result = await prune(t.database, 30)
      const pruneMs = Date.now() - started
      pruning = false
      await publishing
      expect(result.blocks).toBe(0)
      expect(await partitionsOf(t.database, 'events')).toContain('events_b0')
      // Three tries of 50 ms, 500 ms apart; a publish waits behind one try at most, never for the reader.
      expect(pruneMs).toBeGreaterThanOrEqual(1_000)
      expect(waits.length).toBeGreaterThan(0)
      expect(Math.max(...waits)).toBeLessThan(500)
    } finally {
      await reader`rollback`
      reader.release()
    }
    expect(await prune(t.database, 30)).toMatchObject({ blocks: 1 })
    expect(await partitionsOf(t.database, 'events')).not.toContain('events_b0')
  })
})

describe('an installation from before the log was in blocks', () => {
  for (const backend of ['pglite', 'postgres'] as BackendName[]) {
    const skip = backend === 'postgres' && !process.env.TEST_DATABASE_URL
    it.skipIf(skip)(
      `keeps its events, receipts and ids when it upgrades, its obsolete edits marked [${backend}]`,
      async () => {
        // The migrations as they stood before 0014, in a folder of their own.
        const older = mkdtempSync(join(tmpdir(), 'herald-migrations-'))
        cpSync(MIGRATIONS_FOLDER, older, { recursive: true })
        const journalPath = join(older, 'meta', '_journal.json')
        const journal = JSON.parse(readFileSync(journalPath, 'utf8'))
        journal.entries = journal.entries.filter((e: { tag: string }) => e.tag < '0014')
        writeFileSync(journalPath, JSON.stringify(journal))
        const url = backend === 'postgres' ? await createPostgresDatabase() : undefined
        const database = await openDatabase(url ? { url } : { pgliteDir: 'memory://' })
        try {
          await runMigrations(database, older)
          await database.query(sql`insert into events (tenant, type, title, priority, actor, expires_at)
          select 't1', 'x.y', 'old ' || i, 'normal', 'school', now() + interval '1 day' from generate_series(1, 3) as i`)
          await database.query(
            sql`insert into receipts (tenant, user_id, event_id, read_at) values ('t1', 'kim', 2, now())`,
          )
          // Event 1 edited twice: the log holds both edits (ids 4 and 5); the first is obsolete.
          await database.query(sql`update events set revision = 2 where id = 1`)
          await database.query(sql`insert into events (tenant, type, title, priority, actor, expires_at, kind, ref_id,
            revision) select 't1', 'x.y', 'edit ' || r, 'normal', 'school', now() + interval '1 day', 'update', 1, r
            from generate_series(1, 2) as r`)

          await runMigrations(database)
          expect(await partitionsOf(database, 'events')).toEqual(['events_b0'])
          expect(await count(database, 'events_b0')).toBe(5)
          // Migration 0015 marks the obsolete edit, which replays leave out.
          const edits = await database.query<{ revision: number; superseded: boolean }>(
            sql`select revision, superseded from events where kind = 'update' order by id`,
          )
          expect(edits).toEqual([
            { revision: 1, superseded: true },
            { revision: 2, superseded: false },
          ])
          expect(await count(database, 'receipts_b0 where event_id = 2')).toBe(1)
          const [next] = await database.query<{ id: string | number }>(sql`insert into events (tenant, type, title,
          priority, actor, expires_at) values ('t1', 'x.y', 'new', 'normal', 'school', now()) returning id`)
          expect(Number(next.id)).toBe(6)
          // The indexes were attached, not built twice: block 0 has each of the parent's, once.
          const indexes = await database.query<{ name: string }>(
            sql`select indexrelid::regclass::text as name from pg_index where indrelid = 'events_b0'::regclass order by 1`,
          )
          expect(indexes.map((i) => i.name)).toEqual([
            'events_b0_expires_at_idx',
            'events_b0_pkey',
            'events_b0_ref_id_idx',
            'events_b0_tenant_created_at_idx',
            'events_b0_tenant_id_idx',
            'events_b0_to_users_idx',
          ])
        } finally {
          await database.close()
          if (url) await dropPostgresDatabase(url)
          rmSync(older, { recursive: true, force: true })
        }
      },
      60_000,
    )
  }
})
