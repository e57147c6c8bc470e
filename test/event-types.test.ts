import type supertest from 'supertest'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { bearer, client, service, sleep, until, usePushService } from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Event types (issue 20, part 1): a tenant's admins register a type with defaults, inbox and push switches and
// Mustache templates over `data`; a publish then names only its type and data. Templates can read nothing but
// `data` and never run code: what breaks that is a 400 at registration, naming the field.

type Json = Record<string, unknown>
interface Problem {
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

function expectProblem(res: supertest.Response, status: number): Problem {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  return JSON.parse(res.text) as Problem
}

/** The paths a 400 names. */
const pathsOf = (p: Problem) => (p.errors ?? []).map((e) => e.path)

usePushService()

let tenants = 0

describeEachBackend('event types', (backend) => {
  let t: TestApp
  let strict: TestApp

  beforeAll(async () => {
    t = await startApp(backend, {
      pushAgent: service.agent,
      config: { PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*', PUSH_RETRY_BASE_MS: 100 },
    })
    strict = await startApp(backend, { config: { TENANT_STRICT_TYPES: true } })
  })
  afterAll(async () => {
    await t?.close()
    await strict?.close()
  })

  /** One school: its admin, a publisher, and calls on the event-type routes and publishing. */
  function school(app: TestApp = t) {
    const tenant = `school-${process.pid}-${++tenants}`
    const admin = app.token({ sub: 'backend', tenant, scope: 'admin' })
    const publisher = app.token({ sub: 'office', tenant, scope: PUBLISHER })
    return {
      tenant,
      admin,
      publisher,
      put: (type: string, body: Json, token = admin) =>
        app.http().put(`/v1/event-types/${type}`).set(bearer(token)).send(body),
      remove: (type: string, token = admin) => app.http().delete(`/v1/event-types/${type}`).set(bearer(token)),
      list: (token = admin) => app.http().get('/v1/event-types').set(bearer(token)),
      publish: (event: Json, token = publisher) => app.http().post('/v1/events').set(bearer(token)).send(event),
      batch: (events: Json[], token = publisher) =>
        app.http().post('/v1/events/batch').set(bearer(token)).send({ events }),
      user: (sub: string) => app.token({ sub, tenant }),
    }
  }

  /** The event as its recipient reads it (GET /v1/events/:id). */
  async function read(s: ReturnType<typeof school>, id: string, sub = 'kim'): Promise<Json> {
    const res = await t
      .http()
      .get(`/v1/events/${id}`)
      .set(bearer(s.user(sub)))
    expect(res.status, res.text).toBe(200)
    return res.body as Json
  }

  const grade = {
    description: 'A grade was entered',
    category: 'grades',
    defaults: { priority: 'high', ttl: 3_600, collapseKey: 'grades', actions: [{ action: 'read', title: 'Seen' }] },
    templates: { title: '{{data.student}} scored {{data.score}}', body: 'In {{data.subject}}' },
  }

  it('registers a type (201), replaces it (200), lists it for any user of the tenant, and removes it (204, then 404)', async () => {
    const s = school()
    const created = await s.put('grade.updated', grade)
    expect(created.status, created.text).toBe(201)
    expect(created.body).toMatchObject({
      type: 'grade.updated',
      description: 'A grade was entered',
      category: 'grades',
      defaults: grade.defaults,
      inbox: true,
      push: true,
      liveOnly: false,
      templates: grade.templates,
    })
    expect(Date.parse(created.body.updatedAt)).toBeGreaterThan(0)

    const replaced = await s.put('grade.updated', { ...grade, inbox: false })
    expect(replaced.status, replaced.text).toBe(200)
    expect(replaced.body.inbox).toBe(false)
    expect((await s.put('absence.recorded', { description: 'Absent' })).status).toBe(201)

    // Any user of the tenant reads the list (an app shows categories from it); another tenant sees none of it.
    const listed = await s.list(s.user('kim'))
    expect(listed.status, listed.text).toBe(200)
    expect(listed.body.eventTypes.map((e: Json) => e.type)).toEqual(['absence.recorded', 'grade.updated'])
    expect(listed.body.eventTypes[0]).toMatchObject({
      description: 'Absent',
      category: null,
      defaults: {},
      templates: null,
      inbox: true,
      push: true,
      liveOnly: false,
    })
    expect((await school().list()).body.eventTypes).toEqual([])

    expect((await s.remove('absence.recorded')).status).toBe(204)
    expectProblem(await s.remove('absence.recorded'), 404)
    expect((await s.list()).body.eventTypes.map((e: Json) => e.type)).toEqual(['grade.updated'])
  })

  it('only an admin registers or removes a type (403); a bad type name is a 400 on params.type', async () => {
    const s = school()
    expectProblem(await s.put('grade.updated', grade, s.publisher), 403)
    expectProblem(await s.remove('grade.updated', s.publisher), 403)
    const bad = expectProblem(await s.put('Grade Updated', grade), 400)
    expect(pathsOf(bad)).toEqual(['params.type'])
  })

  it('refuses each unsafe or broken template at registration, naming the field', async () => {
    const s = school()
    const refused = async (templates: Json, path: string, message: RegExp) => {
      const p = expectProblem(await s.put('grade.updated', { templates }), 400)
      expect(pathsOf(p)).toEqual([path])
      expect(p.errors?.[0].message).toMatch(message)
    }
    await refused({ title: 'Hi {{> header}}' }, 'body.templates.title', /partials/)
    await refused({ title: 'Hi {{secret}}' }, 'body.templates.title', /only read the event's data/)
    await refused({ title: 'Hi', body: '{{#data.x}} open' }, 'body.templates.body', /Unclosed section/)
    await refused({ title: '{{=<% %>=}} <% data.x %>' }, 'body.templates.title', /delimiters/)
    await refused(
      { title: 'Hi', locales: { fr: { title: 'Salut {{process.env.JWT_SECRET}}' } } },
      'body.templates.locales.fr.title',
      /only read the event's data/,
    )
    // Prototype members would reach functions rather than values of data.
    await refused({ title: '{{data.constructor.constructor}}' }, 'body.templates.title', /not a field of data/)
    await refused({ title: '{{#data.x}}{{data.__proto__}}{{/data.x}}' }, 'body.templates.title', /not a field of data/)
    const locale = expectProblem(
      await s.put('grade.updated', { templates: { title: 'x', locales: { 'not a tag!': { title: 'y' } } } }),
      400,
    )
    expect(pathsOf(locale)[0]).toMatch(/^body\.templates\.locales/)
    // Defaults are checked as a publish's fields are.
    const priority = expectProblem(await s.put('grade.updated', { defaults: { priority: 'asap' } }), 400)
    expect(pathsOf(priority)).toEqual(['body.defaults.priority'])
    const ttl = expectProblem(await s.put('grade.updated', { defaults: { ttl: 5 } }), 400)
    expect(pathsOf(ttl)).toEqual(['body.defaults.ttl'])
    const action = expectProblem(
      await s.put('grade.updated', { defaults: { actions: [{ action: 'ack', title: 'Ok', url: '/x' }] } }),
      400,
    )
    expect(pathsOf(action)).toEqual(['body.defaults.actions.0.url'])
    const unknown = expectProblem(await s.put('grade.updated', { colour: 'red' }), 400)
    expect(unknown.detail).toMatch(/colour/)
    // Nothing was registered.
    expect((await s.list()).body.eventTypes).toEqual([])
  })

  it('a publish of only type and data gets the type’s defaults and its rendered title and body', async () => {
    const s = school()
    expect((await s.put('grade.updated', grade)).status).toBe(201)
    const res = await s.publish({
      type: 'grade.updated',
      to: { users: ['kim'] },
      data: { student: 'Kim', score: 18, subject: 'Maths' },
    })
    expect(res.status, res.text).toBe(201)
    const event = await read(s, res.body.id)
    expect(event).toMatchObject({
      title: 'Kim scored 18',
      body: 'In Maths',
      priority: 'high',
      collapseKey: 'grades',
      actions: [{ action: 'read', title: 'Seen', url: null }],
    })
    const ttl = (Date.parse(event.expiresAt as string) - Date.parse(event.createdAt as string)) / 1000
    expect(ttl).toBe(3_600)
  })

  it('a field the publisher sets wins over the type’s default, null included', async () => {
    const s = school()
    expect((await s.put('grade.updated', grade)).status).toBe(201)
    const res = await s.publish({
      type: 'grade.updated',
      to: { users: ['kim'] },
      title: 'Your grade is in',
      body: null,
      priority: 'low',
      ttl: 600,
      collapseKey: null,
      actions: [],
      data: { student: 'Kim', score: 18 },
    })
    expect(res.status, res.text).toBe(201)
    const event = await read(s, res.body.id)
    expect(event).toMatchObject({
      title: 'Your grade is in',
      body: null,
      priority: 'low',
      collapseKey: null,
      actions: null,
    })
    expect((Date.parse(event.expiresAt as string) - Date.parse(event.createdAt as string)) / 1000).toBe(600)
  })

  it('without a title or a title template, the publish is a 400 on body.title (body.events.N.title in a batch)', async () => {
    const s = school()
    const single = expectProblem(await s.publish({ type: 'note.sent', to: { users: ['kim'] } }), 400)
    expect(pathsOf(single)).toEqual(['body.title'])
    expect((await s.put('note.sent', { description: 'No templates' })).status).toBe(201)
    const batch = expectProblem(
      await s.batch([
        { type: 'note.sent', to: { users: ['kim'] }, title: 'Fine' },
        { type: 'note.sent', to: { users: ['kim'] } },
      ]),
      400,
    )
    expect(pathsOf(batch)).toEqual(['body.events.1.title'])
    expect(batch.errors?.[0].message).toMatch(/no title template/)
  })

  it('checks that depend on the defaults run after them: escalate.after under the default ttl, an open action needs a url', async () => {
    const s = school()
    expect((await s.put('grade.updated', { ...grade, defaults: { ttl: 600 } })).status).toBe(201)
    const late = expectProblem(
      await s.publish({ type: 'grade.updated', to: { users: ['kim'] }, data: {}, escalate: { after: 900 } }),
      400,
    )
    expect(pathsOf(late)).toEqual(['body.escalate.after'])
    expect(
      (
        await s.put('link.shared', {
          templates: { title: 'A link' },
          defaults: { actions: [{ action: 'open', title: 'Open' }] },
        })
      ).status,
    ).toBe(201)
    const nowhere = expectProblem(await s.publish({ type: 'link.shared', to: { users: ['kim'] } }), 400)
    expect(pathsOf(nowhere)).toEqual(['body.actions.0.url'])
    // With the event's url, the default open action has somewhere to go.
    expect((await s.publish({ type: 'link.shared', to: { users: ['kim'] }, url: '/links/1' })).status).toBe(201)
  })

  it('text from data stays text: <b> is not escaped, and objects render as JSON; long text is cut, not refused', async () => {
    const s = school()
    expect(
      (await s.put('msg.sent', { templates: { title: '{{data.from}} wrote', body: '{{data.text}} {{data.meta}}' } }))
        .status,
    ).toBe(201)
    const res = await s.publish({
      type: 'msg.sent',
      to: { users: ['kim'] },
      data: { from: '<b>Ann & Bob</b>', text: 'x'.repeat(3_000), meta: { a: 1 } },
    })
    expect(res.status, res.text).toBe(201)
    const event = await read(s, res.body.id)
    expect(event.title).toBe('<b>Ann & Bob</b> wrote')
    const body = event.body as string
    expect([...body].length).toBe(2_000)
    expect(body.endsWith('…')).toBe(true)

    const short = await s.publish({
      type: 'msg.sent',
      to: { users: ['kim'] },
      data: { from: 'Ann', text: 'Hi', meta: { a: [1, 'b'] } },
    })
    expect((await read(s, short.body.id)).body).toBe('Hi {"a":[1,"b"]}')
  })

  it('templates cannot read outside data: names of the view, prototypes and functions give nothing', async () => {
    const s = school()
    // Only data's own values: a section over data, {{.}} of its items, and nothing of the prototype chain.
    expect(
      (
        await s.put('list.sent', {
          templates: { title: 'Names: {{#data.names}}{{.}} {{/data.names}}({{data.names.length}})', body: '{{data}}' },
        })
      ).status,
    ).toBe(201)
    const res = await s.publish({ type: 'list.sent', to: { users: ['kim'] }, data: { names: ['Ann', 'Bob'] } })
    expect(res.status, res.text).toBe(201)
    const event = await read(s, res.body.id)
    expect(event.title).toBe('Names: Ann Bob (2)')
    expect(event.body).toBe('{"names":["Ann","Bob"]}')
    // A name that is no field of this data renders as nothing, even one every object has through its prototype
    // chain in JavaScript: the view has none.
    expect((await s.put('odd.sent', { templates: { title: 'x{{data.hasOwnProperty}}y' } })).status).toBe(400)
    expect((await s.put('odd.sent', { templates: { title: 'x{{data.missing}}y{{data.a.b.c}}z' } })).status).toBe(201)
    const odd = await s.publish({ type: 'odd.sent', to: { users: ['kim'] }, data: 'just a string' })
    expect((await read(s, odd.body.id)).title).toBe('xyz')
  })

  it('TENANT_STRICT_TYPES: a publish of an unregistered type is a 400 on body.type naming the route', async () => {
    const s = school(strict)
    const p = expectProblem(await s.publish({ type: 'grade.updated', to: { users: ['kim'] }, title: 'Hi' }), 400)
    expect(pathsOf(p)).toEqual(['body.type'])
    expect(p.errors?.[0].message).toMatch(/GET \/v1\/event-types/)
    const batch = expectProblem(await s.batch([{ type: 'grade.updated', to: { users: ['kim'] }, title: 'Hi' }]), 400)
    expect(pathsOf(batch)).toEqual(['body.events.0.type'])
    expect((await s.put('grade.updated', grade)).status).toBe(201)
    // This instance dropped its copy of the tenant's types on the PUT: the type counts at once.
    const ok = await s.publish({ type: 'grade.updated', to: { users: ['kim'] }, data: { student: 'Kim', score: 1 } })
    expect(ok.status, ok.text).toBe(201)
    // Off (the default), an unregistered type publishes as before.
    expect((await school().publish({ type: 'grade.updated', to: { users: ['kim'] }, title: 'Hi' })).status).toBe(201)
  })

  it('inbox: false — streamed, but never in history or the unread count', async () => {
    const s = school()
    expect(
      (await s.put('typing.started', { inbox: false, templates: { title: '{{data.who}} is typing' } })).status,
    ).toBe(201)
    const stream = await SseClient.open(t.url, { token: s.user('kim') })
    try {
      expect(stream.status).toBe(200)
      await stream.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the stream to start')
      const hidden = await s.publish({ type: 'typing.started', to: { users: ['kim'] }, data: { who: 'Ann' } })
      const shown = await s.publish({ type: 'note.sent', to: { users: ['kim'] }, title: 'A note' })
      await stream.waitFor((c) => c.notificationIds.includes(shown.body.id), 10_000, 'both events on the stream')
      expect(stream.notifications.map((n) => [n.id, n.title])).toEqual([
        [hidden.body.id, 'Ann is typing'],
        [shown.body.id, 'A note'],
      ])
    } finally {
      stream.close()
    }
    const history = await t
      .http()
      .get('/v1/events')
      .set(bearer(s.user('kim')))
    expect(history.body.events.map((e: Json) => e.title)).toEqual(['A note'])
    const unread = await t
      .http()
      .get('/v1/events/unread-count')
      .set(bearer(s.user('kim')))
    expect(unread.body).toEqual({ unread: 1 })
  })

  it('liveOnly: true — a publish of the type is live-only: streamed as `event: live`, never stored', async () => {
    const s = school()
    const registered = await s.put('upload.progress', {
      liveOnly: true,
      templates: { title: 'Uploading {{data.file}}: {{data.percent}}%' },
    })
    expect(registered.status, registered.text).toBe(201)
    const stream = await SseClient.open(t.url, { token: s.user('kim') })
    try {
      expect(stream.status).toBe(200)
      await stream.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the stream to start')
      const res = await s.publish({
        type: 'upload.progress',
        to: { users: ['kim'] },
        data: { file: 'a.pdf', percent: 40 },
      })
      expect(res.status, res.text).toBe(202)
      expect(res.body).toEqual({ live: true })
      await stream.waitForEvent('live')
      const live = stream.events.find((e) => e.event === 'live')
      expect(live?.id).toBeUndefined()
      expect(JSON.parse(live?.data ?? '{}')).toMatchObject({ type: 'upload.progress', title: 'Uploading a.pdf: 40%' })
    } finally {
      stream.close()
    }
    const history = await t
      .http()
      .get('/v1/events')
      .set(bearer(s.user('kim')))
    expect(history.body.events).toEqual([])
  })

  it('push: false plans no push (the push service gets none), push: true does', async () => {
    const s = school()
    const api = client(t.url)
    const kim = s.user('kim')
    const device = await api.register(kim)
    expect((await s.put('quiet.note', { push: false, templates: { title: 'Quiet {{data.n}}' } })).status).toBe(201)
    expect((await s.put('loud.note', { templates: { title: 'Loud {{data.n}}' } })).status).toBe(201)
    const quiet = await s.publish({ type: 'quiet.note', to: { users: ['kim'] }, data: { n: 1 } })
    const loud = await s.publish({ type: 'loud.note', to: { users: ['kim'] }, data: { n: 2 } })
    expect(quiet.status).toBe(201)
    expect(loud.status).toBe(201)
    const pushed = await until(
      () => service.messagesFor(device.endpoint).find((m) => (m.json() as Json).id === loud.body.id),
      'the push of the loud note',
    )
    expect((pushed.json() as Json).title).toBe('Loud 2')
    await sleep(500)
    expect(service.messagesFor(device.endpoint).map((m) => (m.json() as Json).title)).toEqual(['Loud 2'])
    expect((await api.status(s.publisher, quiet.body.id)).push).toEqual({ sent: 0, failed: 0, pending: 0 })
    // The quiet note is still in the inbox.
    expect((await read(s, quiet.body.id)).title).toBe('Quiet 1')
  })

  it('a scheduled publish is resolved when accepted: what is stored is what publishes', async () => {
    const s = school()
    expect((await s.put('grade.updated', grade)).status).toBe(201)
    const deliverAt = new Date(Date.now() + 60_000).toISOString()
    const res = await s.publish({
      type: 'grade.updated',
      to: { users: ['kim'] },
      data: { student: 'Kim', score: 12, subject: 'Art' },
      deliverAt,
    })
    expect(res.status, res.text).toBe(202)
    const scheduled = await t.http().get(`/v1/scheduled/${res.body.scheduledId}`).set(bearer(s.publisher))
    expect(scheduled.status, scheduled.text).toBe(200)
    expect(JSON.stringify(scheduled.body)).toContain('Kim scored 12')
    // A type whose title needs data, scheduled without it: refused now, not at delivery.
    const refused = expectProblem(await s.publish({ type: 'note.sent', to: { users: ['kim'] }, deliverAt }), 400)
    expect(pathsOf(refused)).toEqual(['body.title'])
  })
})
