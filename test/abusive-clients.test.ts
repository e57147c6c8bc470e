import { readFileSync } from 'node:fs'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import v8 from 'node:v8'
import { runInNewContext } from 'node:vm'
import { and, eq, like } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { streamPresence } from '../src/db/schema.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { pool } from './helpers/hostile-corpus.ts'
import { SseClient } from './helpers/sse.ts'

// The issue's "abusive clients": connections opened and dropped by the thousand, clients that never read, a
// client that sends its body a few bytes a second. Memory stays bounded (measured before and after), nothing
// is left behind, and other users keep receiving: every event once, in order, is the oracle.
// Limits and buffers live in each instance's memory, whatever the database: PGlite is enough here.

v8.setFlagsFromString('--expose-gc')
/** A full garbage collection, so "after" is comparable with "before" (vitest does not run with --expose-gc). */
const gc = runInNewContext('gc') as () => void

const MiB = 1024 * 1024
const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`

/**
 * RSS, JS heap and external memory once garbage is collected, and the size of PGlite's WebAssembly memory: it
 * grows with the database's work and never shrinks, so RSS bounds leave its growth out.
 */
async function settledMemory(t: TestApp) {
  for (let i = 0; i < 3; i++) {
    gc()
    await sleep(100)
  }
  const { rss, heapUsed, external, arrayBuffers } = process.memoryUsage()
  const wasm =
    (t.database.pglite as unknown as { mod?: { HEAPU8: Uint8Array } } | undefined)?.mod?.HEAPU8.byteLength ?? 0
  return { rss, heapUsed, external: external + arrayBuffers, wasm }
}

const serverConnections = (t: TestApp) =>
  new Promise<number>((resolve, reject) => t.app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))))

/** A closed-stream count by reason, from /metrics (herald_streams_closed_total). */
async function closedByReason(t: TestApp): Promise<Record<string, number>> {
  const text = await (await fetch(`${t.url}/metrics`)).text()
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^herald_streams_closed_total\{reason="([a-z]+)"\} (\d+)/gm)) out[m[1]] = Number(m[2])
  return out
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0
}

/**
 * A reader that keeps receiving while the abuse goes on: records when each notification arrived, so the test can
 * tell "late" from "lost" and print the delivery latencies it saw.
 */
async function steadyReader(t: TestApp, tenant: string, sub: string) {
  const client = await SseClient.open(t.url, { token: t.token({ sub, tenant }) })
  expect(client.status, client.body).toBe(200)
  await client.waitFor((c) => c.raw.startsWith('retry: 3000'), 5_000, 'the retry line')
  const arrivedAt = new Map<string, number>()
  let stop = false
  void client
    .waitFor(
      (c) => {
        for (const id of c.notificationIds) if (!arrivedAt.has(id)) arrivedAt.set(id, Date.now())
        return stop
      },
      600_000,
      'the end of the test',
    )
    .catch(() => {})
  return {
    client,
    arrivedAt,
    stop: () => {
      stop = true
      client.close()
    },
  }
}

/** Publishes one event as `publisher` of `tenant`; resolves with its id and when the 201 came. */
async function publish(t: TestApp, token: string, event: Record<string, unknown>) {
  const res = await fetch(`${t.url}/v1/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'abuse.trickle', title: 'tick', ...event }),
  })
  const text = await res.text()
  expect(res.status, text).toBe(201)
  return { id: JSON.parse(text).id as string, at: Date.now() }
}

/** Latencies from each 201 to the arrival on the steady stream. */
function latencies(published: Array<{ id: string; at: number }>, arrivedAt: Map<string, number>) {
  return published.map((p) => Math.max(0, (arrivedAt.get(p.id) ?? Number.POSITIVE_INFINITY) - p.at))
}

/** Raw bytes of a stream request. */
const streamRequest = (token: string, extra = '') =>
  `GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${token}\r\n${extra}\r\n`

describe('abusive clients [pglite]', () => {
  describe('3,000 stream connections opened and dropped in a loop', () => {
    const TENANT = 'churn'
    const CHURN_USERS = 30
    const CONNECTIONS = 3_000
    const IN_FLIGHT = 40
    const HISTORY = 40
    let t: TestApp
    beforeAll(async () => {
      t = await startApp('pglite')
    })
    afterAll(() => t?.close())

    /** How one abusive client leaves. Every one of them must leave nothing behind. */
    const MODES = [
      'TCP connect, then drop',
      'half a request, then drop',
      'the whole request, dropped at once',
      'dropped after the response headers',
      'dropped after the retry line',
      'dropped mid-replay (Last-Event-ID: 0)',
      'reset (RST) after the headers',
      'half-closed (FIN) after the headers',
      'a bad token (401)',
      'a stream request with a body (400)',
      'a request pipelined behind the stream, dropped after the headers',
    ] as const
    type Mode = (typeof MODES)[number]

    let peakStreams = 0
    /** One abusive connection; resolves with what happened (it never hangs: 5 s at most). */
    function churnOnce(port: number, token: string, mode: Mode): Promise<string> {
      return new Promise((resolve) => {
        const socket = net.connect({ port, host: '127.0.0.1' })
        let seen = ''
        let done = false
        const finish = (what: string, how: 'destroy' | 'reset' | 'end' = 'destroy') => {
          if (done) return
          done = true
          clearTimeout(timer)
          if (how === 'reset') socket.resetAndDestroy()
          else if (how === 'end') {
            socket.end()
            // The client keeps its side a moment (as a half-closed client would), then goes.
            setTimeout(() => socket.destroy(), 50)
          } else socket.destroy()
          resolve(what)
        }
        const timer = setTimeout(() => finish('gave up after 5 s'), 5_000)
        socket.on('error', () => finish('socket error'))
        socket.on('close', () => finish('closed by the server'))
        socket.on('data', (chunk) => {
          seen += chunk.toString('latin1')
          peakStreams = Math.max(peakStreams, t.app.hub.size)
          if (mode === 'a bad token (401)' && /^HTTP\/1\.1 401/.test(seen)) finish('refused')
          if (mode === 'a stream request with a body (400)' && /^HTTP\/1\.1 400/.test(seen)) finish('refused')
          if (!seen.includes('\r\n\r\n')) return
          if (mode === 'a request pipelined behind the stream, dropped after the headers') finish('dropped')
          if (mode === 'dropped after the response headers') finish('dropped')
          if (mode === 'reset (RST) after the headers') finish('reset', 'reset')
          if (mode === 'half-closed (FIN) after the headers') finish('half-closed', 'end')
          if (mode === 'dropped after the retry line' && seen.includes('retry: 3000')) finish('dropped')
          if (mode === 'dropped mid-replay (Last-Event-ID: 0)' && /\nid: \d+/.test(seen)) finish('dropped')
        })
        socket.on('connect', () => {
          if (mode === 'TCP connect, then drop') return finish('dropped')
          const request =
            mode === 'a bad token (401)'
              ? streamRequest('not-a-token')
              : streamRequest(token, mode === 'dropped mid-replay (Last-Event-ID: 0)' ? 'Last-Event-ID: 0\r\n' : '')
          if (mode === 'a stream request with a body (400)') {
            // Unread, such a body used to keep Node from reading the socket: the stream outlived its client.
            return socket.write(streamRequest(token, 'Content-Length: 1000\r\n') + 'x'.repeat(1_000))
          }
          if (mode === 'a request pipelined behind the stream, dropped after the headers')
            return socket.write(`${streamRequest(token)}GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`)
          if (mode === 'half a request, then drop') {
            socket.write(request.slice(0, Math.floor(request.length / 2)))
            return finish('dropped')
          }
          socket.write(request)
          if (mode === 'the whole request, dropped at once') finish('dropped')
        })
      })
    }

    it('leaves no stream, presence row or memory behind, while a steady reader gets every event once, in order', async () => {
      const port = Number(new URL(t.url).port)
      const publisher = t.token({ sub: 'churn-pub', tenant: TENANT, scope: PUBLISHER })
      const tokens = Array.from({ length: CHURN_USERS }, (_, i) => t.token({ sub: `churn-${i}`, tenant: TENANT }))
      // History for the replays to be dropped in the middle of: about 80 KB (more than one 64 KiB replay slice) for every user.
      const filler = 'h'.repeat(2_000)
      const history = await fetch(`${t.url}/v1/events/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${publisher}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          events: Array.from({ length: HISTORY }, (_, i) => ({
            type: 'abuse.history',
            title: `history ${i}`,
            to: { tenant: true },
            data: { i, filler },
          })),
        }),
      })
      expect(history.status).toBe(201)

      const steady = await steadyReader(t, TENANT, 'steady')
      // Warm-up: the code paths and pools the churn uses exist before "before" is measured.
      await pool(
        Array.from({ length: 150 }, (_, i) => MODES[i % MODES.length]),
        IN_FLIGHT,
        (mode, i) => churnOnce(port, tokens[i % CHURN_USERS], mode),
      )
      await expect.poll(() => t.app.hub.size, { timeout: 10_000 }).toBe(1)
      const before = await settledMemory(t)

      // A steady trickle to the steady reader (and, every other event, to the whole tenant: the churning streams
      // get live events in every state they are in), until the churn is over.
      const published: Array<{ id: string; at: number }> = []
      let churning = true
      peakStreams = 0
      let peakConnections = 0
      const trickle = (async () => {
        for (let i = 0; churning; i++) {
          published.push(
            await publish(t, publisher, { to: i % 2 ? { tenant: true } : { users: ['steady'] }, data: { i } }),
          )
          peakConnections = Math.max(peakConnections, await serverConnections(t))
          await sleep(20)
        }
      })()
      const started = Date.now()
      const outcomes = await pool(
        Array.from({ length: CONNECTIONS }, (_, i) => MODES[i % MODES.length]),
        IN_FLIGHT,
        async (mode, i) => `${mode}: ${await churnOnce(port, tokens[i % CHURN_USERS], mode)}`,
      )
      const churnMs = Date.now() - started
      churning = false
      await trickle
      published.push(await publish(t, publisher, { to: { users: ['steady'] }, title: 'last' }))

      // The oracle: every event once, in order, nothing else.
      await steady.client.waitForNotifications(published.length, 20_000)
      expect(steady.client.notificationIds).toEqual(published.map((p) => p.id))
      expect(steady.client.ended).toBe(false)
      const lat = latencies(published, steady.arrivedAt)

      // Nothing left behind: no stream in the hub, no presence row, no server socket for the churning users.
      await expect.poll(() => t.app.hub.size, { timeout: 10_000 }).toBe(1)
      for (let i = 0; i < CHURN_USERS; i++) expect(t.app.hub.countForUser(TENANT, `churn-${i}`)).toBe(0)
      const presenceLeft = () =>
        t.database.db
          .select()
          .from(streamPresence)
          .where(and(eq(streamPresence.tenant, TENANT), like(streamPresence.userId, 'churn-%')))
      await expect.poll(async () => (await presenceLeft()).length, { timeout: 10_000 }).toBe(0)
      const steadyPresent = await t.database.db
        .select()
        .from(streamPresence)
        .where(and(eq(streamPresence.tenant, TENANT), eq(streamPresence.userId, 'steady')))
      expect(steadyPresent.length).toBe(1)
      await expect.poll(() => serverConnections(t), { timeout: 10_000 }).toBeLessThanOrEqual(2)
      const after = await settledMemory(t)
      const closed = await closedByReason(t)

      console.log(
        `[churn] ${CONNECTIONS} stream connections (${IN_FLIGHT} at a time, ${CHURN_USERS} users) opened and dropped in ${churnMs} ms:\n` +
          `  ${tallyText(outcomes)}\n` +
          `  peak: ${peakStreams} streams in the hub, ${peakConnections} server sockets (sampled); after: hub ${t.app.hub.size} (the steady reader), ` +
          `${await serverConnections(t)} server sockets, 0 presence rows for churning users; streams closed by reason ${JSON.stringify(closed)}\n` +
          `  steady reader: ${published.length} events, each once, in order; 201-to-arrival latency p50 ${percentile(lat, 50)} ms, ` +
          `p99 ${percentile(lat, 99)} ms, max ${Math.max(...lat)} ms\n` +
          `  memory after gc: RSS ${mib(before.rss)} -> ${mib(after.rss)} (${mib(after.rss - before.rss)}), ` +
          `JS heap ${mib(before.heapUsed)} -> ${mib(after.heapUsed)} (${mib(after.heapUsed - before.heapUsed)}), ` +
          `external ${mib(before.external)} -> ${mib(after.external)}, PGlite's memory ${mib(before.wasm)} -> ${mib(after.wasm)}`,
      )
      // Every client got the answer its mode expects (a 400 for the body, say), none waited in vain.
      expect(outcomes.filter((o) => o.endsWith('gave up after 5 s'))).toEqual([])
      // Bounds: a leak of even 5 KB per connection (a StreamConnection and its response) is 15 MB over 3,000.
      // RSS also holds PGlite's WebAssembly memory, which grows with the events stored and never shrinks: its
      // growth is left out. The rest is this whole process's (the clients' sockets too), and the allocator keeps
      // what a busier moment took: 28-65 MiB alone, 101 MiB once under the full suite's parallel load.
      expect(after.heapUsed - before.heapUsed, 'JS heap growth after gc').toBeLessThan(16 * MiB)
      expect(after.rss - before.rss - (after.wasm - before.wasm), 'RSS growth after gc, PGlite aside').toBeLessThan(
        128 * MiB,
      )
      steady.stop()
    }, 120_000)
  })

  describe('300 clients that never read while events flow (STREAM_BUFFER_LIMIT_BYTES 64 KiB)', () => {
    const TENANT = 'never-read'
    const CLIENTS = 300
    /** Of the clients, these also get ~6 MB of their own: more than the kernel takes, so they stay behind. */
    const HEAVY = 10
    const BUFFER_LIMIT = 64 * 1024
    const SLOW_READER_TIMEOUT_MS = 4_000
    let t: TestApp
    beforeAll(async () => {
      t = await startApp('pglite', {
        config: { STREAM_BUFFER_LIMIT_BYTES: BUFFER_LIMIT, SLOW_READER_TIMEOUT_MS },
      })
    })
    afterAll(() => t?.close())

    const user = (i: number) => `never-${i}`
    const heavyUsers = Array.from({ length: HEAVY }, (_, i) => user(i))

    async function batch(publisher: string, events: Array<Record<string, unknown>>): Promise<string[]> {
      const res = await fetch(`${t.url}/v1/events/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${publisher}`, 'content-type': 'application/json' },
        body: JSON.stringify({ events: events.map((e) => ({ type: 'abuse.flow', title: 'flow', ...e })) }),
      })
      const text = await res.text()
      expect(res.status, text.slice(0, 300)).toBe(201)
      return JSON.parse(text).ids
    }

    it('holds at most the buffer limit plus one slice per client in memory, drops the ones that stay behind, and the steady reader misses nothing', async () => {
      const port = Number(new URL(t.url).port)
      const publisher = t.token({ sub: 'flow-pub', tenant: TENANT, scope: PUBLISHER })
      const steady = await steadyReader(t, TENANT, 'steady')
      // Raw sockets that send the request and never read a byte.
      const sockets = await pool(
        Array.from({ length: CLIENTS }, (_, i) => i),
        50,
        async (i) => {
          const socket = net.connect({ port, host: '127.0.0.1' })
          socket.on('error', () => {})
          await new Promise((resolve) => socket.once('connect', resolve))
          socket.pause()
          socket.write(streamRequest(t.token({ sub: user(i), tenant: TENANT })))
          return socket
        },
      )
      await expect.poll(() => t.app.hub.size, { timeout: 20_000 }).toBe(CLIENTS + 1)
      const before = await settledMemory(t)

      // 12 batches of 10 events of ~8 KB to the whole tenant: ~1 MB for every client; the steady reader reads them.
      // Between batches, 50 events of ~16 KB to the heavy ones only: ~6 MB each.
      const filler = 'f'.repeat(8_000)
      const heavyFiller = 'H'.repeat(16_000)
      const ids: string[] = []
      let peakHeld = 0
      let peakRss = 0
      const started = Date.now()
      for (let b = 0; b < 12; b++) {
        ids.push(
          ...(await batch(
            publisher,
            Array.from({ length: 10 }, (_, i) => ({ to: { tenant: true }, data: { b, i, filler } })),
          )),
        )
        if (b < 8)
          await batch(
            publisher,
            Array.from({ length: 50 }, (_, i) => ({ to: { users: heavyUsers }, data: { b, i, heavyFiller } })),
          )
        await steady.client.waitForNotifications(ids.length, 10_000)
        peakHeld = Math.max(peakHeld, t.app.hub.bufferedBytes())
        peakRss = Math.max(peakRss, process.memoryUsage().rss)
      }
      const flowMs = Date.now() - started
      expect(steady.client.notificationIds).toEqual(ids)
      const kernel = kernelSendQueue(port)
      const during = await settledMemory(t)
      const perClientPeak = Math.max(
        ...Array.from({ length: CLIENTS }, (_, i) =>
          Math.max(0, ...t.app.hub.streamsOf(TENANT, user(i)).map((c) => c.peakBufferedBytes)),
        ),
      )

      // The heavy ones never drain: past SLOW_READER_TIMEOUT_MS they are dropped (they would resume from
      // Last-Event-ID and lose nothing). The others are not behind: the kernel still takes what they are sent.
      const droppedAt = Date.now()
      await expect
        .poll(() => heavyUsers.filter((u) => t.app.hub.countForUser(TENANT, u) > 0).length, {
          timeout: SLOW_READER_TIMEOUT_MS + 10_000,
        })
        .toBe(0)
      const dropMs = Date.now() - droppedAt
      const closed = await closedByReason(t)
      const lightStillOpen = t.app.hub.size - 1
      for (const s of sockets) s.destroy()
      await expect.poll(() => t.app.hub.size, { timeout: 10_000 }).toBe(1)
      const after = await settledMemory(t)

      const bound = CLIENTS * (BUFFER_LIMIT + 64 * 1024)
      console.log(
        `[never read] ${CLIENTS} clients that never read; ${ids.length} events of ~8 KB to the whole tenant (~${mib(ids.length * 8_100)} each) ` +
          `and 400 of ~16 KB to ${HEAVY} of them (~6 MB each), in ${flowMs} ms:\n` +
          `  bytes the server process held for all streams at most ${mib(peakHeld)} (bound ${CLIENTS} × (${BUFFER_LIMIT / 1024} KiB + 64 KiB) = ${mib(bound)}); ` +
          `for one client at most ${(perClientPeak / 1024).toFixed(1)} KiB\n` +
          (kernel
            ? `  in the kernel's send queues meanwhile (not in RSS, not bounded by STREAM_BUFFER_LIMIT_BYTES): ${mib(kernel.total)} over ${kernel.sockets} sockets, at most ${mib(kernel.max)} for one\n`
            : '') +
          `  the ${HEAVY} heavy clients were all dropped as slow ${dropMs ? `${dropMs} ms after the flow ended` : 'before the flow ended'} (SLOW_READER_TIMEOUT_MS ${SLOW_READER_TIMEOUT_MS}); ` +
          `${lightStillOpen} light ones still open (not behind); streams closed by reason ${JSON.stringify(closed)}\n` +
          `  steady reader: ${steady.client.notificationIds.length} events, each once, in order\n` +
          `  memory after gc: RSS ${mib(before.rss)} with the clients connected, ${mib(during.rss)} after the flow (peak sampled ${mib(peakRss)}), ` +
          `${mib(after.rss)} once they were gone; JS heap ${mib(before.heapUsed)} -> ${mib(during.heapUsed)} -> ${mib(after.heapUsed)}`,
      )
      expect(perClientPeak).toBeLessThanOrEqual(BUFFER_LIMIT + 64 * 1024)
      expect(peakHeld).toBeLessThanOrEqual(bound)
      expect(during.rss - before.rss, 'RSS growth after the flow').toBeLessThan(bound + 64 * MiB)
      expect(closed.slow).toBeGreaterThanOrEqual(HEAVY)
      steady.stop()
    }, 120_000)
  })

  describe('clients that send a publish body a few bytes a second', () => {
    const TENANT = 'slow-body'
    const SLOW_CLIENTS = 50
    const TRICKLE_MS = 10_000
    const BYTE_EVERY_MS = 500
    /** REQUEST_TIMEOUT_MS for this test (30 s by default), so the cut-off falls inside the window. */
    const REQUEST_TIMEOUT_MS = 4_000
    let t: TestApp
    beforeAll(async () => {
      t = await startApp('pglite', { config: { REQUEST_TIMEOUT_MS } })
    })
    afterAll(() => t?.close())

    it('do not hold up other publishes or streams, and are cut off by the server', async () => {
      const port = Number(new URL(t.url).port)
      const publisher = t.token({ sub: 'fast-pub', tenant: TENANT, scope: PUBLISHER })
      const steady = await steadyReader(t, TENANT, 'steady')
      const before = await settledMemory(t)
      const body = JSON.stringify({ type: 'abuse.slow', to: { users: ['steady'] }, title: 'slow'.repeat(20) })

      // Each sends its headers (with the full Content-Length), then the body a byte every 500 ms: ~16 s for 32 bytes.
      const slow = Array.from({ length: SLOW_CLIENTS }, (_, i) => {
        const socket = net.connect({ port, host: '127.0.0.1' })
        const state = { sent: 0, reply: '', cutOffAfterMs: undefined as number | undefined, started: Date.now() }
        socket.on('error', () => {})
        socket.on('data', (d) => (state.reply += d.toString('latin1')))
        socket.on('close', () => {
          state.cutOffAfterMs ??= Date.now() - state.started
        })
        socket.on('connect', () => {
          socket.write(
            `POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${t.token({ sub: `slow-${i}`, tenant: TENANT, scope: PUBLISHER })}\r\n` +
              `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`,
          )
        })
        return { socket, state }
      })
      const trickle = setInterval(() => {
        for (const { socket, state } of slow) {
          if (socket.destroyed || state.sent >= body.length - 1) continue // never the last byte
          socket.write(body[state.sent++])
        }
      }, BYTE_EVERY_MS)

      // Meanwhile: ordinary publishes, one every 400 ms, each reaching the steady reader.
      const published: Array<{ id: string; at: number }> = []
      const publishMs: number[] = []
      const started = Date.now()
      while (Date.now() - started < TRICKLE_MS) {
        const t0 = Date.now()
        published.push(await publish(t, publisher, { to: { users: ['steady'] } }))
        publishMs.push(Date.now() - t0)
        await sleep(400)
      }
      clearInterval(trickle)
      await steady.client.waitForNotifications(published.length, 10_000)
      expect(steady.client.notificationIds).toEqual(published.map((p) => p.id))
      const lat = latencies(published, steady.arrivedAt)
      const during = await settledMemory(t)

      const cutOff = slow.filter(({ state }) => state.cutOffAfterMs !== undefined)
      const answered = tallyText(slow.map(({ state }) => /^HTTP\/1\.1 (\d{3})/.exec(state.reply)?.[1] ?? 'nothing'))
      const bytesSent = slow.map(({ state }) => state.sent)
      const server = t.app.server
      const limits = {
        requestTimeout: server.requestTimeout,
        headersTimeout: server.headersTimeout,
        socketTimeout: server.timeout,
        keepAliveTimeout: server.keepAliveTimeout,
      }
      for (const { socket } of slow) socket.destroy()
      console.log(
        `[slow body] ${SLOW_CLIENTS} clients sent a ${Buffer.byteLength(body)}-byte publish body a byte every ${BYTE_EVERY_MS} ms for ${TRICKLE_MS} ms ` +
          `(${Math.min(...bytesSent)}-${Math.max(...bytesSent)} bytes each):\n` +
          `  meanwhile ${published.length} ordinary publishes: 201 in p50 ${percentile(publishMs, 50)} ms, max ${Math.max(...publishMs)} ms; ` +
          `the steady reader got each once, in order (latency p50 ${percentile(lat, 50)} ms, max ${Math.max(...lat)} ms)\n` +
          `  cut off by the server: ${cutOff.length} of ${SLOW_CLIENTS}` +
          (cutOff.length ? ` after ${Math.min(...cutOff.map(({ state }) => state.cutOffAfterMs!))} ms` : '') +
          `; replies seen: ${answered}\n` +
          `  server limits: ${JSON.stringify(limits)} (0 = none)\n` +
          `  memory after gc: RSS ${mib(before.rss)} -> ${mib(during.rss)}, JS heap ${mib(before.heapUsed)} -> ${mib(during.heapUsed)}`,
      )
      expect(Math.max(...publishMs), 'an ordinary publish while slow bodies trickle in').toBeLessThan(2_000)
      // Cut off by REQUEST_TIMEOUT_MS, not by an idle timeout (a byte every 500 ms is never idle), each told why.
      expect(cutOff.length, 'slow bodies cut off within the window').toBe(SLOW_CLIENTS)
      expect(answered).toBe(`408 ×${SLOW_CLIENTS}`)
      for (const { state } of cutOff) {
        expect(state.cutOffAfterMs!).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 100)
        expect(state.cutOffAfterMs!).toBeLessThan(REQUEST_TIMEOUT_MS + 2_500)
      }
      steady.stop()
    }, 60_000)
  })
})

/**
 * Bytes waiting in the kernel's send queues of the server's established sockets on `port` (Linux: /proc/net/tcp,
 * tx_queue): what a client that never reads costs beyond the process. Undefined elsewhere.
 */
function kernelSendQueue(port: number): { total: number; max: number; sockets: number } | undefined {
  let table: string
  try {
    table = readFileSync('/proc/net/tcp', 'utf8')
  } catch {
    return undefined
  }
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0')
  let total = 0
  let max = 0
  let sockets = 0
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 5 || !f[1].endsWith(`:${hexPort}`) || f[3] !== '01') continue
    const queued = Number.parseInt(f[4].split(':')[0], 16)
    total += queued
    max = Math.max(max, queued)
    sockets++
  }
  return { total, max, sockets }
}

const tallyText = (values: string[]) => {
  const counts = new Map<string, number>()
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1)
  return [...counts].map(([k, n]) => `${k} ×${n}`).join('; ')
}
