import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHeraldServerClient, HeraldError } from '../src/client/index.ts'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { runToEnd } from './helpers/process.ts'
import { expectProblem } from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'
import { live, publish, unique, waitForId } from './helpers/stream-fixtures.ts'

// Issue 20, part 3: a director works in several schools. Their token names the current one (`tenant`, with
// `roles`) and every one they work in (`tenants`, with their roles in each); one stream carries all of them, each
// event showing its `tenant`; REST acts in the current school or in the one `X-Herald-Tenant` names.

type Json = Record<string, unknown>

describeEachBackend('directors across schools', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp(backend, { config: { CORS_ORIGINS: 'https://school.example' } })
  })
  afterAll(async () => {
    await t?.close()
  })

  /** Three schools: the director works in `a` (current, as director) and `b` (as director and staff), never in `c`. */
  function schools() {
    const a = unique('school-a')
    const b = unique('school-b')
    const c = unique('school-c')
    const director = unique('director')
    const claims = { sub: director, tenant: a, roles: ['director'], tenants: { [b]: ['director', 'staff'] } }
    return { a, b, c, director, claims, token: (extra: Json = {}) => t.token({ ...claims, ...extra }) }
  }

  const auth = (token: string) => ({ authorization: `Bearer ${token}` })
  const openStream = async (token: string, lastEventId?: string) =>
    live(await SseClient.open(t.url, { token, lastEventId }))

  it('one stream carries both schools’ events, each with its tenant, and none of a third school or of a role held only in the other school', async () => {
    const s = schools()
    const stream = await openStream(s.token())
    try {
      const expected = [
        await publish(t, s.a, { title: 'A: to the director', to: { users: [s.director] } }),
        await publish(t, s.b, { title: 'B: to the director', to: { users: [s.director] } }),
        await publish(t, s.a, { title: 'A: to directors', to: { roles: ['director'] } }),
        await publish(t, s.b, { title: 'B: to staff', to: { roles: ['staff'] } }),
        await publish(t, s.a, { title: 'A: everyone', to: { tenant: true } }),
        await publish(t, s.b, { title: 'B: everyone', to: { tenant: true } }),
      ]
      // Never: a school the token does not name, a role the director holds only in the other school.
      const never = [
        await publish(t, s.c, { title: 'C: to the same user id', to: { users: [s.director] } }),
        await publish(t, s.c, { title: 'C: everyone', to: { tenant: true } }),
        await publish(t, s.c, { title: 'C: to directors', to: { roles: ['director'] } }),
        await publish(t, s.a, { title: 'A: to staff', to: { roles: ['staff'] } }),
      ]
      const marker = await publish(t, s.b, { title: 'B: last', to: { users: [s.director] } })
      await waitForId(stream, marker)
      expect(stream.notificationIds).toEqual([...expected, marker])
      for (const id of never) expect(stream.notificationIds).not.toContain(id)
      const byTitle = Object.fromEntries(stream.notifications.map((e: Json) => [e.title, e.tenant]))
      expect(byTitle).toEqual({
        'A: to the director': s.a,
        'B: to the director': s.b,
        'A: to directors': s.a,
        'B: to staff': s.b,
        'A: everyone': s.a,
        'B: everyone': s.b,
        'B: last': s.b,
      })
      // One stream, registered in both schools: the hub counts it once.
      expect(t.app.hub.streamsOf(s.a, s.director)).toHaveLength(1)
      expect(t.app.hub.streamsOf(s.b, s.director)).toHaveLength(1)
    } finally {
      stream.close()
    }
  })

  it('topic claims and subscriptions are the current school’s only', async () => {
    const s = schools()
    const stream = await live(
      await SseClient.open(t.url, { token: s.token({ topics: ['class:*'] }), topics: ['class:7A'] }),
    )
    try {
      const other = await publish(t, s.b, { title: 'B: class 7A', to: { topics: ['class:7A'] } })
      const mine = await publish(t, s.a, { title: 'A: class 7A', to: { topics: ['class:7A'] } })
      await waitForId(stream, mine)
      expect(stream.notificationIds).toEqual([mine])
      expect(stream.notificationIds).not.toContain(other)
    } finally {
      stream.close()
    }
  })

  it('following a topic in the other school does not bring its topic events to the stream', async () => {
    const s = schools()
    const stream = await openStream(s.token({ topics: ['class:*'] }))
    try {
      // The same user, signed in at school B itself, follows a class there.
      const inB = t.token({ sub: s.director, tenant: s.b, topics: ['class:*'] })
      const followed = await t.http().put('/v1/me/topics/class:9B').set(auth(inB))
      expect(followed.status, followed.text).toBeLessThan(300)
      const other = await publish(t, s.b, { title: 'B: class 9B', to: { topics: ['class:9B'] } })
      const marker = await publish(t, s.b, { title: 'B: marker', to: { users: [s.director] } })
      await waitForId(stream, marker)
      expect(stream.notificationIds).toEqual([marker])
      expect(stream.notificationIds).not.toContain(other)
    } finally {
      stream.close()
    }
  })

  it('resumes gapless across schools: what both published while the stream was away comes back in id order', async () => {
    const s = schools()
    const first = await openStream(s.token())
    const seen = await publish(t, s.a, { title: 'seen', to: { users: [s.director] } })
    await waitForId(first, seen)
    first.close()

    const missed: string[] = []
    const notMine: string[] = []
    for (let i = 0; i < 4; i++) {
      missed.push(await publish(t, s.b, { title: `B ${i}`, to: { users: [s.director] } }))
      notMine.push(await publish(t, s.c, { title: `C ${i}`, to: { tenant: true } }))
      missed.push(await publish(t, s.a, { title: `A ${i}`, to: { tenant: true } }))
      notMine.push(await publish(t, s.a, { title: `A staff ${i}`, to: { roles: ['staff'] } }))
      missed.push(await publish(t, s.b, { title: `B staff ${i}`, to: { roles: ['staff'] } }))
    }
    const again = await openStream(s.token(), seen)
    try {
      await waitForId(again, missed[missed.length - 1])
      const after = await publish(t, s.b, { title: 'live again', to: { tenant: true } })
      await waitForId(again, after)
      expect(again.notificationIds).toEqual([...missed, after])
      expect(again.notifications.map((e: Json) => e.tenant)).toEqual(
        [...Array(4)].flatMap(() => [s.b, s.a, s.b]).concat(s.b),
      )
      expect(again.events.some((e) => e.event === 'reset')).toBe(false)
    } finally {
      again.close()
    }
  })

  it('a stream ticket carries the token’s schools', async () => {
    const s = schools()
    const ticket = await t.http().post('/v1/stream/tickets').set(auth(s.token()))
    expect(ticket.status, ticket.text).toBe(201)
    const stream = await live(await SseClient.open(t.url, { ticket: ticket.body.ticket }))
    try {
      const id = await publish(t, s.b, { title: 'B via ticket', to: { roles: ['staff'] } })
      await waitForId(stream, id)
      expect(stream.notifications[0]).toMatchObject({ id, tenant: s.b })
    } finally {
      stream.close()
    }
  })

  it('REST acts in the school X-Herald-Tenant names: lists, reads, acks and publishes there', async () => {
    const s = schools()
    const director = s.token({ scope: PUBLISHER })
    const inB = { ...auth(director), 'x-herald-tenant': s.b }
    const inA = { ...auth(director), 'x-herald-tenant': s.a }
    const aEvent = await publish(t, s.a, { title: 'A news', to: { tenant: true } })
    const bEvent = await publish(t, s.b, { title: 'B staff news', to: { roles: ['staff'] } })

    // Without the header: the current school; with it, the named one (with the roles held there).
    const listedA = await t.http().get('/v1/events').set(auth(director))
    expect(listedA.body.events.map((e: Json) => [e.id, e.tenant])).toEqual([[aEvent, s.a]])
    expect((await t.http().get('/v1/events').set(inA)).body.events.map((e: Json) => e.id)).toEqual([aEvent])
    const listedB = await t.http().get('/v1/events').set(inB)
    expect(listedB.status, listedB.text).toBe(200)
    expect(listedB.body.events.map((e: Json) => [e.id, e.tenant])).toEqual([[bEvent, s.b]])
    expect((await t.http().get(`/v1/events/${bEvent}`).set(inB)).body).toMatchObject({ id: bEvent, tenant: s.b })
    // An event of the other school is not found from here, as any event one cannot see.
    expectProblem(await t.http().get(`/v1/events/${bEvent}`).set(auth(director)), 404)
    expectProblem(await t.http().post(`/v1/events/${bEvent}/read`).set(auth(director)), 404)

    expect((await t.http().get('/v1/events/unread-count').set(inB)).body).toEqual({ unread: 1 })
    expect((await t.http().post(`/v1/events/${bEvent}/ack`).set(inB)).status).toBe(204)
    expect((await t.http().post(`/v1/events/${bEvent}/read`).set(inB)).status).toBe(204)
    expect((await t.http().get('/v1/events/unread-count').set(inB)).body).toEqual({ unread: 0 })
    expect((await t.http().get('/v1/events/unread-count').set(auth(director))).body).toEqual({ unread: 1 })
    const read = await t.http().get(`/v1/events/${bEvent}`).set(inB)
    expect(read.body.readAt).not.toBeNull()
    expect(read.body.ackedAt).not.toBeNull()

    // A publish in school B reaches B's people, as B's event; A's do not get it.
    const teacherB = unique('teacher')
    const streamB = await openStream(t.token({ sub: teacherB, tenant: s.b }))
    const streamA = await openStream(t.token({ sub: teacherB, tenant: s.a }))
    try {
      const published = await t
        .http()
        .post('/v1/events')
        .set(inB)
        .send({ type: 'director.note', title: 'From the director', to: { users: [teacherB] } })
      expect(published.status, published.text).toBe(201)
      await waitForId(streamB, published.body.id)
      expect(streamB.notifications[0]).toMatchObject({ tenant: s.b, actor: s.director, title: 'From the director' })
      const markerA = await publish(t, s.a, { title: 'A marker', to: { users: [teacherB] } })
      await waitForId(streamA, markerA)
      expect(streamA.notificationIds).toEqual([markerA])
    } finally {
      streamB.close()
      streamA.close()
    }
  })

  it('the CLI acts in the school HERALD_TENANT names, and is refused one the token does not cover', async () => {
    const s = schools()
    const director = s.token({ scope: PUBLISHER })
    const teacherB = unique('teacher')
    const args = ['publish', '--server', t.url, '--token', director, '--to-user', teacherB, '--title', 'From the CLI']
    const inB = await runToEnd('src/cli.ts', args, { HERALD_TENANT: s.b })
    expect(inB.code, inB.stderr).toBe(0)
    const { id } = JSON.parse(inB.stdout) as { id: string }
    const listed = await t
      .http()
      .get('/v1/events')
      .set(auth(t.token({ sub: teacherB, tenant: s.b })))
    expect(listed.body.events.map((e: Json) => [e.id, e.tenant, e.title])).toEqual([[id, s.b, 'From the CLI']])
    const inC = await runToEnd('src/cli.ts', args, { HERALD_TENANT: s.c })
    expect(inC.code).toBe(1)
    expect(inC.stderr).toMatch(/HTTP 403 .*X-Herald-Tenant/)
  })

  it('a tenant the token does not cover is 403 naming the header; a token without `tenants` behaves as before', async () => {
    const s = schools()
    const refused = expectProblem(
      await t.http().get('/v1/events').set(auth(s.token())).set('x-herald-tenant', s.c),
      403,
    )
    expect(refused.detail).toMatch(/X-Herald-Tenant/)
    expectProblem(
      await t
        .http()
        .post('/v1/events')
        .set(auth(s.token({ scope: PUBLISHER })))
        .set('x-herald-tenant', s.c)
        .send({
          type: 'x',
          title: 'Not here',
          to: { tenant: true },
        }),
      403,
    )
    expectProblem(await t.http().get('/v1/events').set(auth(s.token())).set('x-herald-tenant', ''), 403)

    // Without `tenants`: the token's own tenant in the header is fine, any other is 403; the stream is one school's.
    const plain = t.token({ sub: s.director, tenant: s.a, roles: ['director'] })
    expect((await t.http().get('/v1/events').set(auth(plain)).set('x-herald-tenant', s.a)).status).toBe(200)
    expectProblem(await t.http().get('/v1/events').set(auth(plain)).set('x-herald-tenant', s.b), 403)
    const stream = await openStream(plain)
    try {
      const other = await publish(t, s.b, { title: 'B', to: { users: [s.director] } })
      const mine = await publish(t, s.a, { title: 'A', to: { users: [s.director] } })
      await waitForId(stream, mine)
      expect(stream.notificationIds).toEqual([mine])
      expect(stream.notificationIds).not.toContain(other)
      expect(stream.notifications[0].tenant).toBe(s.a)
    } finally {
      stream.close()
    }
  })

  it('a browser app may send X-Herald-Tenant (CORS)', async () => {
    const preflight = await t
      .http()
      .options('/v1/events')
      .set('origin', 'https://school.example')
      .set('access-control-request-method', 'GET')
      .set('access-control-request-headers', 'authorization,x-herald-tenant')
    expect(preflight.status).toBe(204)
    expect(preflight.headers['access-control-allow-headers']).toMatch(/x-herald-tenant/)
  })

  it('a tenant name with quotes, emoji and U+2028 goes out the same live and replayed', async () => {
    const tricky = unique('school "ä" 😀\u2028 \\')
    const user = unique('u')
    const token = t.token({ sub: user, tenant: unique('home'), tenants: { [tricky]: [] } })
    const stream = await openStream(token)
    try {
      const id = await publish(t, tricky, { title: 'tricky', to: { users: [user] } })
      await waitForId(stream, id)
      const again = await openStream(token, '0')
      try {
        await waitForId(again, id)
        const frame = (c: SseClient) => c.events.find((e) => e.id === id)?.data
        expect(frame(again)).toBe(frame(stream))
        expect(JSON.parse(frame(stream) as string).tenant).toBe(tricky)
      } finally {
        again.close()
      }
    } finally {
      stream.close()
    }
  })

  it('the backend client acts in the tenant it is given, for the client or for one call', async () => {
    const s = schools()
    const pupil = unique('pupil')
    const director = createHeraldServerClient({ baseUrl: t.url, token: s.token({ scope: PUBLISHER }), tenant: s.b })
    const published = await director.publish({ type: 'note', title: 'From the client', to: { users: [pupil] } })
    const seen = await t
      .http()
      .get(`/v1/events/${published.id}`)
      .set(auth(t.token({ sub: pupil, tenant: s.b })))
    expect(seen.body).toMatchObject({ tenant: s.b, title: 'From the client' })
    const inA = await director.inTenant(s.a).publish({ type: 'note', title: 'In A', to: { users: [pupil] } })
    const seenInA = await t
      .http()
      .get(`/v1/events/${inA.id}`)
      .set(auth(t.token({ sub: pupil, tenant: s.a })))
    expect(seenInA.body).toMatchObject({ tenant: s.a })
    const refused = await director
      .inTenant(s.c)
      .publish({ type: 'note', title: 'Not here', to: { tenant: true } })
      .catch((err: unknown) => err)
    expect(refused).toBeInstanceOf(HeraldError)
    expect((refused as HeraldError).status).toBe(403)
  })

  it('bad `tenants` claims are 401 naming the claim', async () => {
    const bad: unknown[] = [
      ['school-b'],
      'school-b',
      { 'school-b': 'director' },
      { 'school-b': [1] },
      { '': ['director'] },
      { 'school-b': ['nul\u0000role'] },
      { 'school-b': Array.from({ length: 101 }, (_, i) => `role-${i}`) },
      Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`school-${i}`, ['director']])),
    ]
    for (const tenants of bad) {
      const token = mintToken(TEST_JWT_SECRET, {
        sub: 'director',
        tenant: 'school-a',
        tenants: tenants as Record<string, string[]>,
      })
      const res = await t.http().get('/v1/events').set(auth(token))
      const problem = expectProblem(res, 401)
      expect(problem.detail, JSON.stringify(tenants).slice(0, 80)).toMatch(/claims are not valid \(tenants/)
    }
    // 100 schools is fine.
    const many = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`school-${i}`, ['director']]))
    const ok = mintToken(TEST_JWT_SECRET, { sub: 'director', tenant: 'school-a', tenants: many })
    expect((await t.http().get('/v1/events').set(auth(ok)).set('x-herald-tenant', 'school-99')).status).toBe(200)
  })

  it('in the current school, `roles` wins over what `tenants` says of it', async () => {
    const s = schools()
    const token = t.token({ ...s.claims, roles: ['director'], tenants: { [s.a]: ['staff'], [s.b]: ['staff'] } })
    const stream = await openStream(token)
    try {
      const staffA = await publish(t, s.a, { title: 'A staff', to: { roles: ['staff'] } })
      const directorsA = await publish(t, s.a, { title: 'A directors', to: { roles: ['director'] } })
      const staffB = await publish(t, s.b, { title: 'B staff', to: { roles: ['staff'] } })
      await waitForId(stream, staffB)
      expect(stream.notificationIds).toEqual([directorsA, staffB])
      expect(stream.notificationIds).not.toContain(staffA)
    } finally {
      stream.close()
    }
  })
})

describe('X-Herald-Tenant in the OpenAPI document', () => {
  it('is one shared header parameter, on every operation that takes a token and on none that does not', async () => {
    const t = await startApp('pglite')
    try {
      const doc = (await t.http().get('/docs/json')).body
      expect(doc.components.parameters.TenantHeader).toMatchObject({ in: 'header', name: 'X-Herald-Tenant' })
      expect(doc.components.parameters.TenantHeader.description).toMatch(/`tenants` claim/)
      expect(doc.components.securitySchemes.bearerAuth.description).toMatch(/`tenants`/)
      let withToken = 0
      for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
        for (const [method, op] of Object.entries(item)) {
          const refs = ((op.parameters ?? []) as Json[]).filter(
            (p) => p.$ref === '#/components/parameters/TenantHeader',
          )
          const needsToken = op.security === undefined || (op.security as unknown[]).length > 0
          expect(refs.length, `${method} ${path}`).toBe(needsToken ? 1 : 0)
          if (needsToken) withToken++
        }
      }
      expect(withToken).toBeGreaterThan(20)
    } finally {
      await t.close()
    }
  })
})

describe('herald token --tenants', () => {
  const cli = (args: string[]) => runToEnd('src/cli.ts', args, { JWT_SECRET: TEST_JWT_SECRET })

  it('mints a token covering the tenants given, and refuses a --tenants that is not tenant to roles', async () => {
    const t = await startApp('pglite')
    try {
      const made = await cli(['token', '--sub', 'dana', '--tenant', 'north', '--tenants', '{"south":["director"]}'])
      expect(made.code, made.stderr).toBe(0)
      const token = made.stdout.trim()
      const id = await publish(t, 'south', { title: 'South', to: { roles: ['director'] } })
      const listed = await t
        .http()
        .get('/v1/events')
        .set('authorization', `Bearer ${token}`)
        .set('x-herald-tenant', 'south')
      expect(listed.body.events.map((e: Json) => [e.id, e.tenant])).toEqual([[id, 'south']])
      for (const bad of ['south', '["south"]', '{"south":"director"}', '{"south":[1]}']) {
        const refused = await cli(['token', '--sub', 'dana', '--tenant', 'north', '--tenants', bad])
        expect(refused.code, bad).toBe(2)
        expect(refused.stderr).toMatch(/--tenants must be a JSON object of tenant to roles/)
      }
    } finally {
      await t.close()
    }
  })
})
