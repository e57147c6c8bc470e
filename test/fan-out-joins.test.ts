import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { EventRow } from '../src/db/schema.ts'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { eventRow } from './helpers/event-rows.ts'
import { SseClient } from './helpers/sse.ts'
import { live } from './helpers/stream-fixtures.ts'

/**
 * A broadcast that reaches the hub while a fan-out of broadcasts to its tenant is under way joins it for the
 * streams not written yet (StreamHub.joinWaiting); the fan-out that follows gives it to the others. Rows are
 * handed to the hub directly, as the log tail hands them, so that the second arrives while the first is half
 * written: every fan-out pauses after each stream here. Each stream must still get every event once, in id order.
 */
describeEachBackend('a fan-out joins the broadcasts that arrive while it runs', (backend) => {
  let t: TestApp
  const tenant = 'joins'
  let nextId = 0

  beforeAll(async () => {
    t = await startApp(backend)
    t.app.hub.fanOutSlice = { ms: 0, writesPerCheck: 1 }
    // Ids far above the log's: the streams opened here have seen nothing of them.
    nextId = t.app.logTail.cursor + 1_000_000
  })
  afterAll(async () => {
    await t?.close()
  })

  const row = (title: string, to: { users?: string[]; tenant?: boolean }): EventRow =>
    eventRow(++nextId, {
      tenant,
      type: 'joins.test',
      title,
      actor: 'teacher',
      toUsers: to.users ?? [],
      toTenant: to.tenant ?? false,
    })

  /** Streams of the tenant's users, each live (its retry line written: registered in the hub). */
  const openStreams = (users: string[]) =>
    Promise.all(users.map(async (sub) => live(await SseClient.open(t.url, { token: t.token({ sub, tenant }) }))))

  it('every stream gets both broadcasts once, in order, whichever fan-out brought the second', async () => {
    const users = ['j1', 'j2', 'j3', 'j4', 'j5']
    const streams = await openStreams(users)
    try {
      const first = row('first', { tenant: true })
      const second = row('second', { tenant: true })
      t.app.hub.dispatch([first])
      // The first is written to one stream and its fan-out paused: the second waits, and joins it.
      t.app.hub.dispatch([second])
      const expected = [String(first.id), String(second.id)]
      for (const s of streams) await s.waitForNotifications(2)
      await sleep(100)
      for (const s of streams) expect(s.notificationIds).toEqual(expected)
      // The four streams the first fan-out had not reached yet got the two in one write.
      const joined = streams.filter((s) =>
        s.chunks.some((c) => c.includes(`id: ${first.id}\n`) && c.includes(`id: ${second.id}\n`)),
      )
      expect(joined.length).toBe(users.length - 1)
    } finally {
      for (const s of streams) s.close()
    }
  })

  it('does not let a broadcast overtake an event to one user that waits before it', async () => {
    const users = ['k1', 'k2', 'k3', 'k4', 'k5']
    const streams = await openStreams(users)
    try {
      const first = row('first', { tenant: true })
      const toOne = row('to k5 only', { users: ['k5'] })
      const third = row('third', { tenant: true })
      t.app.hub.dispatch([first])
      t.app.hub.dispatch([toOne, third])
      for (const s of streams.slice(0, 4)) await s.waitForNotifications(2)
      await streams[4].waitForNotifications(3)
      await sleep(100)
      for (const s of streams.slice(0, 4)) expect(s.notificationIds).toEqual([String(first.id), String(third.id)])
      expect(streams[4].notificationIds).toEqual([String(first.id), String(toOne.id), String(third.id)])
    } finally {
      for (const s of streams) s.close()
    }
  })

  it('joins broadcasts that keep arriving, and still gives each stream each one once, in order', async () => {
    const users = Array.from({ length: 12 }, (_, i) => `m${i}`)
    const streams = await openStreams(users)
    try {
      const rows = Array.from({ length: 30 }, (_, i) => row(`broadcast ${i}`, { tenant: true }))
      // One each turn of the event loop, so most arrive while a fan-out is half written.
      for (const r of rows) {
        t.app.hub.dispatch([r])
        await new Promise((resolve) => setImmediate(resolve))
      }
      for (const s of streams) await s.waitForNotifications(rows.length)
      await sleep(100)
      for (const s of streams) expect(s.notificationIds).toEqual(rows.map((r) => String(r.id)))
    } finally {
      for (const s of streams) s.close()
    }
  })
})
