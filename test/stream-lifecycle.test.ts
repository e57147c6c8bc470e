import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'
import { live, publish, streams, unique, waitForId } from './helpers/stream-fixtures.ts'

setFlagsFromString('--expose-gc')
/** A full garbage collection (vitest does not run with --expose-gc). */
const gc = runInNewContext('gc') as () => void

// A stream's life: presence, token expiry, the per-user limit, the connection it runs on, server shutdown.

describeEachBackend('stream', (backend) => {
  describe('with default settings', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend)
    })
    afterAll(() => t.close())
    const open = streams(() => t)

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

    it('once open, an idle stream holds neither its request nor its response (idle-memory.ts), and still delivers', async () => {
      const tenant = unique('let-go')
      // Which of each new stream's request and response the garbage collector took: told by a FinalizationRegistry
      // (a WeakRef would keep them alive until Node ends the job, which it does not between timers).
      const collected = new Set<string>()
      const registry = new FinalizationRegistry<string>((name) => collected.add(name))
      const hub = t.app.hub
      const add = hub.add
      hub.add = (c) => {
        const res = (c as unknown as { res: { req: object } }).res
        registry.register(res, 'response')
        registry.register(res.req, 'request')
        add.call(hub, c)
      }
      let c: Awaited<ReturnType<typeof rawStream>>
      try {
        c = await rawStream(t.token({ sub: 'idle', tenant }))
      } finally {
        hub.add = add
      }
      await sleep(50)
      gc()
      await waitUntil(() => collected.size === 2, 'the request and the response to be collected')
      const id = await publish(t, tenant, { to: { users: ['idle'] } })
      await waitUntil(() => c.text.includes(`id: ${id}\n`), 'the event')
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
