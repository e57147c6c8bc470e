import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest'
import { CLIENT_OPERATIONS, createHeraldServerClient, HeraldError, mintToken } from '../src/client/index.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

// The typed client for application backends (`herald/client`), against the real service.

describeEachBackend('the backend client', (backend) => {
  let t: TestApp
  let n = 0
  beforeAll(async () => {
    t = await startApp(backend, { config: { RATE_LIMIT_PUBLISH_PER_MIN: 50 } })
  })
  afterAll(async () => {
    await t?.close()
  })

  const tenant = () => `client-${backend}-${++n}`
  const publisher = (ten: string, sub = 'office') =>
    createHeraldServerClient({
      baseUrl: t.url,
      token: () => mintToken(TEST_JWT_SECRET, { sub, tenant: ten, scope: PUBLISHER }, 600),
    })

  it('calls exactly the operations of the service’s OpenAPI document', () => {
    const doc = t.app.swagger() as { paths: Record<string, Record<string, { operationId?: string }>> }
    for (const [name, op] of Object.entries(CLIENT_OPERATIONS)) {
      expect(doc.paths[op.path]?.[op.method.toLowerCase()]?.operationId, name).toBe(op.operationId)
    }
  })

  it('publishes (201, then a replay with the same Idempotency-Key), publishes a batch, and reads the status', async () => {
    const ten = tenant()
    const client = publisher(ten)
    const first = await client.publish(
      { type: 'grade.posted', title: 'New grade', to: { users: ['kim'] }, data: { gradeId: 42 } },
      { idempotencyKey: 'grade-1' },
    )
    expect(first).toMatchObject({ id: expect.stringMatching(/^\d+$/), replayed: false })
    const again = await client.publish(
      { type: 'grade.posted', title: 'New grade', to: { users: ['kim'] }, data: { gradeId: 42 } },
      { idempotencyKey: 'grade-1' },
    )
    expect(again).toEqual({ ...first, replayed: true })

    const batch = await client.publishBatch([
      { type: 'a.b', title: 'One', to: { users: ['kim'] } },
      { type: 'a.b', title: 'Two', to: { users: ['lee'] }, priority: 'high' },
    ])
    expect(batch.ids).toHaveLength(2)
    expect(batch.replayed).toBe(false)

    const kim = t.token({ sub: 'kim', tenant: ten })
    expect((await t.http().post(`/v1/events/${first.id}/read`).set('authorization', `Bearer ${kim}`)).status).toBe(204)
    expect(await client.status(first.id)).toEqual({
      acked: 1,
      read: 1,
      push: { sent: 0, failed: 0, pending: 0 },
      recipients: { recipients: 1, delivered: 0, pushed: 0, acked: 1, read: 1, unread: 0 },
    })
  })

  it('publishes for later with deliverAt (202, a scheduledId), lists, shows and cancels scheduled publishes', async () => {
    const ten = tenant()
    const client = publisher(ten)
    const deliverAt = new Date(Date.now() + 3_600_000)
    const later = await client.publish(
      { type: 'exam.reminder', title: 'Exam tomorrow', to: { users: ['kim'] }, data: { room: 12 } },
      { deliverAt, idempotencyKey: 'remind-1' },
    )
    expect(later).toEqual({ scheduledId: expect.stringMatching(/^\d+$/), deliverAt: deliverAt.toISOString() })
    // A retry with the key answers the same item.
    const retried = await client.publish(
      { type: 'exam.reminder', title: 'Exam tomorrow', to: { users: ['kim'] }, data: { room: 12 } },
      { deliverAt: deliverAt.toISOString(), idempotencyKey: 'remind-1' },
    )
    expect(retried).toEqual(later)
    const batch = await client.publishBatch(
      [
        { type: 'a.b', title: 'One', to: { users: ['kim'] } },
        { type: 'a.b', title: 'Two', to: { users: ['lee'] } },
      ],
      { deliverAt },
    )
    expect(batch.scheduledId).not.toBe(later.scheduledId)

    const page = await client.listScheduled()
    expect(page.scheduled.map((s) => [s.id, s.eventCount])).toEqual([
      [later.scheduledId, 1],
      [batch.scheduledId, 2],
    ])
    expect(page.next).toBeNull()
    expect((await client.listScheduled({ limit: 1 })).next).toBe(later.scheduledId)
    const shown = await client.getScheduled(batch.scheduledId)
    expect(shown).toMatchObject({ state: 'pending', kind: 'batch', eventIds: [] })
    expect(shown.events.map((e) => e.title)).toEqual(['One', 'Two'])
    expect((await client.getScheduled(later.scheduledId)).events[0].data).toEqual({ room: 12 })

    await client.cancelScheduled(later.scheduledId)
    expect((await client.getScheduled(later.scheduledId)).state).toBe('cancelled')
    expect((await client.listScheduled()).scheduled.map((s) => s.id)).toEqual([batch.scheduledId])
    const notMine = await publisher(ten, 'someone-else')
      .cancelScheduled(batch.scheduledId)
      .catch((e: unknown) => e)
    expect(notMine).toMatchObject({ status: 404, type: 'urn:herald:problem:not-found' })
    const tooLate = await client
      .publish({ type: 'a.b', title: 'x', to: { users: ['kim'] } }, { deliverAt: new Date(Date.now() - 1_000) })
      .catch((e: unknown) => e)
    expect(tooLate).toMatchObject({ status: 400, type: 'urn:herald:problem:validation' })
    expect((tooLate as HeraldError).problem?.errors?.map((e) => e.path)).toEqual(['body.deliverAt'])
  })

  it('edits and recalls an event: the new version comes back, its stream gets update and delete, and a second recall is a 404', async () => {
    const ten = tenant()
    const client = publisher(ten)
    const stream = await SseClient.open(t.url, { token: mintToken(TEST_JWT_SECRET, { sub: 'kim', tenant: ten }, 600) })
    onTestFinished(() => stream.close())
    await stream.waitFor((c) => c.retry !== undefined)
    const { id } = await client.publish({ type: 'trip.news', title: 'Trip on Friday', to: { users: ['kim'] } })
    await stream.waitForNotifications(1)

    const edited = await client.edit(id, { title: 'Trip on Monday', data: { room: 12 } })
    expect(edited).toMatchObject({ id, title: 'Trip on Monday', data: { room: 12 }, revision: 1, actor: 'office' })
    await client.recall(id)
    await stream.waitFor((c) => c.events.length >= 3)
    expect(stream.events.map((e) => [e.event, JSON.parse(e.data).id])).toEqual([
      ['notification', id],
      ['update', id],
      ['delete', id],
    ])
    expect(JSON.parse(stream.events[1].data)).toEqual(edited)

    const again = await client.recall(id).catch((e: unknown) => e)
    expect(again).toMatchObject({ status: 404, type: 'urn:herald:problem:not-found' })
    const empty = await client.edit(id, {}).catch((e: unknown) => e)
    expect(empty).toMatchObject({ status: 400, type: 'urn:herald:problem:validation' })
    expect((empty as HeraldError).problem?.errors?.map((e) => e.path)).toEqual(['body'])
    const notTheirs = await publisher(ten, 'someone-else')
      .edit((await client.publish({ type: 'a.b', title: 'x', to: { users: ['kim'] } })).id, { title: 'y' })
      .catch((e: unknown) => e)
    expect(notTheirs).toMatchObject({ status: 404, type: 'urn:herald:problem:not-found' })
  })

  it('sets and reads the tenant’s default preferences (admin) and a user’s own with their token; refusals name the field', async () => {
    const ten = tenant()
    const admin = createHeraldServerClient({
      baseUrl: t.url,
      token: mintToken(TEST_JWT_SECRET, { sub: 'head', tenant: ten, scope: `admin ${PUBLISHER}` }, 600),
    })
    expect(await admin.tenantPreferences()).toEqual({ rules: [], urgentBypass: true, updatedAt: null })
    const defaults = await admin.setTenantPreferences({ rules: [{ type: 'lunch.*', inApp: false }] })
    expect(defaults).toEqual({
      rules: [{ type: 'lunch.*', inApp: false }],
      urgentBypass: true,
      updatedAt: expect.any(String),
    })
    expect(await admin.tenantPreferences()).toEqual(defaults)
    const notAdmin = await publisher(ten)
      .setTenantPreferences({ rules: [] })
      .catch((e: unknown) => e)
    expect(notAdmin).toMatchObject({ status: 403, type: 'urn:herald:problem:forbidden' })

    const kim = mintToken(TEST_JWT_SECRET, { sub: 'kim', tenant: ten }, 600)
    const own = await admin.setUserPreferences(kim, { rules: [{ type: 'lunch.menu', inApp: true }] })
    expect(own).toEqual({ rules: [{ type: 'lunch.menu', inApp: true }], updatedAt: expect.any(String) })
    expect(await admin.userPreferences(kim)).toEqual(own)
    // What they decide, as kim sees it: her own rule shows the menu the tenant hides from others.
    const menu = await admin.publish({ type: 'lunch.menu', title: 'Menu', to: { tenant: true } })
    const listed = await t.http().get('/v1/events').set('authorization', `Bearer ${kim}`)
    expect(listed.body.events.map((e: { id: string }) => e.id)).toEqual([menu.id])
    const lee = mintToken(TEST_JWT_SECRET, { sub: 'lee', tenant: ten }, 600)
    expect((await t.http().get('/v1/events').set('authorization', `Bearer ${lee}`)).body.events).toEqual([])

    const bad = await admin
      .setUserPreferences(kim, { quietHours: { start: '07:00', end: '07:00', timeZone: 'Europe/Paris' } })
      .catch((e: unknown) => e)
    expect(bad).toMatchObject({ status: 400, type: 'urn:herald:problem:validation' })
    expect((bad as HeraldError).problem?.errors?.map((e) => e.path)).toEqual(['body.quietHours.end'])
  })

  it('a refusal is a HeraldError with the problem: its type, the fields, and Retry-After on 429', async () => {
    const ten = tenant()
    const client = publisher(ten)
    const invalid = await client.publish({ type: 'Not A Type', title: '', to: {} } as never).catch((e: unknown) => e)
    expect(invalid).toBeInstanceOf(HeraldError)
    const err = invalid as HeraldError
    expect(err.status).toBe(400)
    expect(err.type).toBe('urn:herald:problem:validation')
    expect(err.problem?.errors?.map((e) => e.path)).toEqual(expect.arrayContaining(['body.type', 'body.title']))

    const notMine = await client.status('999999999').catch((e: unknown) => e)
    expect(notMine).toMatchObject({ status: 404, type: 'urn:herald:problem:not-found' })

    let limited: unknown
    for (let i = 0; i < 60 && !limited; i++) {
      limited = await client.publish({ type: 'a.b', title: `#${i}`, to: { users: ['kim'] } }).then(
        () => undefined,
        (e: unknown) => e,
      )
    }
    expect(limited).toMatchObject({ status: 429, type: 'urn:herald:problem:too-many-requests' })
    expect((limited as HeraldError).retryAfterS).toBeGreaterThan(0)
  })

  it('manages a topic’s members as an admin: added users’ streams get the topic’s events; a publisher is refused', async () => {
    const ten = tenant()
    const admin = createHeraldServerClient({
      baseUrl: t.url,
      token: () => mintToken(TEST_JWT_SECRET, { sub: 'head', tenant: ten, scope: `admin ${PUBLISHER}` }, 600),
    })
    expect(await admin.addTopicMembers('class:7A', ['kim', 'lee'])).toBe(2)
    expect(await admin.topicMembers('class:7A')).toEqual(['kim', 'lee'])
    const stream = await SseClient.open(t.url, { token: mintToken(TEST_JWT_SECRET, { sub: 'kim', tenant: ten }, 600) })
    onTestFinished(() => stream.close())
    await stream.waitFor((c) => c.retry !== undefined)
    const { id } = await admin.publish({ type: 'class.news', title: 'Trip', to: { topics: ['class:7A'] } })
    await stream.waitFor((c) => c.notificationIds.includes(id))
    expect(await admin.removeTopicMembers('class:7A', ['lee', 'nobody'])).toBe(1)
    expect(await admin.topicMembers('class:7A')).toEqual(['kim'])
    const refused = await publisher(ten)
      .addTopicMembers('class:7A', ['max'])
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(refused).toMatchObject({ status: 403, type: 'urn:herald:problem:forbidden' })
  })

  it('mints a user token and a stream ticket that opens that user’s stream', async () => {
    const ten = tenant()
    const userToken = mintToken(TEST_JWT_SECRET, { sub: 'kim', tenant: ten }, 600)
    const { ticket, expiresIn } = await publisher(ten).streamTicket(userToken)
    expect(expiresIn).toBe(30)
    const stream = await SseClient.open(t.url, { ticket })
    onTestFinished(() => stream.close())
    expect(stream.status).toBe(200)
    await stream.waitFor((c) => c.retry !== undefined)
    const { id } = await publisher(ten).publish({ type: 'a.b', title: 'Hi', to: { users: ['kim'] } })
    await stream.waitFor((c) => c.notificationIds.includes(id))
  })
})
