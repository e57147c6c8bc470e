import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import supertest, { type Response } from 'supertest'
import { afterAll, beforeAll, expect, onTestFinished } from 'vitest'
import { buildApp } from '../../src/app.ts'
import { type Config, loadConfig } from '../../src/config.ts'
import { type Database, openDatabase } from '../../src/db/client.ts'
import { runMigrations } from '../../src/db/migrate.ts'
import { mintToken } from '../../src/tokens.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './app.ts'
import { type BackendName, createPostgresDatabase, dropPostgresDatabase } from './backends.ts'
import { type BrowserSubscription, type PushService, type ReceivedPush, startPushService } from './push-service.ts'
import { SseClient } from './sse.ts'

// What the test/push-*.test.ts files on SPEC section 6 (Web Push) share: the local push service, the client
// calls, and the 'Web Push' suite's app with its helpers. Each test file gets its own instance of this module
// (vitest isolates files), so `service`, `t` and `api` are that file's: a file calls usePushService() at its
// top level, and webPushApp(backend) inside its 'Web Push' suite, which set them before its tests run.

export type Json = Record<string, unknown>
interface PushCounts {
  sent: number
  failed: number
  pending: number
}
export interface Status {
  acked: number
  read: number
  push: PushCounts
}
interface Problem {
  type: string
  title: string
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

/** Config overrides that let the server reach and trust the local push service. */
export const PUSH_CONFIG = { PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*' } as const
/** Seconds a streaming user has to ack a `high` event before it is pushed anyway (in the main suite's app). */
export const HIGH_ACK_TIMEOUT_S = 3

/** This test file's local push service (set by usePushService() before the file's tests run). */
export let service: PushService

/** Starts the local push service before the file's tests and closes it after them. */
export function usePushService() {
  beforeAll(async () => {
    service = await startPushService()
  })
  afterAll(async () => {
    await service?.close()
  })
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

/** Polls `check` until it returns something truthy; fails with `what` after `timeoutMs`. */
export async function until<T>(
  check: () => T | Promise<T>,
  what: string | (() => string),
  timeoutMs = 20_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`)
    }
    await sleep(20)
  }
}

export const payloadOf = (m: ReceivedPush) => m.json() as Json
/** Pushes of one event (by the id in its payload) that reached one device. */
export const pushesOf = (endpoint: string, eventId: string) =>
  service.messagesFor(endpoint).filter((m) => payloadOf(m).id === eventId)
/** Every request the push service got for a device: status codes in order ('reset' for a dropped connection). */
export const attemptsAt = (endpoint: string) => service.attempts.filter((a) => a.endpoint === endpoint)

export function waitForPush(endpoint: string, eventId: string, timeoutMs = 20_000): Promise<ReceivedPush> {
  return until(() => pushesOf(endpoint, eventId)[0], `a push of event ${eventId} to ${endpoint}`, timeoutMs)
}

/** Asserts an RFC 9457 problem with this status and returns it. */
export function expectProblem(res: Response, status: number): Problem {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  const body = JSON.parse(res.text) as Problem
  expect(body.status).toBe(status)
  expect(res.text).not.toMatch(/\bat .*\.(ts|js):\d+/)
  return body
}

/** The configuration a server started with this environment would have (every other setting at its default). */
export function appConfig(env: Record<string, string> = {}): Config {
  return loadConfig({
    JWT_SECRET: TEST_JWT_SECRET,
    VAPID_SUBJECT: 'mailto:tests@example.com',
    PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
    PUSH_RETRY_BASE_MS: '100',
    LOG_LEVEL: 'silent',
    ...env,
  })
}

/** Client calls against one running app (a started test app or one built by hand). */
export function client(baseUrl: string) {
  const http = () => supertest(baseUrl)
  return {
    http,
    async publish(token: string, event: Json): Promise<string> {
      const res = await http()
        .post('/v1/events')
        .set(bearer(token))
        .send({ type: 'test.push', title: 'Hello', ...event })
      expect(res.status, res.text).toBe(201)
      return (res.body as { id: string }).id
    },
    async register(token: string, subscription: BrowserSubscription = service.createSubscription()) {
      const res = await http().post('/v1/push/subscriptions').set(bearer(token)).send(subscription)
      expect(res.status, res.text).toBe(201)
      const body = res.body as { id: string; renewToken: string }
      return { ...body, subscription, endpoint: subscription.endpoint }
    },
    async devices(token: string): Promise<Json[]> {
      const res = await http().get('/v1/push/subscriptions').set(bearer(token))
      expect(res.status, res.text).toBe(200)
      return (res.body as { subscriptions: Json[] }).subscriptions
    },
    async status(token: string, eventId: string): Promise<Status> {
      const res = await http().get(`/v1/events/${eventId}/status`).set(bearer(token))
      expect(res.status, res.text).toBe(200)
      return res.body as Status
    },
  }
}

/** A database that can be closed and opened again, as a restarted server does. */
export async function reopenableDatabase(backend: BackendName) {
  if (backend === 'pglite') {
    const dir = await mkdtemp(join(tmpdir(), 'herald-push-'))
    return {
      open: async (): Promise<Database> => {
        const database = await openDatabase({ pgliteDir: dir })
        await runMigrations(database)
        return database
      },
      cleanup: () => rm(dir, { recursive: true, force: true }),
    }
  }
  const url = await createPostgresDatabase()
  return {
    open: async (): Promise<Database> => {
      const database = await openDatabase({ url, poolSize: 5 })
      await runMigrations(database)
      return database
    },
    cleanup: () => dropPostgresDatabase(url),
  }
}

export async function listenApp(config: Config, database: Database) {
  const app = await buildApp(config, database, { pushAgent: service.agent })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, api: client(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`) }
}

export const token = (sub: string, tenant: string, scope?: string) => mintToken(TEST_JWT_SECRET, { sub, tenant, scope })

/** The 'Web Push' suite's app (set by webPushApp() before the suite's tests run). */
export let t: TestApp
/** Client calls against `t`. */
export let api: ReturnType<typeof client>

/**
 * Starts the 'Web Push' suite's app on `backend` before the suite's tests (and closes it after them), and
 * returns the helpers its tests use.
 */
export function webPushApp(backend: BackendName) {
  let tenants = 0

  beforeAll(async () => {
    t = await startApp(backend, {
      pushAgent: service.agent,
      config: { ...PUSH_CONFIG, HIGH_ACK_TIMEOUT_S: HIGH_ACK_TIMEOUT_S, PUSH_RETRY_BASE_MS: 100, PUSH_MAX_ATTEMPTS: 3 },
    })
    api = client(t.url)
  })
  afterAll(async () => {
    await t?.close()
  })

  /** A tenant of its own per test: tenant-wide and role pushes of one test never reach another's devices. */
  function newTenant() {
    const tenant = `push-${backend}-${++tenants}`
    return {
      tenant,
      publisher: t.token({ sub: 'publisher', tenant, scope: PUBLISHER }),
      user: (sub: string, extra: { roles?: string[]; topics?: string[] } = {}) => t.token({ sub, tenant, ...extra }),
    }
  }

  /** Waits until no push of the event is pending, and returns its status. */
  async function settled(publisher: string, eventId: string, timeoutMs = 20_000): Promise<Status> {
    let last: Status | undefined
    await until(
      async () => {
        last = await api.status(publisher, eventId)
        return last.push.pending === 0
      },
      () => `no pending push of event ${eventId} (last status: ${JSON.stringify(last)})`,
      timeoutMs,
    )
    return last as Status
  }

  /** The event's push is pending, unless it has already arrived (a slow machine may take its time asking). */
  async function expectPendingUnlessArrived(publisher: string, eventId: string, endpoint: string) {
    const status = await api.status(publisher, eventId)
    if (pushesOf(endpoint, eventId).length === 0) expect(status.push).toEqual({ sent: 0, failed: 0, pending: 1 })
  }

  /**
   * Publishes an `urgent` marker (pushed whatever the user's presence) to a user and waits for it at the device:
   * whatever was due before it has had its chance to arrive.
   */
  async function marker(publisher: string, userId: string, endpoint: string): Promise<ReceivedPush> {
    const id = await api.publish(publisher, {
      type: 'test.marker',
      title: 'Marker',
      priority: 'urgent',
      to: { users: [userId] },
    })
    return waitForPush(endpoint, id)
  }

  async function openStream(token: string): Promise<SseClient> {
    const stream = await SseClient.open(t.url, { token })
    expect(stream.status, stream.body).toBe(200)
    onTestFinished(() => stream.close())
    return stream
  }

  return { newTenant, settled, expectPendingUnlessArrived, marker, openStream }
}
