import type { IncomingMessage } from 'node:http'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { type OpenStreamOptions, SseClient } from './helpers/sse.ts'

/** Claims of a stream's token (tenant is required here so every test names its own). */
interface Who {
  sub: string
  tenant: string
  roles?: string[]
  topics?: string[]
}

let counter = 0
/** A name no other test (or backend run) uses. */
const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`

/** The raw text with heartbeat comments taken out (they may arrive at any time). */
const withoutPings = (raw: string) => raw.replace(/^: ?ping\n\n/gm, '')

/** Publishes one event as a publisher of `tenant`; returns its id. */
async function publish(t: TestApp, tenant: string, event: Record<string, unknown>): Promise<string> {
  const res = await t
    .http()
    .post('/v1/events')
    .set('authorization', `Bearer ${t.token({ sub: 'publisher', tenant, scope: PUBLISHER })}`)
    .send({ type: 'test.event', title: 'Test', ...event })
  expect(res.status, JSON.stringify(res.body)).toBe(201)
  return res.body.id as string
}

async function publishBatch(t: TestApp, tenant: string, events: Array<Record<string, unknown>>): Promise<string[]> {
  const res = await t
    .http()
    .post('/v1/events/batch')
    .set('authorization', `Bearer ${t.token({ sub: 'publisher', tenant, scope: PUBLISHER })}`)
    .send({ events: events.map((e) => ({ type: 'test.event', title: 'Test', ...e })) })
  expect(res.status, JSON.stringify(res.body).slice(0, 500)).toBe(201)
  return res.body.ids as string[]
}

/** A stream helper bound to one app that closes every stream it opened after each test. */
function streams(get: () => TestApp) {
  const opened: SseClient[] = []
  afterEach(() => {
    for (const c of opened.splice(0)) c.close()
  })
  return async (who: Who, options: Omit<OpenStreamOptions, 'token'> & { ttlSeconds?: number } = {}) => {
    const t = get()
    const { ttlSeconds, ...rest } = options
    const client = await SseClient.open(t.url, { token: t.token(who, ttlSeconds), ...rest })
    opened.push(client)
    return client
  }
}

/** Opens a stream and checks it is live (the server wrote its first line). */
async function live(client: SseClient): Promise<SseClient> {
  expect(client.status, client.body).toBe(200)
  await client.waitFor((c) => c.raw.startsWith('retry: 3000'), 5_000, 'the retry line')
  return client
}

const waitForId = (client: SseClient, id: string, timeoutMs = 10_000) =>
  client.waitFor((c) => c.notificationIds.includes(id), timeoutMs, `notification ${id}`)

describeEachBackend('stream', (backend) => {
  describe('with default settings', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend)
    })
    afterAll(() => t.close())
    const open = streams(() => t)

    describe('format', () => {
      it('answers with event-stream headers and begins with the retry line', async () => {
        const tenant = unique('fmt')
        const s = await open({ sub: 'u-headers', tenant })
        expect(s.status).toBe(200)
        expect(s.headers['content-type']).toMatch(/^text\/event-stream/)
        expect(s.headers['cache-control']).toBe('no-store')
        expect(s.headers['x-accel-buffering']).toBe('no')
        await s.waitFor((c) => c.raw.length >= 'retry: 3000\n\n'.length, 5_000, 'the first bytes')
        expect(s.raw.startsWith('retry: 3000\n\n')).toBe(true)
        expect(s.retry).toBe(3000)
      })

      it('accepts the token as ?access_token= (EventSource cannot set headers)', async () => {
        const tenant = unique('fmt')
        const s = await live(await open({ sub: 'u-query-token', tenant }, { tokenInQuery: true }))
        const id = await publish(t, tenant, { to: { users: ['u-query-token'] } })
        await waitForId(s, id)
      })

      it('writes each notification as exactly id, event and one-line JSON data', async () => {
        const tenant = unique('fmt')
        const s = await live(await open({ sub: 'u-frame', tenant }))
        const id = await publish(t, tenant, {
          type: 'grade.updated',
          to: { users: ['u-frame'] },
          title: 'New grade',
          body: 'line one\nline two\r\n\nline three',
          data: { gradeId: 42, note: 'a\n\nb\rc', nested: { list: [1, 'two'] } },
          url: '/grades/42',
          collapseKey: 'grade-42',
        })
        await waitForId(s, id)
        const frames = withoutPings(s.raw)
        const match = /^retry: 3000\n\nid: (\d+)\nevent: notification\ndata: ([^\r\n]*)\n\n$/.exec(frames)
        expect(match, JSON.stringify(frames)).not.toBeNull()
        const [, frameId, json] = match!
        expect(frameId).toBe(id)
        const event = JSON.parse(json)
        expect(event).toMatchObject({
          id,
          type: 'grade.updated',
          title: 'New grade',
          body: 'line one\nline two\r\n\nline three',
          data: { gradeId: 42, note: 'a\n\nb\rc', nested: { list: [1, 'two'] } },
          priority: 'normal',
          url: '/grades/42',
          collapseKey: 'grade-42',
          actor: 'publisher',
        })
        expect(new Date(event.createdAt).toISOString()).toBe(event.createdAt)
        expect(new Date(event.expiresAt).getTime()).toBeGreaterThan(Date.now())
        // The audience is never shown to recipients.
        expect(event).not.toHaveProperty('to')
        expect(json).not.toContain('u-frame')
      })

      it('speaks plain HTTP/1.0 to an HTTP/1.0 client or proxy: the same frames, not chunked', async () => {
        const tenant = unique('fmt')
        const socket = net.connect(Number(new URL(t.url).port), '127.0.0.1')
        socket.on('error', () => {})
        let raw = ''
        socket.setEncoding('utf8').on('data', (chunk: string) => {
          raw += chunk
        })
        try {
          socket.write(
            `GET /v1/stream HTTP/1.0\r\nAuthorization: Bearer ${t.token({ sub: 'u-http10', tenant })}\r\n\r\n`,
          )
          await expect.poll(() => t.app.hub.countForUser(tenant, 'u-http10')).toBe(1)
          await expect.poll(() => raw.includes('retry: 3000')).toBe(true)
          const ids = await publishBatch(t, tenant, [
            { to: { tenant: true }, title: 'Élève — 成绩 📚' },
            { to: { tenant: true }, title: 'second' },
          ])
          const single = await publish(t, tenant, { to: { users: ['u-http10'] } })
          await expect.poll(() => raw.includes(`id: ${single}\n`)).toBe(true)
          const [head, body] = raw.split('\r\n\r\n')
          expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
          expect(head.toLowerCase()).not.toContain('transfer-encoding')
          const frames = withoutPings(body).split('\n\n').filter(Boolean)
          expect(frames[0]).toBe('retry: 3000')
          expect(frames.slice(1).map((f) => /^id: (\d+)\nevent: notification\ndata: \{.*\}$/.exec(f)?.[1])).toEqual([
            ...ids,
            single,
          ])
          expect(JSON.parse(frames[1].split('data: ')[1]).title).toBe('Élève — 成绩 📚')
        } finally {
          socket.destroy()
        }
      })
    })

    describe('audience', () => {
      it('delivers a user-addressed event to that user only', async () => {
        const tenant = unique('aud')
        const alice = await live(await open({ sub: 'aud-alice', tenant }))
        const bob = await live(await open({ sub: 'aud-bob', tenant }))
        const forAlice = await publish(t, tenant, { to: { users: ['aud-alice'] } })
        const marker = await publish(t, tenant, { to: { users: ['aud-alice', 'aud-bob'] } })
        await waitForId(bob, marker)
        await waitForId(alice, marker)
        expect(alice.notificationIds).toEqual([forAlice, marker])
        expect(bob.notificationIds).toEqual([marker])
      })

      it('delivers a role broadcast to exactly the holders of that role', async () => {
        const tenant = unique('aud')
        const p1 = await live(await open({ sub: 'role-p1', tenant, roles: ['parent'] }))
        const p2 = await live(await open({ sub: 'role-p2', tenant, roles: ['teacher', 'parent'] }))
        const other = await live(await open({ sub: 'role-x', tenant, roles: ['teacher'] }))
        const forParents = await publish(t, tenant, { to: { roles: ['parent'] } })
        const marker = await publish(t, tenant, { to: { users: ['role-p1', 'role-p2', 'role-x'] } })
        await waitForId(p1, marker)
        await waitForId(p2, marker)
        await waitForId(other, marker)
        expect(p1.notificationIds).toEqual([forParents, marker])
        // Named by two of its roles or by role and user, a stream still gets the event once.
        expect(p2.notificationIds).toEqual([forParents, marker])
        expect(other.notificationIds).toEqual([marker])
      })

      it('delivers an event named twice (by user and by role) once', async () => {
        const tenant = unique('aud')
        const s = await live(await open({ sub: 'twice', tenant, roles: ['parent', 'teacher'] }))
        const id = await publish(t, tenant, { to: { users: ['twice', 'twice'], roles: ['parent', 'teacher'] } })
        const marker = await publish(t, tenant, { to: { users: ['twice'] } })
        await waitForId(s, marker)
        expect(s.notificationIds).toEqual([id, marker])
      })

      it('delivers tenant: true to everyone in the tenant and nobody in another tenant', async () => {
        const tenant = unique('aud')
        const elsewhere = unique('aud-other')
        const a = await live(await open({ sub: 'ten-a', tenant }))
        const b = await live(await open({ sub: 'ten-b', tenant, roles: ['teacher'], topics: ['class:*'] }))
        const outsider = await live(await open({ sub: 'ten-c', tenant: elsewhere }))
        const everyone = await publish(t, tenant, { to: { tenant: true } })
        const marker = await publish(t, elsewhere, { to: { tenant: true } })
        const markerHere = await publish(t, tenant, { to: { users: ['ten-a', 'ten-b'] } })
        await waitForId(outsider, marker)
        await waitForId(a, markerHere)
        await waitForId(b, markerHere)
        expect(a.notificationIds).toEqual([everyone, markerHere])
        expect(b.notificationIds).toEqual([everyone, markerHere])
        expect(outsider.notificationIds).toEqual([marker])
      })

      it('delivers topic events to streams that subscribed (exact or prefix), not to the others', async () => {
        const tenant = unique('aud')
        const exact = await live(
          await open({ sub: 'top-exact', tenant, topics: ['class:7A'] }, { topics: ['class:7A'] }),
        )
        const prefix = await live(
          await open({ sub: 'top-prefix', tenant, topics: ['class:*'] }, { topics: ['class:*'] }),
        )
        // Allowed every class topic by its token, but subscribed to none.
        const notSubscribed = await live(await open({ sub: 'top-none', tenant, topics: ['class:*'] }))
        const otherClass = await live(
          await open({ sub: 'top-7b', tenant, topics: ['class:*', 'batch:9'] }, { topics: ['class:7B', 'batch:9'] }),
        )
        const to7A = await publish(t, tenant, { to: { topics: ['class:7A'] } })
        const toClasses = await publish(t, tenant, { to: { topics: ['classes:1', 'batch:9'] } })
        const to7B = await publish(t, tenant, { to: { topics: ['class:7B'] } })
        const marker = await publish(t, tenant, { to: { users: ['top-exact', 'top-prefix', 'top-none', 'top-7b'] } })
        for (const s of [exact, prefix, notSubscribed, otherClass]) await waitForId(s, marker)
        expect(exact.notificationIds).toEqual([to7A, marker])
        // `class:*` is the prefix `class:`: it matches class:7B but not classes:1.
        expect(prefix.notificationIds).toEqual([to7A, to7B, marker])
        expect(notSubscribed.notificationIds).toEqual([marker])
        expect(otherClass.notificationIds).toEqual([toClasses, to7B, marker])
      })

      it('never delivers to a user of another tenant with the same user id', async () => {
        const tenantA = unique('aud-a')
        const tenantB = unique('aud-b')
        const inA = await live(await open({ sub: 'same-id', tenant: tenantA, roles: ['parent'], topics: ['class:*'] }))
        const inB = await live(
          await open(
            { sub: 'same-id', tenant: tenantB, roles: ['parent'], topics: ['class:*'] },
            { topics: ['class:*'] },
          ),
        )
        const ids = [
          await publish(t, tenantA, { to: { users: ['same-id'] } }),
          await publish(t, tenantA, { to: { roles: ['parent'] } }),
          await publish(t, tenantA, { to: { topics: ['class:7A'] } }),
        ]
        const markerB = await publish(t, tenantB, { to: { users: ['same-id'] } })
        const markerA = await publish(t, tenantA, { to: { users: ['same-id'] } })
        await waitForId(inB, markerB)
        await waitForId(inA, markerA)
        expect(inB.notificationIds).toEqual([markerB])
        expect(inA.notificationIds).toEqual([ids[0], ids[1], markerA])
      })
    })

    describe('topic authorization', () => {
      it.each([
        { claim: ['class:7A'], ask: ['class:7B'] },
        { claim: ['class:7A'], ask: ['class:7A', 'class:7B'] },
        { claim: ['class:7A'], ask: ['class:*'] },
        { claim: ['class:7*'], ask: ['class:*'] },
        { claim: [], ask: ['class:7A'] },
      ])(
        'refuses topics $ask under a token allowing $claim with 403 before the stream opens',
        async ({ claim, ask }) => {
          const tenant = unique('topic-auth')
          const s = await open({ sub: 'topic-refused', tenant, topics: claim }, { topics: ask })
          expect(s.status).toBe(403)
          expect(s.headers['content-type']).toMatch(/^application\/problem\+json/)
          expect(s.raw).toBe('')
          expect(s.problem).toMatchObject({ status: 403 })
        },
      )

      it('accepts topics within the claim (exact and narrower prefix)', async () => {
        const tenant = unique('topic-auth')
        const s = await live(
          await open({ sub: 'topic-ok', tenant, topics: ['class:*', 'batch:9'] }, { topics: ['class:7*', 'batch:9'] }),
        )
        const id = await publish(t, tenant, { to: { topics: ['class:7C'] } })
        const batch = await publish(t, tenant, { to: { topics: ['batch:9'] } })
        await waitForId(s, batch)
        expect(s.notificationIds).toEqual([id, batch])
      })
    })

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

    describe('reset', () => {
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

    describe('receipts', () => {
      it('tells every stream of the same user about read, ack and read-up-to, and nobody else', async () => {
        const tenant = unique('receipt')
        const me = unique('tabs')
        const other = unique('neighbour')
        const tab1 = await live(await open({ sub: me, tenant }))
        const tab2 = await live(await open({ sub: me, tenant }))
        const theirs = await live(await open({ sub: other, tenant }))
        const first = await publish(t, tenant, { to: { users: [me, other] } })
        const second = await publish(t, tenant, { to: { users: [me, other] } })
        for (const s of [tab1, tab2, theirs]) await waitForId(s, second)

        const as = (sub: string) => `Bearer ${t.token({ sub, tenant })}`
        expect((await t.http().post(`/v1/events/${first}/read`).set('authorization', as(me))).status).toBe(204)
        expect((await t.http().post(`/v1/events/${second}/ack`).set('authorization', as(me))).status).toBe(204)
        const bulk = await t.http().post('/v1/events/read').set('authorization', as(me)).send({ upTo: second })
        expect(bulk.status).toBe(204)

        const receipts = (s: SseClient) => s.events.filter((e) => e.event === 'receipt').map((e) => JSON.parse(e.data))
        for (const s of [tab1, tab2]) {
          await s.waitFor((c) => receipts(c).length >= 3, 5_000, 'three receipts')
          expect(receipts(s)).toEqual([
            { ids: [first], state: 'read' },
            { ids: [second], state: 'acked' },
            { upTo: second, state: 'read' },
          ])
        }
        // The neighbour's own receipt comes after anything of mine would have been written to its stream.
        expect((await t.http().post(`/v1/events/${first}/ack`).set('authorization', as(other))).status).toBe(204)
        await theirs.waitFor((c) => receipts(c).length >= 1, 5_000, 'the neighbour receipt')
        expect(receipts(theirs)).toEqual([{ ids: [first], state: 'acked' }])
        expect(receipts(tab1)).toHaveLength(3)
      })
    })

    describe('presence', () => {
      const presenceRows = async (tenant: string, user: string) =>
        Number(
          (
            await t.database.query<{ n: number }>(
              sql`select count(*)::int as n from stream_presence where tenant = ${tenant} and user_id = ${user}`,
            )
          )[0].n,
        )

      it('a stream refused because presence could not be stored does not count: the next one is present, and gone when closed', async () => {
        const tenant = unique('presence')
        const user = unique('flaky')
        // A trigger stands in for a database that refuses the write for this user, once.
        await t.database.query(
          sql.raw(`
          create or replace function refuse_presence() returns trigger language plpgsql as $$
          begin
            if new.user_id = '${user}' then raise exception 'refused by a test trigger'; end if;
            return new;
          end $$`),
        )
        await t.database.query(
          sql`create trigger refuse_presence before insert on stream_presence for each row execute function refuse_presence()`,
        )
        let refused: SseClient
        try {
          refused = await open({ sub: user, tenant })
        } finally {
          await t.database.query(sql`drop trigger refuse_presence on stream_presence`)
        }
        expect(refused.status).toBe(500)
        expect(await presenceRows(tenant, user)).toBe(0)

        const s = await live(await open({ sub: user, tenant }))
        expect(await presenceRows(tenant, user)).toBe(1)
        s.close()
        const deadline = Date.now() + 5_000
        while ((await presenceRows(tenant, user)) > 0 && Date.now() < deadline) await sleep(25)
        expect(await presenceRows(tenant, user)).toBe(0)
      })
    })

    describe('token expiry', () => {
      it('ends a stream when its token expires', async () => {
        const tenant = unique('expiry')
        const user = unique('expiring')
        const openedAt = Date.now()
        const s = await live(await open({ sub: user, tenant }, { ttlSeconds: 2 }))
        // Open and delivering until then.
        const id = await publish(t, tenant, { to: { users: [user] } })
        await waitForId(s, id)
        expect(s.ended).toBe(false)
        await s.waitForEnd(4_500)
        const lived = Date.now() - openedAt
        expect(lived).toBeGreaterThan(900)
        expect(lived).toBeLessThan(4_500)
      })
    })
  })

  describe('heartbeat (HEARTBEAT_MS 1000)', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend, { config: { HEARTBEAT_MS: 1_000 } })
    })
    afterAll(() => t.close())
    const open = streams(() => t)

    it('writes a ": ping" comment every HEARTBEAT_MS', async () => {
      const s = await live(await open({ sub: 'hb-user', tenant: unique('hb') }))
      await s.waitFor((c) => (c.raw.match(/^: ping\n\n/gm) ?? []).length >= 2, 4_000, 'two pings')
      expect(s.raw).toContain('\n\n: ping\n\n')
      expect(s.ended).toBe(false)
    })
  })

  describe('per-user connection limit (MAX_CONNECTIONS_PER_USER 2)', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend, { config: { MAX_CONNECTIONS_PER_USER: 2 } })
    })
    afterAll(() => t.close())
    const open = streams(() => t)

    it('closes the oldest stream of that user when a third opens; the others stay and receive', async () => {
      const tenant = unique('evict')
      const bystander = await live(await open({ sub: 'evict-other', tenant }))
      const first = await live(await open({ sub: 'evict-me', tenant }))
      const second = await live(await open({ sub: 'evict-me', tenant }))
      expect(first.ended).toBe(false)
      const third = await live(await open({ sub: 'evict-me', tenant }))
      await first.waitForEnd(5_000)
      const id = await publish(t, tenant, { to: { tenant: true } })
      for (const s of [second, third, bystander]) await waitForId(s, id)
      expect(second.ended).toBe(false)
      expect(third.ended).toBe(false)
      expect(bystander.ended).toBe(false)
      expect(first.notificationIds).toEqual([])
    })

    it('survives more simultaneous opens by one user than the limit: the newest stay, the server keeps serving', async () => {
      const tenant = unique('burst-open')
      const token = t.token({ sub: 'many-tabs', tenant })
      const clients = await Promise.all(Array.from({ length: 24 }, () => SseClient.open(t.url, { token })))
      expect(clients.every((c) => c.status === 200)).toBe(true)
      await expect.poll(() => t.app.hub.countForUser(tenant, 'many-tabs')).toBe(2)
      await expect.poll(() => clients.filter((c) => c.ended).length).toBe(22)
      const id = await publish(t, tenant, { to: { users: ['many-tabs'] } })
      for (const c of clients.filter((x) => !x.ended)) await waitForId(c, id)
      expect((await t.http().get('/health')).status).toBe(200)
      for (const c of clients) c.close()
    })
  })

  describe('slow readers (STREAM_BUFFER_LIMIT_BYTES 16384, SLOW_READER_TIMEOUT_MS 500)', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend, { config: { STREAM_BUFFER_LIMIT_BYTES: 16_384, SLOW_READER_TIMEOUT_MS: 500 } })
    })
    afterAll(() => t.close())
    const open = streams(() => t)

    /** A raw client that sends its stream request and never reads a byte. */
    async function neverReading(tenant: string, userId: string) {
      const socket = net.connect(Number(new URL(t.url).port), '127.0.0.1')
      await new Promise((resolve) => socket.once('connect', resolve))
      socket.pause()
      socket.on('error', () => {})
      socket.write(
        `GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.token({ sub: userId, tenant })}\r\n\r\n`,
      )
      return socket
    }

    /** The server's side of a user's only stream: what it held can be read after it closed. */
    async function streamOf(tenant: string, userId: string) {
      await expect.poll(() => t.app.hub.countForUser(tenant, userId)).toBe(1)
      return t.app.hub.streamsOf(tenant, userId)[0]
    }

    /**
     * Publishes batches of 40 events of 15 KB to `userId` until the server holds more than the limit for its
     * stream: the kernel's socket buffers (megabytes on loopback) take the first ones. At most 20 batches.
     */
    async function publishUntilBehind(tenant: string, userId: string, afterEachBatch = async () => {}) {
      const stream = await streamOf(tenant, userId)
      const filler = 'x'.repeat(15_000)
      const ids: string[] = []
      for (let b = 0; b < 20 && stream.peakBufferedBytes <= 16_384; b++) {
        const batch = Array.from({ length: 40 }, (_, i) => ({ to: { users: [userId] }, data: { b, i, filler } }))
        ids.push(...(await publishBatch(t, tenant, batch)))
        await t.app.logTail.sync()
        await afterEachBatch()
      }
      expect(stream.peakBufferedBytes, 'the server never had to hold anything back').toBeGreaterThan(16_384)
      return { stream, ids }
    }

    it('holds at most about the buffer limit for a client that never reads, drops it, and keeps serving the others', async () => {
      const tenant = unique('slow')
      const normal = await live(await open({ sub: 'fast-reader', tenant }))
      const socket = await neverReading(tenant, 'slow-reader')
      // Megabytes for the client that never reads, in batches; the other reader gets its own events between.
      const forNormal: string[] = []
      const { stream, ids: big } = await publishUntilBehind(tenant, 'slow-reader', async () => {
        const small = await publish(t, tenant, { to: { users: ['fast-reader'] } })
        forNormal.push(small)
        await waitForId(normal, small)
      })
      const marker = await publish(t, tenant, { to: { users: ['slow-reader', 'fast-reader'] } })
      await waitForId(normal, marker)
      big.push(marker)
      // Past SLOW_READER_TIMEOUT_MS without reading, it is dropped (it would resume and lose nothing).
      await expect.poll(() => stream.closeReason).toBe('slow')
      console.log(
        `a client that never read was sent ${big.length - 1} events of 15 KB; the server held at most ${stream.peakBufferedBytes} bytes for it`,
      )
      // The limit, plus one replay slice (64 KiB) or the one event that crossed it: the rest waits in the
      // database, not in memory.
      expect(stream.peakBufferedBytes).toBeLessThan(16_384 + 64 * 1024 + 20_000)
      expect(normal.ended).toBe(false)
      expect(normal.notificationIds).toEqual([...forNormal, marker])
      socket.destroy()

      // When it comes back (from the start here: it never read an id), it loses nothing.
      const resumed = await live(await open({ sub: 'slow-reader', tenant }, { lastEventId: '0' }))
      await waitForId(resumed, big[big.length - 1], 20_000)
      expect(resumed.notificationIds).toEqual(big)
    })

    it('keeps a paused reader that catches up when it reads again, with every event once, in order', async () => {
      const tenant = unique('paused')
      const paused = await live(await open({ sub: 'paused-reader', tenant }))
      const first = await publish(t, tenant, { to: { users: ['paused-reader'] } })
      await waitForId(paused, first)
      paused.pause()
      const { stream, ids } = await publishUntilBehind(tenant, 'paused-reader')
      await sleep(200) // shorter than SLOW_READER_TIMEOUT_MS: a pause, not a dead client
      ;(paused as unknown as { response: IncomingMessage }).response.resume()
      await waitForId(paused, ids[ids.length - 1], 20_000)
      expect(paused.notificationIds).toEqual([first, ...ids])
      expect(paused.ended).toBe(false)
      expect(stream.closed).toBe(false)
    })

    it('keeps a reader that reads but gets a burst far over the limit: every event once, in order', async () => {
      const tenant = unique('burst')
      const reader = await live(await open({ sub: 'burst-reader', tenant }))
      const filler = 'z'.repeat(10_000)
      // About 900 KB in one batch: far more than the 16 KiB the server lets pile up on a socket.
      const ids = await publishBatch(
        t,
        tenant,
        Array.from({ length: 90 }, (_, i) => ({ to: { users: ['burst-reader'] }, data: { i, filler } })),
      )
      const after = await publish(t, tenant, { to: { users: ['burst-reader'] } })
      await waitForId(reader, after, 20_000)
      expect(reader.ended).toBe(false)
      expect(reader.notificationIds).toEqual([...ids, after])
    })

    it('holds at most about the buffer limit for a client that never reads a burst of broadcasts', async () => {
      const tenant = unique('slow-broadcast')
      const socket = await neverReading(tenant, 'deaf')
      const stream = await streamOf(tenant, 'deaf')
      // Small broadcasts, 600 to a batch (~0.9 MB): each batch reaches the streams at once.
      const filler = 'b'.repeat(1_500)
      for (let b = 0; b < 20 && stream.peakBufferedBytes <= 16_384; b++) {
        await publishBatch(
          t,
          tenant,
          Array.from({ length: 600 }, (_, i) => ({ to: { tenant: true }, data: { b, i, filler } })),
        )
        await t.app.logTail.sync()
      }
      console.log(
        `a client that never read a burst of broadcasts: the server held at most ${stream.peakBufferedBytes} bytes for it`,
      )
      expect(stream.peakBufferedBytes).toBeGreaterThan(16_384) // it did fill up
      // The limit plus one write of at most about 16 KiB of joined events, never a whole batch.
      expect(stream.peakBufferedBytes).toBeLessThan(2 * 16_384 + 4_096)
      socket.destroy()
    })
  })

  // Once a stream has started, nothing more is read from its connection as HTTP (idle-memory.ts gives the
  // parser back): what a client sends or does on it afterwards must still be handled.
  describe('the connection a stream runs on', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend)
    })
    afterAll(() => t.close())

    /** Polls `done` (vitest's expect.poll) until it holds; fails naming `what` it waited for. */
    const waitUntil = (done: () => boolean, what: string, timeout = 3_000) =>
      expect.poll(done, { message: `waiting for ${what}`, timeout, interval: 10 }).toBe(true)

    /** A stream opened on a raw socket that stays open for reading after it half-closes; `text` is all it got. */
    const rawStream = async (token: string, after = '') => {
      const socket = net.connect({ port: Number(new URL(t.url).port), host: '127.0.0.1', allowHalfOpen: true })
      const c = { socket, text: '', ended: false, closed: false }
      socket.on('data', (chunk) => {
        c.text += chunk.toString('latin1')
      })
      socket.on('end', () => {
        c.ended = true
      })
      socket.on('close', () => {
        c.closed = true
      })
      socket.on('error', () => {})
      socket.write(`GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n\r\n${after}`)
      await waitUntil(() => c.text.includes('retry: '), 'the stream to start')
      return c
    }

    it('ends the stream and the connection when the client half-closes it', async () => {
      const tenant = unique('half-close')
      const before = t.app.hub.size
      const c = await rawStream(t.token({ sub: 'half-closer', tenant }))
      expect(t.app.hub.size).toBe(before + 1)
      c.socket.end() // FIN; this side still reads
      await waitUntil(() => c.ended, 'the server to end its side')
      await waitUntil(() => t.app.hub.size === before, 'the stream to be gone')
      c.socket.destroy()
    })

    it('closes the connection when the server ends a stream (token expiry), rather than keeping it for a next request', async () => {
      const tenant = unique('expiry-close')
      const c = await rawStream(t.token({ sub: 'expiring', tenant }, 2))
      await waitUntil(() => c.text.endsWith('0\r\n\r\n'), 'the response to end', 5_000)
      const endedAt = Date.now()
      // Kept alive, the connection would wait for a next request until the keep-alive timeout (72 s).
      await waitUntil(() => c.ended, 'the server to close the connection', 2_000)
      expect(Date.now() - endedAt).toBeLessThan(2_000)
      c.socket.destroy()
    })

    it('ignores what a client sends after its stream request, and goes on delivering', async () => {
      const tenant = unique('after-request')
      const c = await rawStream(t.token({ sub: 'chatty', tenant }), 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
      c.socket.write('this is not HTTP\r\n\r\n')
      await sleep(100)
      const id = await publish(t, tenant, { to: { users: ['chatty'] } })
      await waitUntil(() => c.text.includes(`id: ${id}\n`), 'the event')
      expect(c.closed).toBe(false)
      // Only the stream's response: a request behind a response that never ends is never answered.
      expect(c.text.match(/HTTP\/1\.1 \d{3}/g)).toEqual(['HTTP/1.1 200'])
      c.socket.destroy()
    })
  })

  describe('shutdown', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend)
    })
    // app.close() again is a no-op; this drops the database.
    afterAll(() => t.close())
    const open = streams(() => t)

    it('ends open streams promptly when the server closes', async () => {
      const tenant = unique('shutdown')
      const a = await live(await open({ sub: 'down-a', tenant }))
      const b = await live(await open({ sub: 'down-b', tenant, topics: ['class:*'] }, { topics: ['class:*'] }))
      const id = await publish(t, tenant, { to: { tenant: true } })
      await waitForId(a, id)
      await waitForId(b, id)
      const started = Date.now()
      const closing = t.app.close()
      await Promise.all([a.waitForEnd(3_000), b.waitForEnd(3_000)])
      await closing
      expect(Date.now() - started).toBeLessThan(3_000)
    })
  })
})
