import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import type { Response } from 'supertest'
import { afterAll, beforeAll, expect, it } from 'vitest'
import type { Caller } from '../src/auth.ts'
import { unreadCountQuery } from '../src/events/inbox.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend, describePostgres } from './helpers/backends.ts'

interface ListedEvent {
  id: string
  type: string
  title: string
  body: string | null
  data: unknown
  priority: string
  url: string | null
  collapseKey: string | null
  actor: string
  createdAt: string
  expiresAt: string
  readAt: string | null
  ackedAt: string | null
}

interface Page {
  events: ListedEvent[]
  next: string | null
}

/** An id no test publishes up to (ids are a sequence starting at 1). */
const UNKNOWN_ID = '987654321'

describeEachBackend('inbox REST (SPEC 5)', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(() => t.close())

  let scenes = 0
  /**
   * Users of a tenant of their own, so broadcasts of one test never land in another's inbox.
   * `user('alice')` is the token of user `<name>-alice`; `id('alice')` that user id.
   */
  const scene = (name: string, tenant = `inbox-${backend}-${name}-${++scenes}`) => ({
    tenant,
    id: (sub: string) => `${name}-${sub}`,
    user: (sub: string, extra: { roles?: string[]; scope?: string } = {}) =>
      t.token({ sub: `${name}-${sub}`, tenant, ...extra }),
    publisher: t.token({ sub: `${name}-publisher`, tenant, scope: PUBLISHER }),
    publisherId: `${name}-publisher`,
  })

  const as = (token: string) => ({
    get: (path: string) => t.http().get(path).set('authorization', `Bearer ${token}`),
    post: (path: string, body?: object) => {
      const req = t.http().post(path).set('authorization', `Bearer ${token}`)
      return body === undefined ? req : req.send(body)
    },
  })

  const publish = async (publisher: string, to: object, extra: object = {}) => {
    const res = await as(publisher).post('/v1/events', { type: 'inbox.test', title: 'Hello', to, ...extra })
    expect(res.status, JSON.stringify(res.body)).toBe(201)
    return res.body.id as string
  }

  const publishMany = async (publisher: string, to: object, n: number) => {
    const events = Array.from({ length: n }, (_, i) => ({ type: 'inbox.bulk', title: `#${i}`, to }))
    const res = await as(publisher).post('/v1/events/batch', { events })
    expect(res.status, JSON.stringify(res.body)).toBe(201)
    return res.body.ids as string[]
  }

  const page = async (token: string, query: string): Promise<Page> => {
    const res = await as(token).get(`/v1/events?${query}`)
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body
  }
  const ids = (p: Page) => p.events.map((e) => e.id)
  const unread = async (token: string) => {
    const res = await as(token).get('/v1/events/unread-count')
    expect(res.status).toBe(200)
    return res.body.unread as number
  }
  const getOne = async (token: string, id: string) => {
    const res = await as(token).get(`/v1/events/${id}`)
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body as ListedEvent
  }

  const expectProblem = (res: Response, status: number) => {
    expect(res.status, JSON.stringify(res.body)).toBe(status)
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(res.body).toMatchObject({ status, type: expect.any(String), title: expect.any(String) })
    expect(JSON.stringify(res.body)).not.toMatch(/\bat .*\.ts:\d+/) // no stack trace
  }

  const expireNow = (id: string) =>
    t.database.query(sql`update events set expires_at = now() - interval '1 second' where id = ${Number(id)}`)

  it('?after= lists the caller’s events ascending, each with readAt/ackedAt, and next is the last id', async () => {
    const s = scene('after')
    const alice = s.user('alice', { roles: ['parent'] })
    const e1 = await publish(s.publisher, { users: [s.id('alice')] })
    await publish(s.publisher, { users: [s.id('bob')] })
    const e3 = await publish(s.publisher, { roles: ['parent'] })
    const e4 = await publish(s.publisher, { tenant: true })
    const e5 = await publish(
      s.publisher,
      { users: [s.id('bob'), s.id('alice')] },
      {
        type: 'grade.updated',
        title: 'New grade',
        body: 'Maths: 18/20',
        data: { gradeId: 42 },
        priority: 'high',
        url: '/grades/42',
        collapseKey: 'grade-42',
        ttl: 3600,
      },
    )
    await publish(s.publisher, { roles: ['teacher'] })
    // Named three ways at once: still one event in the inbox.
    const e7 = await publish(s.publisher, { users: [s.id('alice')], roles: ['parent'], tenant: true })

    const all = await page(alice, 'after=0')
    expect(ids(all)).toEqual([e1, e3, e4, e5, e7])
    expect(all.next).toBe(e7)
    for (const e of all.events) {
      expect(e).toMatchObject({ readAt: null, ackedAt: null })
      for (const audience of ['to', 'toUsers', 'toRoles', 'toTopics', 'toTenant', 'audience'])
        expect(e).not.toHaveProperty(audience)
    }
    const grade = all.events[3]
    expect(grade).toMatchObject({
      id: e5,
      type: 'grade.updated',
      title: 'New grade',
      body: 'Maths: 18/20',
      data: { gradeId: 42 },
      priority: 'high',
      url: '/grades/42',
      collapseKey: 'grade-42',
      actor: s.publisherId,
    })
    expect(Date.parse(grade.expiresAt) - Date.parse(grade.createdAt)).toBe(3_600_000)

    // Paging with next.
    const p1 = await page(alice, 'after=0&limit=2')
    expect([ids(p1), p1.next]).toEqual([[e1, e3], e3])
    const p2 = await page(alice, `after=${p1.next}&limit=2`)
    expect([ids(p2), p2.next]).toEqual([[e4, e5], e5])
    const p3 = await page(alice, `after=${p2.next}&limit=2`)
    expect([ids(p3), p3.next]).toEqual([[e7], e7])
    const p4 = await page(alice, `after=${p3.next}&limit=2`)
    expect([ids(p4), p4.next]).toEqual([[], e7])

    // Receipts show up on the listed events.
    expect((await as(alice).post(`/v1/events/${e1}/read`)).status).toBe(204)
    expect((await as(alice).post(`/v1/events/${e4}/ack`)).status).toBe(204)
    const marked = await page(alice, 'after=0')
    const byId = new Map(marked.events.map((e) => [e.id, e]))
    expect(byId.get(e1)?.readAt).toEqual(expect.any(String))
    expect(byId.get(e1)?.ackedAt).toEqual(expect.any(String))
    expect(byId.get(e4)).toMatchObject({ readAt: null, ackedAt: expect.any(String) })
    expect(byId.get(e3)).toMatchObject({ readAt: null, ackedAt: null })
    expect(Number.isNaN(Date.parse(byId.get(e1)?.readAt ?? ''))).toBe(false)
  })

  it('?before= is newest first and next pages through the whole history', async () => {
    const s = scene('before')
    const alice = s.user('alice')
    const mine: string[] = []
    for (let i = 0; i < 7; i++) {
      mine.push(await publish(s.publisher, { users: [s.id('alice')] }, { title: `#${i}` }))
      if (i % 3 === 0) await publish(s.publisher, { users: [s.id('bob')] })
    }
    const newestFirst = [...mine].reverse()

    const first = await page(alice, 'limit=3')
    expect(ids(first)).toEqual(newestFirst.slice(0, 3))
    const seen = [...ids(first)]
    let next = first.next
    let pages = 1
    while (next !== null && pages < 10) {
      const p = await page(alice, `before=${next}&limit=3`)
      seen.push(...ids(p))
      next = p.next
      pages++
    }
    expect(seen).toEqual(newestFirst)
    expect(pages).toBe(3)

    // before is exclusive, and works from any id.
    expect(ids(await page(alice, `before=${mine[4]}&limit=50`))).toEqual(newestFirst.slice(3))
    expect(ids(await page(alice, `before=${Number(mine[6]) + 1}&limit=2`))).toEqual(newestFirst.slice(0, 2))
    expect(ids(await page(alice, `before=${mine[0]}`))).toEqual([])
  })

  it('&unread=true leaves out what the caller read (acked alone is still unread)', async () => {
    const s = scene('unread')
    const alice = s.user('alice')
    const [e1, e2, e3, e4, e5] = await publishMany(s.publisher, { users: [s.id('alice')] }, 5)
    expect((await as(alice).post(`/v1/events/${e2}/read`)).status).toBe(204)
    expect((await as(alice).post('/v1/events/read', { ids: [e4] })).status).toBe(204)
    expect((await as(alice).post(`/v1/events/${e5}/ack`)).status).toBe(204)

    expect(ids(await page(alice, 'unread=true'))).toEqual([e5, e3, e1])
    const p1 = await page(alice, 'unread=true&limit=2')
    expect(ids(p1)).toEqual([e5, e3])
    expect(ids(await page(alice, `unread=true&before=${p1.next}&limit=2`))).toEqual([e1])
    expect(ids(await page(alice, 'after=0&unread=true'))).toEqual([e1, e3, e5])
    // Without the filter, everything is still there.
    expect(ids(await page(alice, 'limit=50'))).toEqual([e5, e4, e3, e2, e1])
    expect(ids(await page(alice, 'unread=false'))).toEqual([e5, e4, e3, e2, e1])
  })

  it('limit defaults to 50 and goes up to 500; anything else is a 400', async () => {
    const s = scene('limit')
    const alice = s.user('alice')
    const all = await publishMany(s.publisher, { users: [s.id('alice')] }, 501)

    const byDefault = await page(alice, 'after=0')
    expect(ids(byDefault)).toEqual(all.slice(0, 50))
    expect(byDefault.next).toBe(all[49])
    expect(ids(await page(alice, 'after=0&limit=500'))).toEqual(all.slice(0, 500))
    expect(ids(await page(alice, 'limit=500'))).toEqual([...all].reverse().slice(0, 500))
    expect((await page(alice, '')).events).toHaveLength(50)

    for (const bad of [
      'limit=501',
      'limit=0',
      'limit=abc',
      'limit=-1',
      'limit=1.5',
      'after=0&limit=501',
      `after=0&before=${all[10]}`,
      'after=abc',
      'after=-1',
      'before=1e9',
    ]) {
      const res = await as(alice).get(`/v1/events?${bad}`)
      expectProblem(res, 400)
    }
  })

  it('GET /v1/events/<id>: the caller’s event, else 404 (another user, another tenant, unknown), 400 for a bad id', async () => {
    const s = scene('one')
    const other = scene('one-elsewhere')
    const alice = s.user('alice')
    const mine = await publish(s.publisher, { users: [s.id('alice')] }, { title: 'for alice', data: { n: 1 } })
    const bobs = await publish(s.publisher, { users: [s.id('bob')] })
    // Another tenant, addressed to a user with the very same id.
    const foreign = await publish(other.publisher, { users: [s.id('alice')], tenant: true })

    const got = await getOne(alice, mine)
    expect(got).toMatchObject({ id: mine, title: 'for alice', data: { n: 1 }, readAt: null, ackedAt: null })
    expect(got).not.toHaveProperty('to')

    const notFound = [
      await as(s.user('bob')).get(`/v1/events/${mine}`),
      await as(alice).get(`/v1/events/${bobs}`),
      await as(alice).get(`/v1/events/${foreign}`),
      await as(alice).get(`/v1/events/${UNKNOWN_ID}`),
    ]
    for (const res of notFound) expectProblem(res, 404)
    // Existence does not leak: an invisible event answers like an unknown one.
    const shape = (res: Response) => ({ status: res.status, type: res.body.type, title: res.body.title })
    expect(notFound.map(shape)).toEqual(notFound.map(() => shape(notFound[3])))

    for (const bad of ['-1', '1e9', '../x', 'abc', '1.0', '0x10', '99999999999999999999']) {
      const res = await as(alice).get(`/v1/events/${encodeURIComponent(bad)}`)
      expectProblem(res, 400)
    }
  })

  it('GET /v1/events/unread-count counts what is unread: acking does not count as reading', async () => {
    const s = scene('count')
    const alice = s.user('alice', { roles: ['parent'] })
    expect(await unread(alice)).toBe(0)
    const [a1, a2] = await publishMany(s.publisher, { users: [s.id('alice')] }, 3)
    const r1 = await publish(s.publisher, { roles: ['parent'] })
    await publish(s.publisher, { users: [s.id('bob')] })
    await publish(s.publisher, { roles: ['teacher'] })
    expect(await unread(alice)).toBe(4)
    expect((await as(alice).post(`/v1/events/${a1}/ack`)).status).toBe(204)
    expect(await unread(alice)).toBe(4)
    expect((await as(alice).post(`/v1/events/${a2}/read`)).status).toBe(204)
    expect(await unread(alice)).toBe(3)
    expect((await as(alice).post(`/v1/events/${r1}/read`)).status).toBe(204)
    expect(await unread(alice)).toBe(2)
    // bob's event is still unread for bob.
    expect(await unread(s.user('bob'))).toBe(1)
  })

  it('ack and read are 204 and idempotent; the first time stays; read implies ack', async () => {
    const s = scene('receipts')
    const alice = s.user('alice')
    const [e1, e2] = await publishMany(s.publisher, { users: [s.id('alice')] }, 2)

    const ack = await as(alice).post(`/v1/events/${e1}/ack`)
    expect(ack.status).toBe(204)
    expect(ack.text).toBe('')
    const acked = await getOne(alice, e1)
    expect(acked.ackedAt).toEqual(expect.any(String))
    expect(acked.readAt).toBeNull()
    await sleep(20)
    expect((await as(alice).post(`/v1/events/${e1}/ack`)).status).toBe(204)
    expect((await getOne(alice, e1)).ackedAt).toBe(acked.ackedAt)

    await sleep(20)
    expect((await as(alice).post(`/v1/events/${e1}/read`)).status).toBe(204)
    const read = await getOne(alice, e1)
    expect(read.readAt).toEqual(expect.any(String))
    expect(read.ackedAt).toBe(acked.ackedAt)
    expect(Date.parse(read.readAt ?? '')).toBeGreaterThanOrEqual(Date.parse(acked.ackedAt ?? ''))
    await sleep(20)
    expect((await as(alice).post(`/v1/events/${e1}/read`)).status).toBe(204)
    expect((await as(alice).post(`/v1/events/${e1}/ack`)).status).toBe(204)
    expect(await getOne(alice, e1)).toMatchObject({ readAt: read.readAt, ackedAt: acked.ackedAt })

    // Read without an ack first: acked as well.
    expect((await as(alice).post(`/v1/events/${e2}/read`)).status).toBe(204)
    const direct = await getOne(alice, e2)
    expect(direct.readAt).toEqual(expect.any(String))
    expect(direct.ackedAt).toEqual(expect.any(String))
    const status = await as(s.publisher).get(`/v1/events/${e2}/status`)
    expect(status.body).toMatchObject({ acked: 1, read: 1 })
  })

  it('acking or reading an event the caller cannot see is a 404 and changes nothing', async () => {
    const s = scene('invisible')
    const other = scene('invisible-elsewhere')
    const alice = s.user('alice')
    const event = await publish(s.publisher, { users: [s.id('alice')] })
    const attempts = [
      { who: s.user('bob'), id: event }, // same tenant, not in the audience
      { who: other.user('alice'), id: event }, // another tenant, same user id ("invisible-alice" vs "invisible-elsewhere-alice")
      { who: t.token({ sub: s.id('alice'), tenant: other.tenant }), id: event }, // another tenant, the very same user id
      { who: t.token({ sub: s.id('alice'), tenant: other.tenant, scope: 'admin' }), id: event }, // even as its admin
      { who: alice, id: UNKNOWN_ID }, // unknown id
    ]
    for (const { who, id } of attempts) {
      expectProblem(await as(who).post(`/v1/events/${id}/ack`), 404)
      expectProblem(await as(who).post(`/v1/events/${id}/read`), 404)
    }
    expect(await getOne(alice, event)).toMatchObject({ readAt: null, ackedAt: null })
    expect(await unread(alice)).toBe(1)
    const status = await as(s.publisher).get(`/v1/events/${event}/status`)
    expect(status.status).toBe(200)
    expect(status.body).toMatchObject({ acked: 0, read: 0 })
  })

  it('POST /v1/events/read {ids} marks many read; ids the caller cannot see are ignored and stay unread for their recipient', async () => {
    const s = scene('bulk-ids')
    const other = scene('bulk-ids-elsewhere')
    const alice = s.user('alice')
    const bob = s.user('bob')
    const [a1, a2, a3, a4] = await publishMany(s.publisher, { users: [s.id('alice')] }, 4)
    const b1 = await publish(s.publisher, { users: [s.id('bob')] })
    // Same user id in another tenant.
    const foreignAlice = t.token({ sub: s.id('alice'), tenant: other.tenant })
    const f1 = await publish(other.publisher, { users: [s.id('alice')] })
    expect(await unread(alice)).toBe(4)

    const res = await as(alice).post('/v1/events/read', { ids: [a1, a3, b1, f1, UNKNOWN_ID] })
    expect(res.status).toBe(204)
    expect(await unread(alice)).toBe(2)
    expect(ids(await page(alice, 'unread=true'))).toEqual([a4, a2])
    expect((await getOne(alice, a1)).readAt).toEqual(expect.any(String))
    expect((await getOne(alice, a3)).ackedAt).toEqual(expect.any(String))
    // Not alice's: untouched.
    expect(await unread(bob)).toBe(1)
    expect(await getOne(bob, b1)).toMatchObject({ readAt: null, ackedAt: null })
    expect(await unread(foreignAlice)).toBe(1)
    expect(await getOne(foreignAlice, f1)).toMatchObject({ readAt: null, ackedAt: null })
    // Again: idempotent.
    expect((await as(alice).post('/v1/events/read', { ids: [a1, a3] })).status).toBe(204)
    expect(await unread(alice)).toBe(2)
  })

  it('POST /v1/events/read {upTo} marks everything of the caller up to that id read, nobody else’s', async () => {
    const s = scene('bulk-upto')
    const other = scene('bulk-upto-elsewhere')
    const alice = s.user('alice', { roles: ['parent'] })
    const bob = s.user('bob')
    const foreignAlice = t.token({ sub: s.id('alice'), tenant: other.tenant, roles: ['parent'] })
    const a1 = await publish(s.publisher, { users: [s.id('alice')] })
    const b1 = await publish(s.publisher, { users: [s.id('bob')] })
    const f1 = await publish(other.publisher, { users: [s.id('alice')], roles: ['parent'] })
    const r1 = await publish(s.publisher, { roles: ['parent'] })
    const a2 = await publish(s.publisher, { users: [s.id('alice')] })
    const a3 = await publish(s.publisher, { users: [s.id('alice')] })
    expect(await unread(alice)).toBe(4)

    expect((await as(alice).post('/v1/events/read', { upTo: a2 })).status).toBe(204)
    expect(await unread(alice)).toBe(1)
    expect(ids(await page(alice, 'unread=true'))).toEqual([a3])
    for (const id of [a1, r1, a2]) expect((await getOne(alice, id)).readAt).toEqual(expect.any(String))
    expect(await getOne(alice, a3)).toMatchObject({ readAt: null, ackedAt: null })
    expect(await getOne(bob, b1)).toMatchObject({ readAt: null })
    expect(await unread(bob)).toBe(1)
    expect(await getOne(foreignAlice, f1)).toMatchObject({ readAt: null })
    expect(await unread(foreignAlice)).toBe(1)
  })

  it('POST /v1/events/read with both, neither or bad ids is a 400 and marks nothing', async () => {
    const s = scene('bulk-bad')
    const alice = s.user('alice')
    const [a1, a2] = await publishMany(s.publisher, { users: [s.id('alice')] }, 2)
    const bodies: Array<object | undefined> = [
      { ids: [a1], upTo: a2 },
      {},
      { ids: [] },
      { ids: ['abc'] },
      { ids: [a1, '-1'] },
      { ids: [Number(a1)] },
      { ids: a1 },
      { ids: [a1, '1e9'] },
      { upTo: 'abc' },
      { upTo: Number(a2) },
      { upTo: null },
      undefined,
    ]
    for (const body of bodies) {
      const res = await as(alice).post('/v1/events/read', body)
      expect(res.status, `body ${JSON.stringify(body)}`).toBe(400)
      expectProblem(res, 400)
    }
    const malformed = await as(alice).post('/v1/events/read').set('content-type', 'application/json').send('{"ids":[')
    expectProblem(malformed, 400)
    expect(await unread(alice)).toBe(2)
  })

  it('GET /v1/events/<id>/status: the publisher and its tenant’s admins see acked/read/push counts; nobody else', async () => {
    const s = scene('status')
    const other = scene('status-elsewhere')
    const [r1, r2, r3] = [s.user('r1'), s.user('r2'), s.user('r3')]
    const event = await publish(s.publisher, { users: [s.id('r1'), s.id('r2'), s.id('r3')] })

    const fresh = await as(s.publisher).get(`/v1/events/${event}/status`)
    expect(fresh.status).toBe(200)
    const none = { acked: 0, read: 0, push: { sent: 0, failed: 0, pending: 0 } }
    expect(fresh.body).toEqual({
      ...none,
      recipients: { recipients: 3, delivered: 0, pushed: 0, acked: 0, read: 0, unread: 3 },
    })

    expect((await as(r1).post(`/v1/events/${event}/ack`)).status).toBe(204)
    expect((await as(r2).post(`/v1/events/${event}/ack`)).status).toBe(204)
    expect((await as(r2).post(`/v1/events/${event}/read`)).status).toBe(204)
    // Not a recipient: refused, and not counted.
    expect((await as(s.user('outsider')).post(`/v1/events/${event}/ack`)).status).toBe(404)
    // Twice does not count twice.
    expect((await as(r1).post(`/v1/events/${event}/ack`)).status).toBe(204)

    const expected = {
      acked: 2,
      read: 1,
      push: { sent: 0, failed: 0, pending: 0 },
      recipients: { recipients: 3, delivered: 0, pushed: 0, acked: 2, read: 1, unread: 2 },
    }
    const byPublisher = await as(s.publisher).get(`/v1/events/${event}/status`)
    expect(byPublisher.status).toBe(200)
    expect(byPublisher.body).toEqual(expected)
    const byAdmin = await as(s.user('admin', { scope: 'admin' })).get(`/v1/events/${event}/status`)
    expect(byAdmin.status).toBe(200)
    expect(byAdmin.body).toEqual(expected)

    for (const who of [
      r1, // a recipient
      s.user('other-publisher', { scope: PUBLISHER }), // publishes too, but not this event
      other.user('admin', { scope: 'admin' }), // admin, of another tenant
      t.token({ sub: s.publisherId, tenant: other.tenant, scope: `${PUBLISHER} admin` }), // the publisher's id elsewhere
    ]) {
      expectProblem(await as(who).get(`/v1/events/${event}/status`), 404)
    }
    expectProblem(await as(s.user('admin', { scope: 'admin' })).get(`/v1/events/${UNKNOWN_ID}/status`), 404)
    expectProblem(await as(s.publisher).get('/v1/events/abc/status'), 400)

    expect((await as(r3).post(`/v1/events/${event}/read`)).status).toBe(204)
    expect((await as(s.publisher).get(`/v1/events/${event}/status`)).body).toMatchObject({ acked: 3, read: 2 })
  })

  it('a user of another tenant never lists, counts, reads or acks this tenant’s events', async () => {
    const home = scene('home')
    const away = scene('away')
    const sharedId = home.id('shared')
    const insider = t.token({ sub: sharedId, tenant: home.tenant, roles: ['parent'] })
    const outsider = t.token({ sub: sharedId, tenant: away.tenant, roles: ['parent'], scope: 'admin' })
    const events = [
      await publish(home.publisher, { tenant: true }),
      await publish(home.publisher, { users: [sharedId] }),
      await publish(home.publisher, { roles: ['parent'] }),
    ]
    expect(ids(await page(insider, 'after=0'))).toEqual(events)
    expect(await unread(insider)).toBe(3)

    expect(ids(await page(outsider, 'after=0'))).toEqual([])
    expect(ids(await page(outsider, 'limit=500'))).toEqual([])
    expect(ids(await page(outsider, 'unread=true'))).toEqual([])
    expect(await unread(outsider)).toBe(0)
    for (const id of events) {
      expectProblem(await as(outsider).get(`/v1/events/${id}`), 404)
      expectProblem(await as(outsider).post(`/v1/events/${id}/ack`), 404)
      expectProblem(await as(outsider).post(`/v1/events/${id}/read`), 404)
      expectProblem(await as(outsider).get(`/v1/events/${id}/status`), 404)
    }
    expect((await as(outsider).post('/v1/events/read', { ids: events })).status).toBe(204)
    expect((await as(outsider).post('/v1/events/read', { upTo: events[2] })).status).toBe(204)

    expect(await unread(insider)).toBe(3)
    for (const e of (await page(insider, 'after=0')).events) expect(e).toMatchObject({ readAt: null, ackedAt: null })
    expect((await as(home.publisher).get(`/v1/events/${events[1]}/status`)).body).toMatchObject({ acked: 0, read: 0 })
  })

  it('an expired event is not listed, not counted, and 404 on get, ack and read', async () => {
    const s = scene('expired')
    const alice = s.user('alice')
    const [gone, kept] = await publishMany(s.publisher, { users: [s.id('alice')] }, 2)
    const read = await publish(s.publisher, { users: [s.id('alice')] })
    expect((await as(alice).post(`/v1/events/${read}/read`)).status).toBe(204)
    expect(await unread(alice)).toBe(2)

    await expireNow(gone)
    await expireNow(read)
    expect(ids(await page(alice, 'after=0'))).toEqual([kept])
    expect(ids(await page(alice, 'limit=50'))).toEqual([kept])
    expect(ids(await page(alice, 'unread=true'))).toEqual([kept])
    expect(await unread(alice)).toBe(1)
    for (const id of [gone, read]) {
      expectProblem(await as(alice).get(`/v1/events/${id}`), 404)
      expectProblem(await as(alice).post(`/v1/events/${id}/ack`), 404)
      expectProblem(await as(alice).post(`/v1/events/${id}/read`), 404)
    }
    // A bulk read skips it: the one left is what becomes read.
    expect((await as(alice).post('/v1/events/read', { ids: [gone, kept] })).status).toBe(204)
    expect(await unread(alice)).toBe(0)
    expect((await getOne(alice, kept)).readAt).toEqual(expect.any(String))
  })

  it('polling fallback: an event is returned by ?after= right after its publish answered', async () => {
    const s = scene('poll')
    const alice = s.user('alice', { roles: ['parent'] })
    let cursor = '0'
    for (let i = 0; i < 15; i++) {
      const to = i % 3 === 0 ? { users: [s.id('alice')] } : i % 3 === 1 ? { roles: ['parent'] } : { tenant: true }
      const id = await publish(s.publisher, to, { title: `poll ${i}` })
      const p = await page(alice, `after=${cursor}`)
      expect([ids(p), p.next]).toEqual([[id], id])
      cursor = p.next as string
    }
    // Several at once, from concurrent requests: all there, in id order.
    const burst = await Promise.all(
      Array.from({ length: 8 }, (_, i) => publish(s.publisher, { users: [s.id('alice')] }, { title: `burst ${i}` })),
    )
    const p = await page(alice, `after=${cursor}`)
    expect(ids(p)).toEqual([...burst].sort((a, b) => Number(a) - Number(b)))
    expect(p.next).toBe(ids(p).at(-1))
  })
})

/** A node of PostgreSQL's `explain (format json)` plan. */
interface PlanNode {
  'Node Type': string
  'Relation Name'?: string
  'Index Cond'?: string
  Plans?: PlanNode[]
}

const planNodes = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(planNodes)]

// A PostgreSQL that never ran ANALYZE (autovacuum off, as on the machines here) guesses row counts. The unread
// count once came out as a nested loop over every (event, receipt) pair: 11-38 s for a user with 30,000 receipts.
describePostgres('unread count and unread list on a database that was never analyzed', () => {
  const EVENTS = 30_000
  const UNREAD = 10
  /** Generous: the safe plan takes about a tenth of a second here, the nested loop 15 s or more. */
  const FAST_ENOUGH_MS = 2_000
  const tenant = 'unanalyzed'
  const userId = 'busy-reader'
  let t: TestApp
  beforeAll(async () => {
    t = await startApp('postgres')
    // Whatever the server's settings, nobody analyzes these tables during the test: their block 0, where the
    // rows go (the tables are partitioned by event id; autovacuum works on each block).
    await t.database.query(sql`alter table events_b0 set (autovacuum_enabled = false)`)
    await t.database.query(sql`alter table receipts_b0 set (autovacuum_enabled = false)`)
    // Straight into the tables, as years of use would leave them: every event to the whole tenant, all but
    // the newest UNREAD read by the user.
    await t.database.query(sql`
      insert into events (tenant, type, title, priority, actor, to_tenant, expires_at)
      select ${tenant}, 'bulk.event', 'Event ' || g, 'normal', 'office', true, now() + interval '7 days'
      from generate_series(1, ${EVENTS}) g`)
    await t.database.query(sql`
      insert into receipts (tenant, user_id, event_id, acked_at, read_at)
      select tenant, ${userId}, id, now(), now() from events where tenant = ${tenant} order by id limit ${EVENTS - UNREAD}`)
    // The live tail reads the new events too: let it finish before anything is timed.
    await t.app.logTail.sync()
  }, 120_000)
  afterAll(() => t.close())

  const user = () => t.token({ sub: userId, tenant })

  it('the tables have no statistics', async () => {
    const rows = await t.database.query<{ relname: string; analyzed: boolean }>(sql`
      select relname, (last_analyze is not null or last_autoanalyze is not null) as analyzed
      from pg_stat_user_tables where relname in ('events', 'receipts') order by relname`)
    expect(rows).toEqual([
      { relname: 'events', analyzed: false },
      { relname: 'receipts', analyzed: false },
    ])
  })

  it('GET /v1/events/unread-count answers at once, and right', async () => {
    const started = Date.now()
    const res = await t.http().get('/v1/events/unread-count').set('authorization', `Bearer ${user()}`)
    const elapsed = Date.now() - started
    expect(res.status, res.text).toBe(200)
    expect(res.body).toEqual({ unread: UNREAD })
    expect(elapsed).toBeLessThan(FAST_ENOUGH_MS)
  })

  it('GET /v1/events?unread=true answers at once, and right', async () => {
    const started = Date.now()
    const res = await t.http().get('/v1/events?unread=true&limit=500').set('authorization', `Bearer ${user()}`)
    const elapsed = Date.now() - started
    expect(res.status, res.text).toBe(200)
    expect(res.body.events).toHaveLength(UNREAD)
    expect(elapsed).toBeLessThan(FAST_ENOUGH_MS)
  })

  it('the count’s plan reads receipts only by primary key, one lookup per event, and joins nothing', async () => {
    const caller: Caller = { userId, tenant, roles: ['student'], topics: ['class:*'], scopes: new Set() }
    const { sql: text, params } = unreadCountQuery(t.database, caller).toSQL()
    const pg = t.database.pg
    if (!pg) throw new Error('no PostgreSQL client')
    const [row] = await pg.unsafe(`explain (format json) ${text}`, params as never[])
    const nodes = planNodes((row['QUERY PLAN'] as Array<{ Plan: PlanNode }>)[0].Plan)
    expect(nodes.map((n) => n['Node Type']).filter((type) => /Join|Nested Loop|Materialize/.test(type))).toEqual([])
    // receipts is partitioned by event id: its reads are of its blocks (receipts_b0, ...).
    const receiptReads = nodes.filter((n) => /^receipts_b\d+$/.test(n['Relation Name'] ?? ''))
    expect(receiptReads.length).toBeGreaterThan(0)
    for (const read of receiptReads) {
      expect(read['Node Type']).toMatch(/^Index (Only )?Scan$/)
      expect(read['Index Cond']).toMatch(/user_id = .*event_id = events\.id/)
    }
  })
})
