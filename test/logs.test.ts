import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { ackTokens } from '../src/push/ack-token.ts'
import { loadAckTokenSecret } from '../src/push/keys.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { startPushService } from './helpers/push-service.ts'
import { SseClient } from './helpers/sse.ts'

describeEachBackend('logs', (backend) => {
  let t: TestApp
  const lines: string[] = []
  beforeAll(async () => {
    t = await startApp(backend, {
      config: { PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*' },
      // trace: everything the service can log, so a leak at any level shows.
      log: { level: 'trace', stream: { write: (line: string) => void lines.push(line) } },
    })
  })
  afterAll(() => t.close())

  it('are JSON with request ids, one line per stream open and close, and never contain a token or a push key', async () => {
    const push = await startPushService()
    try {
      const userToken = t.token({ sub: 'noor' })
      const subscription = push.createSubscription()
      const registered = await t
        .http()
        .post('/v1/push/subscriptions')
        .set('authorization', `Bearer ${userToken}`)
        .send(subscription)
        .expect(201)
      const stream = await SseClient.open(t.url, { token: userToken, tokenInQuery: true })
      const published = await t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${t.token({ sub: 'office', scope: PUBLISHER })}`)
        .send({ type: 'x.y', to: { users: ['noor'] }, title: 'hello' })
        .expect(201)
      await stream.waitForNotifications(1)
      const ackToken = ackTokens(await loadAckTokenSecret(t.database)).sign(
        { tenant: 't1', userId: 'noor', eventId: Number(published.body.id) },
        60,
      )
      await t.http().post(`/v1/events/${published.body.id}/ack`).set('authorization', `Bearer ${ackToken}`).expect(204)
      await t.http().get('/v1/events?access_token=leaked').set('authorization', `Bearer ${userToken}`).expect(200)
      stream.close()
      await expect.poll(() => lines.some((l) => l.includes('"msg":"stream closed"'))).toBe(true)

      const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(parsed.length).toBeGreaterThan(10)
      expect(parsed.filter((l) => l.req).every((l) => typeof l.reqId === 'string')).toBe(true)
      const opened = parsed.find((l) => l.msg === 'stream opened')
      const closed = parsed.find((l) => l.msg === 'stream closed')
      expect(opened).toMatchObject({ user: 'noor', tenant: 't1' })
      expect(closed).toMatchObject({ user: 'noor', tenant: 't1', reason: 'client' })
      expect(typeof closed?.durationMs).toBe('number')
      // Both name the request that opened the stream.
      const streamRequest = parsed.find((l) =>
        String((l.req as { url?: string } | undefined)?.url).startsWith('/v1/stream'),
      )
      expect(typeof streamRequest?.reqId).toBe('string')
      expect([opened?.reqId, closed?.reqId]).toEqual([streamRequest?.reqId, streamRequest?.reqId])

      const text = lines.join('\n')
      const secrets = {
        userToken,
        ackToken,
        renewToken: registered.body.renewToken as string,
        p256dh: subscription.keys.p256dh,
        auth: subscription.keys.auth,
        queryToken: 'leaked',
      }
      for (const [name, secret] of Object.entries(secrets))
        expect(text.includes(secret), `${name} in the log`).toBe(false)
      expect(text).toContain('access_token=[redacted]')
      console.log(`${lines.length} log lines checked for ${Object.keys(secrets).length} kinds of secret`)
    } finally {
      await push.close()
    }
  })

  /** The request log line of `GET /health?case=<name>`, once logged. */
  async function healthRequestLine(name: string): Promise<{ reqId: string }> {
    const url = `/health?case=${name}`
    const find = () => lines.map((l) => JSON.parse(l)).find((l) => l.req?.url === url && l.msg === 'incoming request')
    await expect.poll(find).toBeDefined()
    return find()
  }

  const SAFE_ID = /^[A-Za-z0-9._:-]{1,64}$/
  const requestIds: Array<[string, boolean, string]> = [
    ['a safe id', true, 'client-req_42.retry:1'],
    ['64 characters', true, 'a'.repeat(64)],
    ['65 characters', false, 'b'.repeat(65)],
    ['500 characters', false, 'c'.repeat(500)],
    ['spaces and quotes', false, 'x", "level":60, "msg":"forged'],
    ['a tab', false, 'a\tb'],
    ['a Latin-1 letter', false, 'caf\u00e9'],
    ['a slash', false, '../../etc'],
  ]

  it.each(requestIds)('X-Request-Id with %s is the log’s request id: %s', async (name, kept, sent) => {
    const caseName = name.replaceAll(' ', '-')
    await t.http().get(`/health?case=${caseName}`).set('x-request-id', sent).expect(200)
    const { reqId } = await healthRequestLine(caseName)
    if (kept) expect(reqId).toBe(sent)
    else {
      expect(reqId).not.toBe(sent)
      expect(reqId).toMatch(SAFE_ID)
    }
  })

  it('an X-Request-Id trying to break the line never becomes a request id; every logged id is a safe token', async () => {
    // Written by hand: an HTTP client refuses to send a header value with a line break.
    for (const header of ['evil\r\n forged-by-fold', 'evil\n forged-by-lf', 'evil\r forged-by-cr']) {
      const socket = net.connect(Number(new URL(t.url).port), '127.0.0.1')
      socket.on('error', () => {})
      // Refused at once, or left waiting for the rest of a request that never comes: either way, not logged.
      socket.setTimeout(1_000, () => socket.destroy())
      socket.write(
        `GET /health?case=line-break HTTP/1.1\r\nHost: x\r\nX-Request-Id: ${header}\r\nConnection: close\r\n\r\n`,
      )
      await new Promise((resolve) => socket.on('close', resolve))
    }
    const ids = lines.map((l) => JSON.parse(l).reqId).filter((id) => id !== undefined)
    expect(ids.length).toBeGreaterThan(0)
    for (const id of ids) expect(id).toMatch(SAFE_ID)
    expect(lines.join('\n')).not.toContain('forged-by')
  })

  it('a failed presence update is one warning per statement, with the database error and not the statement’s parameters', async () => {
    const users = Array.from({ length: 30 }, (_, i) => `leaver-${i}`)
    const streams = await Promise.all(users.map((u) => SseClient.open(t.url, { token: t.token({ sub: u }) })))
    await expect.poll(() => t.app.hub.size, { timeout: 5_000 }).toBeGreaterThanOrEqual(30)
    // A trigger stands in for a database that refuses the removals.
    await t.database.query(
      sql.raw(`
      create or replace function refuse_presence_delete() returns trigger language plpgsql as $$
      begin raise exception 'removal refused by a test trigger'; end $$`),
    )
    await t.database.query(
      sql`create trigger refuse_presence_delete before delete on stream_presence for each row execute function refuse_presence_delete()`,
    )
    try {
      const before = lines.length
      for (const s of streams) s.close()
      const failures = () => lines.slice(before).filter((l) => l.includes('"msg":"presence update failed"'))
      const reported = () => failures().reduce((n, l) => n + (JSON.parse(l) as { left: number }).left, 0)
      await expect.poll(reported, { timeout: 5_000 }).toBe(30)
      await sleep(300)
      // One warning per failed statement, however many streams it was removing: every removal counted once.
      expect(reported()).toBe(30)
      for (const line of failures()) {
        expect(line).toContain('removal refused by a test trigger')
        expect(line.length, 'the warning carries the error, not the statement and its parameters').toBeLessThan(4_000)
        expect(line).not.toContain('leaver-')
      }
    } finally {
      await t.database.query(sql`drop trigger refuse_presence_delete on stream_presence`)
    }
  })
})
