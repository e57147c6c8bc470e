import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startInstanceOn, TEST_JWT_SECRET } from './helpers/app.ts'
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 20, part 2, across instances: a live-only event published on one instance reaches the matching streams
// on every instance, once each, in the order it was sent; one too large for a NOTIFY (over 8,000 bytes) goes
// through the `live_events` table. Needs PostgreSQL (several instances share one database).

type Instance = Awaited<ReturnType<typeof startInstanceOn>>

const tenant = 'cluster-school'
const token = (sub: string, extra: Record<string, unknown> = {}) =>
  mintToken(TEST_JWT_SECRET, { sub, tenant, ...extra })
const office = token('office', { scope: PUBLISHER })
const livesOf = (c: SseClient) => c.events.filter((e) => e.event === 'live').map((e) => JSON.parse(e.data))

describePostgres('live-only events across instances', () => {
  let dbUrl: string
  let a: Instance
  let b: Instance
  const streams: SseClient[] = []

  beforeAll(async () => {
    dbUrl = await createPostgresDatabase()
    a = await startInstanceOn(dbUrl)
    b = await startInstanceOn(dbUrl)
  })
  afterAll(async () => {
    for (const c of streams) c.close()
    await a?.close()
    await b?.close()
    if (dbUrl) await dropPostgresDatabase(dbUrl)
  })

  const open = async (on: Instance, user: string) => {
    const c = await SseClient.open(on.url, { token: token(user) })
    streams.push(c)
    expect(c.status, c.body).toBe(200)
    await c.waitFor((s) => s.raw.startsWith('retry:'), 5_000, 'the stream to open')
    return c
  }
  const live = async (on: Instance, event: Record<string, unknown>) => {
    const res = await on
      .http()
      .post('/v1/events')
      .set({ authorization: `Bearer ${office}` })
      .send({ type: 'upload.progress', title: 'Uploading', store: false, ...event })
    expect(res.status, res.text).toBe(202)
  }
  /** A stored broadcast, published on `on`, that every stream waits for. */
  const marker = async (on: Instance, waitOn: SseClient[]) => {
    const res = await on
      .http()
      .post('/v1/events')
      .set({ authorization: `Bearer ${office}` })
      .send({ type: 'marker', title: 'Marker', to: { tenant: true } })
    expect(res.status, res.text).toBe(201)
    for (const c of waitOn) await c.waitFor((s) => s.notificationIds.includes(res.body.id), 10_000, 'the marker')
  }

  it('reaches the audience’s streams on every instance once each, in order, and no one else’s', async () => {
    const onA = await open(a, 'ada')
    const onB = await open(b, 'ada')
    const bob = await open(b, 'bob')
    for (let n = 1; n <= 20; n++) await live(n % 2 ? a : b, { to: { users: ['ada'] }, data: { n } })
    await onB.waitFor((c) => livesOf(c).length >= 20, 10_000, '20 live events on instance B')
    await onA.waitFor((c) => livesOf(c).length >= 20, 10_000, '20 live events on instance A')
    await marker(a, [onA, onB, bob])
    const expected = Array.from({ length: 20 }, (_, i) => i + 1)
    expect(livesOf(onA).map((e) => e.data.n)).toEqual(expected)
    expect(livesOf(onB).map((e) => e.data.n)).toEqual(expected)
    expect(livesOf(bob)).toEqual([])
  })

  it('a payload over 8,000 bytes crosses instances through the live_events table, byte for byte, in order with small ones', async () => {
    const kim = await open(b, 'kim')
    const big = 'é'.repeat(4_500) // 9,000 bytes of UTF-8: over NOTIFY's 8,000
    await live(a, { to: { users: ['kim'] }, data: { n: 1 } })
    await live(a, { to: { users: ['kim'] }, data: { n: 2, big } })
    await live(a, { to: { users: ['kim'] }, data: { n: 3 } })
    await kim.waitFor((c) => livesOf(c).length >= 3, 10_000, 'three live events on instance B')
    const got = livesOf(kim)
    expect(got.map((e) => e.data.n)).toEqual([1, 2, 3])
    expect(got[1].data.big).toBe(big)
    const database = a.app.database
    const rows = await database.query<{ n: number }>(sql`select count(*)::int as n from live_events`)
    expect(rows[0].n).toBe(1)
    // Nothing of them in the event log.
    const stored = await database.query<{ n: number }>(
      sql`select count(*)::int as n from events where type = 'upload.progress'`,
    )
    expect(stored[0].n).toBe(0)
  })

  it('a tenant broadcast reaches every stream of the tenant on both instances, and not another tenant’s', async () => {
    const here = await open(a, 'lee')
    const there = await open(b, 'mo')
    const stranger = await SseClient.open(b.url, { token: mintToken(TEST_JWT_SECRET, { sub: 'lee', tenant: 'other' }) })
    streams.push(stranger)
    await live(b, { type: 'dashboard.tick', to: { tenant: true } })
    await marker(b, [here, there])
    expect(livesOf(here).map((e) => e.type)).toEqual(['dashboard.tick'])
    expect(livesOf(there).map((e) => e.type)).toEqual(['dashboard.tick'])
    expect(livesOf(stranger)).toEqual([])
  })
})
