import type supertest from 'supertest'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'

// The user directory (issue 19): a tenant's backend tells the service who exists, with their roles, topics, name,
// locale and time zone (`admin` scope, server to server). One user at a time, in batches of up to 5,000 (all or
// nothing), and a listing by role and topic with a cursor. Always the caller's tenant.

type Json = Record<string, unknown>
interface Problem {
  type: string
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

/** Asserts an RFC 9457 problem with this status and returns it. */
function expectProblem(res: supertest.Response, status: number): Problem {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  return JSON.parse(res.text) as Problem
}

let tenants = 0

/** One tenant's backend, over one running service. */
function school(t: TestApp, name: string) {
  const tenant = `${name}-${process.pid}-${++tenants}`
  const admin = t.token({ sub: 'backend', tenant, scope: 'admin' })
  const auth = (token: string) => ({ authorization: `Bearer ${token}` })
  const path = (id: string) => `/v1/directory/users/${encodeURIComponent(id)}`
  return {
    tenant,
    admin,
    put: (id: string, body: unknown, token = admin) =>
      t
        .http()
        .put(path(id))
        .set(auth(token))
        .send(body as object),
    get: (id: string, token = admin) => t.http().get(path(id)).set(auth(token)),
    remove: (id: string, token = admin) => t.http().delete(path(id)).set(auth(token)),
    batch: (operations: unknown, token = admin) =>
      t.http().post('/v1/directory/users/batch').set(auth(token)).send({ operations }),
    list: (query: Record<string, string | number> = {}, token = admin) =>
      t.http().get('/v1/directory/users').query(query).set(auth(token)),
    /** Every user id of the listing with `query`, following `next` page by page. */
    async allIds(query: Record<string, string | number> = {}): Promise<string[]> {
      const ids: string[] = []
      let cursor: string | undefined
      for (let page = 0; page < 1_000; page++) {
        const res = await this.list({ ...query, ...(cursor ? { cursor } : {}) })
        expect(res.status, res.text).toBe(200)
        ids.push(...res.body.users.map((u: { id: string }) => u.id))
        if (res.body.next === null) return ids
        cursor = res.body.next
      }
      throw new Error('the listing never ended')
    },
  }
}

const kim = {
  roles: ['student'],
  topics: ['class:7A', 'club:chess'],
  displayName: 'Kim Muller',
  locale: 'fr-CH',
  timeZone: 'Europe/Zurich',
}

/** `n` users `u00000`, `u00001`... (ids that sort alike under every collation), as batch upserts. */
const upserts = (n: number, extra: Json = {}) =>
  Array.from({ length: n }, (_, i) => ({
    op: 'upsert',
    id: `u${String(i).padStart(5, '0')}`,
    roles: ['student'],
    topics: [`class:${i % 10}`],
    ...extra,
  }))

describeEachBackend('the user directory', (backend) => {
  let t: TestApp
  const newSchool = () => school(t, `dir-${backend}`)

  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(() => t?.close())

  it('PUT creates a user (201), then replaces them whole (200); GET shows what is stored', async () => {
    const s = newSchool()
    const created = await s.put('kim', kim)
    expect(created.status, created.text).toBe(201)
    expect(created.body).toEqual({ id: 'kim', ...kim, updatedAt: expect.stringMatching(/Z$/) })
    expect((await s.get('kim')).body).toEqual(created.body)

    // Replaced whole: what is left out is cleared; repeated roles and topics are kept once; the locale as Intl writes it.
    const replaced = await s.put('kim', { roles: ['student', 'prefect', 'student'], topics: [], locale: 'de-ch' })
    expect(replaced.status, replaced.text).toBe(200)
    expect(replaced.body).toEqual({
      id: 'kim',
      roles: ['student', 'prefect'],
      topics: [],
      displayName: null,
      locale: 'de-CH',
      timeZone: null,
      updatedAt: expect.any(String),
    })
    expect(Date.parse(replaced.body.updatedAt)).toBeGreaterThanOrEqual(Date.parse(created.body.updatedAt))
    expect((await s.get('kim')).body).toEqual(replaced.body)
    // null says "none" as well as leaving the field out.
    const nulls = await s.put('kim', { roles: [], topics: ['club:*'], displayName: null, locale: null, timeZone: null })
    expect(nulls.status).toBe(200)
    expect(nulls.body).toMatchObject({ roles: [], topics: ['club:*'], displayName: null, locale: null, timeZone: null })
  })

  it('a user id may hold any character a token’s sub may: spaces, slashes, non-ASCII', async () => {
    const s = newSchool()
    for (const id of ['kim müller', 'a/b', 'ünïcødé ✓', '%41']) {
      expect((await s.put(id, { roles: [], topics: [] })).status, id).toBe(201)
      expect((await s.get(id)).body.id, id).toBe(id)
    }
    expect((await s.get('A')).status).toBe(404) // '%41' was stored as it was given, not decoded twice
    expect(await s.allIds()).toHaveLength(4)
  })

  it('GET of a user who is not there is a 404; DELETE removes (204), and again is a 404', async () => {
    const s = newSchool()
    expect(expectProblem(await s.get('nobody'), 404).detail).toBe('No user "nobody" in the directory.')
    await s.put('kim', kim)
    const removed = await s.remove('kim')
    expect(removed.status).toBe(204)
    expect(removed.text).toBe('')
    expect(expectProblem(await s.get('kim'), 404).type).toBe('urn:herald:problem:not-found')
    expect(expectProblem(await s.remove('kim'), 404).detail).toBe('No user "kim" in the directory.')
  })

  it('lists the tenant’s users in id order, a page at a time, with an opaque next cursor', async () => {
    const s = newSchool()
    const batch = await s.batch(upserts(25))
    expect(batch.status, batch.text).toBe(200)
    const first = await s.list({ limit: 10 })
    expect(first.status, first.text).toBe(200)
    expect(first.body.users.map((u: { id: string }) => u.id)).toEqual(
      Array.from({ length: 10 }, (_, i) => `u${String(i).padStart(5, '0')}`),
    )
    expect(first.body.users[0]).toEqual({
      id: 'u00000',
      roles: ['student'],
      topics: ['class:0'],
      displayName: null,
      locale: null,
      timeZone: null,
      updatedAt: expect.any(String),
    })
    expect(first.body.next).toEqual(expect.any(String))
    expect(first.body.next).not.toContain('u0000') // opaque: not the id itself
    const second = await s.list({ limit: 10, cursor: first.body.next })
    expect(second.body.users.map((u: { id: string }) => u.id)[0]).toBe('u00010')
    const third = await s.list({ limit: 10, cursor: second.body.next })
    expect(third.body.users).toHaveLength(5)
    expect(third.body.next).toBeNull()
    // Exactly a page's worth left: the last page says so, no empty page follows.
    expect((await s.list({ limit: 25 })).body.next).toBeNull()
    // The default page is 100 users.
    expect((await s.list()).body.users).toHaveLength(25)
  })

  it('role= and topic= narrow the listing; topic= matches a user’s topics exactly or by a pattern of theirs', async () => {
    const s = newSchool()
    const users: Array<[string, string[], string[]]> = [
      ['ann', ['student'], ['class:7A', 'club:chess']],
      ['ben', ['student'], ['class:7B']],
      ['cat', ['teacher'], ['class:*']],
      ['dan', ['teacher', 'head'], ['staff']],
      ['eve', ['parent'], ['*']],
      ['fay', ['parent'], ['class:7']],
    ]
    for (const [id, roles, topics] of users) expect((await s.put(id, { roles, topics })).status).toBe(201)

    expect(await s.allIds({ role: 'student' })).toEqual(['ann', 'ben'])
    expect(await s.allIds({ role: 'teacher' })).toEqual(['cat', 'dan'])
    expect(await s.allIds({ role: 'janitor' })).toEqual([])
    // class:7A: ann by name, cat by class:*, eve by *; not ben (class:7B) nor fay (class:7, a name, not a prefix).
    expect(await s.allIds({ topic: 'class:7A' })).toEqual(['ann', 'cat', 'eve'])
    expect(await s.allIds({ topic: 'staff' })).toEqual(['dan', 'eve'])
    // A pattern asked for is matched as a topic too: users holding it, or a wider pattern.
    expect(await s.allIds({ topic: 'class:*' })).toEqual(['cat', 'eve'])
    expect(await s.allIds({ role: 'teacher', topic: 'class:7B' })).toEqual(['cat'])
    // Paged one at a time, a filtered listing still finds each once.
    const one = await s.list({ topic: 'class:7A', limit: 1 })
    expect(one.body.users.map((u: { id: string }) => u.id)).toEqual(['ann'])
    const two = await s.list({ topic: 'class:7A', limit: 1, cursor: one.body.next })
    expect(two.body.users.map((u: { id: string }) => u.id)).toEqual(['cat'])
  })

  it('a cursor that the listing did not give, or a bad limit, is a 400 naming it', async () => {
    const s = newSchool()
    for (const cursor of ['not a cursor!', '%%%', 'A']) {
      const problem = expectProblem(await s.list({ cursor }), 400)
      expect(
        problem.errors?.map((e) => e.path),
        cursor,
      ).toEqual(['querystring.cursor'])
      expect(problem.detail).toMatch(/querystring\.cursor: is not a cursor this listing gave/)
    }
    for (const limit of [0, 1_001, 'ten']) {
      expect(
        expectProblem(await s.list({ limit }), 400).errors?.map((e) => e.path),
        String(limit),
      ).toEqual(['querystring.limit'])
    }
    expect(expectProblem(await s.list({ topic: 'a b' }), 400).errors?.[0].path).toBe('querystring.topic')
  })

  it('a batch upserts and deletes in one go, and says how many of each; an id given twice: its last operation counts', async () => {
    const s = newSchool()
    await s.put('gone', { roles: ['student'], topics: [] })
    await s.put('kept', { roles: ['student'], topics: [] })
    const res = await s.batch([
      { op: 'upsert', id: 'ann', roles: ['student'], topics: ['class:7A'], timeZone: 'Europe/Paris' },
      { op: 'upsert', id: 'kept', roles: ['teacher'], topics: [], displayName: 'Mr Kept' },
      { op: 'delete', id: 'gone' },
      { op: 'delete', id: 'never-was' },
      { op: 'upsert', id: 'twice', roles: ['first'], topics: [] },
      { op: 'upsert', id: 'twice', roles: ['second'], topics: [], locale: 'en-gb' },
      { op: 'upsert', id: 'brief', roles: [], topics: [] },
      { op: 'delete', id: 'brief' },
    ])
    expect(res.status, res.text).toBe(200)
    expect(res.body).toEqual({ upserted: 3, deleted: 1 })
    expect(await s.allIds()).toEqual(['ann', 'kept', 'twice'])
    expect((await s.get('kept')).body).toMatchObject({ roles: ['teacher'], displayName: 'Mr Kept' })
    expect((await s.get('twice')).body).toMatchObject({ roles: ['second'], locale: 'en-GB' })
    expect((await s.get('ann')).body).toMatchObject({ timeZone: 'Europe/Paris' })
  })

  it('a batch of 5,000 with a bad operation at index 4,999 is a 400 naming it, and writes nothing; fixed, all 5,000 go in', async () => {
    const s = newSchool()
    await s.put('u00000', { roles: ['old'], topics: [] })
    await s.put('keep-me', { roles: [], topics: [] })
    const operations: Json[] = upserts(5_000, { timeZone: 'Europe/Paris' })
    operations[4_999] = { ...operations[4_999], timeZone: 'Mars/Olympus' }
    const bad = await s.batch(operations)
    const problem = expectProblem(bad, 400)
    expect(problem.errors).toEqual([
      { path: 'body.operations.4999.timeZone', message: 'must be an IANA time zone, like "Europe/Paris" or "UTC"' },
    ])
    expect(problem.detail).toBe(
      'body.operations.4999.timeZone: must be an IANA time zone, like "Europe/Paris" or "UTC"',
    )
    // Nothing of it was written: the directory is as it was.
    expect(await s.allIds()).toEqual(['keep-me', 'u00000'])
    expect((await s.get('u00000')).body.roles).toEqual(['old'])

    operations[4_999] = { ...operations[4_999], timeZone: 'Asia/Tokyo' }
    const good = await s.batch(operations)
    expect(good.status, good.text).toBe(200)
    expect(good.body).toEqual({ upserted: 5_000, deleted: 0 })
    const ids = await s.allIds({ limit: 1_000 })
    expect(ids).toHaveLength(5_001)
    expect(ids[0]).toBe('keep-me')
    expect((await s.get('u00000')).body).toMatchObject({ roles: ['student'], timeZone: 'Europe/Paris' })
    expect((await s.get('u04999')).body).toMatchObject({ timeZone: 'Asia/Tokyo' })
    expect(await s.allIds({ topic: 'class:3', limit: 1_000 })).toHaveLength(500)
  })

  it('a batch of more than 5,000 operations is a 400 on body.operations, and writes nothing', async () => {
    const s = newSchool()
    const problem = expectProblem(await s.batch(upserts(5_001)), 400)
    expect(problem.errors).toEqual([{ path: 'body.operations', message: expect.stringMatching(/5000/) }])
    expect(await s.allIds()).toEqual([])
    // An empty batch says nothing: a 400 too.
    expect(expectProblem(await s.batch([]), 400).errors?.map((e) => e.path)).toEqual(['body.operations'])
  })

  it('every operation is checked: a bad one in a batch is named by its index and field', async () => {
    const s = newSchool()
    const res = await s.batch([
      { op: 'upsert', id: 'ok', roles: [], topics: [] },
      { op: 'rename', id: 'x' },
      { op: 'upsert', id: 'no-roles', topics: [] },
      { op: 'delete', id: '' },
      { op: 'upsert', id: 'bad-topic', roles: [], topics: ['cl*ss:7A'] },
      { op: 'delete', id: 'extra', roles: [] },
    ])
    const problem = expectProblem(res, 400)
    expect(problem.errors?.map((e) => e.path)).toEqual([
      'body.operations.1.op',
      'body.operations.2.roles',
      'body.operations.3.id',
      'body.operations.4.topics.0',
      'body.operations.5',
    ])
    expect(await s.allIds()).toEqual([])
  })

  const good = { roles: ['student'], topics: ['class:7A'] }
  it.each([
    ['no roles', { topics: [] }, 'body.roles', /expected array/],
    ['roles that are not a list', { roles: 'student', topics: [] }, 'body.roles', /expected array/],
    ['an empty role', { ...good, roles: [''] }, 'body.roles.0', /at least 1|>=1/],
    ['a role over 200 characters', { ...good, roles: ['r'.repeat(201)] }, 'body.roles.0', /200/],
    ['101 roles', { ...good, roles: Array.from({ length: 101 }, (_, i) => `r${i}`) }, 'body.roles', /100/],
    ['a role with a NUL', { ...good, roles: ['a\u0000b'] }, 'body.roles.0', /NUL/],
    ['a star inside a topic', { ...good, topics: ['cl*ss:7A'] }, 'body.topics.0', /prefix and "\*"/],
    ['a topic with a space', { ...good, topics: ['class 7A'] }, 'body.topics.0', /without commas or spaces/],
    ['a topic with a comma', { ...good, topics: ['a,b'] }, 'body.topics.0', /without commas or spaces/],
    ['101 topics', { ...good, topics: Array.from({ length: 101 }, (_, i) => `t${i}`) }, 'body.topics', /100/],
    ['a locale that is no BCP 47 tag', { ...good, locale: 'english please' }, 'body.locale', /BCP 47/],
    ['a locale with an underscore', { ...good, locale: 'fr_CH' }, 'body.locale', /BCP 47/],
    ['an over-long locale', { ...good, locale: `en-${'x'.repeat(70)}` }, 'body.locale', /64/],
    ['an unknown time zone', { ...good, timeZone: 'Mars/Olympus' }, 'body.timeZone', /IANA time zone/],
    ['an offset instead of a zone', { ...good, timeZone: '+01:00' }, 'body.timeZone', /IANA time zone/],
    ['an empty display name', { ...good, displayName: '' }, 'body.displayName', /at least 1|>=1/],
    ['a display name over 200 characters', { ...good, displayName: 'n'.repeat(201) }, 'body.displayName', /200/],
    ['a lone surrogate in a name', { ...good, displayName: 'Kim \ud800' }, 'body.displayName', /lone surrogates/],
    ['an unknown field', { ...good, email: 'kim@example.com' }, 'body', /email/],
  ])('PUT with %s is a 400 naming the field, and stores nothing', async (_what, body, path, message) => {
    const s = newSchool()
    const problem = expectProblem(await s.put('kim', body), 400)
    expect(problem.type).toBe('urn:herald:problem:validation')
    expect(problem.errors?.map((e) => e.path)).toEqual([path])
    expect(problem.errors?.[0].message).toMatch(message)
    expect(problem.detail).toContain(path)
    expect((await s.get('kim')).status).toBe(404)
  })

  it('a user id may be 200 characters, in a path as in a batch; 201 is a 400 naming it', async () => {
    const s = newSchool()
    const long = 'x'.repeat(200)
    expect((await s.batch([{ op: 'upsert', id: long, roles: [], topics: [] }])).body).toEqual({
      upserted: 1,
      deleted: 0,
    })
    expect((await s.get(long)).body.id).toBe(long)
    expect((await s.put('é'.repeat(200), good)).status).toBe(201)
    expect(await s.allIds()).toEqual([long, 'é'.repeat(200)])
    for (const res of [
      await s.get('x'.repeat(201)),
      await s.put('y'.repeat(201), good),
      await s.remove('z'.repeat(201)),
    ]) {
      expect(expectProblem(res, 400).errors?.map((e) => e.path)).toEqual(['params.id'])
    }
    const tooLong = await s.batch([{ op: 'delete', id: 'z'.repeat(201) }])
    expect(expectProblem(tooLong, 400).errors?.map((e) => e.path)).toEqual(['body.operations.0.id'])
  })

  it('a body that is not JSON is a 400, and so is a body that is not an object of the batch’s shape', async () => {
    const s = newSchool()
    const notJson = await t
      .http()
      .put('/v1/directory/users/kim')
      .set({ authorization: `Bearer ${s.admin}`, 'content-type': 'application/json' })
      .send('{"roles": [')
    expect(expectProblem(notJson, 400).detail).toBe('The body is not valid JSON.')
    const notAList = await s.batch({ op: 'delete', id: 'kim' })
    expect(expectProblem(notAList, 400).errors?.map((e) => e.path)).toEqual(['body.operations'])
  })

  it('every route needs the admin scope: 403 for a publisher or a user, before the body is looked at; 401 without a token', async () => {
    const s = newSchool()
    await s.put('kim', kim)
    for (const token of [
      t.token({ sub: 'office', tenant: s.tenant, scope: PUBLISHER }),
      t.token({ sub: 'kim', tenant: s.tenant }),
    ]) {
      for (const res of [
        await s.put('kim', good, token),
        await s.put('kim', { nonsense: true }, token),
        await s.get('kim', token),
        await s.remove('kim', token),
        await s.batch([{ op: 'delete', id: 'kim' }], token),
        await s.batch('not even a list', token),
        await s.list({}, token),
      ]) {
        const problem = expectProblem(res, 403)
        expect(problem.detail).toBe('The user directory needs the "admin" scope.')
      }
    }
    expect((await s.get('kim')).body).toMatchObject({ roles: ['student'] })
    expectProblem(await t.http().get('/v1/directory/users'), 401)
    expectProblem(await t.http().put('/v1/directory/users/kim').send(good), 401)
  })

  it('another tenant’s directory is invisible: its admin neither sees, lists, changes nor removes these users', async () => {
    const a = newSchool()
    const b = newSchool()
    await a.put('kim', kim)
    await a.batch(upserts(3))
    expect(expectProblem(await b.get('kim'), 404).detail).toBe('No user "kim" in the directory.')
    expect(await b.allIds()).toEqual([])
    expect(await b.allIds({ role: 'student' })).toEqual([])
    expectProblem(await b.remove('kim'), 404)
    // The same id in the other tenant is another user.
    expect((await b.put('kim', { roles: ['parent'], topics: [] })).status).toBe(201)
    expect((await b.batch([{ op: 'delete', id: 'u00000' }])).body).toEqual({ upserted: 0, deleted: 0 })
    expect((await a.get('kim')).body).toMatchObject({ roles: ['student'], displayName: 'Kim Muller' })
    expect(await a.allIds()).toEqual(['kim', 'u00000', 'u00001', 'u00002'])
    expect((await b.get('kim')).body).toMatchObject({ roles: ['parent'], displayName: null })
  })
})
