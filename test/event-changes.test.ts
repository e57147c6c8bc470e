import type { Response } from 'supertest'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { SseClient, type StreamEvent } from './helpers/sse.ts'
import { withoutPings } from './helpers/stream-fixtures.ts'

// Editing and recalling a published event (PATCH and DELETE /v1/events/<id>): who may, what the inbox shows after,
// what bad input gets, and what streams carry, live and on resume, as a real SSE client receives it.

type Json = Record<string, unknown>
interface Problem {
  type: string
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

describeEachBackend('edit and recall', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(() => t.close())

  const opened: SseClient[] = []
  afterEach(() => {
    for (const s of opened.splice(0)) s.close()
  })

  let scenes = 0
  /** A tenant of its own per test: its publisher (`teacher`), an admin, and users. */
  const scene = () => {
    const tenant = `changes-${backend}-${++scenes}`
    return {
      tenant,
      publisher: t.token({ sub: 'teacher', tenant, scope: PUBLISHER }),
      admin: t.token({ sub: 'head', tenant, scope: 'admin' }),
      user: (sub: string, extra: { roles?: string[]; scope?: string } = {}) => t.token({ sub, tenant, ...extra }),
    }
  }

  const as = (token: string) => ({
    get: (path: string) => t.http().get(path).set('authorization', `Bearer ${token}`),
    post: (path: string, body?: object) => t.http().post(path).set('authorization', `Bearer ${token}`).send(body),
    patch: (path: string, body?: object | string) => {
      const req = t.http().patch(path).set('authorization', `Bearer ${token}`)
      if (typeof body === 'string') return req.set('content-type', 'application/json').send(body)
      return body === undefined ? req : req.send(body)
    },
    delete: (path: string) => t.http().delete(path).set('authorization', `Bearer ${token}`),
  })

  async function publish(token: string, event: Json): Promise<string> {
    const res = await as(token).post('/v1/events', { type: 'trip.news', title: 'Trip on Friday', ...event })
    expect(res.status, res.text).toBe(201)
    return res.body.id as string
  }

  function expectProblem(res: Response, status: number): Problem {
    expect(res.status, res.text).toBe(status)
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
    const body = JSON.parse(res.text) as Problem
    expect(body.status).toBe(status)
    return body
  }

  /** A 400 whose errors name exactly these fields. */
  function expectFields(res: Response, fields: string[]) {
    const problem = expectProblem(res, 400)
    expect(problem.type).toBe('urn:herald:problem:validation')
    expect(problem.errors?.map((e) => e.path)).toEqual(fields)
    return problem
  }

  const history = async (token: string): Promise<Json[]> => {
    const res = await as(token).get('/v1/events?limit=500')
    expect(res.status, res.text).toBe(200)
    return res.body.events
  }
  const unread = async (token: string): Promise<number> => {
    const res = await as(token).get('/v1/events/unread-count')
    expect(res.status, res.text).toBe(200)
    return res.body.unread
  }

  async function stream(token: string, options: { lastEventId?: string } = {}): Promise<SseClient> {
    const s = await SseClient.open(t.url, { token, ...options })
    opened.push(s)
    expect(s.status, s.body).toBe(200)
    await s.waitFor((c) => c.raw.startsWith('retry: 3000'), 5_000, 'the retry line')
    return s
  }
  /** The frames of a stream but heartbeats, as (event, id, parsed data). */
  const framesOf = (s: SseClient) =>
    s.events.map((e: StreamEvent) => ({ event: e.event, id: e.id, data: JSON.parse(e.data) }))
  const waitForFrames = (s: SseClient, n: number) => s.waitFor((c) => c.events.length >= n, 10_000, `${n} frames`)

  it('an edit changes the event in place: the answer, GET and history show the new version, one revision up, the rest kept', async () => {
    const s = scene()
    const alice = s.user('alice')
    const id = await publish(s.publisher, {
      to: { users: ['alice'] },
      body: 'Bring lunch',
      data: { room: 12 },
      url: '/trips/1',
      collapseKey: 'trip',
      priority: 'high',
    })
    const before = (await as(alice).get(`/v1/events/${id}`)).body as Json
    expect(before.revision).toBe(0)

    const edited = await as(s.publisher).patch(`/v1/events/${id}`, { title: 'Trip on Monday' })
    expect(edited.status, edited.text).toBe(200)
    expect(edited.headers['content-type']).toMatch(/^application\/json/)
    const { readAt: _r, ackedAt: _a, ...event } = before
    expect(edited.body).toEqual({ ...event, title: 'Trip on Monday', revision: 1 })

    const got = await as(alice).get(`/v1/events/${id}`)
    expect(got.body).toEqual({ ...before, title: 'Trip on Monday', revision: 1 })
    expect(await history(alice)).toEqual([got.body])

    // null clears body and url; data is stored as written, byte for byte, as a publish's is.
    const again = await as(s.publisher).patch(
      `/v1/events/${id}`,
      '{ "body": null, "url": null, "data": {"z": 1, "a": 12345678901234567890} }',
    )
    expect(again.status, again.text).toBe(200)
    expect(again.text).toContain('"data":{"z":1,"a":12345678901234567890}')
    expect(again.body).toMatchObject({ id, title: 'Trip on Monday', body: null, url: null, revision: 2 })
    const listed = await as(alice).get('/v1/events')
    expect(listed.text).toContain('"data":{"z":1,"a":12345678901234567890}')
    expect(listed.body.events.map((e: Json) => [e.id, e.revision])).toEqual([[id, 2]])
    // Two edits, one event: the log's rows of the edits are not events anyone has to read.
    expect(await unread(alice)).toBe(1)
  })

  it('the publisher and an admin of the tenant may edit and recall; a recipient gets 403, anyone else 404', async () => {
    const s = scene()
    const alice = s.user('alice')
    const id = await publish(s.publisher, { to: { users: ['alice'], roles: ['parent'] } })
    const edit = { title: 'Changed' }

    // Recipients who can see it: 403, named as what they may not do.
    for (const recipient of [alice, s.user('pat', { roles: ['parent'] })]) {
      expect(expectProblem(await as(recipient).patch(`/v1/events/${id}`, edit), 403).detail).toMatch(/publisher.*admin/)
      expectProblem(await as(recipient).delete(`/v1/events/${id}`), 403)
    }
    // Anyone who cannot see it: 404, as for an event that does not exist.
    const otherTenant = `${s.tenant}-other`
    const strangers = [
      s.user('bob'),
      t.token({ sub: 'teacher-2', tenant: s.tenant, scope: PUBLISHER }),
      t.token({ sub: 'teacher', tenant: otherTenant, scope: PUBLISHER }),
      t.token({ sub: 'head', tenant: otherTenant, scope: 'admin' }),
    ]
    for (const stranger of strangers) {
      expectProblem(await as(stranger).patch(`/v1/events/${id}`, edit), 404)
      expectProblem(await as(stranger).delete(`/v1/events/${id}`), 404)
    }
    expectProblem(await as(s.publisher).patch('/v1/events/987654321', edit), 404)
    expectProblem(await as(s.publisher).delete('/v1/events/987654321'), 404)
    // None of that changed anything.
    expect((await as(alice).get(`/v1/events/${id}`)).body).toMatchObject({ title: 'Trip on Friday', revision: 0 })

    // An admin of the tenant may: the event stays its publisher's.
    const byAdmin = await as(s.admin).patch(`/v1/events/${id}`, edit)
    expect(byAdmin.status, byAdmin.text).toBe(200)
    expect(byAdmin.body).toMatchObject({ id, title: 'Changed', actor: 'teacher', revision: 1 })
    expect((await as(s.admin).delete(`/v1/events/${id}`)).status).toBe(204)
    expectProblem(await as(alice).get(`/v1/events/${id}`), 404)
  })

  it('a recalled event is gone: GET, history and the unread count leave it out, ack and read are 404, and editing or recalling it again is 404', async () => {
    const s = scene()
    const alice = s.user('alice')
    const kept = await publish(s.publisher, { to: { users: ['alice'] }, title: 'Kept' })
    const id = await publish(s.publisher, { to: { users: ['alice'] }, title: 'Sent by mistake' })
    expect(await unread(alice)).toBe(2)

    const recalled = await as(s.publisher).delete(`/v1/events/${id}`)
    expect(recalled.status, recalled.text).toBe(204)
    expect(recalled.text).toBe('')

    expectProblem(await as(alice).get(`/v1/events/${id}`), 404)
    expect((await history(alice)).map((e) => e.id)).toEqual([kept])
    expect(await unread(alice)).toBe(1)
    expectProblem(await as(alice).post(`/v1/events/${id}/ack`), 404)
    expectProblem(await as(alice).post(`/v1/events/${id}/read`), 404)
    // Recalled already: there is nothing to edit or recall any more, for its publisher or an admin.
    expect(expectProblem(await as(s.publisher).delete(`/v1/events/${id}`), 404).detail).toBe(`No event ${id} for you.`)
    expectProblem(await as(s.publisher).patch(`/v1/events/${id}`, { title: 'Too late' }), 404)
    expectProblem(await as(s.admin).delete(`/v1/events/${id}`), 404)
    // Its publisher still sees what was delivered before the recall.
    const status = await as(s.publisher).get(`/v1/events/${id}/status`)
    expect(status.status, status.text).toBe(200)
    expect(status.body).toMatchObject({ acked: 0, read: 0, push: { sent: 0, failed: 0, pending: 0 } })
    expect(status.body.recipients).toMatchObject({ recipients: 1, read: 0 })
  })

  it('bad input is a 400 naming the field, and changes nothing', async () => {
    const s = scene()
    const id = await publish(s.publisher, { to: { users: ['alice'] } })
    const patch = (body?: object | string) => as(s.publisher).patch(`/v1/events/${id}`, body)

    // Nothing to change: an empty object, or no body at all.
    expect(expectFields(await patch({}), ['body']).detail).toMatch(/at least one of title, body, data and url/)
    expectFields(await patch(), ['body'])
    // What an edit cannot change is named.
    const unknown = expectFields(await patch({ title: 'x', priority: 'urgent', to: { tenant: true } }), ['body'])
    expect(unknown.detail).toBe('body: cannot be edited: "priority", "to" (only title, body, data and url can)')
    expect(expectFields(await patch({ revision: 7 }), ['body']).detail).toMatch(/cannot be edited: "revision"/)
    // The rules of a publish: a url that could run script, a title that is empty or too long, data over 16 KiB.
    expectFields(await patch({ url: 'javascript:alert(1)' }), ['body.url'])
    expectFields(await patch({ url: '//evil.example/x' }), ['body.url'])
    expectFields(await patch({ title: '' }), ['body.title'])
    expectFields(await patch({ title: 'x'.repeat(201) }), ['body.title'])
    expectFields(await patch({ body: 42 }), ['body.body'])
    const tooBig = expectFields(await patch({ data: { blob: 'x'.repeat(16_384) } }), ['body.data'])
    expect(tooBig.detail).toMatch(/at most 16384 bytes/)
    expectFields(await as(s.publisher).patch('/v1/events/abc', { title: 'x' }), ['params.id'])
    expectFields(await as(s.publisher).delete('/v1/events/abc'), ['params.id'])
    expectProblem(await patch('{"title": '), 400)

    const res = await as(s.user('alice')).get(`/v1/events/${id}`)
    expect(res.body).toMatchObject({ title: 'Trip on Friday', revision: 0, url: null })

    // An `open` button without a url of its own opens the event's: that url cannot be cleared (as at publishing).
    const withButton = await publish(s.publisher, {
      to: { users: ['alice'] },
      url: '/trips/1',
      actions: [{ action: 'open', title: 'See the trip' }],
    })
    const cleared = expectFields(await as(s.publisher).patch(`/v1/events/${withButton}`, { url: null }), ['body.url'])
    expect(cleared.detail).toMatch(/"open" button/)
    const moved = await as(s.publisher).patch(`/v1/events/${withButton}`, { url: '/trips/2' })
    expect(moved.body).toMatchObject({ url: '/trips/2', revision: 1 })
  })

  it('a stream carries an edit as `update` and a recall as `delete`, each with an id of its own, to whom the event went', async () => {
    const s = scene()
    const alice = await stream(s.user('alice'))
    const parent = await stream(s.user('pat', { roles: ['parent'] }))
    const bob = await stream(s.user('bob'))
    const id = await publish(s.publisher, { to: { users: ['alice'], roles: ['parent'] }, body: 'Bring lunch' })
    await waitForFrames(alice, 1)
    const published = alice.notifications[0]

    const edited = await as(s.publisher).patch(`/v1/events/${id}`, { title: 'Trip on Monday', body: null })
    expect(edited.status, edited.text).toBe(200)
    expect((await as(s.publisher).delete(`/v1/events/${id}`)).status).toBe(204)

    for (const viewer of [alice, parent]) {
      await waitForFrames(viewer, 3)
      const [first, update, recall] = framesOf(viewer)
      expect(first).toEqual({ event: 'notification', id, data: published })
      // The edit: the event's new JSON, its own id, one revision up; the frame's id is the log's, after the event's.
      expect(update).toEqual({ event: 'update', id: expect.any(String), data: edited.body })
      expect(update.data).toMatchObject({ id, title: 'Trip on Monday', body: null, revision: 1 })
      expect(Number(update.id)).toBeGreaterThan(Number(id))
      expect(recall).toEqual({ event: 'delete', id: expect.any(String), data: { id } })
      expect(Number(recall.id)).toBeGreaterThan(Number(update.id))
      expect(viewer.lastEventId).toBe(recall.id)
      // The exact bytes: JSON on one line, as every frame.
      expect(withoutPings(viewer.raw)).toContain(`id: ${recall.id}\nevent: delete\ndata: {"id":"${id}"}\n\n`)
    }
    // A user the event did not go to hears of neither: the next frame bob gets is his own event.
    const own = await publish(s.publisher, { to: { users: ['bob'] } })
    await waitForFrames(bob, 1)
    expect(framesOf(bob).map((f) => [f.event, f.id])).toEqual([['notification', own]])
  })

  it('a stream resuming with Last-Event-ID replays edits and recalls in order with the events, each once', async () => {
    const s = scene()
    const aliceToken = s.user('alice')
    const to = { users: ['alice'] }
    const watcher = await stream(aliceToken)
    const first = await publish(s.publisher, { to, title: 'First' })
    const second = await publish(s.publisher, { to, title: 'Second' })
    await waitForFrames(watcher, 2)

    // While a client is away (it saw `second`): two edits of `first`, a new event, a recall of `second`.
    const editOne = await as(s.publisher).patch(`/v1/events/${first}`, { title: 'First, edited' })
    const third = await publish(s.publisher, { to, title: 'Third' })
    const editTwo = await as(s.publisher).patch(`/v1/events/${first}`, { title: 'First, edited twice' })
    expect((await as(s.publisher).delete(`/v1/events/${second}`)).status).toBe(204)
    await waitForFrames(watcher, 6)
    const live = framesOf(watcher)
    expect(live.map((f) => [f.event, f.data.id, f.data.revision])).toEqual([
      ['notification', first, 0],
      ['notification', second, 0],
      ['update', first, 1],
      ['notification', third, 0],
      ['update', first, 2],
      ['delete', second, undefined],
    ])
    expect(live[2].data).toEqual(editOne.body)
    expect(live[4].data).toEqual(editTwo.body)
    const [, , firstEditRow, , secondEditRow, recallRow] = live.map((f) => f.id as string)

    // Back from `second`: everything after it, in order, once. The first edit was superseded by the second: the
    // client goes straight to the event as it now stands.
    const resumed = await stream(aliceToken, { lastEventId: second })
    await waitForFrames(resumed, 3)
    expect(framesOf(resumed)).toEqual([live[3], live[4], live[5]])
    // Byte for byte as the live stream had them (the database builds replayed frames).
    const liveFrames = withoutPings(watcher.raw)
    expect(liveFrames).toContain(withoutPings(resumed.raw).replace(/^retry: 3000\n\n/, ''))

    // Back from the first edit: the rest, once.
    const fromEdit = await stream(aliceToken, { lastEventId: firstEditRow })
    await waitForFrames(fromEdit, 3)
    expect(framesOf(fromEdit).map((f) => f.id)).toEqual([third, secondEditRow, recallRow])

    // From the start: each event as it now stands (`second` is recalled: not replayed), and the changes since.
    const fromStart = await stream(aliceToken, { lastEventId: '0' })
    await waitForFrames(fromStart, 4)
    expect(framesOf(fromStart).map((f) => [f.event, f.id, f.data.title])).toEqual([
      ['notification', first, 'First, edited twice'],
      ['notification', third, 'Third'],
      ['update', secondEditRow, 'First, edited twice'],
      ['delete', recallRow, undefined],
    ])
    // Live again after the replay: a new edit comes through once.
    const editThree = await as(s.publisher).patch(`/v1/events/${third}`, { body: 'Now with a body' })
    await waitForFrames(fromStart, 5)
    expect(framesOf(fromStart)[4]).toMatchObject({ event: 'update', data: editThree.body })
    expect(fromStart.events).toHaveLength(5)
  })

  it('the log’s rows of edits and recalls are no events: not listed, not counted, not readable, and readAll up to one marks the events before it', async () => {
    const s = scene()
    const alice = s.user('alice')
    const watcher = await stream(alice)
    const kept = await publish(s.publisher, { to: { users: ['alice'] } })
    const gone = await publish(s.publisher, { to: { users: ['alice'] } })
    // Live before they change (an event recalled before the log tail read it never goes out live).
    await waitForFrames(watcher, 2)
    await as(s.publisher).patch(`/v1/events/${kept}`, { title: 'Edited' })
    await as(s.publisher).delete(`/v1/events/${gone}`)
    await waitForFrames(watcher, 4)
    const [, , editRow, recallRow] = watcher.events.map((e) => e.id as string)

    expect((await as(alice).get('/v1/events?after=0')).body.events.map((e: Json) => e.id)).toEqual([kept])
    expect(await unread(alice)).toBe(1)
    for (const row of [editRow, recallRow]) {
      expectProblem(await as(alice).get(`/v1/events/${row}`), 404)
      expectProblem(await as(alice).post(`/v1/events/${row}/read`), 404)
      expectProblem(await as(alice).post(`/v1/events/${row}/ack`), 404)
      expectProblem(await as(s.publisher).get(`/v1/events/${row}/status`), 404)
      expectProblem(await as(s.publisher).patch(`/v1/events/${row}`, { title: 'x' }), 404)
      expectProblem(await as(s.publisher).delete(`/v1/events/${row}`), 404)
    }
    // What a client passes as `upTo` is the last id it received, which may be a recall's.
    const read = await as(alice).post('/v1/events/read', { upTo: recallRow })
    expect(read.status, read.text).toBe(204)
    expect(await unread(alice)).toBe(0)
    expect((await as(alice).get(`/v1/events/${kept}`)).body.readAt).toEqual(expect.any(String))
    expect(await as(s.publisher).get(`/v1/events/${kept}/status`)).toMatchObject({ body: { read: 1 } })
  })
})
