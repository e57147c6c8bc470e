import type { Response } from 'supertest'
import { describe, expect, it, vi } from 'vitest'
import { describeEachBackend } from './helpers/backends.ts'
import {
  api,
  bearer,
  expectProblem,
  type Json,
  payloadOf,
  pushesOf,
  service,
  t,
  usePushService,
  waitForPush,
  webPushApp,
} from './helpers/push-fixtures.ts'

// SPEC section 6 (Web Push), with the ack/read/status routes of section 5 as the push path uses them.
// Every push goes through real HTTPS to a local push service that checks VAPID and decrypts like FCM would.
// A user's devices: registering, listing and deleting them, the test notification, and renewal.

// Several waits of a few seconds each (retries, Retry-After, the high-priority timeout), on a machine that may be busy.
vi.setConfig({ testTimeout: 60_000 })

usePushService()

/** A 400 whose errors name `field` (a path inside the body, `body.` prefix optional). */
function expectFieldError(res: Response, field: string) {
  const problem = expectProblem(res, 400)
  const paths = (problem.errors ?? []).map((e) => e.path.replace(/^body\./, ''))
  expect(paths, res.text).toContain(field)
}

describeEachBackend('Web Push', (backend) => {
  const { newTenant, settled, marker } = webPushApp(backend)

  describe('registering devices', () => {
    it('registers a browser subscription (201 {id, renewToken}) and lists it without its keys', async () => {
      const ten = newTenant()
      const subscription = service.createSubscription()
      const res = await api
        .http()
        .post('/v1/push/subscriptions')
        .set(bearer(ten.user('alice')))
        .send(subscription)
      expect(res.status, res.text).toBe(201)
      expect(res.body.id).toMatch(/^[1-9][0-9]*$/)
      expect(typeof res.body.renewToken).toBe('string')
      expect(res.body.renewToken.length).toBeGreaterThanOrEqual(20)

      const list = await api.devices(ten.user('alice'))
      expect(list).toHaveLength(1)
      expect(list[0]).toMatchObject({ id: res.body.id, endpoint: subscription.endpoint })
      const text = JSON.stringify(list)
      expect(text).not.toContain(subscription.keys.p256dh)
      expect(text).not.toContain(subscription.keys.auth)
      expect(text).not.toContain(res.body.renewToken)
      expect(list[0]).not.toHaveProperty('keys')

      // Another user of the tenant sees none of it.
      expect(await api.devices(ten.user('bob'))).toEqual([])
    })

    it('registering the same endpoint again (same user) keeps one device', async () => {
      const ten = newTenant()
      const subscription = service.createSubscription()
      const first = await api.register(ten.user('alice'), subscription)
      const second = await api.register(ten.user('alice'), subscription)
      expect(second.id).toBe(first.id)
      expect(await api.devices(ten.user('alice'))).toHaveLength(1)
    })

    it('an endpoint registered by another user moves to that user: pushes follow it', async () => {
      const ten = newTenant()
      const subscription = service.createSubscription()
      await api.register(ten.user('alice'), subscription)
      await api.register(ten.user('bob'), subscription)

      expect(await api.devices(ten.user('alice'))).toEqual([])
      expect((await api.devices(ten.user('bob'))).map((d) => d.endpoint)).toEqual([subscription.endpoint])

      const toAlice = await api.publish(ten.publisher, { title: 'For Alice', to: { users: ['alice'] } })
      const toBob = await api.publish(ten.publisher, { title: 'For Bob', to: { users: ['bob'] } })
      await waitForPush(subscription.endpoint, toBob)
      expect(await settled(ten.publisher, toAlice)).toMatchObject({ push: { sent: 0, failed: 0, pending: 0 } })
      await marker(ten.publisher, 'bob', subscription.endpoint)
      expect(pushesOf(subscription.endpoint, toAlice)).toEqual([])
      expect(pushesOf(subscription.endpoint, toBob)).toHaveLength(1)
    })

    it('DELETE removes one of my devices (204); another user gets 404 for it and it stays', async () => {
      const ten = newTenant()
      const mine = await api.register(ten.user('alice'))
      const kept = await api.register(ten.user('alice'))

      const foreign = await api
        .http()
        .delete(`/v1/push/subscriptions/${mine.id}`)
        .set(bearer(ten.user('bob')))
      expectProblem(foreign, 404)
      const otherTenant = await api
        .http()
        .delete(`/v1/push/subscriptions/${mine.id}`)
        .set(bearer(t.token({ sub: 'alice', tenant: `${ten.tenant}-other` })))
      expectProblem(otherTenant, 404)
      expect(await api.devices(ten.user('alice'))).toHaveLength(2)

      const res = await api
        .http()
        .delete(`/v1/push/subscriptions/${mine.id}`)
        .set(bearer(ten.user('alice')))
      expect(res.status, res.text).toBe(204)
      expect((await api.devices(ten.user('alice'))).map((d) => d.id)).toEqual([kept.id])
      expectProblem(
        await api
          .http()
          .delete(`/v1/push/subscriptions/${mine.id}`)
          .set(bearer(ten.user('alice'))),
        404,
      )

      // The deleted device gets nothing more; the kept one does.
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(kept.endpoint, id)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
      expect(service.messagesFor(mine.endpoint)).toEqual([])
    })

    it('refuses an endpoint that is not on the allowlist, not https, or carries credentials (400 naming endpoint)', async () => {
      const token = newTenant().user('alice')
      const good = service.createSubscription()
      const port = new URL(service.origin).port
      for (const endpoint of [
        'https://evil.example/x',
        `http://127.0.0.1:${port}/push/abc`,
        `https://user:secret@127.0.0.1:${port}/push/abc`,
        `https://127.0.0.1.evil.example/push/abc`,
        'not a url',
      ]) {
        const res = await api
          .http()
          .post('/v1/push/subscriptions')
          .set(bearer(token))
          .send({ ...good, endpoint })
        expectFieldError(res, 'endpoint')
      }
      expect(await api.devices(token)).toEqual([])
    })

    it('refuses keys that are not a P-256 point or a 16-byte auth secret (400 naming the field)', async () => {
      const token = newTenant().user('alice')
      const good = service.createSubscription()
      const point = Buffer.from(good.keys.p256dh, 'base64url')
      const offCurve = Buffer.from(point)
      offCurve[64] ^= 0x01 // 65 bytes, starts with 0x04, but y no longer matches x
      const send = (keys: Json) =>
        api
          .http()
          .post('/v1/push/subscriptions')
          .set(bearer(token))
          .send({ ...good, keys: { ...good.keys, ...keys } })

      expectFieldError(await send({ p256dh: point.subarray(0, 64).toString('base64url') }), 'keys.p256dh')
      expectFieldError(
        await send({ p256dh: Buffer.concat([point, Buffer.from([0])]).toString('base64url') }),
        'keys.p256dh',
      )
      expectFieldError(await send({ p256dh: offCurve.toString('base64url') }), 'keys.p256dh')
      expectFieldError(await send({ auth: Buffer.alloc(15, 7).toString('base64url') }), 'keys.auth')
      expectFieldError(await send({ auth: Buffer.alloc(17, 7).toString('base64url') }), 'keys.auth')
      expect(await api.devices(token)).toEqual([])
    })

    it('refuses a body that is not a PushSubscription (400) and a request without a token (401)', async () => {
      const token = newTenant().user('alice')
      expectProblem(
        await api
          .http()
          .post('/v1/push/subscriptions')
          .set(bearer(token))
          .send({ endpoint: service.createSubscription().endpoint }),
        400,
      )
      expectProblem(await api.http().post('/v1/push/subscriptions').send(service.createSubscription()), 401)
      expectProblem(await api.http().get('/v1/push/subscriptions'), 401)
      expectProblem(await api.http().delete('/v1/push/subscriptions/1'), 401)
      expectProblem(await api.http().post('/v1/push/test'), 401)
    })
  })

  describe('test notification and renewal', () => {
    it('POST /v1/push/test sends a test notification to each of my devices: {sent: n}', async () => {
      const ten = newTenant()
      const phone = await api.register(ten.user('alice'))
      const laptop = await api.register(ten.user('alice'))
      const someoneElse = await api.register(ten.user('bob'))
      const res = await api
        .http()
        .post('/v1/push/test')
        .set(bearer(ten.user('alice')))
      expect(res.status, res.text).toBe(200)
      expect(res.body.sent).toBe(2)
      for (const device of [phone, laptop]) {
        const [push] = service.messagesFor(device.endpoint)
        expect(push, 'test push at each device').toBeDefined()
        expect(typeof payloadOf(push).title).toBe('string')
        expect(push.headers.ttl).toBeGreaterThan(0)
      }
      expect(service.messagesFor(someoneElse.endpoint)).toEqual([])
    })

    it('POST /v1/push/test with no device is 404', async () => {
      const res = await api
        .http()
        .post('/v1/push/test')
        .set(bearer(newTenant().user('nobody')))
      expectProblem(res, 404)
    })

    it('POST /v1/push/test to a device whose subscription is gone reports it and removes it', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.expire(device.endpoint)
      const res = await api
        .http()
        .post('/v1/push/test')
        .set(bearer(ten.user('alice')))
      expect(res.body.sent).toBe(0)
      expect(await api.devices(ten.user('alice'))).toEqual([])
    })

    it('renew with the renew token replaces the endpoint: pushes go to the new one only', async () => {
      const ten = newTenant()
      const old = await api.register(ten.user('alice'))
      const fresh = service.createSubscription()
      const res = await api.http().post('/v1/push/subscriptions/renew').set(bearer(old.renewToken)).send(fresh)
      expect([200, 201], res.text).toContain(res.status)
      expect(res.body.id).toBe(old.id)

      expect((await api.devices(ten.user('alice'))).map((d) => d.endpoint)).toEqual([fresh.endpoint])
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(fresh.endpoint, id)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
      expect(service.messagesFor(old.endpoint)).toEqual([])
    })

    it('renew with a wrong or missing renew token is 401 and changes nothing', async () => {
      const ten = newTenant()
      const old = await api.register(ten.user('alice'))
      const fresh = service.createSubscription()
      const wrong = `${old.renewToken[0] === 'A' ? 'B' : 'A'}${old.renewToken.slice(1)}`
      expectProblem(await api.http().post('/v1/push/subscriptions/renew').set(bearer(wrong)).send(fresh), 401)
      expectProblem(await api.http().post('/v1/push/subscriptions/renew').send(fresh), 401)
      // A user's JWT is not a renew token.
      expectProblem(
        await api
          .http()
          .post('/v1/push/subscriptions/renew')
          .set(bearer(ten.user('alice')))
          .send(fresh),
        401,
      )
      expect((await api.devices(ten.user('alice'))).map((d) => d.endpoint)).toEqual([old.endpoint])
    })

    it('renew refuses an endpoint off the allowlist (400)', async () => {
      const ten = newTenant()
      const old = await api.register(ten.user('alice'))
      const res = await api
        .http()
        .post('/v1/push/subscriptions/renew')
        .set(bearer(old.renewToken))
        .send({ ...service.createSubscription(), endpoint: 'https://evil.example/x' })
      expectFieldError(res, 'endpoint')
      expect((await api.devices(ten.user('alice'))).map((d) => d.endpoint)).toEqual([old.endpoint])
    })
  })
})
