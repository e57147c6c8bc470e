import { afterEach, expect } from 'vitest'
import { PUBLISHER, type TestApp } from './app.ts'
import { type OpenStreamOptions, SseClient } from './sse.ts'

// What the test/stream-*.test.ts files on GET /v1/stream share: unique names, publishing, and streams that
// close after each test.

/** Claims of a stream's token (tenant is required here so every test names its own). */
export interface Who {
  sub: string
  tenant: string
  roles?: string[]
  topics?: string[]
}

let counter = 0
/** A name no other test (or backend run) of this file uses. */
export const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`

/** The raw text with heartbeat comments taken out (they may arrive at any time). */
export const withoutPings = (raw: string) => raw.replace(/^: ?ping\n\n/gm, '')

/** Publishes one event as a publisher of `tenant`; returns its id. */
export async function publish(t: TestApp, tenant: string, event: Record<string, unknown>): Promise<string> {
  const res = await t
    .http()
    .post('/v1/events')
    .set('authorization', `Bearer ${t.token({ sub: 'publisher', tenant, scope: PUBLISHER })}`)
    .send({ type: 'test.event', title: 'Test', ...event })
  expect(res.status, JSON.stringify(res.body)).toBe(201)
  return res.body.id as string
}

export async function publishBatch(
  t: TestApp,
  tenant: string,
  events: Array<Record<string, unknown>>,
): Promise<string[]> {
  const res = await t
    .http()
    .post('/v1/events/batch')
    .set('authorization', `Bearer ${t.token({ sub: 'publisher', tenant, scope: PUBLISHER })}`)
    .send({ events: events.map((e) => ({ type: 'test.event', title: 'Test', ...e })) })
  expect(res.status, JSON.stringify(res.body).slice(0, 500)).toBe(201)
  return res.body.ids as string[]
}

/** A stream helper bound to one app that closes every stream it opened after each test. */
export function streams(get: () => TestApp) {
  const opened: SseClient[] = []
  afterEach(() => {
    for (const c of opened.splice(0)) c.close()
  })
  return async (who: Who, options: Omit<OpenStreamOptions, 'token'> & { ttlSeconds?: number } = {}) => {
    const t = get()
    const { ttlSeconds, ...rest } = options
    const client = await SseClient.open(t.url, { token: t.token(who, ttlSeconds), ...rest })
    opened.push(client)
    return client
  }
}

/** Opens a stream and checks it is live (the server wrote its first line). */
export async function live(client: SseClient): Promise<SseClient> {
  expect(client.status, client.body).toBe(200)
  await client.waitFor((c) => c.raw.startsWith('retry: 3000'), 5_000, 'the retry line')
  return client
}

export const waitForId = (client: SseClient, id: string, timeoutMs = 10_000) =>
  client.waitFor((c) => c.notificationIds.includes(id), timeoutMs, `notification ${id}`)
