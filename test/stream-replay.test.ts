import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import type { SseClient } from './helpers/sse.ts'
import {
  live,
  publish,
  publishBatch,
  streams,
  unique,
  type Who,
  waitForId,
  withoutPings,
} from './helpers/stream-fixtures.ts'

// Resuming a stream: replay after Last-Event-ID then live with no gap or duplicate, bursts, and reset.

describeEachBackend('stream', (backend) => {
  describe('with default settings', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend)
    })
    afterAll(() => t.close())
    const open = streams(() => t)

    describe('replay', () => {
      /** A user with a role and a topic subscription, and a log mixing what it may and may not see. */
      async function seed() {
        const tenant = unique('replay')
        const user = unique('reader')
        const who: Who = { sub: user, tenant, roles: ['parent'], topics: ['class:*'] }
        const first = await publish(t, tenant, { to: { users: [user] } })
        await publish(t, tenant, { to: { users: ['someone-else'] } })
        const role = await publish(t, tenant, { to: { roles: ['parent'] } })
        const everyone = await publish(t, tenant, { to: { tenant: true } })
        const topic = await publish(t, tenant, { to: { topics: ['class:7A'] } })
        // The token allows class:7B, but this stream does not subscribe to it.
        await publish(t, tenant, { to: { topics: ['class:7B'] } })
        await publish(t, unique('replay-other'), { to: { users: [user], tenant: true } })
        await publish(t, tenant, { to: { roles: ['teacher'] } })
        const last = await publish(t, tenant, { to: { users: [user] } })
        return { tenant, user, who, first, visibleAfterFirst: [role, everyone, topic, last] }
      }

      it('replays every visible event after Last-Event-ID in id order, then follows live', async () => {
        const f = await seed()
        const s = await live(await open(f.who, { topics: ['class:7A'], lastEventId: f.first }))
        await s.waitForNotifications(f.visibleAfterFirst.length)
        const liveId = await publish(t, f.tenant, { to: { users: [f.user] } })
        await waitForId(s, liveId)
        expect(s.notificationIds).toEqual([...f.visibleAfterFirst, liveId])
        expect(s.notifications.map((n) => n.id)).toEqual(s.notificationIds)
        expect(s.events.some((e) => e.event === 'reset')).toBe(false)
      })

      // Live frames are built in JavaScript from the rows the tail reads, replayed ones by the database: events
      // from both routes, the batch and the single one, must come out the same.
      it('replays each notification byte for byte as it went out live (the database builds replayed frames)', async () => {
        const tenant = unique('replay-bytes')
        const watcher = await live(await open({ sub: 'u-bytes', tenant }))
        const controls = Array.from({ length: 31 }, (_, i) => String.fromCharCode(i + 1)).join('')
        const tricky = `quote " backslash \\ slash / ${controls} del \u007f seps \u2028\u2029 é 成绩 📚`
        const batchIds = await publishBatch(t, tenant, [
          {
            to: { users: ['u-bytes'] },
            title: tricky,
            body: tricky,
            data: { s: tricky, n: [1, 2.5, -3e-7, 1e21], nested: { yes: true, no: false, nil: null }, empty: {} },
            url: '/a?b=c&d=%22e%22',
            collapseKey: 'k"\\\u2028',
            priority: 'high',
          },
          { to: { users: ['u-bytes'] }, title: 'plain', priority: 'low' },
        ])
        const single = await publish(t, tenant, {
          to: { users: ['u-bytes', 'u-bytes'], topics: ['t"1'] },
          title: tricky,
          data: [tricky, { ' spaced key ': 1.5 }],
          ttl: 61,
        })
        const ids = [...batchIds, single]
        await waitForId(watcher, single)
        const replayed = await live(await open({ sub: 'u-bytes', tenant }, { lastEventId: '0' }))
        await waitForId(replayed, single)
        expect(replayed.notificationIds).toEqual(ids)
        expect(withoutPings(replayed.raw)).toBe(withoutPings(watcher.raw))
      })

      it('replays from ?lastEventId= when there is no header', async () => {
        const f = await seed()
        const s = await live(await open(f.who, { topics: ['class:7A'], lastEventIdQuery: f.first }))
        const liveId = await publish(t, f.tenant, { to: { users: [f.user] } })
        await waitForId(s, liveId)
        expect(s.notificationIds).toEqual([...f.visibleAfterFirst, liveId])
      })

      it('lets the Last-Event-ID header win over ?lastEventId=', async () => {
        const f = await seed()
        const [, second, ...rest] = f.visibleAfterFirst
        const s = await live(
          await open(f.who, { topics: ['class:7A'], lastEventId: second, lastEventIdQuery: f.first }),
        )
        const liveId = await publish(t, f.tenant, { to: { users: [f.user] } })
        await waitForId(s, liveId)
        expect(s.notificationIds).toEqual([...rest, liveId])
      })

      it('replays everything visible from Last-Event-ID 0, with no reset', async () => {
        const f = await seed()
        const s = await live(await open(f.who, { topics: ['class:7A'], lastEventId: '0' }))
        const liveId = await publish(t, f.tenant, { to: { users: [f.user] } })
        await waitForId(s, liveId)
        expect(s.notificationIds).toEqual([f.first, ...f.visibleAfterFirst, liveId])
        expect(s.events.some((e) => e.event === 'reset')).toBe(false)
      })

      it('replays a long history once, in order, however it is spread among other users’ and tenants’ events', async () => {
        // Another tenant's 3,000, then a dense 1,000 of the reader's, then 2,000 of which every 4th is theirs:
        // replay pages and id windows of every shape (full, short, empty), from two resume points.
        const tenant = unique('long-replay')
        const other = unique('long-replay-other')
        for (let b = 0; b < 3; b++)
          await publishBatch(
            t,
            other,
            Array.from({ length: 1_000 }, () => ({ to: { users: ['reader'] } })),
          )
        const dense = await publishBatch(
          t,
          tenant,
          Array.from({ length: 1_000 }, (_, i) => ({ to: { users: ['reader'] }, data: { i } })),
        )
        const mine = [...dense]
        for (let b = 0; b < 2; b++) {
          const ids = await publishBatch(
            t,
            tenant,
            Array.from({ length: 1_000 }, (_, i) => ({ to: { users: [i % 4 === 0 ? 'reader' : 'someone'] } })),
          )
          mine.push(...ids.filter((_, i) => i % 4 === 0))
        }
        mine.push(await publish(t, tenant, { to: { users: ['reader'] }, title: 'the last' }))

        // From 0; and from a point whose first id window (2,000 ids) ends inside the dense run, so the window
        // after it must start exactly where that one ended.
        const midDense = String(Number(dense[0]) - 1_501)
        for (const lastEventId of ['0', midDense]) {
          const s = await live(await open({ sub: 'reader', tenant }, { lastEventId }))
          await s.waitForNotifications(mine.length, 20_000)
          const liveId = await publish(t, tenant, { to: { users: ['reader'] } })
          await waitForId(s, liveId)
          expect(s.notificationIds, `resumed from ${lastEventId}`).toEqual([...mine, liveId])
          mine.push(liveId)
          s.close()
        }
      }, 60_000)

      it('sends only live events when there is no Last-Event-ID', async () => {
        const f = await seed()
        const s = await live(await open(f.who, { topics: ['class:7A'] }))
        const liveId = await publish(t, f.tenant, { to: { users: [f.user] } })
        await waitForId(s, liveId)
        expect(s.notificationIds).toEqual([liveId])
      })

      it('has no gap and no duplicate between replay and live while others publish concurrently', async () => {
        const tenant = unique('replay-race')
        const user = unique('racer')
        const resumeFrom = await publish(t, tenant, { to: { users: [user] } })
        const published: Promise<string>[] = []
        for (let i = 0; i < 20; i++) published.push(publish(t, tenant, { to: { users: [user] }, data: { i } }))
        let s: SseClient | undefined
        const opening = (async () => {
          await sleep(5)
          s = await open({ sub: user, tenant }, { lastEventId: resumeFrom })
        })()
        for (let i = 20; i < 40; i++) {
          published.push(publish(t, tenant, { to: { users: [user] }, data: { i } }))
          if (i % 5 === 0) await sleep(2)
        }
        await opening
        const ids = await Promise.all(published)
        const expected = [...ids].sort((a, b) => Number(a) - Number(b))
        await live(s!)
        await waitForId(s!, expected[expected.length - 1])
        const marker = await publish(t, tenant, { to: { users: [user] } })
        await waitForId(s!, marker)
        expect(s!.notificationIds).toEqual([...expected, marker])
      })

      it.each(['abc', '-1', '1e9', '1.5', '0x10'])('answers 400 (not 500) to Last-Event-ID %j', async (bad) => {
        const tenant = unique('replay-bad')
        for (const options of [{ lastEventId: bad }, { lastEventIdQuery: bad }]) {
          const s = await open({ sub: 'bad-resume', tenant }, options)
          expect(s.status, JSON.stringify(options)).toBe(400)
          expect(s.headers['content-type']).toMatch(/^application\/problem\+json/)
          expect(s.problem).toMatchObject({ status: 400 })
        }
      })
    })

    describe('broadcast bursts (sent to each stream as one write)', () => {
      it('reach a live stream whole and in order, and a stream that resumed inside the burst gets only the rest, once', async () => {
        const tenant = unique('burst')
        const watcher = await live(await open({ sub: 'watcher', tenant }))
        // The log tail hands the burst to the streams late, as a lagging one would: a stream that resumed from
        // inside it meanwhile has the rest from its replay already and must not get any of it twice.
        const hub = t.app.hub
        const held: Parameters<typeof hub.dispatch>[0][] = []
        hub.dispatch = (rows) => void held.push(rows)
        let ids: string[]
        let resumed: SseClient
        try {
          ids = await publishBatch(
            t,
            tenant,
            Array.from({ length: 20 }, (_, i) => ({ to: { tenant: true }, title: `Élève ${i} — 成绩 📚` })),
          )
          await t.app.logTail.sync()
          resumed = await live(await open({ sub: 'resumer', tenant }, { lastEventId: ids[9] }))
          await waitForId(resumed, ids[19])
        } finally {
          delete (hub as { dispatch?: unknown }).dispatch
        }
        expect(held.flat().map((e) => String(e.id))).toEqual(ids)
        for (const rows of held) hub.dispatch(rows)
        const marker = await publish(t, tenant, { to: { tenant: true } })
        await waitForId(watcher, marker)
        await waitForId(resumed, marker)
        expect(watcher.notificationIds).toEqual([...ids, marker])
        expect(watcher.notifications.slice(0, 20).map((n) => n.title)).toEqual(
          Array.from({ length: 20 }, (_, i) => `Élève ${i} — 成绩 📚`),
        )
        expect(resumed.notificationIds).toEqual([...ids.slice(10), marker])
      })
    })

    // These tests age and prune rows in the database behind the service's back: its memory of the newest rows
    // (REPLAY_MEMORY_EVENTS, which ages them by their own expiry: recent-log.test.ts) is off, so the database decides.
    describe('reset', () => {
      let t: TestApp
      beforeAll(async () => {
        t = await startApp(backend, { config: { REPLAY_MEMORY_EVENTS: 0 } })
      })
      afterAll(() => t.close())
      const open = streams(() => t)

      it('sends reset, then what is kept, when the resume point has expired', async () => {
        const tenant = unique('reset')
        const user = unique('resetter')
        const resumeFrom = await publish(t, tenant, { to: { users: [user] }, ttl: 60 })
        const expiredToo = await publish(t, tenant, { to: { users: [user] }, ttl: 60 })
        const kept = [
          await publish(t, tenant, { to: { users: [user] } }),
          await publish(t, tenant, { to: { users: [user] } }),
        ]
        await t.database.query(
          sql`update events set expires_at = now() - interval '1 second' where id in (${Number(resumeFrom)}, ${Number(expiredToo)})`,
        )
        const s = await live(await open({ sub: user, tenant }, { lastEventId: resumeFrom }))
        await s.waitForNotifications(kept.length)
        const liveId = await publish(t, tenant, { to: { users: [user] } })
        await waitForId(s, liveId)
        expect(s.events[0]).toMatchObject({ event: 'reset' })
        expect(JSON.parse(s.events[0].data)).toEqual({ reason: 'expired' })
        expect(s.events.filter((e) => e.event === 'reset')).toHaveLength(1)
        expect(s.notificationIds).toEqual([...kept, liveId])
        expect(withoutPings(s.raw)).toMatch(/^retry: 3000\n\nevent: reset\ndata: \{"reason":"expired"\}\n\nid: /)
      })

      it('sends reset when the resume point was pruned (deleted)', async () => {
        const tenant = unique('reset')
        const user = unique('pruned')
        const resumeFrom = await publish(t, tenant, { to: { users: [user] } })
        const kept = await publish(t, tenant, { to: { users: [user] } })
        await t.database.query(sql`delete from events where id = ${Number(resumeFrom)}`)
        const s = await live(await open({ sub: user, tenant }, { lastEventIdQuery: resumeFrom }))
        await waitForId(s, kept)
        expect(s.events.map((e) => e.event)).toEqual(['reset', 'notification'])
        expect(JSON.parse(s.events[0].data)).toEqual({ reason: 'expired' })
        expect(s.notificationIds).toEqual([kept])
      })

      it('a resume from the newest event after it was pruned sends reset and then only what is newer: nothing seen comes again', async () => {
        const tenant = unique('reset')
        const user = unique('newest-pruned')
        const seen = [
          await publish(t, tenant, { to: { users: [user] } }),
          await publish(t, tenant, { to: { users: [user] } }),
          await publish(t, tenant, { to: { users: [user] } }),
        ]
        const newest = await publish(t, tenant, { to: { users: [user] }, ttl: 60 })
        // Pruned, as retention does once its ttl has passed: no row in the log has an id as large any more.
        await t.database.query(sql`delete from events where id = ${Number(newest)}`)
        const s = await live(await open({ sub: user, tenant }, { lastEventId: newest }))
        const after = await publish(t, tenant, { to: { users: [user] } })
        await waitForId(s, after)
        expect(s.events.map((e) => e.event)).toEqual(['reset', 'notification'])
        expect(s.notificationIds).toEqual([after])
        for (const id of seen) expect(s.notificationIds).not.toContain(id)
      })
    })
  })
})
