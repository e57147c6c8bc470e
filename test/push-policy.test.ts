import { describe, expect, it, vi } from 'vitest'
import { PUBLISHER } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import {
  api,
  attemptsAt,
  bearer,
  HIGH_ACK_TIMEOUT_S,
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
// When to push: what a push carries, its Urgency and Topic, by priority, presence and ack, to which audiences.

// Several waits of a few seconds each (retries, Retry-After, the high-priority timeout), on a machine that may be busy.
vi.setConfig({ testTimeout: 60_000 })

usePushService()

const TOPIC = /^[A-Za-z0-9_-]{1,32}$/

/** Event ids pushed to a device, sorted. */
const eventIdsAt = (endpoint: string) =>
  service
    .messagesFor(endpoint)
    .map((m) => String(payloadOf(m).id))
    .sort()

describeEachBackend('Web Push', (backend) => {
  const { newTenant, settled, expectPendingUnlessArrived, marker, openStream } = webPushApp(backend)

  describe('when to push', () => {
    it('an offline user gets exactly one push of a normal event: the event JSON plus an ackToken', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, {
        type: 'grade.updated',
        title: 'New grade',
        body: 'Maths: 18/20 — très bien ✓',
        data: { gradeId: 42, nested: { ok: true } },
        url: '/grades/42',
        collapseKey: 'grade-42',
        ttl: 3600,
        to: { users: ['alice'] },
      })
      const push = await waitForPush(device.endpoint, id)

      const seen = await api
        .http()
        .get(`/v1/events/${id}`)
        .set(bearer(ten.user('alice')))
      expect(seen.status).toBe(200)
      const { readAt: _r, ackedAt: _a, ...event } = seen.body as Json
      expect(payloadOf(push)).toEqual({ ...event, ackToken: expect.any(String) })
      expect(payloadOf(push)).toMatchObject({
        id,
        type: 'grade.updated',
        title: 'New grade',
        body: 'Maths: 18/20 — très bien ✓',
        data: { gradeId: 42, nested: { ok: true } },
        priority: 'normal',
        url: '/grades/42',
        collapseKey: 'grade-42',
        actor: 'publisher',
      })
      expect(payloadOf(push)).not.toHaveProperty('to')

      expect(push.headers.ttl).toBeGreaterThanOrEqual(3500)
      expect(push.headers.ttl).toBeLessThanOrEqual(3600)
      expect(push.headers.urgency).toBe('normal')
      expect(push.headers.topic).toBe('grade-42')

      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toHaveLength(1)
      expect(await api.status(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('Urgency follows priority (normal→normal, high→high, urgent→high); no collapseKey, no Topic', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const ids: Record<string, string> = {}
      for (const priority of ['normal', 'high', 'urgent']) {
        ids[priority] = await api.publish(ten.publisher, { priority, to: { users: ['alice'] } })
      }
      const urgency = async (p: string) => (await waitForPush(device.endpoint, ids[p])).headers.urgency
      expect(await urgency('normal')).toBe('normal')
      expect(await urgency('high')).toBe('high') // offline: at once, like normal
      expect(await urgency('urgent')).toBe('high')
      for (const p of Object.keys(ids))
        expect((await waitForPush(device.endpoint, ids[p])).headers.topic).toBeUndefined()
    })

    it('a collapseKey that is not a valid Topic (spaces, over 32 chars) still gives a valid, distinct Topic', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const keys = ['grade 42 / Élodie', 'x'.repeat(40), `${'x'.repeat(39)}y`, 'a:b.c']
      const ids = []
      for (const collapseKey of keys)
        ids.push(await api.publish(ten.publisher, { collapseKey, to: { users: ['alice'] } }))
      const topics = []
      for (const id of ids) {
        const push = await waitForPush(device.endpoint, id)
        expect(push.headers.topic).toMatch(TOPIC)
        topics.push(push.headers.topic)
        // The payload still carries the collapseKey as published (the service worker's notification tag).
        expect(payloadOf(push).collapseKey).toBe(keys[ids.indexOf(id)])
      }
      expect(new Set(topics).size).toBe(keys.length)
      // The push service refused nothing (it answers 400 to an invalid Topic).
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual(keys.map(() => 201))
    })

    it('a low event is never pushed (a later push to the same device arrives, the low one never does)', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const low = await api.publish(ten.publisher, { priority: 'low', to: { users: ['alice'] } })
      expect(await api.status(ten.publisher, low)).toMatchObject({ push: { sent: 0, failed: 0, pending: 0 } })
      const later = await api.publish(ten.publisher, { priority: 'normal', to: { users: ['alice'] } })
      await waitForPush(device.endpoint, later)
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, low)).toEqual([])
      expect(await api.status(ten.publisher, low)).toMatchObject({ push: { sent: 0, failed: 0, pending: 0 } })
    })

    it('a user with an open stream gets a normal event on the stream and no push; an urgent one is pushed too', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const stream = await openStream(ten.user('alice'))

      const normal = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await stream.waitFor((s) => s.notificationIds.includes(normal), 20_000, `event ${normal} on the stream`)

      const urgent = await api.publish(ten.publisher, { priority: 'urgent', to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, urgent)
      expect(push.headers.urgency).toBe('high')
      await stream.waitFor((s) => s.notificationIds.includes(urgent), 20_000, `event ${urgent} on the stream`)

      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, normal)).toEqual([])
      expect(pushesOf(device.endpoint, urgent)).toHaveLength(1)
      // (The service may hold a check back for a while, in case the stream's instance was dead: never sent, though.)
      expect(await api.status(ten.publisher, normal)).toMatchObject({ push: { sent: 0, failed: 0 } })
      expect(await api.status(ten.publisher, urgent)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('a high event a streaming user does not ack is pushed after HIGH_ACK_TIMEOUT_S', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const stream = await openStream(ten.user('alice'))
      const published = Date.now()
      const id = await api.publish(ten.publisher, { priority: 'high', to: { users: ['alice'] } })
      await stream.waitFor((s) => s.notificationIds.includes(id), 20_000, `event ${id} on the stream`)
      await expectPendingUnlessArrived(ten.publisher, id, device.endpoint)

      const push = await waitForPush(device.endpoint, id, 25_000)
      const after = push.receivedAt - published
      expect(after).toBeGreaterThanOrEqual(HIGH_ACK_TIMEOUT_S * 1000 - 50)
      expect(after).toBeLessThan(HIGH_ACK_TIMEOUT_S * 1000 + 10_000)
      expect(push.headers.urgency).toBe('high')
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 1, failed: 0, pending: 0 } })
    })

    it('a high event the streaming user acks within the timeout is not pushed', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const stream = await openStream(ten.user('alice'))
      const acked = await api.publish(ten.publisher, { priority: 'high', to: { users: ['alice'] } })
      // Acked at once (a busy machine must not let the timeout pass first), then seen on the stream.
      const ack = await api
        .http()
        .post(`/v1/events/${acked}/ack`)
        .set(bearer(ten.user('alice')))
      expect(ack.status, ack.text).toBe(204)
      await stream.waitFor((s) => s.notificationIds.includes(acked), 20_000, `event ${acked} on the stream`)

      // A second high event, not acked, is due after the first: once it arrives, the first had its turn.
      const unacked = await api.publish(ten.publisher, { priority: 'high', to: { users: ['alice'] } })
      await waitForPush(device.endpoint, unacked, 25_000)
      const status = await settled(ten.publisher, acked, 10_000)
      expect(status).toMatchObject({ acked: 1, push: { sent: 0, failed: 0, pending: 0 } })
      expect(pushesOf(device.endpoint, acked)).toEqual([])
      expect(attemptsAt(device.endpoint)).toHaveLength(1)
    })

    it('role audiences reach the devices of users whose current token claims hold the role, topic audiences those of the topic’s subscribers, the tenant every device, and no others', async () => {
      const ten = newTenant()
      /** Follows a topic (PUT /v1/me/topics/...), within the token's claim. */
      const follow = async (token: string, topic: string) => {
        const res = await api
          .http()
          .put(`/v1/me/topics/${encodeURIComponent(topic)}`)
          .set(bearer(token))
        expect(res.status, res.text).toBe(204)
      }
      const other = { tenant: `${ten.tenant}-b` }
      const otherPublisher = t.token({ sub: 'publisher', tenant: other.tenant, scope: PUBLISHER })
      const teacher = await api.register(ten.user('teacher', { roles: ['teacher'] }))
      const parent = await api.register(ten.user('parent', { roles: ['parent'] }))
      const student7A = await api.register(ten.user('student-7a', { topics: ['class:7A'] }))
      const studentAll = await api.register(ten.user('student-all', { topics: ['class:*'] }))
      const student7B = await api.register(ten.user('student-7b', { topics: ['class:7B', 'clas'] }))
      const plain = await api.register(ten.user('plain'))
      const foreign = await api.register(
        t.token({ sub: 'teacher', tenant: other.tenant, roles: ['teacher'], topics: ['class:*'] }),
      )
      // A topic claim only allows following: student-7a and student-all follow 7A, student-7b follows 7B.
      await follow(ten.user('student-7a', { topics: ['class:7A'] }), 'class:7A')
      await follow(ten.user('student-all', { topics: ['class:*'] }), 'class:7A')
      await follow(ten.user('student-7b', { topics: ['class:7B', 'clas'] }), 'class:7B')

      const toRole = await api.publish(ten.publisher, { to: { roles: ['teacher'] } })
      const toTopic = await api.publish(ten.publisher, { to: { topics: ['class:7A'] } })
      const toTenant = await api.publish(ten.publisher, { to: { tenant: true } })
      // One device named by two audiences (user and role) gets one push, not two.
      const toMixed = await api.publish(ten.publisher, {
        to: { users: ['teacher', 'student-7a'], roles: ['teacher'], topics: ['class:7A'] },
      })
      const foreignMarker = await api.publish(otherPublisher, { to: { users: ['teacher'] } })

      const everyone = [teacher, parent, student7A, studentAll, student7B, plain]
      await Promise.all(everyone.map((d) => waitForPush(d.endpoint, toTenant)))
      await waitForPush(foreign.endpoint, foreignMarker)
      await settled(ten.publisher, toRole)
      await settled(ten.publisher, toTopic)
      await settled(ten.publisher, toMixed)

      expect(eventIdsAt(teacher.endpoint)).toEqual([toRole, toTenant, toMixed].sort())
      expect(eventIdsAt(parent.endpoint)).toEqual([toTenant])
      expect(eventIdsAt(student7A.endpoint)).toEqual([toTopic, toTenant, toMixed].sort())
      expect(eventIdsAt(studentAll.endpoint)).toEqual([toTopic, toTenant, toMixed].sort())
      expect(eventIdsAt(student7B.endpoint)).toEqual([toTenant])
      expect(eventIdsAt(plain.endpoint)).toEqual([toTenant])
      expect(eventIdsAt(foreign.endpoint)).toEqual([foreignMarker])
      expect((await api.status(ten.publisher, toRole)).push).toEqual({ sent: 1, failed: 0, pending: 0 })
      expect((await api.status(ten.publisher, toTopic)).push).toEqual({ sent: 2, failed: 0, pending: 0 })
      expect((await api.status(ten.publisher, toTenant)).push).toEqual({ sent: 6, failed: 0, pending: 0 })
      expect((await api.status(ten.publisher, toMixed)).push).toEqual({ sent: 3, failed: 0, pending: 0 })
    })

    it('a user with several devices gets the push on each', async () => {
      const ten = newTenant()
      const phone = await api.register(ten.user('alice'))
      const laptop = await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      await waitForPush(phone.endpoint, id)
      await waitForPush(laptop.endpoint, id)
      expect(await settled(ten.publisher, id)).toMatchObject({ push: { sent: 2, failed: 0, pending: 0 } })
    })

    it('an event too big for one push still arrives, cut to fit 4 KiB, with its title and ackToken', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, {
        title: 'Big one',
        body: 'é'.repeat(2000),
        data: { blob: 'x'.repeat(15_000) },
        to: { users: ['alice'] },
      })
      const push = await waitForPush(device.endpoint, id)
      const payload = payloadOf(push)
      expect(payload).toMatchObject({ id, title: 'Big one', ackToken: expect.any(String) })
      expect(JSON.stringify(payload.data ?? null).length).toBeLessThan(15_000)
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([201])
    })
  })
})
