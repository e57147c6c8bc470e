import type { IncomingMessage } from 'node:http'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { live, publish, publishBatch, streams, unique, waitForId } from './helpers/stream-fixtures.ts'

// Slow readers: what the server holds for a client that reads slowly or not at all, and when it drops it.

describeEachBackend('stream', (backend) => {
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
})
