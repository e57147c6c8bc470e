import https from 'node:https'
import { sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import { settleDue } from '../src/events/escalation.ts'
import { BLOCK_IDS, blockOf, blockStatements, existingBlocks } from '../src/events/log-blocks.ts'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startApp, startInstanceOn, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import {
  createPostgresDatabase,
  describeEachBackend,
  describePostgres,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import { TestClock } from './helpers/clock.ts'
import { sleep } from './helpers/push-fixtures.ts'
import { startWebhookReceiver, type WebhookReceiver } from './helpers/webhook-receiver.ts'

// Issue 19, part 4 (and the event webhooks of part 3): an urgent event still unread after `escalate.after` is reported
// once per recipient as an `event.unread` webhook, for the school's SMS gateway; publishes, reads and acks are
// reported as they happen. Webhooks arrive at a local HTTPS receiver that verifies every signature.

let receiver: WebhookReceiver
beforeAll(async () => {
  receiver = await startWebhookReceiver()
})
afterAll(async () => {
  await receiver?.close()
})

let tenants = 0
const auth = (token: string) => ({ authorization: `Bearer ${token}` })

/** A tenant with an endpoint for `events`, and helpers to publish and read as its people. */
async function school(t: TestApp, events: string[]) {
  const tenant = `escalation-${process.pid}-${++tenants}`
  const admin = t.token({ sub: 'head', tenant, scope: `admin ${PUBLISHER}` })
  const url = receiver.url()
  const created = await t.http().post('/v1/webhooks').set(auth(admin)).send({ url, events })
  expect(created.status, created.text).toBe(201)
  receiver.expect(url, created.body.secret)
  const user = (sub: string) => t.token({ sub, tenant })
  return {
    tenant,
    admin,
    url,
    user,
    endpointId: created.body.id as string,
    async publish(body: Record<string, unknown>): Promise<string> {
      const res = await t
        .http()
        .post('/v1/events')
        .set(auth(admin))
        .send({ type: 'school.closed', title: 'School closes at noon', priority: 'urgent', ...body })
      expect(res.status, res.text).toBe(201)
      return res.body.id as string
    },
    mark: async (id: string, sub: string, state: 'read' | 'ack') =>
      expect(
        (
          await t
            .http()
            .post(`/v1/events/${id}/${state}`)
            .set(auth(user(sub)))
        ).status,
      ).toBe(204),
    /** The verified deliveries of one type that reached the endpoint. */
    received: (type: string) => receiver.receivedAt(url).filter((r) => r.payload.type === type),
  }
}

describeEachBackend('escalation and event webhooks', (backend) => {
  let t: TestApp
  const clock = new TestClock()

  beforeAll(async () => {
    t = await startApp(backend, {
      config: { WEBHOOK_URL_ALLOWLIST: receiver.allowlistEntry },
      pushAgent: new https.Agent({ ca: receiver.ca }),
      clock: clock.now,
    })
  })
  afterAll(async () => {
    await t?.close()
  })
  afterEach(() => clock.reset())

  /** Moves the clock `seconds` past now and runs the escalations due by it. */
  const escalateAfter = async (seconds: number) => {
    clock.setTo(Date.now() + seconds * 1000)
    return t.app.escalator.runDue()
  }

  it('after `after` seconds, each recipient who has not read the event is reported once, naming the user and the event', async () => {
    const s = await school(t, ['event.unread'])
    const directory = await t
      .http()
      .put('/v1/directory/users/ada')
      .set(auth(s.admin))
      .send({ roles: ['parent'], topics: [], displayName: 'Ada Lovelace', locale: 'en-GB' })
    expect(directory.status, directory.text).toBeLessThan(300)
    const id = await s.publish({ to: { users: ['ada', 'bob', 'cy'] }, escalate: { after: 900 } })
    await s.mark(id, 'bob', 'read')
    await s.mark(id, 'cy', 'ack') // acked from a notification, not read: still reported

    expect(await escalateAfter(899)).toBe(0)
    expect(await escalateAfter(901)).toBe(2)
    const reports = await receiver.waitFor(
      () => (s.received('event.unread').length >= 2 ? s.received('event.unread') : undefined),
      'two event.unread webhooks',
    )
    const byUser = Object.fromEntries(reports.map((r) => [r.payload.data.userId, r.payload.data]))
    expect(Object.keys(byUser).sort()).toEqual(['ada', 'cy'])
    expect(byUser.ada).toEqual({
      eventId: id,
      tenant: s.tenant,
      userId: 'ada',
      unless: 'read',
      event: {
        id,
        type: 'school.closed',
        title: 'School closes at noon',
        body: null,
        priority: 'urgent',
        createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      },
      user: { displayName: 'Ada Lovelace', locale: 'en-GB' },
    })
    expect(byUser.cy.user).toBeNull()

    // Run again, and again later: nobody is reported twice.
    expect(await escalateAfter(2_000)).toBe(0)
    await sleep(700)
    expect(s.received('event.unread')).toHaveLength(2)
    const status = await t.http().get(`/v1/events/${id}/status`).set(auth(s.admin))
    expect(status.body.recipients).toMatchObject({ recipients: 3, read: 1, unread: 2 })
  })

  it('`unless: "acked"` reports only those who have not acked it', async () => {
    const s = await school(t, ['event.unread'])
    const id = await s.publish({ to: { users: ['ada', 'bob'] }, escalate: { after: 60, unless: 'acked' } })
    await s.mark(id, 'bob', 'ack')
    expect(await escalateAfter(61)).toBe(1)
    const [report] = await receiver.waitFor(
      () => (s.received('event.unread').length ? s.received('event.unread') : undefined),
      'the event.unread webhook',
    )
    expect(report.payload.data).toMatchObject({ userId: 'ada', unless: 'acked' })
  })

  it('a recall before `after` cancels the escalation for everyone', async () => {
    const s = await school(t, ['event.unread'])
    const id = await s.publish({ to: { users: ['ada', 'bob'] }, escalate: { after: 60 } })
    expect((await t.http().delete(`/v1/events/${id}`).set(auth(s.admin))).status).toBe(204)
    expect(await escalateAfter(61)).toBe(0)
    await sleep(700)
    expect(s.received('event.unread')).toEqual([])
  })

  // The settling statement names the event ids from the first due one on, so PostgreSQL plans it over those blocks
  // of the log only: over every block, a plan took 41-147 ms to make on a log of 91 daily blocks.
  it('escalations due in an older and a newer block of the log are both reported; each pass plans only the blocks from its first due event on', async () => {
    const s = await school(t, ['event.unread'])
    const older = await s.publish({ to: { users: ['ada'] }, escalate: { after: 900 } })
    // Two days on, the log writes to a block two blocks later (log-blocks.ts moves the id sequence each day).
    const newest = blockOf(Number(older)) + 2
    const have = new Set(await existingBlocks(t.database))
    for (let block = blockOf(Number(older)) + 1; block <= newest + 1; block++) {
      if (!have.has(block)) for (const statement of blockStatements(block)) await t.database.query(sql.raw(statement))
    }
    await t.database.query(sql`select setval(pg_get_serial_sequence('events', 'id'), ${newest * BLOCK_IDS - 1})`)
    const newer = await s.publish({ to: { users: ['bob'] }, escalate: { after: 900 } })
    expect(blockOf(Number(newer))).toBe(newest)

    /** The blocks of the log that the settling statement's plan reads, given `first`. */
    const plannedBlocks = async (first: string) => {
      const plan = await t.database.query<{ 'QUERY PLAN': string }>(sql`explain ${settleDue(new Date(), first)}`)
      const text = plan.map((r) => r['QUERY PLAN']).join('\n')
      return [
        ...new Set([...text.matchAll(/\b(?:events|event_recipients|receipts)_b(\d+)\b/g)].map((m) => Number(m[1]))),
      ]
    }
    // The newest block, and the one kept ready after it: none before.
    expect(Math.min(...(await plannedBlocks(newer)))).toBe(newest)
    expect(Math.min(...(await plannedBlocks(older)))).toBe(blockOf(Number(older)))

    expect(await escalateAfter(901)).toBe(2)
    const reports = await receiver.waitFor(
      () => (s.received('event.unread').length >= 2 ? s.received('event.unread') : undefined),
      'two event.unread webhooks',
    )
    expect(reports.map((r) => [r.payload.data.userId, r.payload.data.eventId]).sort()).toEqual([
      ['ada', older],
      ['bob', newer],
    ])
  })

  it('an event without `escalate` is never reported', async () => {
    const s = await school(t, ['event.unread'])
    await s.publish({ to: { users: ['ada'] } })
    expect(await escalateAfter(30 * 24 * 3600)).toBe(0)
  })

  it('publishes, reads and acks are reported as they happen, each once', async () => {
    const s = await school(t, ['event.published', 'event.read', 'event.acked'])
    const id = await s.publish({ to: { users: ['ada', 'bob'] }, data: { room: 12 } })
    const [published] = await receiver.waitFor(
      () => (s.received('event.published').length ? s.received('event.published') : undefined),
      'event.published',
    )
    expect(published.payload.data).toMatchObject({
      recipients: 2,
      event: { id, type: 'school.closed', title: 'School closes at noon', data: { room: 12 }, actor: 'head' },
    })
    expect(published.id).toMatch(/^msg_[0-9a-f]{32}$/)

    await s.mark(id, 'ada', 'read')
    await s.mark(id, 'ada', 'read') // again: the same message, not a second one
    await s.mark(id, 'bob', 'ack')
    await receiver.waitFor(
      () => s.received('event.read').length >= 1 && s.received('event.acked').length >= 2,
      'the read and the two acks',
    )
    await sleep(700)
    expect(s.received('event.read').map((r) => r.payload.data)).toEqual([
      { eventId: id, tenant: s.tenant, userId: 'ada', at: expect.stringMatching(/Z$/) },
    ])
    expect(
      s
        .received('event.acked')
        .map((r) => r.payload.data.userId)
        .sort(),
    ).toEqual(['ada', 'bob'])
  })

  it('escalate input: each bad value gets a 400 naming its field, and nothing is published', async () => {
    const s = await school(t, ['event.published'])
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ after: 5 }, /body\.escalate\.after/],
      [{ after: 3_600 }, /body\.escalate\.after: must be shorter than the event's ttl \(600 s\)/],
      [{ after: 60, unless: 'seen' }, /body\.escalate\.unless/],
      [{ after: 60, sms: true }, /body\.escalate/],
      [{ unless: 'read' }, /body\.escalate\.after/],
    ]
    for (const [escalate, detail] of cases) {
      const res = await t
        .http()
        .post('/v1/events')
        .set(auth(s.admin))
        .send({ type: 'school.closed', title: 'x', to: { users: ['ada'] }, ttl: 600, escalate })
      expect(res.status, JSON.stringify(escalate)).toBe(400)
      expect(res.body.detail).toMatch(detail)
    }
    await sleep(500)
    expect(s.received('event.published')).toEqual([])
  })
})

describePostgres('escalation across two instances on one PostgreSQL database', () => {
  let url: string
  const apps: Array<Awaited<ReturnType<typeof startInstanceOn>>> = []

  beforeAll(async () => {
    url = await createPostgresDatabase()
    const config = { WEBHOOK_URL_ALLOWLIST: receiver.allowlistEntry }
    const agent = { pushAgent: new https.Agent({ ca: receiver.ca }) }
    apps.push(await startInstanceOn(url, config, agent), await startInstanceOn(url, config, agent))
  })
  afterAll(async () => {
    for (const a of apps) await a.close()
    await dropPostgresDatabase(url)
  })

  it('both instances escalating at once report each recipient exactly once', async () => {
    const [a, b] = apps
    const tenant = `escalation-across-${process.pid}`
    const admin = mintToken(TEST_JWT_SECRET, { sub: 'head', tenant, scope: `admin ${PUBLISHER}` })
    const users = Array.from({ length: 100 }, (_, i) => `parent-${i}`)
    const ids: string[] = []
    for (let i = 0; i < 3; i++) {
      const res = await a
        .http()
        .post('/v1/events')
        .set(auth(admin))
        .send({ type: 'school.closed', title: `Closed ${i}`, to: { users }, escalate: { after: 60 } })
      expect(res.status, res.text).toBe(201)
      ids.push(res.body.id)
    }
    const hook = receiver.url()
    const created = await a
      .http()
      .post('/v1/webhooks')
      .set(auth(admin))
      .send({ url: hook, events: ['event.unread'] })
    expect(created.status, created.text).toBe(201)
    receiver.expect(hook, created.body.secret)
    // Due now, as time would make them (the instances run on real time).
    await a.app.database.query(sql`update event_recipients set escalate_at = now() - interval '1 second'`)
    const [fromA, fromB] = await Promise.all([a.app.escalator.runDue(), b.app.escalator.runDue()])
    expect(fromA + fromB).toBe(300)
    const rows = await a.app.database.query<{ n: string | number; distinct_ids: string | number }>(
      sql`select count(*) as n, count(distinct msg_id) as distinct_ids from webhook_deliveries where type = 'event.unread'`,
    )
    expect(Number(rows[0].n)).toBe(300)
    expect(Number(rows[0].distinct_ids)).toBe(300)
    // And the receiver gets each (event, user) once.
    await receiver.waitFor(() => receiver.receivedAt(hook).length >= 300, '300 event.unread webhooks', 30_000)
    const keys = receiver.receivedAt(hook).map((r) => `${r.payload.data.eventId}:${r.payload.data.userId}`)
    expect(new Set(keys).size).toBe(300)
  })
})
