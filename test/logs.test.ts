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
      config: { PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1' },
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
})
