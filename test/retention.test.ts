import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { prune } from '../src/events/retention.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { runToEnd } from './helpers/process.ts'
import { SseClient } from './helpers/sse.ts'

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
