import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { createHeraldServerClient, HeraldError } from '../src/client/index.ts'
import { prune } from '../src/events/retention.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { until } from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Issue 20, part 5: every stream opened is recorded (who, from where, on which instance, when it opened and closed
// and why), and a tenant's admins read their own tenant's at GET /v1/audit/connections.

interface Connection {
  id: string
  user: string
  instance: string
  openedAt: string
  closedAt: string | null
  closeReason: string | null
  userAgent: string | null
  clientIp: string | null
}

let tenants = 0

describeEachBackend('connection audit', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    // The service sits behind a proxy on this machine: the client's address comes from X-Forwarded-For.
    t = await startApp(backend, { config: { TRUST_PROXY: '127.0.0.1' } })
  })
  afterAll(() => t.close())

  const school = () => {
    const tenant = `audit-${process.pid}-${++tenants}`
    return {
      tenant,
      admin: t.token({ sub: 'head', tenant, scope: `admin ${PUBLISHER}` }),
      user: (sub: string) => t.token({ sub, tenant }),
    }
  }
  const list = (token: string, query: Record<string, string | number> = {}) =>
    t
      .http()
      .get('/v1/audit/connections')
      .query(query)
      .set({ authorization: `Bearer ${token}` })
  const connectionsOf = async (token: string, query: Record<string, string | number> = {}) => {
    const res = await list(token, query)
    expect(res.status, res.text).toBe(200)
    return res.body.connections as Connection[]
  }

  it('records a stream with its user agent, client address (through TRUST_PROXY), instance, and why it closed', async () => {
    const s = school()
    const userAgent = `Mozilla/5.0 (audit test) ${'x'.repeat(400)}`
    const stream = await SseClient.open(t.url, {
      token: s.user('ana'),
      headers: { 'user-agent': userAgent, 'x-forwarded-for': '203.0.113.7' },
    })
    expect(stream.status).toBe(200)
    // Recorded while open (within about a second), not closed yet.
    const [open] = await until(async () => {
      const rows = await connectionsOf(s.admin)
      return rows.length ? rows : undefined
    }, 'the open stream in the audit')
    expect(open).toMatchObject({
      user: 'ana',
      instance: t.app.presence.instanceId,
      closedAt: null,
      closeReason: null,
      clientIp: '203.0.113.7',
    })
    expect(open.userAgent).toBe(userAgent.slice(0, 256))
    expect(Date.now() - Date.parse(open.openedAt)).toBeLessThan(30_000)

    stream.close()
    const [closed] = await until(async () => {
      const rows = await connectionsOf(s.admin)
      return rows[0]?.closedAt ? rows : undefined
    }, 'the close in the audit')
    expect(closed.id).toBe(open.id)
    expect(closed.closeReason).toBe('client')
    expect(Date.parse(closed.closedAt as string)).toBeGreaterThanOrEqual(Date.parse(open.openedAt))
  })

  it('shows a tenant its own connections only, newest first, a page at a time, one user at a time', async () => {
    const s = school()
    const other = school()
    const streams: SseClient[] = []
    for (const sub of ['u1', 'u2', 'u3']) {
      streams.push(await SseClient.open(t.url, { token: s.user(sub) }))
      await new Promise((r) => setTimeout(r, 5)) // distinct opening times
    }
    streams.push(await SseClient.open(t.url, { token: other.user('intruder') }))
    await t.app.connectionAudit.flush()

    const all = await connectionsOf(s.admin)
    expect(all.map((c) => c.user)).toEqual(['u3', 'u2', 'u1'])
    // Another tenant's admin sees theirs only; this tenant's never includes theirs.
    expect((await connectionsOf(other.admin)).map((c) => c.user)).toEqual(['intruder'])

    const first = await list(s.admin, { limit: 2 })
    expect(first.body.connections.map((c: Connection) => c.user)).toEqual(['u3', 'u2'])
    expect(first.body.next).toEqual(expect.any(String))
    const second = await list(s.admin, { limit: 2, cursor: first.body.next })
    expect(second.body.connections.map((c: Connection) => c.user)).toEqual(['u1'])
    expect(second.body.next).toBeNull()

    expect((await connectionsOf(s.admin, { user: 'u2' })).map((c) => c.user)).toEqual(['u2'])
    // A period: none opened before an hour ago, all of them since.
    const hourAgo = new Date(Date.now() - 3_600_000).toISOString()
    expect(await connectionsOf(s.admin, { to: hourAgo })).toEqual([])
    expect(await connectionsOf(s.admin, { from: hourAgo })).toHaveLength(3)
    for (const stream of streams) stream.close()
  })

  it('is for admins: a token without the admin scope gets 403', async () => {
    const s = school()
    const res = await list(s.user('ana'))
    expect(res.status).toBe(403)
    expect(res.body.detail).toContain('admin')
  })

  it('answers bad parameters with a 400 naming the field', async () => {
    const s = school()
    const cases: Array<[Record<string, string | number>, string]> = [
      [{ from: 'yesterday' }, 'querystring.from'],
      [{ to: '2025-13-45' }, 'querystring.to'],
      [{ from: '2025-03-02', to: '2025-03-01' }, 'querystring.from'],
      [{ cursor: 'not-a-cursor' }, 'querystring.cursor'],
      [{ limit: 0 }, 'querystring.limit'],
      [{ limit: 1001 }, 'querystring.limit'],
    ]
    for (const [query, field] of cases) {
      const res = await list(s.admin, query)
      expect(res.status, JSON.stringify(query)).toBe(400)
      expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(field)
    }
  })

  it('is read by the backend client too (client.audit.connections, client.stats), with the same 400s', async () => {
    const s = school()
    const stream = await SseClient.open(t.url, { token: s.user('via-client') })
    await t.app.connectionAudit.flush()
    const client = createHeraldServerClient({ baseUrl: t.url, token: s.admin })
    const page = await client.audit.connections({ user: 'via-client', limit: 10 })
    expect(page.connections.map((c) => c.user)).toEqual(['via-client'])
    expect(page.next).toBeNull()
    const stats = await client.stats({ type: 'none-yet' })
    expect(stats.days).toEqual([])
    expect(stats.now).toEqual({ openStreams: 1, onlineUsers: 1 })
    const refused = await client.audit.connections({ from: 'soon' }).catch((err) => err)
    expect(refused).toBeInstanceOf(HeraldError)
    expect(refused.status).toBe(400)
    expect(refused.problem.errors.map((e: { path: string }) => e.path)).toEqual(['querystring.from'])
    stream.close()
  })

  it('is pruned after AUDIT_RETENTION_DAYS by the retention pass', async () => {
    const s = school()
    const stream = await SseClient.open(t.url, { token: s.user('recent') })
    await t.app.connectionAudit.flush()
    await t.database.query(sql`
      insert into stream_connections (id, tenant, user_id, instance_id, opened_at, closed_at, close_reason)
      values ('old-connection', ${s.tenant}, 'old', 'gone-instance', now() - interval '31 days',
        now() - interval '31 days', 'client')`)
    expect((await connectionsOf(s.admin)).map((c) => c.user)).toEqual(['recent', 'old'])
    const pruned = await prune(t.database, 365, 30)
    expect(pruned.connections).toBeGreaterThanOrEqual(1)
    expect((await connectionsOf(s.admin)).map((c) => c.user)).toEqual(['recent'])
    stream.close()
  })
})
