import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import supertest from 'supertest'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { mintToken } from '../src/tokens.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import {
  type BackendName,
  createPostgresDatabase,
  describeEachBackend,
  dropPostgresDatabase,
} from './helpers/backends.ts'
import { runTs } from './helpers/process.ts'
import { type PushService, startPushService } from './helpers/push-service.ts'

// The dispatcher's bounds hold for every push, test pushes included (POST /v1/push/test goes through its queue,
// rate limited per user), and sending never stalls the service: pushes are encrypted and sent from worker
// threads. Real HTTPS to the local push service, which checks VAPID and decrypts every push as FCM would.

// Hundreds of registrations and pushes, on a machine other suites keep busy.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 120_000 })

/** A user with this many devices: the case that made /health take seconds while a test push went out. */
const MANY_DEVICES = 300
/** Test pushes, or broadcasts, sent one after the other: enough /health answers to judge by, even on a quiet machine. */
const ROUNDS = 3
/** PUSH_CONCURRENCY's ceiling (config.ts). */
const MAX_PUSH_CONCURRENCY = 1_000
/** Registrations sent at once while setting up. */
const REGISTER_CONCURRENCY = 8
/** /health is asked this often while the pushes go out, whether or not earlier answers have come. */
const HEALTH_EVERY_MS = 20
/** A /health answer slower than this is late: someone waiting on the service notices. */
const HEALTH_LATE_MS = 50
/**
 * What users notice is how long the service keeps them waiting, not one late answer: on two cores shared with
 * other suites, an idle service answers a few percent of requests late already (the scheduler, the collector).
 * /health is asked on a clock, so the share of late answers is the share of the time the service was slow to
 * answer: at most this much. Measured here, load average 3 to 8: with pushes encrypted and sent on the main
 * thread 34-95 % of the answers were late, from the push threads 0-12 %.
 */
const MOST_LATE_SHARE = 0.25
/**
 * On PGlite every statement runs on the service's own thread (the database is WebAssembly in the process), so the
 * outbox's bookkeeping of 900 pushes takes the event loop too: alone 7-9 % late, but 36 % once in a CI run with the
 * other suites on the same two cores (median 15 ms). Pushes on the main thread were 34-95 % late with a median far
 * above HEALTH_LATE_MS: what this still catches, with the median.
 */
const MOST_LATE_SHARE_PGLITE = 0.5
/** A small dispatcher, to see its bound at the push service. */
const SMALL_CONCURRENCY = 4
/** The push service answers this late in the concurrency test, so that pushes sent at once overlap there. */
const SLOW_ANSWER_MS = 200
/** The test-push limit per user per minute in the rate-limit test. */
const TEST_PUSHES_PER_MIN = 5

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

let service: PushService

beforeAll(async () => {
  service = await startPushService()
})
afterAll(async () => {
  await service?.close()
})

interface Server {
  url: string
  http: () => supertest.Agent
  token: (sub: string, tenant: string, scope?: string) => string
  stop: () => Promise<void>
}

/**
 * The service as it is run (`node --import tsx src/server.ts`: its push threads load their TypeScript the same
 * way), in a process of its own: its event loop is not the one this file's push service decrypts on, so the
 * /health times are the service's own.
 */
async function startServer(backend: BackendName, env: Record<string, string>): Promise<Server> {
  const dataDir = await mkdtemp(join(tmpdir(), 'herald-dispatch-'))
  const databaseUrl = backend === 'postgres' ? await createPostgresDatabase() : undefined
  const child = runTs('src/server.ts', [], {
    DATABASE_URL: databaseUrl ?? '',
    DATA_DIR: dataDir,
    JWT_SECRET: TEST_JWT_SECRET,
    NODE_EXTRA_CA_CERTS: service.caFile,
    PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
    RATE_LIMIT_PUSH_PER_MIN: '1000000',
    RATE_LIMIT_PUBLISH_PER_MIN: '1000000',
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    ...env,
  })
  const stop = async () => {
    child.proc.kill('SIGTERM')
    await child.exited
    if (databaseUrl) await dropPostgresDatabase(databaseUrl)
    await rm(dataDir, { recursive: true, force: true })
  }
  try {
    const [, url] = await child.waitForOutput(/listening on (http:\/\/\S+)/, 90_000)
    return {
      url,
      http: () => supertest.agent(url),
      token: (sub, tenant, scope) => mintToken(TEST_JWT_SECRET, { sub, tenant, scope }),
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/**
 * Asks GET /health every HEALTH_EVERY_MS from a thread of its own, as outside clients would: its timers and
 * sockets do not wait for this file's event loop, and a request is sent on time even while earlier ones wait
 * (so a stall delays every request made during it, as it delays everyone's). `stop()` gives each answer's
 * time, ms.
 */
function pollHealth(url: string): { stop: () => Promise<number[]> } {
  const worker = new Worker(
    `
    const { parentPort, workerData } = require('node:worker_threads')
    const http = require('node:http')
    const agent = new http.Agent({ keepAlive: true })
    const times = []
    let open = 0
    let stopping = false
    const report = () => { if (stopping && open === 0) parentPort.postMessage(times) }
    const timer = setInterval(() => {
      const started = performance.now()
      open++
      http.get(workerData.url + '/health', { agent }, (res) => {
        res.resume()
        res.on('end', () => {
          times.push(performance.now() - started)
          open--
          report()
        })
      }).on('error', (err) => { throw err })
    }, workerData.everyMs)
    parentPort.on('message', () => {
      stopping = true
      clearInterval(timer)
      report()
    })
    `,
    { eval: true, workerData: { url, everyMs: HEALTH_EVERY_MS } },
  )
  const times = new Promise<number[]>((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
  return {
    stop: async () => {
      worker.postMessage('stop')
      const result = await times
      await worker.terminate()
      return result
    },
  }
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]

/**
 * Expects at most `mostLate` of the /health answers later than HEALTH_LATE_MS, and their median within it; logs
 * them either way.
 */
function expectResponsive(times: number[], during: string, mostLate = MOST_LATE_SHARE) {
  const sorted = [...times].sort((a, b) => a - b)
  const late = sorted.filter((t) => t > HEALTH_LATE_MS).length
  const summary =
    `/health during ${during}: ${late} of ${times.length} answers later than ${HEALTH_LATE_MS} ms; ` +
    `median ${percentile(sorted, 0.5).toFixed(0)} ms, p90 ${percentile(sorted, 0.9).toFixed(0)} ms, ` +
    `max ${sorted[sorted.length - 1].toFixed(0)} ms`
  console.log(`[push-dispatch] ${summary}`)
  // Answers to judge by: a send that starved the event loop would have taken many polls.
  expect(times.length, summary).toBeGreaterThanOrEqual(5)
  expect(late / times.length, summary).toBeLessThanOrEqual(mostLate)
  expect(percentile(sorted, 0.5), summary).toBeLessThanOrEqual(HEALTH_LATE_MS)
}

describeEachBackend('Web Push dispatch', (backend) => {
  let tenants = 0
  const newTenant = () => `dispatch-${backend}-${++tenants}`

  /** Registers `count` devices of one user at the push service; returns their endpoints. */
  async function registerDevices(t: { http: () => supertest.Agent }, token: string, count: number) {
    const endpoints: string[] = []
    await Promise.all(
      Array.from({ length: REGISTER_CONCURRENCY }, async () => {
        while (endpoints.length < count) {
          const subscription = service.createSubscription()
          endpoints.push(subscription.endpoint)
          const res = await t.http().post('/v1/push/subscriptions').set(bearer(token)).send(subscription)
          expect(res.status, res.text).toBe(201)
        }
      }),
    )
    return endpoints
  }

  describe('a user with many devices', () => {
    let t: Server
    beforeAll(async () => {
      t = await startServer(backend, {
        MAX_DEVICES_PER_USER: String(MANY_DEVICES),
        // The largest PUSH_CONCURRENCY: every device's push starts at once, the most work at one time.
        PUSH_CONCURRENCY: String(MAX_PUSH_CONCURRENCY),
      })
    })
    afterAll(async () => {
      await t?.stop()
    })

    it(`${ROUNDS} test pushes in a row reach each of ${MANY_DEVICES} devices, and /health keeps answering meanwhile`, async () => {
      const token = t.token('many', newTenant())
      const endpoints = await registerDevices(t, token, MANY_DEVICES)

      const health = pollHealth(t.url)
      const replies = []
      for (let round = 0; round < ROUNDS; round++) replies.push(await t.http().post('/v1/push/test').set(bearer(token)))
      const times = await health.stop()

      for (const res of replies) {
        expect(res.status, res.text).toBe(200)
        expect(res.body).toMatchObject({ sent: MANY_DEVICES, failed: 0 })
      }
      for (const endpoint of endpoints) {
        const pushes = service.messagesFor(endpoint)
        expect(pushes, endpoint).toHaveLength(ROUNDS)
        for (const push of pushes) expect(push.json()).toMatchObject({ type: 'push.test', title: 'Test notification' })
      }
      expectResponsive(times, `${ROUNDS} test pushes to ${MANY_DEVICES} devices [${backend}]`)
    })

    it(`${ROUNDS} urgent tenant broadcasts reach each of ${MANY_DEVICES} devices of a user, and /health keeps answering meanwhile`, async () => {
      const tenant = newTenant()
      const endpoints = await registerDevices(t, t.token('many', tenant), MANY_DEVICES)
      const publisher = t.token('publisher', tenant, PUBLISHER)

      const health = pollHealth(t.url)
      const ids: string[] = []
      for (let round = 0; round < ROUNDS; round++) {
        const res = await t
          .http()
          .post('/v1/events')
          .set(bearer(publisher))
          .send({ type: 'notice', title: `Everyone, now (${round})`, priority: 'urgent', to: { tenant: true } })
        expect(res.status, res.text).toBe(201)
        ids.push(res.body.id)
      }
      await expect
        .poll(() => endpoints.filter((e) => service.messagesFor(e).length === ROUNDS).length, {
          timeout: 120_000,
          interval: 20,
        })
        .toBe(MANY_DEVICES)
      const times = await health.stop()

      for (const endpoint of endpoints) {
        const received = service.messagesFor(endpoint).map((m) => (m.json() as { id: string }).id)
        expect(received.sort(), endpoint).toEqual([...ids].sort())
      }
      const status = async (id: string) => (await t.http().get(`/v1/events/${id}/status`).set(bearer(publisher))).body
      for (const id of ids) {
        await expect.poll(() => status(id)).toMatchObject({ push: { sent: MANY_DEVICES, failed: 0, pending: 0 } })
      }
      expectResponsive(
        times,
        `${ROUNDS} broadcasts to ${MANY_DEVICES} devices [${backend}]`,
        backend === 'pglite' ? MOST_LATE_SHARE_PGLITE : MOST_LATE_SHARE,
      )
    })
  })

  describe('bounds', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend, {
        pushAgent: service.agent,
        config: {
          PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
          PUSH_CONCURRENCY: SMALL_CONCURRENCY,
          RATE_LIMIT_PUSH_TEST_PER_MIN: TEST_PUSHES_PER_MIN,
        },
      })
    })
    afterAll(async () => {
      await t?.close()
    })

    it(`a test push keeps to PUSH_CONCURRENCY: with ${SMALL_CONCURRENCY}, never more in flight at the push service`, async () => {
      const token = t.token({ sub: 'several', tenant: newTenant() })
      const endpoints = await registerDevices(t, token, 3 * SMALL_CONCURRENCY)
      service.setDelay(SLOW_ANSWER_MS)
      service.resetMaxInFlight()
      try {
        const res = await t.http().post('/v1/push/test').set(bearer(token))
        expect(res.status, res.text).toBe(200)
        expect(res.body).toMatchObject({ sent: endpoints.length, failed: 0 })
      } finally {
        service.setDelay(0)
      }
      expect(service.maxInFlight()).toBeLessThanOrEqual(SMALL_CONCURRENCY)
      // Still side by side, not one at a time: one push service gets half the slots.
      expect(service.maxInFlight()).toBe(SMALL_CONCURRENCY / 2)
    })

    it(`the test push after ${TEST_PUSHES_PER_MIN} in a minute is 429 with Retry-After, and sends nothing`, async () => {
      const tenant = newTenant()
      const token = t.token({ sub: 'eager', tenant })
      const [endpoint] = await registerDevices(t, token, 1)
      for (let i = 0; i < TEST_PUSHES_PER_MIN; i++) {
        const res = await t.http().post('/v1/push/test').set(bearer(token))
        expect(res.status, res.text).toBe(200)
      }
      const res = await t.http().post('/v1/push/test').set(bearer(token))
      expect(res.status, res.text).toBe(429)
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0)
      expect(service.messagesFor(endpoint)).toHaveLength(TEST_PUSHES_PER_MIN)
      // Per user: someone else in the tenant still may.
      const other = t.token({ sub: 'patient', tenant })
      await registerDevices(t, other, 1)
      expect((await t.http().post('/v1/push/test').set(bearer(other))).status).toBe(200)
    })
  })
})
