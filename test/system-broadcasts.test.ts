import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHeraldServerClient, type HeraldError } from '../src/client/index.ts'
import { everyTenant } from '../src/events/system-broadcasts.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { runToEnd } from './helpers/process.ts'
import { expectProblem, PUSH_CONFIG, payloadOf, service, usePushService, waitForPush } from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 20, part 4: platform broadcasts. An operator (scope events:system) publishes one event into many tenants;
// each tenant gets a copy of its own, and one statement inserts the copies of up to 1,000 tenants.

usePushService()

const auth = (token: string) => ({ authorization: `Bearer ${token}` })
let schools = 0

interface BroadcastAnswer {
  tenants: number
  createdAt: string | null
  events: Array<{ tenant: string; id: string }>
}

describeEachBackend('platform broadcasts', (backend) => {
  let t: TestApp
  let operator: string
  const streams: SseClient[] = []

  /** A school of its own: its admin, and helpers for its users. */
  function school(name = 'school') {
    const tenant = `${name}-${process.pid}-${++schools}`
    const admin = t.token({ sub: 'head', tenant, scope: `admin ${PUBLISHER}` })
    const user = (sub: string) => t.token({ sub, tenant })
    return { tenant, admin, user }
  }
  const open = async (token: string) => {
    const c = await SseClient.open(t.url, { token })
    streams.push(c)
    expect(c.status, c.body).toBe(200)
    await c.waitFor((s) => s.raw.startsWith('retry:'), 5_000, 'the stream to open')
    return c
  }
  const registerDevice = async (token: string) => {
    const subscription = service.createSubscription()
    const res = await t.http().post('/v1/push/subscriptions').set(auth(token)).send(subscription)
    expect(res.status, res.text).toBe(201)
    return subscription.endpoint
  }
  const broadcast = (body: Record<string, unknown>, as = operator, key?: string) => {
    const request = t.http().post('/v1/system/events').set(auth(as))
    if (key) request.set('idempotency-key', key)
    return request.send({ type: 'system.maintenance', title: 'Maintenance tonight', to: { tenant: true }, ...body })
  }
  const published = async (body: Record<string, unknown>): Promise<BroadcastAnswer> => {
    const res = await broadcast(body)
    expect(res.status, res.text).toBe(201)
    return res.body as BroadcastAnswer
  }
  const idIn = (answer: BroadcastAnswer, tenant: string) => answer.events.find((e) => e.tenant === tenant)?.id

  beforeAll(async () => {
    t = await startApp(backend, { config: PUSH_CONFIG, pushAgent: service.agent })
    operator = t.token({ sub: 'ops-alice', tenant: 'platform', scope: 'events:system' })
  })
  afterAll(async () => {
    for (const c of streams) c.close()
    await t?.close()
  })

  it('reaches the streams and devices of exactly the tenants listed, each with its own event id', async () => {
    const [a, b, c] = [school(), school(), school()]
    const streamA = await open(a.user('pupil'))
    const streamB = await open(b.user('pupil'))
    const streamC = await open(c.user('pupil'))
    const deviceA = await registerDevice(a.user('parent'))
    const deviceB = await registerDevice(b.user('parent'))
    const deviceC = await registerDevice(c.user('parent'))

    const answer = await published({ tenants: [a.tenant, b.tenant, a.tenant], priority: 'urgent' })
    expect(answer.tenants).toBe(2)
    expect(answer.events.map((e) => e.tenant)).toEqual([a.tenant, b.tenant]) // as listed, duplicates once
    const [idA, idB] = [idIn(answer, a.tenant), idIn(answer, b.tenant)]
    expect(idA).not.toBe(idB)

    await streamA.waitForNotifications(1)
    await streamB.waitForNotifications(1)
    expect(streamA.notificationIds).toEqual([idA])
    expect(streamB.notificationIds).toEqual([idB])
    expect((await waitForPush(deviceA, idA as string)).json()).toMatchObject({ title: 'Maintenance tonight' })
    expect(payloadOf(await waitForPush(deviceB, idB as string)).id).toBe(idB)

    // The third school hears nothing: a later event of its own is the first its stream and device get.
    const own = await t
      .http()
      .post('/v1/events')
      .set(auth(c.admin))
      .send({
        type: 'school.news',
        title: 'Our own news',
        to: { tenant: true },
        priority: 'urgent',
      })
    expect(own.status, own.text).toBe(201)
    await streamC.waitForNotifications(1)
    expect(streamC.notificationIds).toEqual([own.body.id])
    await waitForPush(deviceC, own.body.id)
    expect(service.messagesFor(deviceC).map((m) => payloadOf(m).id)).toEqual([own.body.id])
  })

  it('each tenant acks, reads and follows its own copy, which names no other tenant', async () => {
    const [a, b] = [school('north'), school('south')]
    const streamA = await open(a.user('pupil'))
    await open(b.user('pupil'))
    await t.app.userClaims.flush() // the pupils are known users of their schools (recipients) from now
    const answer = await published({ tenants: [a.tenant, b.tenant], data: { window: '22:00-23:00' } })
    const [idA, idB] = [idIn(answer, a.tenant) as string, idIn(answer, b.tenant) as string]
    await streamA.waitForNotifications(1)

    // The event as the tenant sees it (stream, inbox, status, roll-call): its own id, the operator as actor.
    const frame = streamA.events.find((e) => e.event === 'notification')?.data ?? ''
    expect(JSON.parse(frame)).toMatchObject({ id: idA, title: 'Maintenance tonight', data: { window: '22:00-23:00' } })
    const inbox = await t
      .http()
      .get(`/v1/events/${idA}`)
      .set(auth(a.user('pupil')))
    expect(inbox.status, inbox.text).toBe(200)
    const read = await t
      .http()
      .post(`/v1/events/${idA}/read`)
      .set(auth(a.user('pupil')))
    expect(read.status, read.text).toBe(204)
    const status = await t.http().get(`/v1/events/${idA}/status`).set(auth(a.admin))
    expect(status.status, status.text).toBe(200)
    expect(status.body).toMatchObject({ read: 1, recipients: { recipients: 1, read: 1, unread: 0 } })
    const rollCall = await t.http().get(`/v1/events/${idA}/recipients`).set(auth(a.admin))
    expect(rollCall.status, rollCall.text).toBe(200)
    for (const text of [frame, inbox.text, status.text, rollCall.text]) {
      expect(text).not.toContain(b.tenant)
      expect(text).not.toContain('tenants')
    }

    // The other school's copy is untouched by the first one's read, and not reachable from the first school.
    const statusB = await t.http().get(`/v1/events/${idB}/status`).set(auth(b.admin))
    expect(statusB.body).toMatchObject({ read: 0, acked: 0 })
    expect(
      (
        await t
          .http()
          .get(`/v1/events/${idB}`)
          .set(auth(a.user('pupil')))
      ).status,
    ).toBe(404)
    expect((await t.http().get(`/v1/events/${idB}/status`).set(auth(a.admin))).status).toBe(404)
    const ack = await t
      .http()
      .post(`/v1/events/${idB}/ack`)
      .set(auth(b.user('pupil')))
    expect(ack.status, ack.text).toBe(204)
    expect((await t.http().get(`/v1/events/${idB}/status`).set(auth(b.admin))).body).toMatchObject({ acked: 1 })
  })

  it('"*" reaches every tenant known by the directory, by tokens seen, and by devices', async () => {
    const [listed, signedIn, withDevice] = [school('listed'), school('signed-in'), school('device')]
    const put = await t
      .http()
      .put('/v1/directory/users/never-signed-in')
      .set(auth(listed.admin))
      .send({ roles: [], topics: [] })
    expect(put.status, put.text).toBeLessThan(300)
    const stream = await open(signedIn.user('pupil'))
    const device = await registerDevice(withDevice.user('parent'))
    await t.app.userClaims.flush()

    const answer = await published({ tenants: '*', priority: 'urgent' })
    const known = answer.events.map((e) => e.tenant)
    expect(known).toEqual(expect.arrayContaining([listed.tenant, signedIn.tenant, withDevice.tenant, 'platform']))
    expect(answer.tenants).toBe(new Set(known).size)

    const rollCall = await t
      .http()
      .get(`/v1/events/${idIn(answer, listed.tenant)}/recipients`)
      .set(auth(listed.admin))
    expect(rollCall.body.recipients.map((r: { userId: string }) => r.userId)).toContain('never-signed-in')
    await stream.waitFor((s) => s.notificationIds.includes(idIn(answer, signedIn.tenant) as string))
    await waitForPush(device, idIn(answer, withDevice.tenant) as string)
  })

  it('"*" finds the tenants of each table the service knows them by, through one query', async () => {
    const only = (table: string) => `only-${table}-${process.pid}`
    const { database } = t
    await database.query(sql`insert into directory_users (tenant, user_id) values (${only('directory')}, 'u')`)
    await database.query(
      sql`insert into user_claims (tenant, user_id, expires_at) values (${only('claims')}, 'u', now() + interval '1 hour')`,
    )
    await database.query(sql`insert into push_subscriptions (tenant, user_id, endpoint, p256dh, auth, renew_token_hash)
      values (${only('devices')}, 'u', 'https://push.example/x', 'k', 'a', 'h')`)
    await database.query(sql`insert into stream_presence (instance_id, tenant, user_id)
      select id, ${only('presence')}, 'u' from instances limit 1`)
    const res = await t
      .http()
      .post('/v1/events')
      .set(auth(t.token({ sub: 'app', tenant: only('events'), scope: PUBLISHER })))
      .send({ type: 'app.news', title: 'x', to: { users: ['u'] } })
    expect(res.status, res.text).toBe(201)
    const tenants = await everyTenant(database)
    for (const table of ['directory', 'claims', 'devices', 'presence', 'events']) expect(tenants).toContain(only(table))
    expect(new Set(tenants).size).toBe(tenants.length)
  })

  it('an Idempotency-Key replays the first answer (200), and refuses another request with it (422)', async () => {
    const [a, b] = [school(), school()]
    const first = await broadcast({ tenants: [a.tenant, b.tenant] }, operator, 'outage-42')
    expect(first.status, first.text).toBe(201)
    const again = await broadcast({ tenants: [a.tenant, b.tenant] }, operator, 'outage-42')
    expect(again.status, again.text).toBe(200)
    expect(again.body.events).toEqual(first.body.events)
    expectProblem(await broadcast({ tenants: [a.tenant] }, operator, 'outage-42'), 422)
  })

  it('the backend client’s publishSystem and `herald system publish` publish into the tenants named', async () => {
    const [a, b] = [school(), school()]
    const client = createHeraldServerClient({ baseUrl: t.url, token: operator })
    const sent = await client.publishSystem(
      { tenants: [a.tenant, b.tenant], type: 'system.outage', title: 'Outage', to: { tenant: true } },
      { idempotencyKey: 'client-1' },
    )
    expect(sent).toMatchObject({ tenants: 2, replayed: false })
    const again = await client.publishSystem(
      { tenants: [a.tenant, b.tenant], type: 'system.outage', title: 'Outage', to: { tenant: true } },
      { idempotencyKey: 'client-1' },
    )
    expect(again).toMatchObject({ replayed: true, events: sent.events })
    const refused = await createHeraldServerClient({ baseUrl: t.url, token: a.admin })
      .publishSystem({ tenants: '*', type: 'system.outage', title: 'x', to: { tenant: true } })
      .catch((err: HeraldError) => err)
    expect(refused).toMatchObject({ status: 403 })

    const run = await runToEnd('src/cli.ts', [
      'system',
      'publish',
      '--tenants',
      `${a.tenant},${b.tenant}`,
      '--title',
      'Maintenance at 22:00',
      '--priority',
      'high',
      '--server',
      t.url,
      '--token',
      operator,
    ])
    expect(run.code, run.stderr).toBe(0)
    const printed = JSON.parse(run.stdout) as BroadcastAnswer
    expect(printed.events.map((e) => e.tenant)).toEqual([a.tenant, b.tenant])
    const event = await t
      .http()
      .get(`/v1/events/${idIn(printed, b.tenant)}`)
      .set(auth(b.user('pupil')))
    expect(event.body).toMatchObject({ type: 'system.notice', title: 'Maintenance at 22:00', priority: 'high' })
    const usage = await runToEnd('src/cli.ts', ['system', 'publish', '--title', 'x', '--token', operator])
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain('--tenants a,b or --all')
  })

  describe('who may, and what is refused', () => {
    it('a tenant admin or broadcaster cannot publish across tenants (403)', async () => {
      const a = school()
      const res = await broadcast({ tenants: [a.tenant] }, a.admin)
      expect(expectProblem(res, 403).detail).toContain('events:system')
      const own = t.token({ sub: 'x', tenant: a.tenant, scope: `admin events:publish events:broadcast` })
      expectProblem(await broadcast({ tenants: '*' }, own), 403)
      expectProblem(await t.http().post('/v1/system/events').send({}), 401)
    })

    it.each([
      ['an empty list', { tenants: [] }, 'body.tenants', 'at least one tenant'],
      ['a tenant name that cannot be stored', { tenants: ['ok', 'bad\u0000name'] }, 'body.tenants.1', 'NUL'],
      ['an empty tenant name', { tenants: [''] }, 'body.tenants.0', ''],
      [
        'more tenants than the limit',
        { tenants: Array.from({ length: 10_001 }, (_, i) => `t${i}`) },
        'body.tenants',
        'at most 10000',
      ],
      ['neither "*" nor a list', { tenants: 'all' }, 'body.tenants', 'must be "*"'],
      ['no tenants', { tenants: undefined }, 'body.tenants', ''],
      ['no title', { tenants: ['a'], title: undefined }, 'body.title', ''],
      ['live-only', { tenants: ['a'], store: false }, 'body.store', 'always stored'],
      ['no audience', { tenants: ['a'], to: {} }, 'body.to', 'at least one audience'],
      [
        'an escalation past the ttl',
        { tenants: ['a'], ttl: 60, escalate: { after: 120 } },
        'body.escalate.after',
        'ttl',
      ],
    ])('%s is a 400 naming the field', async (_what, body, path, message) => {
      const problem = expectProblem(await broadcast(body), 400)
      const error = problem.errors?.find((e) => e.path === path)
      expect(error, JSON.stringify(problem.errors)).toBeDefined()
      expect(error?.message).toContain(message)
    })
  })

  describe('1,000 tenants', () => {
    const many = (n: number, prefix: string) =>
      Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(4, '0')}`)

    it('are published by one statement: one transaction, consecutive ids, every tenant’s recipients resolved', async () => {
      const tenants = many(1_000, `bulk-${process.pid}`)
      // Three listed users in each school, as a directory import would leave them.
      await t.database.query(sql`insert into directory_users (tenant, user_id)
        select t.tenant, u.user_id from unnest(${`{${tenants.join(',')}}`}::text[]) as t(tenant)
        cross join (values ('ann'), ('bob'), ('cy')) as u(user_id)`)
      const started = performance.now()
      const answer = await published({ tenants })
      const ms = performance.now() - started
      console.log(`[${backend}] a broadcast to 1,000 tenants (3,000 recipients) took ${ms.toFixed(0)} ms`)

      expect(answer.tenants).toBe(1_000)
      expect(answer.events.map((e) => e.tenant)).toEqual(tenants)
      const ids = answer.events.map((e) => Number(e.id))
      expect(ids).toEqual(ids.map((_, i) => ids[0] + i)) // one insert, in the order listed
      const [row] = await t.database.query<{ stamps: number; recipients: number; actors: number }>(sql`
        select count(distinct e.created_at)::int as stamps, count(distinct e.actor)::int as actors,
          sum(cardinality(r.user_ids))::int as recipients
        from events e join event_recipients r on r.event_id = e.id
        where e.id between ${ids[0]} and ${ids[ids.length - 1]}`)
      expect(row).toEqual({ stamps: 1, actors: 1, recipients: 3_000 })
    })

    it('more than 1,000 go in chunks of 1,000, still one transaction: all or none', async () => {
      const tenants = many(1_001, `chunked-${process.pid}`)
      const started = performance.now()
      const answer = await published({ tenants, to: { roles: ['staff'] } })
      console.log(
        `[${backend}] a broadcast to 1,001 tenants (two statements) took ${(performance.now() - started).toFixed(0)} ms`,
      )
      expect(answer.tenants).toBe(1_001)
      const ids = answer.events.map((e) => Number(e.id))
      const [row] = await t.database.query<{ stamps: number }>(sql`
        select count(distinct created_at)::int as stamps from events where id in (select unnest(${`{${ids.join(',')}}`}::bigint[]))`)
      expect(row.stamps).toBe(1)
    })
  })
})
