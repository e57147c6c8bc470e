import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { live, publish, publishBatch, streams, unique, waitForId, withoutPings } from './helpers/stream-fixtures.ts'

// GET /v1/stream on the wire: headers, the retry line, frames (over HTTP/1.1 and HTTP/1.0), heartbeats.

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
})
