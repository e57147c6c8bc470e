import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { deleteBatch } from '../src/db/batched-delete.ts'
import { blockOf, inBlock } from '../src/events/log-blocks.ts'
import { expiredEventsBatch, prune } from '../src/events/retention.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { runToEnd } from './helpers/process.ts'
import { SseClient } from './helpers/sse.ts'
import { unique } from './helpers/stream-fixtures.ts'

describeEachBackend('retention', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    // Rows are aged in the database behind the service's back: its memory of the newest rows is off (REPLAY_MEMORY_EVENTS).
    t = await startApp(backend, { config: { REPLAY_MEMORY_EVENTS: 0 } })
  })
  afterAll(() => t.close())

  const publish = async (title: string, extra: object = {}) => {
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'school', scope: PUBLISHER })}`)
      .send({ type: 'x.y', to: { users: ['kim'] }, title, ...extra })
    expect(res.status).toBe(201)
    return res.body.id as string
  }
  const kim = () => t.token({ sub: 'kim' })
  const count = async (table: string, where: string) =>
    Number(
      (await t.database.query<{ n: string | number }>(sql.raw(`select count(*) as n from ${table} where ${where}`)))[0]
        .n,
    )

  it('prunes expired and too-old events with their receipts, keeps the rest, and a resume from before gets reset', async () => {
    // The oldest first, as a log is: on PostgreSQL the prune rolls its day-old block (log-blocks.ts).
    const old = await publish('old')
    const expired = await publish('expired', { ttl: 60 })
    const kept = await publish('kept')
    await t.http().post(`/v1/events/${expired}/read`).set('authorization', `Bearer ${kim()}`).expect(204)
    await t.http().post(`/v1/events/${kept}/read`).set('authorization', `Bearer ${kim()}`).expect(204)
    await t.database.query(sql`update events set expires_at = now() - interval '1 second' where id = ${expired}`)
    await t.database.query(sql`update events set created_at = now() - interval '31 days' where id = ${old}`)

    const result = await prune(t.database, 30)
    expect(result.events).toBe(2)
    expect(await count('events', `id in (${expired}, ${old})`)).toBe(0)
    expect(await count('receipts', `event_id = ${expired}`)).toBe(0)
    expect(await count('receipts', `event_id = ${kept}`)).toBe(1)

    const history = await t.http().get('/v1/events').set('authorization', `Bearer ${kim()}`)
    expect(history.body.events.map((e: { id: string }) => e.id)).toContain(kept)
    expect(history.body.events.map((e: { id: string }) => e.id)).not.toContain(old)

    const stream = await SseClient.open(t.url, { token: kim(), lastEventId: expired })
    await stream.waitForNotifications(1)
    expect(stream.events[0]).toMatchObject({ event: 'reset', data: '{"reason":"expired"}' })
    expect(stream.notificationIds).toEqual([kept])
    stream.close()

    // A second run finds nothing more to do.
    expect(await prune(t.database, 30)).toEqual({
      events: 0,
      blocks: 0,
      idempotencyKeys: 0,
      scheduled: 0,
      connections: 0,
    })
  })

  it('forgets idempotency keys after their 24 hours, and only those', async () => {
    const send = (key: string) =>
      t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${t.token({ sub: 'school', scope: PUBLISHER })}`)
        .set('idempotency-key', key)
        .send({ type: 'x.y', to: { users: ['kim'] }, title: key })
    await send('stale-key').expect(201)
    await send('fresh-key').expect(201)
    await t.database.query(
      sql`update idempotency_keys set created_at = now() - interval '25 hours' where key = 'stale-key'`,
    )
    expect((await prune(t.database, 30)).idempotencyKeys).toBe(1)
    expect(await count('idempotency_keys', `key in ('stale-key', 'fresh-key')`)).toBe(1)
    // The fresh key still answers with its first event.
    expect((await send('fresh-key')).status).toBe(200)
  })

  // A prune's time must not grow with its tables. Each batch of a prune names its rows by key, and the delete
  // must find them through that key, not by reading the table: written as `id in (select id ... limit n)`, it
  // did read the whole table for every batch once the table was large (0.3 s a batch on a million push records).
  it("deletes each batch through the rows' key, not by reading the whole table, however large it is", async () => {
    const rows = 50_000
    const tenant = unique('big')
    await t.database.query(sql`
      insert into push_deliveries (event_id, tenant, user_id, state)
      select g, ${tenant}, 'u' || (g % 100), 'sent' from generate_series(1, ${rows}) g`)
    await t.database.query(sql`
      insert into idempotency_keys (tenant, key, kind, created_at)
      select ${tenant}, 'k' || g, 'single', now() - interval '2 days' from generate_series(1, ${rows}) g`)
    await t.database.query(sql`
      insert into events (tenant, type, title, priority, actor, created_at, expires_at)
      select ${tenant}, 'x.y', 'expired ' || g, 'normal', 'school', now() - interval '2 days', now() - interval '1 day'
      from generate_series(1, ${rows}) g`)
    await t.database.query(sql`analyze push_deliveries, idempotency_keys, events`)

    // How the delete itself finds the rows of `table`: the least indented scan of it (the batch's select is deeper).
    const deleteScan = async (statement: Parameters<typeof t.database.query>[0], table: string) => {
      const plan = await t.database.query<{ 'QUERY PLAN': string }>(sql`explain ${statement}`)
      const scans = plan
        .map((r) => r['QUERY PLAN'])
        .filter((line) => new RegExp(`Scan .*on ${table}(_b\\d+)?\\b`).test(line))
      const indent = (line: string) => line.length - line.trimStart().length
      return scans.reduce((a, b) => (indent(b) < indent(a) ? b : a)).trim()
    }
    // The push records of a block being dropped.
    expect(await deleteScan(deleteBatch('push_deliveries', inBlock(sql`event_id`, 0)), 'push_deliveries')).toMatch(
      /^(-> +)?Index Scan using push_deliveries_pkey on push_deliveries/,
    )
    // Idempotency keys past their window (keyed by three columns: by ctid).
    const keys = deleteBatch('idempotency_keys', sql`created_at < now() - interval '24 hours'`, 'ctid')
    expect(await deleteScan(keys, 'idempotency_keys')).toMatch(/^(-> +)?Tid Scan on idempotency_keys/)
    // Expired events, in their block (on PostgreSQL the first test's prune moved ids on to the next).
    const [{ first }] = await t.database.query<{ first: string | number }>(
      sql`select min(id) as first from events where tenant = ${tenant}`,
    )
    expect(await deleteScan(expiredEventsBatch(30, blockOf(Number(first)), true), 'events')).toMatch(
      /^(-> +)?Index Scan using events_(b\d+_)?pkey on events/,
    )

    // And the prune deletes every one of them, a batch at a time.
    const pruned = await prune(t.database, 30)
    expect(pruned.idempotencyKeys).toBe(rows)
    expect(pruned.events).toBe(rows)
    expect(await count('idempotency_keys', `tenant = '${tenant}'`)).toBe(0)
    expect(await count('events', `tenant = '${tenant}'`)).toBe(0)
  })
})

it('herald prune runs once from the command line and says what it deleted', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'herald-prune-'))
  try {
    const { code, stdout } = await runToEnd('src/cli.ts', ['prune'], { DATA_DIR: dataDir, DATABASE_URL: '' })
    expect(code).toBe(0)
    expect(JSON.parse(stdout)).toEqual({
      pruned: { events: 0, blocks: 0, idempotencyKeys: 0, scheduled: 0, connections: 0 },
    })
    expect((await runToEnd('src/cli.ts', ['prune', '--now'], { DATA_DIR: dataDir })).code).toBe(2)
  } finally {
    rmSync(dataDir, { recursive: true, force: true })
  }
}, 60_000)
