import { createSigner } from 'fast-jwt'
import { describe, expect, it, vi } from 'vitest'
import { describeEachBackend } from './helpers/backends.ts'
import {
  api,
  bearer,
  expectProblem,
  type Json,
  payloadOf,
  t,
  usePushService,
  waitForPush,
  webPushApp,
} from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// SPEC section 6 (Web Push), with the ack/read/status routes of section 5 as the push path uses them.
// Every push goes through real HTTPS to a local push service that checks VAPID and decrypts like FCM would.
// The ackToken a push carries: what it opens (its event's ack and read) and what it does not.

// Several waits of a few seconds each (retries, Retry-After, the high-priority timeout), on a machine that may be busy.
vi.setConfig({ testTimeout: 60_000 })

usePushService()

describeEachBackend('Web Push', (backend) => {
  const { newTenant, openStream } = webPushApp(backend)

  describe('ackToken', () => {
    /** Alice has a device and a stream open (another tab); two urgent events pushed to her. */
    async function pushedToAlice() {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const stream = await openStream(ten.user('alice'))
      const id = await api.publish(ten.publisher, { priority: 'urgent', to: { users: ['alice'] } })
      const otherId = await api.publish(ten.publisher, { priority: 'urgent', to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, id)
      await waitForPush(device.endpoint, otherId)
      const ackToken = payloadOf(push).ackToken as string
      expect(typeof ackToken).toBe('string')
      return { ten, device, stream, id, otherId, ackToken }
    }

    it('acks its event (204): the publisher sees acked 1, the user’s open streams get a receipt', async () => {
      const { ten, stream, id, otherId, ackToken } = await pushedToAlice()
      const res = await api.http().post(`/v1/events/${id}/ack`).set(bearer(ackToken))
      expect(res.status, res.text).toBe(204)
      expect(await api.status(ten.publisher, id)).toMatchObject({ acked: 1, read: 0 })
      expect(await api.status(ten.publisher, otherId)).toMatchObject({ acked: 0, read: 0 })

      await stream.waitForEvent('receipt')
      const receipt = stream.events.find((e) => e.event === 'receipt')
      expect(JSON.parse(receipt?.data ?? '{}')).toEqual({ ids: [id], state: 'acked' })

      const mine = await api
        .http()
        .get(`/v1/events/${id}`)
        .set(bearer(ten.user('alice')))
      expect(mine.body.ackedAt).toEqual(expect.any(String))
      expect(mine.body.readAt).toBeNull()
      // It lives as long as its event (within a few seconds), not longer.
      const claims = JSON.parse(Buffer.from(ackToken.split('.')[1], 'base64url').toString())
      expect(claims.exp).toBeCloseTo(Date.parse(mine.body.expiresAt) / 1000, -1)

      // Idempotent.
      expect((await api.http().post(`/v1/events/${id}/ack`).set(bearer(ackToken))).status).toBe(204)
      expect(await api.status(ten.publisher, id)).toMatchObject({ acked: 1 })
    })

    it('marks its event read (204)', async () => {
      const { ten, stream, id, ackToken } = await pushedToAlice()
      const res = await api.http().post(`/v1/events/${id}/read`).set(bearer(ackToken))
      expect(res.status, res.text).toBe(204)
      expect(await api.status(ten.publisher, id)).toMatchObject({ acked: 1, read: 1 })
      await stream.waitFor(
        (s) => s.events.some((e) => e.event === 'receipt' && JSON.parse(e.data).state === 'read'),
        10_000,
        'a read receipt',
      )
      const mine = await api
        .http()
        .get(`/v1/events/${id}`)
        .set(bearer(ten.user('alice')))
      expect(mine.body.readAt).toEqual(expect.any(String))
    })

    it('opens nothing else: another event (404), listing, reading, the stream, devices (401)', async () => {
      const { ten, id, otherId, ackToken } = await pushedToAlice()
      expectProblem(await api.http().post(`/v1/events/${otherId}/ack`).set(bearer(ackToken)), 404)
      expectProblem(await api.http().post(`/v1/events/${otherId}/read`).set(bearer(ackToken)), 404)
      expect(await api.status(ten.publisher, otherId)).toMatchObject({ acked: 0, read: 0 })

      expectProblem(await api.http().get('/v1/events').set(bearer(ackToken)), 401)
      expectProblem(await api.http().get(`/v1/events/${id}`).set(bearer(ackToken)), 401)
      expectProblem(await api.http().get('/v1/events/unread-count').set(bearer(ackToken)), 401)
      expectProblem(
        await api
          .http()
          .post('/v1/events/read')
          .set(bearer(ackToken))
          .send({ ids: [id] }),
        401,
      )
      expectProblem(await api.http().get('/v1/push/subscriptions').set(bearer(ackToken)), 401)
      expectProblem(
        await api
          .http()
          .post('/v1/events')
          .set(bearer(ackToken))
          .send({ type: 'a.b', title: 'x', to: { users: ['alice'] } }),
        401,
      )
      const stream = await SseClient.open(t.url, { token: ackToken })
      expect(stream.status).toBe(401)
      const inQuery = await SseClient.open(t.url, { token: ackToken, tokenInQuery: true })
      expect(inQuery.status).toBe(401)
    })

    it('a tampered or forged ackToken is 401', async () => {
      const { ten, id, otherId, ackToken } = await pushedToAlice()
      const [header, claims, signature] = ackToken.split('.')
      const decoded = JSON.parse(Buffer.from(claims, 'base64url').toString('utf8')) as Json
      const retargeted = Buffer.from(JSON.stringify({ ...decoded, evt: otherId })).toString('base64url')
      expectProblem(
        await api
          .http()
          .post(`/v1/events/${otherId}/ack`)
          .set(bearer(`${header}.${retargeted}.${signature}`)),
        401,
      )
      const flipped = `${signature[0] === 'A' ? 'B' : 'A'}${signature.slice(1)}`
      expectProblem(
        await api
          .http()
          .post(`/v1/events/${id}/ack`)
          .set(bearer(`${header}.${claims}.${flipped}`)),
        401,
      )

      // The same claims signed with a key of the attacker's choosing.
      const forged = createSigner({ key: 'not-the-ack-secret-but-long-enough-0123456789', algorithm: 'HS256' })(decoded)
      expectProblem(await api.http().post(`/v1/events/${id}/ack`).set(bearer(forged)), 401)
      expect(await api.status(ten.publisher, id)).toMatchObject({ acked: 0 })
      expect(await api.status(ten.publisher, otherId)).toMatchObject({ acked: 0 })
    })
  })
})
