import { sql } from 'drizzle-orm'
import { describe, expect, it, vi } from 'vitest'
import { describeEachBackend } from './helpers/backends.ts'
import {
  api,
  attemptsAt,
  bearer,
  payloadOf,
  pushesOf,
  service,
  sleep,
  t,
  until,
  usePushService,
  waitForPush,
  webPushApp,
} from './helpers/push-fixtures.ts'

// Web Push of edits and recalls, through real HTTPS to the local push service (it checks VAPID and decrypts like
// FCM would): a push not sent yet sends the new text or is cancelled; one sent already is replaced, or followed by
// the recall that closes its notification (the service worker's side is test/browser.test.ts).

// Retries wait seconds (Retry-After) on a machine that may be busy.
vi.setConfig({ testTimeout: 60_000 })

usePushService()

describeEachBackend('Web Push', (backend) => {
  const { newTenant, settled, marker } = webPushApp(backend)

  const edit = async (publisher: string, id: string, changes: object) => {
    const res = await api.http().patch(`/v1/events/${id}`).set(bearer(publisher)).send(changes)
    expect(res.status, res.text).toBe(200)
    return res.body as Record<string, unknown>
  }
  const recall = async (publisher: string, id: string) => {
    const res = await api.http().delete(`/v1/events/${id}`).set(bearer(publisher))
    expect(res.status, res.text).toBe(204)
  }

  /**
   * Until the event's push was attempted, failed, and waits for its retry: not sent, and no longer on its way
   * (a push a dispatcher holds may be on its way: a change gets a push of its own after it).
   */
  const waitingForRetry = (id: string) =>
    until(async () => {
      const [row] = await t.database.query<{ waiting: boolean }>(sql`
        select attempts = 1 and state = 'pending' and claimed_by is null as waiting
        from push_deliveries where event_id = ${Number(id)}`)
      return row?.waiting
    }, `the push of ${id} waiting for its retry`)

  describe('edits and recalls', () => {
    it('an edit before the push went out: the push sends the new text, once, as a first push (it alerts)', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 503, retryAfter: 2 })
      const id = await api.publish(ten.publisher, { title: 'Trip on Friday', to: { users: ['alice'] } })
      await waitingForRetry(id)
      const edited = await edit(ten.publisher, id, { title: 'Trip on Monday', body: 'Bring lunch' })

      const push = await waitForPush(device.endpoint, id, 25_000)
      expect(payloadOf(push)).toEqual({ ...edited, ackToken: expect.any(String) })
      expect(payloadOf(push)).toMatchObject({ title: 'Trip on Monday', body: 'Bring lunch', revision: 1 })
      expect(payloadOf(push)).not.toHaveProperty('change')
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toHaveLength(1)
      expect((await settled(ten.publisher, id)).push).toEqual({ sent: 1, failed: 0, pending: 0 })
    })

    it('an edit after the push went out: a replacement with the new text, under the same Topic, marked to replace without alerting', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const other = await api.register(ten.user('bob'))
      const id = await api.publish(ten.publisher, {
        title: 'Trip on Friday',
        collapseKey: 'trip-7',
        to: { users: ['alice'] },
      })
      const first = await waitForPush(device.endpoint, id)
      await settled(ten.publisher, id)
      const edited = await edit(ten.publisher, id, { title: 'Trip on Monday', url: '/trips/7' })

      await until(() => pushesOf(device.endpoint, id).length === 2, 'the replacement')
      const replacement = pushesOf(device.endpoint, id)[1]
      expect(payloadOf(replacement)).toEqual({ ...edited, ackToken: expect.any(String), change: 'update' })
      expect(payloadOf(replacement)).toMatchObject({ title: 'Trip on Monday', url: '/trips/7', revision: 1 })
      expect(replacement.headers.topic).toBe('trip-7')
      expect(replacement.headers.topic).toBe(first.headers.topic)
      expect(replacement.headers.urgency).toBe(first.headers.urgency)
      // Its ackToken acts on the event, as the first push's did.
      const ack = await api
        .http()
        .post(`/v1/events/${id}/read`)
        .set(bearer(String(payloadOf(replacement).ackToken)))
      expect(ack.status, ack.text).toBe(204)

      // Once per edit, to the devices the event was pushed to only; the event's own figures are its pushes.
      await edit(ten.publisher, id, { body: 'Bring lunch' })
      await until(() => pushesOf(device.endpoint, id).length === 3, 'the second replacement')
      expect(payloadOf(pushesOf(device.endpoint, id)[2])).toMatchObject({ body: 'Bring lunch', revision: 2 })
      await marker(ten.publisher, 'alice', device.endpoint)
      await marker(ten.publisher, 'bob', other.endpoint)
      expect(pushesOf(device.endpoint, id)).toHaveLength(3)
      expect(pushesOf(other.endpoint, id)).toEqual([])
      expect((await settled(ten.publisher, id)).push).toEqual({ sent: 1, failed: 0, pending: 0 })
    })

    it('a recall cancels a push not sent yet: it never arrives, and nothing is pending', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      service.failNext(1, { status: 503, retryAfter: 2 })
      const id = await api.publish(ten.publisher, { title: 'Sent by mistake', to: { users: ['alice'] } })
      await waitingForRetry(id)
      await recall(ten.publisher, id)

      expect((await settled(ten.publisher, id)).push).toEqual({ sent: 0, failed: 0, pending: 0 })
      await sleep(2_500) // past the retry it was due for
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, id)).toEqual([])
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([503, 201]) // the 503, then the marker
    })

    it('a recall of a pushed event sends its recall under the same Topic: the event’s id and collapse key, nothing of its text', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const plain = await api.publish(ten.publisher, { title: 'Plain', to: { users: ['alice'] } })
      const keyed = await api.publish(ten.publisher, {
        title: 'Keyed',
        collapseKey: 'closure',
        priority: 'urgent',
        to: { users: ['alice'] },
      })
      const plainPush = await waitForPush(device.endpoint, plain)
      const keyedPush = await waitForPush(device.endpoint, keyed)
      await settled(ten.publisher, keyed)
      await recall(ten.publisher, plain)
      await recall(ten.publisher, keyed)

      await until(() => pushesOf(device.endpoint, plain).length === 2, 'the recall of the plain event')
      await until(() => pushesOf(device.endpoint, keyed).length === 2, 'the recall of the keyed event')
      const plainRecall = pushesOf(device.endpoint, plain)[1]
      const keyedRecall = pushesOf(device.endpoint, keyed)[1]
      expect(plainRecall.payload).toBe(`{"id":"${plain}","collapseKey":null,"change":"delete"}`)
      expect(keyedRecall.payload).toBe(`{"id":"${keyed}","collapseKey":"closure","change":"delete"}`)
      expect(plainRecall.headers.topic).toBe(plainPush.headers.topic) // none: no collapse key
      expect(keyedRecall.headers.topic).toBe('closure')
      expect(keyedRecall.headers.topic).toBe(keyedPush.headers.topic)
      expect(keyedRecall.headers.urgency).toBe('high')
      // Recalled: its edits and recalls are no more.
      expect(
        (await api.http().patch(`/v1/events/${plain}`).set(bearer(ten.publisher)).send({ title: 'x' })).status,
      ).toBe(404)
    })

    it('under a shared collapseKey, a change of an older event is not pushed where a later one took the tag', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const older = await api.publish(ten.publisher, {
        title: 'Bus at 8',
        collapseKey: 'bus',
        to: { users: ['alice'] },
      })
      await waitForPush(device.endpoint, older)
      const later = await api.publish(ten.publisher, {
        title: 'Bus at 9',
        collapseKey: 'bus',
        to: { users: ['alice'] },
      })
      await waitForPush(device.endpoint, later)
      await settled(ten.publisher, later)

      await edit(ten.publisher, older, { title: 'Bus at 8:15' })
      await recall(ten.publisher, older)
      const edited = await edit(ten.publisher, later, { title: 'Bus at 9:30' })
      await until(() => pushesOf(device.endpoint, later).length === 2, 'the replacement of the later event')
      expect(payloadOf(pushesOf(device.endpoint, later)[1])).toEqual({
        ...edited,
        ackToken: expect.any(String),
        change: 'update',
      })
      await marker(ten.publisher, 'alice', device.endpoint)
      expect(pushesOf(device.endpoint, older)).toHaveLength(1)
    })
  })
})
