import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

// Stream tickets: a browser's EventSource opens its stream with a single-use ticket instead of the JWT in the URL.

describeEachBackend('stream tickets', (backend) => {
  let t: TestApp
  let n = 0
  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(async () => {
    await t?.close()
  })

  const tenant = () => `tickets-${backend}-${++n}`
  async function ticketFor(token: string) {
    const res = await t.http().post('/v1/stream/tickets').set('authorization', `Bearer ${token}`)
    expect(res.status, res.text).toBe(201)
    return res.body as { ticket: string; expiresIn: number }
  }
  async function open(ticket: string, options: { topics?: string[] } = {}) {
    const stream = await SseClient.open(t.url, { ticket, ...options })
    onTestFinished(() => stream.close())
    return stream
  }
  async function publish(ten: string, body: Record<string, unknown>) {
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'office', tenant: ten, scope: PUBLISHER })}`)
      .send({ type: 'test.ticket', title: 'Hello', ...body })
    expect(res.status, res.text).toBe(201)
    return res.body.id as string
  }

  it('a ticket (201, valid 30 s) opens the stream of the user it was issued to, with that token’s topics', async () => {
    const ten = tenant()
    const issued = await ticketFor(t.token({ sub: 'ana', tenant: ten, topics: ['class:*'] }))
    expect(issued.expiresIn).toBe(30)
    expect(issued.ticket).toMatch(/^[A-Za-z0-9_-]{40,}$/)
    const stream = await open(issued.ticket, { topics: ['class:7A'] })
    expect(stream.status, stream.body).toBe(200)
    await stream.waitFor((c) => c.retry !== undefined)
    const mine = await publish(ten, { to: { users: ['ana'] } })
    const topic = await publish(ten, { to: { topics: ['class:7A'] } })
    await publish(ten, { to: { users: ['ben'] } })
    const marker = await publish(ten, { to: { users: ['ana'] } })
    await stream.waitFor((c) => c.notificationIds.includes(marker))
    expect(stream.notificationIds).toEqual([mine, topic, marker])
  })

  it('opens one stream only: the same ticket again is 401, and so are unknown and expired tickets', async () => {
    const ten = tenant()
    const { ticket } = await ticketFor(t.token({ sub: 'ana', tenant: ten }))
    expect((await open(ticket)).status).toBe(200)
    const again = await open(ticket)
    expect(again.status).toBe(401)
    expect(JSON.parse(again.body)).toMatchObject({
      status: 401,
      detail: expect.stringMatching(/used already, or expired/),
    })
    expect((await open('no-such-ticket')).status).toBe(401)

    const stale = await ticketFor(t.token({ sub: 'ana', tenant: ten }))
    await t.database.query(sql`update stream_tickets set expires_at = now() - interval '1 second'`)
    expect((await open(stale.ticket)).status).toBe(401)
  })

  it('a ticket is issued only for a valid token (401), and its stream ends when that token expires', async () => {
    expect((await t.http().post('/v1/stream/tickets')).status).toBe(401)
    expect((await t.http().post('/v1/stream/tickets').set('authorization', 'Bearer nonsense')).status).toBe(401)
    const { ticket } = await ticketFor(t.token({ sub: 'ana', tenant: tenant() }, 2))
    const stream = await open(ticket)
    expect(stream.status).toBe(200)
    await stream.waitFor((c) => c.ended, 10_000, 'the stream to end with its token')
  })

  it('topics the token behind the ticket does not allow are 403, as with the token itself', async () => {
    const { ticket } = await ticketFor(t.token({ sub: 'ana', tenant: tenant(), topics: ['class:7A'] }))
    expect((await open(ticket, { topics: ['class:7B'] })).status).toBe(403)
  })
})
