import { sql } from 'drizzle-orm'
import { describe, expect, it, vi } from 'vitest'
import { describeEachBackend } from './helpers/backends.ts'
import {
  api,
  attemptsAt,
  bearer,
  expectProblem,
  pushesOf,
  service,
  sleep,
  t,
  until,
  usePushService,
  waitForPush,
  webPushApp,
} from './helpers/push-fixtures.ts'

// SPEC section 6 (Web Push), with the ack/read/status routes of section 5 as the push path uses them.
// Every push goes through real HTTPS to a local push service that checks VAPID and decrypts like FCM would.
// Delivery: what each answer of the push service does (removal, retries, Retry-After), claims, and the status.

// Several waits of a few seconds each (retries, Retry-After, the high-priority timeout), on a machine that may be busy.
vi.setConfig({ testTimeout: 60_000 })

usePushService()

describeEachBackend('Web Push', (backend) => {
  const { newTenant, settled, expectPendingUnlessArrived, marker } = webPushApp(backend)

  describe('delivery', () => {
    it('a push service answering 410 removes the device; the status shows the push failed', async () => {
      const ten = newTenant()
      const gone = await api.register(ten.user('alice'))
      const kept = await api.register(ten.user('alice'))
      service.expire(gone.endpoint)
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(kept.endpoint, id)
      const status = await settled(ten.publisher, id)
      expect(status.push).toEqual({ sent: 1, failed: 1, pending: 0 })
      expect(attemptsAt(gone.endpoint).map((a) => a.status)).toEqual([410])
      expect((await api.devices(ten.user('alice'))).map((d) => d.endpoint)).toEqual([kept.endpoint])

      // Nothing is sent to the removed device any more.
      await marker(ten.publisher, 'alice', kept.endpoint)
      expect(attemptsAt(gone.endpoint)).toHaveLength(1)
    })

    it('a push service answering 404 removes the device too', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 404 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const status = await settled(ten.publisher, id)
      expect(status.push).toEqual({ sent: 0, failed: 1, pending: 0 })
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([404])
      expect(await api.devices(ten.user('alice'))).toEqual([])
    })

    it('two 503s then success: delivered exactly once, pending until then, then sent 1', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(2, { status: 503 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await until(() => attemptsAt(device.endpoint).length >= 1, 'the first attempt')
      await expectPendingUnlessArrived(ten.publisher, id, device.endpoint)

      await waitForPush(device.endpoint, id, 25_000)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toHaveLength(1)
      expect(
        attemptsAt(device.endpoint)
          .slice(0, 3)
          .map((a) => a.status),
      ).toEqual([503, 503, 201])
      expect(attemptsAt(device.endpoint)).toHaveLength(4) // the three above and the marker
    })

    it('429 with Retry-After: 2 delays the retry by at least 2 s', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 429, retryAfter: 2 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, id, 25_000)
      const [first, second] = attemptsAt(device.endpoint)
      expect(first.status).toBe(429)
      expect(second.status).toBe(201)
      expect(push.receivedAt - first.at).toBeGreaterThanOrEqual(1_950)
      expect(push.receivedAt - first.at).toBeLessThan(15_000)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('503 with Retry-After as an HTTP date is honoured too', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 503, retryAfter: new Date(Date.now() + 3_000).toUTCString() })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, id, 25_000)
      const [first] = attemptsAt(device.endpoint)
      // The date has a one-second resolution: at least ~2 s after the first attempt.
      expect(push.receivedAt - first.at).toBeGreaterThanOrEqual(1_900)
    })

    it('with PUSH_MAX_ATTEMPTS 3 and a push service that keeps answering 503, fails after exactly 3 attempts', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(3, { status: 503 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const status = await settled(ten.publisher, id, 25_000)
      expect(status.push).toEqual({ sent: 0, failed: 1, pending: 0 })
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([503, 503, 503])

      // The device is kept (5xx is the push service's trouble, not a dead subscription) and gets later pushes.
      expect(await api.devices(ten.user('alice'))).toHaveLength(1)
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toEqual([])
      expect(attemptsAt(device.endpoint)).toHaveLength(4)
    })

    it('a dropped connection (network error) is retried and delivered once', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, 'reset')
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(device.endpoint, id, 25_000)
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual(['reset', 201])
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('a 4xx other than 404/410/429 fails the push at once without removing the device', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 400 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      expect((await settled(ten.publisher, id)).push).toEqual({ sent: 0, failed: 1, pending: 0 })
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([400])
      expect(await api.devices(ten.user('alice'))).toHaveLength(1)
    })

    it('a push waiting for its retry is not sent once the user acked the event elsewhere', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 503, retryAfter: 5 })
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await until(() => attemptsAt(device.endpoint).length >= 1, 'the first attempt')
      const ack = await api
        .http()
        .post(`/v1/events/${id}/ack`)
        .set(bearer(ten.user('alice')))
      expect(ack.status, ack.text).toBe(204)

      const status = await settled(ten.publisher, id, 15_000)
      expect(status).toMatchObject({ acked: 1, push: { sent: 0, failed: 0, pending: 0 } })
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toEqual([])
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([503, 201]) // the 503, then the marker
    })

    it('a push claimed by an instance that stopped heart-beating is taken over at once; one claimed by a live instance waits', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const dead = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const live = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(device.endpoint, dead)
      await waitForPush(device.endpoint, live)
      await settled(ten.publisher, live)
      // Put both rows back as a crashed send would leave them: pending, claimed for another 60 s. One claimant
      // last beat an hour ago (killed), the other just now (alive, still sending).
      await t.database.query(sql`
        insert into instances (id, seen_at) values ('killed-instance', now() - interval '1 hour'), ('busy-instance', now())`)
      const reclaim = (eventId: string, instance: string) =>
        t.database.query(sql`
          update push_deliveries set state = 'pending', claimed_by = ${instance},
            claimed_until = now() + interval '60 seconds', next_attempt_at = now()
          where event_id = ${Number(eventId)}`)
      await reclaim(dead, 'killed-instance')
      await reclaim(live, 'busy-instance')
      t.app.pushDispatcher.wake()

      await until(() => pushesOf(device.endpoint, dead).length === 2, 'the dead instance’s claim taken over', 5_000)
      await sleep(2_500) // several claim rounds (POLL_MS is 1 s)
      expect(pushesOf(device.endpoint, live), 'a live instance’s claim is left alone').toHaveLength(1)
      await t.database.query(sql`delete from instances where id in ('killed-instance', 'busy-instance')`)
    })

    it('the status of an event is for its publisher (or an admin) only', async () => {
      const ten = newTenant()
      await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await settled(ten.publisher, id)
      expectProblem(
        await api
          .http()
          .get(`/v1/events/${id}/status`)
          .set(bearer(ten.user('alice'))),
        404,
      )
      const admin = t.token({ sub: 'root', tenant: ten.tenant, scope: 'admin' })
      expect((await api.status(admin, id)).push).toEqual({ sent: 1, failed: 0, pending: 0 })
      const foreignAdmin = t.token({ sub: 'root', tenant: `${ten.tenant}-x`, scope: 'admin' })
      expectProblem(await api.http().get(`/v1/events/${id}/status`).set(bearer(foreignAdmin)), 404)
    })
  })
})
