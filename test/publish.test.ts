import type { Response } from 'supertest'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend, refusePoisonEvents } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

// SPEC section 3 (publishing) and 7 (errors).

/**
 * The fields of an event as every client sees it (SPEC section 3), and nothing else; `revision` (issue 18: how
 * many times it was edited) is one more, and `tenant` (issue 20: one stream carries a director's several schools).
 */
const EVENT_FIELDS = [
  'id',
  'tenant',
  'type',
  'title',
  'body',
  'data',
  'priority',
  'url',
  'collapseKey',
  'actions',
  'icon',
  'image',
  'badge',
  'actor',
  'createdAt',
  'expiresAt',
  'revision',
].sort()
/** REST reads add the caller's receipt (SPEC section 5). */
const RECEIPT_FIELDS = ['readAt', 'ackedAt']

const SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/
const DECIMAL_ID = /^[1-9][0-9]*$/

type Json = Record<string, unknown>
interface Problem {
  type: string
  title: string
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

/** Asserts an RFC 9457 problem with the given status and returns its body. */
function expectProblem(res: Response, status: number): Problem {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  const body = JSON.parse(res.text) as Problem
  expect(body.status).toBe(status)
  for (const field of ['type', 'title', 'detail'] as const) {
    expect(typeof body[field], field).toBe('string')
    expect(body[field].length, field).toBeGreaterThan(0)
  }
  expect(res.text).not.toMatch(/\bat .*\.(ts|js):\d+/) // no stack trace
  return body
}

/** Field paths of a validation problem, without the `body.` prefix (a path names a field of the body). */
const errorPaths = (p: Problem) => (p.errors ?? []).map((e) => e.path.replace(/^body\./, ''))

/** Asserts a 400 whose `errors[].path` names `field` (or something inside it). */
function expectFieldError(res: Response, field: string) {
  const problem = expectProblem(res, 400)
  expect(Array.isArray(problem.errors), res.text).toBe(true)
  const paths = errorPaths(problem)
  expect(
    paths.some((p) => p === field || p.startsWith(`${field}.`)),
    `errors[].path should name "${field}", got ${JSON.stringify(paths)}`,
  ).toBe(true)
}

describeEachBackend('publish', (backend) => {
  let t: TestApp
  let n = 0
  /** A user id no other test uses. */
  const uid = (prefix: string) => `${prefix}-${++n}`

  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(() => t.close())

  const publisherToken = (sub = 'teacher-9', extra: Json = {}) => t.token({ sub, scope: PUBLISHER, ...extra })

  function publish(body: unknown, options: { token?: string; key?: string; path?: string } = {}) {
    let req = t
      .http()
      .post(options.path ?? '/v1/events')
      .set('authorization', `Bearer ${options.token ?? publisherToken()}`)
    if (options.key !== undefined) req = req.set('idempotency-key', options.key)
    return req.send(body as object)
  }

  /** POST with a raw body and content type, exactly as given. */
  function publishRaw(raw: string | Buffer, contentType: string, token = publisherToken()) {
    return t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${token}`)
      .set('content-type', contentType)
      .send(raw)
  }

  /** The recipient's history (newest first), as the recipient sees it. */
  async function history(sub: string, tenant = 't1'): Promise<Json[]> {
    const res = await t
      .http()
      .get('/v1/events?limit=500')
      .set('authorization', `Bearer ${t.token({ sub, tenant })}`)
    expect(res.status, res.text).toBe(200)
    return res.body.events
  }

  const getEvent = (id: string, sub: string, tenant = 't1') =>
    t
      .http()
      .get(`/v1/events/${id}`)
      .set('authorization', `Bearer ${t.token({ sub, tenant })}`)

  const minimal = (to: Json, extra: Json = {}) => ({ type: 'grade.updated', to, title: 'New grade', ...extra })

  it('answers 201 {id, createdAt} with increasing decimal ids', async () => {
    const to = uid('ids')
    const before = Date.now()
    const replies: Response[] = []
    for (let i = 0; i < 3; i++) replies.push(await publish(minimal({ users: [to] }, { title: `n${i}` })))
    for (const res of replies) {
      expect(res.status, res.text).toBe(201)
      expect(res.headers['content-type']).toMatch(/^application\/json/)
      expect(Object.keys(res.body).sort()).toEqual(['createdAt', 'id'])
      expect(res.body.id).toMatch(DECIMAL_ID)
      expect(res.body.createdAt).toMatch(ISO)
      const created = Date.parse(res.body.createdAt)
      expect(created).toBeGreaterThanOrEqual(before - 5_000)
      expect(created).toBeLessThanOrEqual(Date.now() + 5_000)
    }
    const ids = replies.map((r) => BigInt(r.body.id))
    expect(ids[1]).toBeGreaterThan(ids[0])
    expect(ids[2]).toBeGreaterThan(ids[1])
    // Durable before the reply: the recipient sees all three at once, newest first.
    expect((await history(to)).map((e) => e.id)).toEqual(replies.map((r) => r.body.id).reverse())
  })

  it('the stored event has exactly the SPEC fields, the publisher as actor, and no audience', async () => {
    const to = uid('fields')
    const stream = await SseClient.open(t.url, { token: t.token({ sub: to }) })
    expect(stream.status).toBe(200)
    const input = {
      type: 'grade.updated',
      to: { users: [to, 'someone-else'], topics: ['class:7A'] },
      title: 'New grade',
      body: 'Maths: 18/20',
      data: { gradeId: 42 },
      priority: 'high',
      url: '/grades/42',
      collapseKey: 'grade-42',
      actions: [
        { action: 'open', title: 'See the grade', url: '/grades/42/detail' },
        { action: 'read', title: 'Mark read' },
      ],
      icon: '/icons/maths.png',
      image: 'https://cdn.school.example/grades/42.png',
      badge: '/icons/badge.png',
      ttl: 86_400,
    }
    const res = await publish(input, { token: publisherToken('teacher-fields') })
    expect(res.status, res.text).toBe(201)
    const expected = {
      id: res.body.id,
      tenant: 't1',
      type: 'grade.updated',
      title: 'New grade',
      body: 'Maths: 18/20',
      data: { gradeId: 42 },
      priority: 'high',
      url: '/grades/42',
      collapseKey: 'grade-42',
      // Each action has all three members; `url` is null where it was left out.
      actions: [
        { action: 'open', title: 'See the grade', url: '/grades/42/detail' },
        { action: 'read', title: 'Mark read', url: null },
      ],
      icon: '/icons/maths.png',
      image: 'https://cdn.school.example/grades/42.png',
      badge: '/icons/badge.png',
      actor: 'teacher-fields',
      createdAt: res.body.createdAt,
      expiresAt: new Date(Date.parse(res.body.createdAt) + 86_400_000).toISOString(),
      revision: 0,
    }

    const got = await getEvent(res.body.id, to)
    expect(got.status, got.text).toBe(200)
    const restKeys = Object.keys(got.body).filter((k) => !RECEIPT_FIELDS.includes(k))
    expect(restKeys.sort()).toEqual(EVENT_FIELDS)
    expect(got.body).toMatchObject(expected)
    expect(got.body.readAt ?? null).toBeNull()
    expect(got.body.ackedAt ?? null).toBeNull()

    await stream.waitForNotifications(1)
    const live = stream.notifications[0]
    expect(Object.keys(live).sort()).toEqual(EVENT_FIELDS)
    expect(live).toEqual(expected)
    stream.close()
  })

  it('the actor is always the publisher, whatever the body says', async () => {
    const to = uid('actor')
    const res = await publish(minimal({ users: [to] }, { actor: 'principal' }), { token: publisherToken('real-pub') })
    // Refusing the unknown field is fine too; storing another actor is not.
    expect([201, 400], res.text).toContain(res.status)
    for (const e of await history(to)) expect(e.actor).toBe('real-pub')
  })

  it('data comes back byte-for-byte: key order, unicode, escapes', async () => {
    const to = uid('data')
    const data = {
      zeta: 1,
      alpha: { nested: [3, 2, 1, { z: true, a: false, m: null }] },
      emoji: '🎓👩🏽‍🏫✅ family: 👨‍👩‍👧‍👦',
      rtl: 'مرحبا بالعالم — שלום עולם',
      mixed: 'abc \u200f עברית 123 \u200e',
      escapes: 'quote " backslash \\ slash / newline \n tab \t cr \r',
      controls: '\u0000\u0001\u001f\u007f',
      separators: '\u2028\u2029',
      html: '</script><script>alert(1)</script>',
      combining: 'e\u0301 n\u0303',
      numbers: [0, -1, 1.5, 1e21, -0.000001, 9007199254740991],
      empty: {},
      emptyList: [],
      emptyString: '',
    }
    const res = await publish(
      minimal({ users: [to] }, { title: 'Note 🎓 — ملاحظة "quoted" \\ back', body: 'Line 1\nLine 2\t✓ שלום', data }),
    )
    expect(res.status, res.text).toBe(201)
    const got = await getEvent(res.body.id, to)
    expect(got.status, got.text).toBe(200)
    expect(got.text).toContain(`"data":${JSON.stringify(data)}`)
    const parsed = JSON.parse(got.text)
    expect(parsed.data).toEqual(data)
    expect(Object.keys(parsed.data)).toEqual(Object.keys(data))
    expect(Object.keys(parsed.data.alpha.nested[3])).toEqual(['z', 'a', 'm'])
    expect(parsed.title).toBe('Note 🎓 — ملاحظة "quoted" \\ back')
    expect(parsed.body).toBe('Line 1\nLine 2\t✓ שלום')

    // The same text in the history listing.
    const listed = await t
      .http()
      .get('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: to })}`)
    expect(listed.text).toContain(`"data":${JSON.stringify(data)}`)
  })

  it('data keeps its key order even for integer-like keys', async () => {
    // JSON objects are ordered text on the wire; a JS object would move "10" and "2" to the front.
    const to = uid('data-keys')
    const dataText = '{"z":1,"10":"ten","2":"two","a":{"b":1,"0":"zero"}}'
    const raw = `{"type":"grade.updated","to":{"users":["${to}"]},"title":"keys","data":${dataText}}`
    const res = await publishRaw(raw, 'application/json')
    expect(res.status, res.text).toBe(201)
    const got = await getEvent(res.body.id, to)
    expect(got.status, got.text).toBe(200)
    expect(got.text).toContain(`"data":${dataText}`)
  })

  it('data may be any JSON value, and is null when absent', async () => {
    const to = uid('data-any')
    for (const data of ['just a string', 42, true, null, [1, 'two', { three: 3 }]]) {
      const res = await publish(minimal({ users: [to] }, { data }))
      expect(res.status, res.text).toBe(201)
      const got = await getEvent(res.body.id, to)
      expect(got.text).toContain(`"data":${JSON.stringify(data)}`)
    }
    const none = await publish(minimal({ users: [to] }))
    const got = await getEvent(none.body.id, to)
    expect(got.body.data ?? null).toBeNull()
  })

  it('priority defaults to normal, ttl to 7 days; a given ttl sets expiresAt', async () => {
    const to = uid('defaults')
    const res = await publish(minimal({ users: [to] }))
    expect(res.status, res.text).toBe(201)
    const got = await getEvent(res.body.id, to)
    expect(got.body.priority).toBe('normal')
    expect(got.body.createdAt).toBe(res.body.createdAt)
    expect(got.body.expiresAt).toMatch(ISO)
    const ttlMs = Date.parse(got.body.expiresAt) - Date.parse(got.body.createdAt)
    expect(Math.abs(ttlMs - SEVEN_DAYS_MS)).toBeLessThan(1_000)

    const short = await publish(minimal({ users: [to] }, { ttl: 3_600, priority: 'low' }))
    expect(short.status, short.text).toBe(201)
    const s = await getEvent(short.body.id, to)
    expect(s.body.priority).toBe('low')
    expect(Math.abs(Date.parse(s.body.expiresAt) - Date.parse(s.body.createdAt) - 3_600_000)).toBeLessThan(1_000)
  })

  it('values right at the limits are accepted', async () => {
    const to = uid('limits')
    const atLimit: Array<[string, Json]> = [
      ['type of 100 chars', { type: `a.${'b'.repeat(98)}` }],
      ['title of 200 chars', { title: 't'.repeat(200) }],
      ['body of 2000 chars', { body: 'b'.repeat(2_000) }],
      ['data of exactly 16 KiB', { data: { s: 'x'.repeat(16 * 1024 - 8) } }],
      ['collapseKey of 64 chars', { collapseKey: 'k'.repeat(64) }],
      ['ttl 60', { ttl: 60 }],
      ['ttl 2592000', { ttl: 2_592_000 }],
      ['an https url', { url: 'https://school.example/grades/42?x=1#y' }],
      ['each priority', { priority: 'urgent' }],
    ]
    expect(JSON.stringify({ s: 'x'.repeat(16 * 1024 - 8) }).length).toBe(16 * 1024)
    for (const [what, extra] of atLimit) {
      const res = await publish(minimal({ users: [to] }, extra))
      expect(res.status, `${what}: ${res.text}`).toBe(201)
    }
    expect(await history(to)).toHaveLength(atLimit.length)
  })

  // Each bad body: 400, and errors[].path names the field. All of them address the same recipient,
  // whose history must stay empty.
  const badRecipient = 'bad-input-recipient'
  const good = { type: 'grade.updated', to: { users: [badRecipient] }, title: 'New grade' }
  const without = (key: string) => Object.fromEntries(Object.entries(good).filter(([k]) => k !== key))
  const badBodies: Array<[string, unknown, string]> = [
    ['type with spaces and capitals', { ...good, type: 'Grade Updated' }, 'type'],
    ['type over 100 chars', { ...good, type: `a.${'b'.repeat(99)}` }, 'type'],
    ['type missing', without('type'), 'type'],
    ['to missing', without('to'), 'to'],
    ['to empty', { ...good, to: {} }, 'to'],
    ['to with only empty lists', { ...good, to: { users: [], topics: [] } }, 'to'],
    ['unknown key in to', { ...good, to: { users: [badRecipient], groups: ['x'] } }, 'to'],
    ['users not an array', { ...good, to: { users: badRecipient } }, 'to.users'],
    ['tenant not a boolean', { ...good, to: { users: [badRecipient], tenant: 't2' } }, 'to.tenant'],
    ['title missing', without('title'), 'title'],
    ['title empty', { ...good, title: '' }, 'title'],
    ['title over 200 chars', { ...good, title: 't'.repeat(201) }, 'title'],
    ['NUL character in title', { ...good, title: 'a\u0000b' }, 'title'],
    ['body over 2000 chars', { ...good, body: 'b'.repeat(2_001) }, 'body'],
    ['data over 16 KiB', { ...good, data: { s: 'x'.repeat(16 * 1024 - 7) } }, 'data'],
    ['priority "mega"', { ...good, priority: 'mega' }, 'priority'],
    ['url javascript:', { ...good, url: 'javascript:alert(1)' }, 'url'],
    ['url http://', { ...good, url: 'http://x' }, 'url'],
    ['url data:', { ...good, url: 'data:text/html,<script>alert(1)</script>' }, 'url'],
    ['url protocol-relative', { ...good, url: '//evil.example/x' }, 'url'],
    ['collapseKey over 64 chars', { ...good, collapseKey: 'k'.repeat(65) }, 'collapseKey'],
    ['ttl 59', { ...good, ttl: 59 }, 'ttl'],
    ['ttl 2592001', { ...good, ttl: 2_592_001 }, 'ttl'],
    ['ttl 1.5', { ...good, ttl: 1.5 }, 'ttl'],
    ['ttl as a string', { ...good, ttl: '3600' }, 'ttl'],
  ]

  it.each(badBodies)('400 for %s, naming the field', async (_, body, field) => {
    expectFieldError(await publish(body), field)
  })

  it('bad input stores nothing', async () => {
    // Runs the whole table again here so this test does not depend on the order of the others.
    for (const [, body] of badBodies) expect((await publish(body)).status).toBe(400)
    expect(await history(badRecipient)).toEqual([])
  })

  it('a body over the limit (2 MB) gets 413', async () => {
    const to = uid('huge')
    const res = await publish(minimal({ users: [to] }, { body: 'x'.repeat(2 * 1024 * 1024) }))
    expectProblem(res, 413)
    expect(await history(to)).toEqual([])
  })

  const malformed: Array<[string, string]> = [
    ['truncated JSON', '{"type":"grade.updated","to":{"users":["x"]},'],
    ['a lone brace', '{'],
    ['trailing garbage', '{"type":"grade.updated"} nope'],
    ['single quotes', "{'type':'grade.updated'}"],
    ['a bare word', 'nul'],
    ['a prototype-poisoning key', '{"type":"grade.updated","__proto__":{"admin":true}}'],
  ]

  it.each(malformed)('malformed JSON (%s) gets 400, never 500', async (_, raw) => {
    expectProblem(await publishRaw(raw, 'application/json'), 400)
  })

  it.each([
    ['an empty body', ''],
    ['a JSON string', '"grade.updated"'],
    ['a JSON array', '[]'],
    ['JSON null', 'null'],
    ['a number', '42'],
  ])('%s as the publish body gets 400', async (_, raw) => {
    expectProblem(await publishRaw(raw, 'application/json'), 400)
  })

  it('a wrong content-type gets 415', async () => {
    const to = uid('ctype')
    const json = JSON.stringify(minimal({ users: [to] }))
    expectProblem(await publishRaw(json, 'text/plain'), 415)
    expectProblem(await publishRaw(json, 'application/x-www-form-urlencoded'), 415)
    expect(await history(to)).toEqual([])
  })

  it('bad input loses nothing: earlier good events are still there', async () => {
    const to = uid('keeper')
    const first = await publish(minimal({ users: [to] }, { title: 'kept 1' }))
    const second = await publish(minimal({ users: [to] }, { title: 'kept 2' }))
    expect([first.status, second.status]).toEqual([201, 201])

    const bad = { ...minimal({ users: [to] }), priority: 'mega' }
    expect((await publish(bad)).status).toBe(400)
    expect((await publish(minimal({ users: [to] }, { body: 'x'.repeat(2 * 1024 * 1024) }))).status).toBe(413)
    expect((await publishRaw('{"type":', 'application/json')).status).toBe(400)
    const plain = await publishRaw(JSON.stringify(minimal({ users: [to] })), 'text/plain')
    expect(plain.status).toBeGreaterThanOrEqual(400) // 415 per SPEC; tested on its own above
    expect(plain.status).toBeLessThan(500)
    const batch = await publish({ events: [minimal({ users: [to] }), bad] }, { path: '/v1/events/batch' })
    expect(batch.status).toBe(400)

    const after = await history(to)
    expect(after.map((e) => [e.id, e.title])).toEqual([
      [second.body.id, 'kept 2'],
      [first.body.id, 'kept 1'],
    ])
    // And the service still takes good input.
    const third = await publish(minimal({ users: [to] }, { title: 'kept 3' }))
    expect(third.status).toBe(201)
    expect(BigInt(third.body.id)).toBeGreaterThan(BigInt(second.body.id))
  })

  it('users and topics need events:publish', async () => {
    const to = uid('scope-pub')
    const none = t.token({ sub: 'no-scope' })
    const broadcastOnly = t.token({ sub: 'broadcaster', scope: 'events:broadcast' })
    const publishOnly = t.token({ sub: 'publisher-only', scope: 'events:publish' })
    for (const token of [none, broadcastOnly]) {
      expectProblem(await publish(minimal({ users: [to] }), { token }), 403)
      expectProblem(await publish(minimal({ topics: ['class:scope'] }), { token }), 403)
    }
    expect(await history(to)).toEqual([])

    expect((await publish(minimal({ users: [to] }), { token: publishOnly })).status).toBe(201)
    expect((await publish(minimal({ topics: ['class:scope'] }), { token: publishOnly })).status).toBe(201)
    const seen = await history(to)
    expect(seen).toHaveLength(1)
    expect(seen[0].actor).toBe('publisher-only')
  })

  it('roles and the whole tenant need events:broadcast', async () => {
    // A tenant of its own: a broadcast to the whole tenant would reach every other test's users.
    const tenant = uid('tenant-broadcast')
    const role = uid('role')
    const member = uid('member')
    const memberToken = t.token({ sub: member, tenant, roles: [role] })
    const publishOnly = t.token({ sub: 'publisher-only', tenant, scope: 'events:publish' })
    const broadcastOnly = t.token({ sub: 'broadcaster', tenant, scope: 'events:broadcast' })

    expectProblem(await publish(minimal({ roles: [role] }), { token: publishOnly }), 403)
    expectProblem(await publish(minimal({ tenant: true }), { token: publishOnly }), 403)
    // Mixing an allowed and a forbidden audience is still forbidden, and stores nothing.
    expectProblem(await publish(minimal({ users: [member], roles: [role] }), { token: publishOnly }), 403)
    const listMember = () => t.http().get('/v1/events?limit=500').set('authorization', `Bearer ${memberToken}`)
    expect((await listMember()).body.events).toEqual([])

    const byRole = await publish(minimal({ roles: [role] }, { title: 'to role' }), { token: broadcastOnly })
    expect(byRole.status, byRole.text).toBe(201)
    const toAll = await publish(minimal({ tenant: true }, { title: 'to all' }), { token: broadcastOnly })
    expect(toAll.status, toAll.text).toBe(201)
    const ids = (await listMember()).body.events.map((e: Json) => e.id)
    expect(ids).toContain(byRole.body.id)
    expect(ids).toContain(toAll.body.id)
  })

  it("the event always belongs to the publisher's tenant", async () => {
    const alice = uid('alice')
    const t2Publisher = publisherToken('t2-teacher', { tenant: 't2' })
    const res = await publish(minimal({ users: [alice] }, { title: 'from t2' }), { token: t2Publisher })
    expect(res.status, res.text).toBe(201)
    // A top-level "tenant" in the body does not move the event either.
    const sneaky = await publish(minimal({ users: [alice] }, { title: 'sneaky', tenant: 't1' }), {
      token: t2Publisher,
    })
    expect([201, 400]).toContain(sneaky.status)

    expect(await history(alice, 't1')).toEqual([])
    expect((await getEvent(res.body.id, alice, 't1')).status).toBe(404)
    const inT2 = await history(alice, 't2')
    expect(inT2.map((e) => e.title)).toContain('from t2')
    expect(inT2.every((e) => e.actor === 't2-teacher')).toBe(true)

    // Another tenant's broadcast to its whole tenant does not reach t1 either (a tenant of its own, so the
    // broadcast reaches no other test's users).
    const other = uid('tenant-other')
    const all = await publish(minimal({ tenant: true }, { title: 'other all' }), {
      token: publisherToken('other-teacher', { tenant: other }),
    })
    expect(all.status, all.text).toBe(201)
    expect((await getEvent(all.body.id, alice, 't1')).status).toBe(404)
    expect(await history(alice, 't1')).toEqual([])
    expect((await getEvent(all.body.id, alice, other)).status).toBe(200)
  })

  it('concurrent single publishes of several tenants and publishers: each stored once, in its own tenant, with its own actor and id', async () => {
    // Single publishes arriving together share statements (src/events/publish.ts): nothing may cross over.
    const tenants = [uid('co-a'), uid('co-b'), uid('co-c')]
    const reader = uid('co-reader')
    // Interleaved, so that publishes sharing a statement are of different tenants and publishers.
    const sent = Array.from({ length: 10 }, (_, i) =>
      tenants.flatMap((tenant) =>
        ['teacher-x', 'teacher-y'].map((sub) => ({ tenant, sub, title: `${tenant}/${sub}/${i}` })),
      ),
    ).flat()
    const replies = await Promise.all(
      sent.map((e) =>
        publish(minimal({ users: [reader] }, { title: e.title }), {
          token: publisherToken(e.sub, { tenant: e.tenant }),
        }),
      ),
    )
    for (const r of replies) expect(r.status, r.text).toBe(201)
    expect(new Set(replies.map((r) => r.body.id)).size).toBe(sent.length)
    for (const tenant of tenants) {
      const seen = await history(reader, tenant)
      const mine = sent.filter((e) => e.tenant === tenant)
      expect(seen.map((e) => e.title).sort()).toEqual(mine.map((e) => e.title).sort())
      for (const e of seen) expect(String(e.title).split('/')[1]).toBe(e.actor)
    }
    // Each reply's id is the event with that reply's title.
    for (const [i, e] of sent.entries()) {
      const res = await getEvent(replies[i].body.id, reader, e.tenant)
      expect(res.body.title).toBe(e.title)
    }
  })

  it('an event the database refuses fails alone: the single publishes sent with it are stored and answered 201', async () => {
    // Validation lets the title through; the database refuses it.
    const lift = await refusePoisonEvents(t.database)
    try {
      const to = uid('poison')
      const titles = Array.from({ length: 30 }, (_, i) => (i === 15 ? 'poison' : `fine ${i}`))
      const replies = await Promise.all(titles.map((title) => publish(minimal({ users: [to] }, { title }))))
      expect(replies.map((r) => r.status)).toEqual(titles.map((title) => (title === 'poison' ? 500 : 201)))
      const stored = (await history(to)).map((e) => e.title)
      expect(stored.sort()).toEqual(titles.filter((title) => title !== 'poison').sort())
    } finally {
      await lift()
    }
  })

  it('Idempotency-Key: the same key from the same publisher returns the first event with 200 and creates nothing; another publisher’s key is their own', async () => {
    const to = uid('idem')
    const key = `key-${to}`
    const first = await publish(minimal({ users: [to] }), { key })
    expect(first.status, first.text).toBe(201)
    const again = await publish(minimal({ users: [to] }), { key })
    expect(again.status, again.text).toBe(200)
    expect(again.body).toEqual(first.body)
    // Another publisher of the same tenant, same key: keys are the publisher's own, so this is a new event.
    const other = await publish(minimal({ users: [to] }), { key, token: publisherToken('other-teacher') })
    expect(other.status, other.text).toBe(201)
    expect(other.body.id).not.toBe(first.body.id)
    expect((await history(to)).map((e) => e.id)).toEqual([other.body.id, first.body.id])

    // Without a key, or with another key, the same body is a new event.
    const fresh = await publish(minimal({ users: [to] }), { key: `${key}-2` })
    expect(fresh.status).toBe(201)
    expect(fresh.body.id).not.toBe(first.body.id)
    expect(await history(to)).toHaveLength(3)
  })

  it('Idempotency-Key: the same key in another tenant creates a new event', async () => {
    const to = uid('idem-tenant')
    const key = `shared-key-${to}`
    const inT1 = await publish(minimal({ users: [to] }), { key })
    const inT2 = await publish(minimal({ users: [to] }), { key, token: publisherToken('teacher-t2', { tenant: 't2' }) })
    expect(inT1.status, inT1.text).toBe(201)
    expect(inT2.status, inT2.text).toBe(201)
    expect(inT2.body.id).not.toBe(inT1.body.id)
    expect((await history(to, 't1')).map((e) => e.id)).toEqual([inT1.body.id])
    expect((await history(to, 't2')).map((e) => e.id)).toEqual([inT2.body.id])
  })

  it('Idempotency-Key: a key used for a single publish is a 409 on the batch route, and vice versa', async () => {
    const to = uid('idem-batch')
    const key = `key-${to}`
    expect((await publish(minimal({ users: [to] }), { key })).status).toBe(201)
    const conflict = await publish({ events: [minimal({ users: [to] })] }, { key, path: '/v1/events/batch' })
    expectProblem(conflict, 409)
    expect(await history(to)).toHaveLength(1)

    const batchKey = `batch-${key}`
    const batch = await publish({ events: [minimal({ users: [to] })] }, { key: batchKey, path: '/v1/events/batch' })
    expect(batch.status, batch.text).toBe(201)
    expectProblem(await publish(minimal({ users: [to] }), { key: batchKey }), 409)
    expect(await history(to)).toHaveLength(2)
  })

  it('Idempotency-Key: a refused request does not use up the key', async () => {
    const to = uid('idem-refused')
    const key = `key-${to}`
    expectProblem(await publish(minimal({ users: [to] }), { key, token: t.token({ sub: 'no-scope' }) }), 403)
    expect((await publish({ ...minimal({ users: [to] }), priority: 'mega' }, { key })).status).toBe(400)
    const ok = await publish(minimal({ users: [to] }), { key })
    expect(ok.status, ok.text).toBe(201)
    expect((await history(to)).map((e) => e.id)).toEqual([ok.body.id])
  })

  it('Idempotency-Key: five concurrent requests with one key make exactly one event; the others replay it (200) or, while it is in flight on PostgreSQL, get 409', async () => {
    const to = uid('idem-race')
    const key = `key-${to}`
    const replies = await Promise.all(Array.from({ length: 5 }, () => publish(minimal({ users: [to] }), { key })))
    const texts = replies.map((r) => r.text).join('\n')
    const created = replies.filter((r) => r.status === 201)
    expect(created, texts).toHaveLength(1)
    const others = replies.filter((r) => r.status !== 201)
    // PGlite runs one transaction at a time: the others wait for the first and replay it.
    const allowed = backend === 'pglite' ? [200] : [200, 409]
    for (const r of others) expect(allowed, texts).toContain(r.status)
    for (const r of others.filter((r) => r.status === 409)) expectProblem(r, 409)
    for (const r of others.filter((r) => r.status === 200)) expect(r.body).toEqual(created[0].body)
    expect((await history(to)).map((e) => e.id)).toEqual([created[0].body.id])
    // Once it has been answered, the key replays.
    const retry = await publish(minimal({ users: [to] }), { key })
    expect(retry.status, retry.text).toBe(200)
    expect(retry.body).toEqual(created[0].body)
  })

  it('batch: 201 {ids} in order, each event as given', async () => {
    const to = uid('batch')
    const events = ['one', 'two', 'three'].map((title, i) =>
      minimal({ users: [to] }, { title, data: { i }, priority: i === 2 ? 'urgent' : 'normal' }),
    )
    const res = await publish({ events }, { path: '/v1/events/batch', token: publisherToken('batcher') })
    expect(res.status, res.text).toBe(201)
    expect(Object.keys(res.body)).toEqual(['ids'])
    const ids: string[] = res.body.ids
    expect(ids).toHaveLength(3)
    for (const id of ids) expect(id).toMatch(DECIMAL_ID)
    expect(BigInt(ids[1])).toBeGreaterThan(BigInt(ids[0]))
    expect(BigInt(ids[2])).toBeGreaterThan(BigInt(ids[1]))
    for (const [i, id] of ids.entries()) {
      const got = await getEvent(id, to)
      expect(got.status).toBe(200)
      expect(got.body).toMatchObject({ id, title: events[i].title, data: { i }, actor: 'batcher' })
    }
    expect((await history(to)).map((e) => e.id)).toEqual([...ids].reverse())
  })

  it('batch: all or nothing; an invalid event is a 400 naming events.<index>.<field>', async () => {
    const to = uid('batch-bad')
    const events = [minimal({ users: [to] }), { ...minimal({ users: [to] }), title: '' }, minimal({ users: [to] })]
    expectFieldError(await publish({ events }, { path: '/v1/events/batch' }), 'events.1.title')
    const badType = [minimal({ users: [to] }), minimal({ users: [to] }), { ...minimal({ users: [to] }), type: 'Bad' }]
    expectFieldError(await publish({ events: badType }, { path: '/v1/events/batch' }), 'events.2.type')
    expect(await history(to)).toEqual([])
  })

  it('batch: one event the caller may not send refuses the whole batch', async () => {
    const to = uid('batch-scope')
    const publishOnly = t.token({ sub: 'publisher-only', scope: 'events:publish' })
    const events = [minimal({ users: [to] }), minimal({ roles: ['parent'] })]
    expectProblem(await publish({ events }, { path: '/v1/events/batch', token: publishOnly }), 403)
    expect(await history(to)).toEqual([])
  })

  it('batch: 1000 events are accepted, 1001 and 0 are a 400', async () => {
    const to = uid('batch-size')
    const make = (count: number) =>
      Array.from({ length: count }, (_, i) => ({ type: 'x.y', to: { users: [to] }, title: `${i}` }))
    expectFieldError(await publish({ events: make(1_001) }, { path: '/v1/events/batch' }), 'events')
    expectFieldError(await publish({ events: [] }, { path: '/v1/events/batch' }), 'events')
    expectFieldError(await publish({}, { path: '/v1/events/batch' }), 'events')
    expect(await history(to)).toEqual([])

    const full = await publish({ events: make(1_000) }, { path: '/v1/events/batch' })
    expect(full.status, full.text).toBe(201)
    expect(full.body.ids).toHaveLength(1_000)
    expect(new Set(full.body.ids).size).toBe(1_000)
    const page = await history(to)
    expect(page).toHaveLength(500)
    expect(page[0]).toMatchObject({ id: full.body.ids[999], title: '999' })
  })

  it('batch: the same Idempotency-Key returns the same ids with 200', async () => {
    const to = uid('batch-idem')
    const key = `key-${to}`
    const events = [minimal({ users: [to] }, { title: 'a' }), minimal({ users: [to] }, { title: 'b' })]
    const first = await publish({ events }, { key, path: '/v1/events/batch' })
    expect(first.status, first.text).toBe(201)
    const again = await publish({ events }, { key, path: '/v1/events/batch' })
    expect(again.status, again.text).toBe(200)
    expect(again.body.ids).toEqual(first.body.ids)
    expect(await history(to)).toHaveLength(2)
  })
})
