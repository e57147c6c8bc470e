import { describe, expect, it, vi } from 'vitest'
import { createHeraldServerClient, type EventAction } from '../src/client/index.ts'
import type { EventRow } from '../src/db/schema.ts'
import { MAX_ACTION_TITLE_CHARS, MAX_ACTIONS } from '../src/events/model.ts'
import { MAX_PUSH_PLAINTEXT_BYTES, pushPayload } from '../src/push/payload.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { eventRow } from './helpers/event-rows.ts'
import {
  api,
  attemptsAt,
  bearer,
  expectProblem,
  type Json,
  payloadOf,
  t,
  usePushService,
  waitForPush,
  webPushApp,
} from './helpers/push-fixtures.ts'

// Issue 18, part 5: events carry up to two action buttons (`ack`, `read`, `open`) and pictures (`icon`, `image`,
// `badge`). What a publisher may send and what each bad input gets; the fields as every client sees them (REST,
// stream, batch, push payload); how a push too big for 4 KiB is cut. The service worker's and the demo inbox's
// buttons are driven in Chromium (test/browser.test.ts); the URL rules of every field are in publish-input.test.ts.

vi.setConfig({ testTimeout: 60_000 })

usePushService()

const ACTIONS = [
  { action: 'open', title: 'See the grade', url: 'https://school.example/grades/42' },
  { action: 'ack', title: 'Got it' },
]
/** ACTIONS as clients get them: every member present, `url` null where none was given. */
const ACTIONS_OUT = [
  { action: 'open', title: 'See the grade', url: 'https://school.example/grades/42' },
  { action: 'ack', title: 'Got it', url: null },
]
const PICTURES = {
  icon: '/icons/maths.png',
  image: 'https://cdn.school.example/grades/42.png',
  badge: '/icons/badge-mono.png',
}

describeEachBackend('action buttons and pictures', (backend) => {
  const { newTenant, openStream } = webPushApp(backend)

  /** POSTs a body to /v1/events (or the batch route) as the tenant's publisher. */
  const post = (publisher: string, body: Json, path = '/v1/events') =>
    api.http().post(path).set(bearer(publisher)).send(body)

  const event = (to: string, extra: Json = {}): Json => ({
    type: 'grade.posted',
    title: 'New grade',
    to: { users: [to] },
    ...extra,
  })

  async function served(token: string, id: string): Promise<Json> {
    const res = await api.http().get(`/v1/events/${id}`).set(bearer(token))
    expect(res.status, res.text).toBe(200)
    return res.body as Json
  }

  async function history(token: string): Promise<Json[]> {
    const res = await api.http().get('/v1/events').set(bearer(token))
    expect(res.status, res.text).toBe(200)
    return (res.body as { events: Json[] }).events
  }

  describe('publishing', () => {
    it('actions, icon, image and badge come back the same on GET, in the list, on the stream and from a batch', async () => {
      const ten = newTenant()
      const alice = ten.user('alice')
      const stream = await openStream(alice)
      const res = await post(ten.publisher, event('alice', { actions: ACTIONS, ...PICTURES }))
      expect(res.status, res.text).toBe(201)
      const id = res.body.id as string
      const expected = { id, actions: ACTIONS_OUT, ...PICTURES }

      expect(await served(alice, id)).toMatchObject(expected)
      expect((await history(alice)).find((e) => e.id === id)).toMatchObject(expected)
      await stream.waitForNotifications(1)
      expect(stream.notifications[0]).toMatchObject(expected)

      const batch = await post(
        ten.publisher,
        { events: [event('alice', { actions: [{ action: 'read', title: 'Mark read' }] }), event('alice', PICTURES)] },
        '/v1/events/batch',
      )
      expect(batch.status, batch.text).toBe(201)
      const [first, second] = batch.body.ids as string[]
      expect(await served(alice, first)).toMatchObject({
        actions: [{ action: 'read', title: 'Mark read', url: null }],
        icon: null,
        image: null,
        badge: null,
      })
      expect(await served(alice, second)).toMatchObject({ actions: null, ...PICTURES })
    })

    it('no actions, an empty list and null are all "none": actions null, pictures null', async () => {
      const ten = newTenant()
      const alice = ten.user('alice')
      for (const extra of [{}, { actions: [] }, { actions: null, icon: null, image: null, badge: null }]) {
        const res = await post(ten.publisher, event('alice', extra))
        expect(res.status, res.text).toBe(201)
        expect(await served(alice, res.body.id), JSON.stringify(extra)).toMatchObject({
          actions: null,
          icon: null,
          image: null,
          badge: null,
        })
      }
    })

    it('an open action without a url of its own opens the event’s: accepted, its url null', async () => {
      const ten = newTenant()
      const res = await post(
        ten.publisher,
        event('alice', { url: '/grades/42', actions: [{ action: 'open', title: 'Open' }] }),
      )
      expect(res.status, res.text).toBe(201)
      expect(await served(ten.user('alice'), res.body.id)).toMatchObject({
        url: '/grades/42',
        actions: [{ action: 'open', title: 'Open', url: null }],
      })
    })

    const title = (n: number) => 'x'.repeat(n)
    /** What is sent, the field the 400 names, what it says about it. */
    const refused: Array<[string, string, Json, RegExp]> = [
      [
        'three actions',
        'body.actions',
        { actions: [...ACTIONS, { action: 'read', title: 'Read' }] },
        new RegExp(`<=${MAX_ACTIONS}`),
      ],
      ['actions that are not a list', 'body.actions', { actions: { action: 'ack', title: 'Ok' } }, /array/],
      [
        'an action that is not ack, read or open',
        'body.actions.0.action',
        { actions: [{ action: 'dismiss', title: 'No' }] },
        /ack|read|open/,
      ],
      ['an action without a title', 'body.actions.0.title', { actions: [{ action: 'ack' }] }, /string/],
      ['an action with an empty title', 'body.actions.0.title', { actions: [{ action: 'ack', title: '' }] }, />=1/],
      [
        `a title over ${MAX_ACTION_TITLE_CHARS} characters`,
        'body.actions.0.title',
        { actions: [{ action: 'ack', title: title(MAX_ACTION_TITLE_CHARS + 1) }] },
        new RegExp(`<=${MAX_ACTION_TITLE_CHARS}`),
      ],
      ['a title with a NUL', 'body.actions.0.title', { actions: [{ action: 'ack', title: 'a\u0000b' }] }, /NUL/],
      [
        'a title with a lone surrogate',
        'body.actions.0.title',
        { actions: [{ action: 'ack', title: 'a\ud800' }] },
        /surrogate/,
      ],
      [
        'an unknown member in an action',
        'body.actions.0',
        { actions: [{ action: 'ack', title: 'Ok', onclick: 'x()' }] },
        /onclick/,
      ],
      [
        'a url on an ack action',
        'body.actions.0.url',
        { actions: [{ action: 'ack', title: 'Ok', url: '/x' }] },
        /only an "open" action/,
      ],
      [
        'a url on a read action',
        'body.actions.1.url',
        {
          actions: [
            { action: 'ack', title: 'Ok' },
            { action: 'read', title: 'Read', url: 'https://school.example/' },
          ],
        },
        /only an "open" action/,
      ],
      [
        'an open action with no url, on an event with none',
        'body.actions.1.url',
        {
          actions: [
            { action: 'ack', title: 'Ok' },
            { action: 'open', title: 'Open' },
          ],
        },
        /needs a url/,
      ],
      ['an icon that is not a string', 'body.icon', { icon: 42 }, /string/],
      ['an image over 2,048 characters', 'body.image', { image: `/${'i'.repeat(2048)}` }, /<=2048/],
      ['a badge with a javascript: URL', 'body.badge', { badge: 'javascript:alert(1)' }, /https/],
    ]

    it.each(refused)('%s gets 400 naming %s; nothing is published', async (_, path, extra, message) => {
      const ten = newTenant()
      const res = await post(ten.publisher, event('alice', extra))
      const problem = expectProblem(res, 400)
      expect(problem.type).toBe('urn:herald:problem:validation')
      const error = problem.errors?.find((e) => e.path === path)
      expect(error, res.text).toBeDefined()
      expect(error?.message).toMatch(message)
      expect(await history(ten.user('alice'))).toEqual([])
    })

    it('in a batch, a bad action is named under its event (body.events.1.actions.0.action); nothing is published', async () => {
      const ten = newTenant()
      const res = await post(
        ten.publisher,
        { events: [event('alice', { actions: ACTIONS }), event('alice', { actions: [{ action: 'x', title: 'X' }] })] },
        '/v1/events/batch',
      )
      const problem = expectProblem(res, 400)
      expect(problem.errors?.map((e) => e.path)).toContain('body.events.1.actions.0.action')
      expect(await history(ten.user('alice'))).toEqual([])
    })

    it('Idempotency-Key: the same actions sent with members in another order replay (200); another title is 422', async () => {
      const ten = newTenant()
      const send = (body: Json) =>
        api.http().post('/v1/events').set(bearer(ten.publisher)).set('idempotency-key', 'actions-key').send(body)
      const first = await send(event('alice', { actions: ACTIONS, ...PICTURES }))
      expect(first.status, first.text).toBe(201)
      const reordered = ACTIONS.map((a) => Object.fromEntries(Object.entries(a).reverse()))
      const again = await send(event('alice', { ...PICTURES, actions: reordered }))
      expect(again.status, again.text).toBe(200)
      expect(again.body.id).toBe(first.body.id)
      const other = await send(event('alice', { actions: [ACTIONS[0], { action: 'ack', title: 'Seen' }], ...PICTURES }))
      expect(expectProblem(other, 422).type).toBe('urn:herald:problem:unprocessable')
      const otherPicture = await send(event('alice', { actions: ACTIONS, ...PICTURES, badge: '/other.png' }))
      expect(otherPicture.status).toBe(422)
      expect(await history(ten.user('alice'))).toHaveLength(1)
    })
  })

  it('the backend client (herald/client) sends them, its types taken from the same schema', async () => {
    const ten = newTenant()
    const actions: EventAction[] = [
      { action: 'open', title: 'See the grade', url: '/grades/42' },
      { action: 'ack', title: 'Got it' },
    ]
    // @ts-expect-error: the schema knows ack, read and open only
    const unknown: EventAction = { action: 'dismiss', title: 'No' }
    expect(unknown.action).toBe('dismiss')
    const herald = createHeraldServerClient({ baseUrl: t.url, token: ten.publisher })
    const { id } = await herald.publish({
      type: 'grade.posted',
      title: 'New grade',
      to: { users: ['alice'] },
      actions,
      ...PICTURES,
    })
    expect(await served(ten.user('alice'), id)).toMatchObject({
      actions: [
        { action: 'open', title: 'See the grade', url: '/grades/42' },
        { action: 'ack', title: 'Got it', url: null },
      ],
      ...PICTURES,
    })
  })

  describe('push', () => {
    it('the push payload carries actions, icon, image and badge: the event as GET shows it, plus the ackToken', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const id = await api.publish(ten.publisher, event('alice', { url: '/grades/42', actions: ACTIONS, ...PICTURES }))
      const push = await waitForPush(device.endpoint, id)
      const { readAt: _r, ackedAt: _a, ...shown } = await served(ten.user('alice'), id)
      expect(payloadOf(push)).toEqual({ ...shown, ackToken: expect.any(String) })
      expect(payloadOf(push)).toMatchObject({ actions: ACTIONS_OUT, ...PICTURES })
    })

    it('an event too big for one push arrives cut to fit: data, then the image dropped; the body whole, the actions kept', async () => {
      const ten = newTenant()
      const device = await api.register(ten.user('alice'))
      const long = (prefix: string) => `https://cdn.school.example/${prefix}/${'p'.repeat(1_300)}.png`
      const id = await api.publish(
        ten.publisher,
        event('alice', {
          body: 'Maths: 18/20. Well done!',
          data: { blob: 'x'.repeat(3_000) },
          actions: ACTIONS,
          icon: long('icon'),
          image: long('image'),
          badge: long('badge'),
        }),
      )
      const push = await waitForPush(device.endpoint, id)
      expect(Buffer.byteLength(push.payload)).toBeLessThanOrEqual(MAX_PUSH_PLAINTEXT_BYTES)
      // Without data and the image, it fits: the badge and icon stay.
      expect(payloadOf(push)).toMatchObject({
        id,
        title: 'New grade',
        body: 'Maths: 18/20. Well done!',
        data: null,
        image: null,
        badge: long('badge'),
        icon: long('icon'),
        actions: ACTIONS_OUT,
        truncated: true,
        ackToken: expect.any(String),
      })
      expect(attemptsAt(device.endpoint).map((a) => a.status)).toEqual([201])
      // The inbox still has everything.
      expect(await served(ten.user('alice'), id)).toMatchObject({
        image: long('image'),
        data: { blob: 'x'.repeat(3_000) },
      })
    })
  })
})

describe('the push payload cut to fit 4 KiB (push/payload.ts)', () => {
  const ACK_TOKEN = 'a'.repeat(200)
  /** An event row as the dispatcher reads it. */
  const row = (fields: Partial<EventRow> = {}): EventRow =>
    eventRow(7, {
      type: 'grade.posted',
      title: 'New grade',
      body: 'Maths: 18/20',
      url: '/grades/42',
      actionsJson: JSON.stringify(ACTIONS_OUT),
      icon: PICTURES.icon,
      image: PICTURES.image,
      badge: PICTURES.badge,
      actor: 'teacher',
      toUsers: ['alice'],
      createdAt: new Date('2026-12-05T10:00:00.000Z'),
      expiresAt: new Date('2026-12-12T10:00:00.000Z'),
      ...fields,
    })
  const cut = (fields: Partial<EventRow>) => {
    const text = pushPayload(row(fields), ACK_TOKEN)
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(MAX_PUSH_PLAINTEXT_BYTES)
    return JSON.parse(text) as Json
  }
  /** A picture URL of about `bytes` bytes. */
  const picture = (name: string, bytes: number) => `https://cdn.example/${name}/${'p'.repeat(bytes)}.png`

  it('an event that fits goes whole, with no `truncated`', () => {
    const payload = cut({ dataJson: '{"gradeId":42}' })
    expect(payload).toMatchObject({ data: { gradeId: 42 }, actions: ACTIONS_OUT, ...PICTURES, ackToken: ACK_TOKEN })
    expect(payload).not.toHaveProperty('truncated')
  })

  it('data goes first: pictures, body and actions stay', () => {
    const payload = cut({ dataJson: JSON.stringify({ blob: 'x'.repeat(5_000) }) })
    expect(payload).toMatchObject({
      data: null,
      truncated: true,
      body: 'Maths: 18/20',
      actions: ACTIONS_OUT,
      ...PICTURES,
    })
  })

  it('then the image, then the badge, then the icon, before any of the body', () => {
    const big = { image: picture('image', 1_500), badge: picture('badge', 1_500), icon: picture('icon', 1_500) }
    // Everything: 4,500 bytes of pictures. Without the image, it fits.
    expect(cut(big)).toMatchObject({ image: null, badge: big.badge, icon: big.icon, body: 'Maths: 18/20' })
    const bigger = { image: picture('image', 1_500), badge: picture('badge', 1_900), icon: picture('icon', 1_900) }
    expect(cut(bigger)).toMatchObject({ image: null, badge: null, icon: bigger.icon, body: 'Maths: 18/20' })
    const biggest = { image: picture('image', 1_900), badge: picture('badge', 1_900), icon: picture('icon', 3_900) }
    expect(cut(biggest)).toMatchObject({
      image: null,
      badge: null,
      icon: null,
      body: 'Maths: 18/20',
      actions: ACTIONS_OUT,
    })
  })

  it('then the body is shortened (ending in "…"), once every picture is gone; the actions kept', () => {
    const body = 'é'.repeat(2_000)
    const payload = cut({ body, image: picture('image', 500) })
    expect(payload).toMatchObject({ image: null, badge: null, icon: null, actions: ACTIONS_OUT, truncated: true })
    expect(payload.body).toMatch(/^é+…$/)
    expect(String(payload.body).length).toBeLessThan(body.length)
    expect(String(payload.body).length).toBeGreaterThan(1_000)
  })

  it('the actions go only when even an empty body would not fit, and then the body is cut from its whole text again', () => {
    const longUrl = (n: number) => `https://school.example/${'u'.repeat(n)}`
    const actions = [
      { action: 'open', title: 'One', url: longUrl(1_700) },
      { action: 'open', title: 'Two', url: longUrl(1_700) },
    ]
    const payload = cut({ body: 'Short and whole', url: longUrl(500), actionsJson: JSON.stringify(actions) })
    expect(payload).toMatchObject({ actions: null, body: 'Short and whole', url: longUrl(500), truncated: true })
    expect(payload).toMatchObject({ icon: null, image: null, badge: null })
  })

  it('the title, url, id and ackToken always stay', () => {
    const payload = cut({
      body: '\u0001'.repeat(2_000),
      dataJson: JSON.stringify('x'.repeat(16_000)),
      image: picture('image', 2_000),
    })
    expect(payload).toMatchObject({ id: '7', title: 'New grade', url: '/grades/42', ackToken: ACK_TOKEN })
  })
})
