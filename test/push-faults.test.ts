import https from 'node:https'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import webpush from 'web-push'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { type PushAttempt, type PushService, type ReceivedPush, startPushService } from './helpers/push-service.ts'

// Fault: push services misbehaving (SPEC 6: 429, 5xx and network errors retry with backoff, honouring
// Retry-After, until the event expires or PUSH_MAX_ATTEMPTS). One app on PGlite, in process, and one local
// push service per kind of fault, so a fault stays on its own endpoint while the others ("good") keep working:
//   slow      answers after the dispatcher's 10 s send timeout (a hung push service)
//   storm     5xx storms
//   limited   429 with a long Retry-After
//   flaky     connection resets
//   expiring  keeps failing until the event has expired
// Every push request the service makes is counted as it leaves (web-push's sendNotification, wrapped) and as
// it arrives (each push service's log), to check PUSH_CONCURRENCY.

const CONCURRENCY = 4
const MAX_ATTEMPTS = 5
const RETRY_BASE_MS = 100
/** The dispatcher gives up on an unanswered push after this (SEND_TIMEOUT_MS in src/push/send.ts). */
const SEND_TIMEOUT_MS = 10_000
/** The burst: this many pushes to one healthy service that answers in BURST_SERVICE_MS. */
const BURST = 12
const BURST_SERVICE_MS = 300
/**
 * Draining the burst may take this long: 900 ms at full concurrency, 1.8 s if one push service gets only half
 * the slots, plus a dispatcher poll and slack for a busy machine.
 */
const BURST_BOUND_MS = 4_000
/** A push to a healthy service, with the dispatcher not held up, arrives well within this. */
const PROMPT_MS = 2_000

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function until<T>(check: () => T | Promise<T>, what: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value as NonNullable<T>
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(25)
  }
}

/** The most intervals open at one instant. */
function maxOverlap(intervals: Array<[number, number]>): number {
  const points = intervals.flatMap(([s, e]) => [
    [s, 1],
    [e, -1],
  ])
  // Ends before starts at the same instant: a slot freed and taken in one millisecond is not two in flight.
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let open = 0
  let most = 0
  for (const [, d] of points) {
    open += d
    most = Math.max(most, open)
  }
  return most
}

interface DeliveryRow {
  state: string
  attempts: number
  last_status: number | null
  last_error: string | null
  next_attempt_at: Date | string
}

describe('push services misbehaving [pglite]', () => {
  let t: TestApp
  let good: PushService
  let slow: PushService
  let storm: PushService
  let limited: PushService
  let flaky: PushService
  let expiring: PushService
  let agent: https.Agent

  // Every push request as the dispatcher makes it: the highest number in flight at once, and each one's span.
  let inFlight = 0
  let maxInFlight = 0
  const sends: Array<{ endpoint: string; start: number; end?: number }> = []
  const summary: string[] = []

  beforeAll(async () => {
    ;[good, slow, storm, limited, flaky, expiring] = await Promise.all(
      Array.from({ length: 6 }, () => startPushService()),
    )
    agent = new https.Agent({ ca: [good, slow, storm, limited, flaky, expiring].map((s) => s.ca) })
    const original = webpush.sendNotification.bind(webpush)
    vi.spyOn(webpush, 'sendNotification').mockImplementation(async (...args) => {
      const record: { endpoint: string; start: number; end?: number } = {
        endpoint: args[0].endpoint,
        start: Date.now(),
      }
      sends.push(record)
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      try {
        return await original(...args)
      } finally {
        inFlight--
        record.end = Date.now()
      }
    })
    t = await startApp('pglite', {
      pushAgent: agent,
      config: {
        PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
        PUSH_CONCURRENCY: CONCURRENCY,
        PUSH_MAX_ATTEMPTS: MAX_ATTEMPTS,
        PUSH_RETRY_BASE_MS: RETRY_BASE_MS,
      },
    })
  }, 60_000)

  afterAll(async () => {
    console.log(
      [
        `[push-faults] PUSH_CONCURRENCY ${CONCURRENCY}, PUSH_MAX_ATTEMPTS ${MAX_ATTEMPTS}, PUSH_RETRY_BASE_MS ${RETRY_BASE_MS}`,
        ...summary,
        `  over the whole file: ${sends.length} push requests sent, at most ${maxInFlight} in flight at once`,
      ].join('\n'),
    )
    await t?.close()
    vi.restoreAllMocks()
    agent?.destroy()
    await Promise.all([good, slow, storm, limited, flaky, expiring].map((s) => s?.close()))
  }, 60_000)

  const publisher = () => t.token({ sub: 'publisher', scope: PUBLISHER })

  async function register(user: string, service: PushService): Promise<string> {
    const subscription = service.createSubscription()
    const res = await fetch(`${t.url}/v1/push/subscriptions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.token({ sub: user })}`, 'content-type': 'application/json' },
      body: JSON.stringify(subscription),
    })
    expect(res.status, await res.text()).toBe(201)
    return subscription.endpoint
  }

  /** Publishes one event to a user (offline: pushed at once); returns its id and when the request was sent. */
  async function publish(user: string, extra: Record<string, unknown> = {}): Promise<{ id: string; at: number }> {
    const at = Date.now()
    const res = await fetch(`${t.url}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${publisher()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'fault.test', title: `to ${user}`, to: { users: [user] }, ...extra }),
    })
    const text = await res.text()
    expect(res.status, text).toBe(201)
    return { id: (JSON.parse(text) as { id: string }).id, at }
  }

  const pushesOf = (service: PushService, endpoint: string, id: string): ReceivedPush[] =>
    service.messagesFor(endpoint).filter((m) => (m.json() as { id: string }).id === id)
  const attemptsAt = (service: PushService, endpoint: string): PushAttempt[] =>
    service.attempts.filter((a) => a.endpoint === endpoint)

  async function delivery(id: string): Promise<DeliveryRow> {
    const [row] = await t.database.query<DeliveryRow>(
      sql`select state, attempts, last_status, last_error, next_attempt_at from push_deliveries where event_id = ${Number(id)}`,
    )
    return row
  }

  /**
   * Pushes to a user on the good service, `count` of them `spacingMs` apart, and returns each one's latency
   * (publish sent to push received), waiting up to `timeoutMs` for each.
   */
  async function goodLatencies(user: string, endpoint: string, count: number, spacingMs: number, timeoutMs: number) {
    const waits: Array<Promise<number>> = []
    for (let i = 0; i < count; i++) {
      const { id, at } = await publish(user)
      waits.push(
        until(() => pushesOf(good, endpoint, id)[0], `the push of ${id} to ${user}`, timeoutMs).then(
          (m) => m.receivedAt - at,
          () => Number.POSITIVE_INFINITY,
        ),
      )
      await sleep(spacingMs)
    }
    return Promise.all(waits)
  }

  const gapsOf = (attempts: PushAttempt[]) => attempts.slice(1).map((a, i) => a.at - attempts[i].at)

  it('a 5xx storm: retried with backoff, at most PUSH_MAX_ATTEMPTS times, then failed; a storm that ends delivers once', async () => {
    const stormy = await register('stormy', storm)
    const bystander = await register('bystander-storm', good)

    // A short storm: three 503s, then the push goes through, once.
    storm.failNext(3, { status: 503 })
    const short = await publish('stormy')
    await until(() => pushesOf(storm, stormy, short.id).length === 1, 'the push after a short storm')
    const shortAttempts = attemptsAt(storm, stormy)
    expect(shortAttempts.map((a) => a.status)).toEqual([503, 503, 503, 201])
    // The push service has it; the outcome is written a moment after its answer.
    await until(async () => (await delivery(short.id)).state === 'sent', 'the push to be recorded as sent')

    // A storm longer than the attempts: exactly PUSH_MAX_ATTEMPTS, then failed; meanwhile others are served.
    storm.failNext(MAX_ATTEMPTS, { status: 500 })
    const long = await publish('stormy')
    const latencies = await goodLatencies('bystander-storm', bystander, 5, 200, 15_000)
    await until(async () => (await delivery(long.id)).state === 'failed', 'the long storm to fail the push', 20_000)
    await sleep(1_500) // two more dispatcher polls: nothing further may go out
    const longAttempts = attemptsAt(storm, stormy).slice(shortAttempts.length)
    const row = await delivery(long.id)
    summary.push(
      `  5xx storm: short storm attempts ${JSON.stringify(shortAttempts.map((a) => a.status))} gaps ${JSON.stringify(gapsOf(shortAttempts))} ms; ` +
        `long storm ${longAttempts.length} attempts ${JSON.stringify(longAttempts.map((a) => a.status))} gaps ${JSON.stringify(gapsOf(longAttempts))} ms, ` +
        `then ${row.state} (${row.last_error}); bystander latencies ${JSON.stringify(latencies)} ms`,
    )
    expect(longAttempts.map((a) => a.status)).toEqual(Array(MAX_ATTEMPTS).fill(500))
    expect(row).toMatchObject({ state: 'failed', attempts: MAX_ATTEMPTS, last_status: 500 })
    expect(pushesOf(storm, stormy, long.id)).toEqual([])
    // Backoff: the k-th retry waits at least half of base × 2^(k-1).
    gapsOf(longAttempts).forEach((gap, k) => {
      expect(gap).toBeGreaterThanOrEqual((RETRY_BASE_MS * 2 ** k) / 2 - 5)
    })
    expect(Math.max(...latencies), 'pushes to a healthy service during the storm').toBeLessThan(PROMPT_MS)
  })

  it('429 with Retry-After 3600: never retried before then; with a shorter ttl it ends failed without another attempt', async () => {
    const endpoint = await register('limited', limited)

    // The event expires (60 s) long before the hour is up: failed at once, no second attempt.
    limited.failNext(1, { status: 429, retryAfter: 3600 })
    const short = await publish('limited', { ttl: 60 })
    await until(async () => (await delivery(short.id))?.state === 'failed', 'the 429 to fail the short-lived push')
    const shortRow = await delivery(short.id)

    // The event outlives the hour: pending, next attempt an hour out, and nothing sooner.
    limited.failNext(1, { status: 429, retryAfter: 3600 })
    const long = await publish('limited', { ttl: 7200 })
    await until(async () => (await delivery(long.id))?.last_status === 429, 'the 429 to be recorded')
    await sleep(2_500) // more than two dispatcher polls
    const longRow = await delivery(long.id)
    const waitS = (new Date(longRow.next_attempt_at).getTime() - Date.now()) / 1000

    // A short Retry-After is honoured too, even though the backoff alone would retry sooner.
    limited.failNext(1, { status: 429, retryAfter: 2 })
    const honoured = await publish('limited', { ttl: 60 })
    await until(() => pushesOf(limited, endpoint, honoured.id).length === 1, 'the push after Retry-After: 2')
    const honouredAttempts = attemptsAt(limited, endpoint).slice(-2)
    const all = attemptsAt(limited, endpoint)

    summary.push(
      `  429 Retry-After 3600: ttl 60 -> ${shortRow.state} after ${shortRow.attempts} attempt (${shortRow.last_error}); ` +
        `ttl 7200 -> ${longRow.state}, next attempt in ${Math.round(waitS)} s, attempts ${longRow.attempts}; ` +
        `Retry-After 2 -> retried after ${gapsOf(honouredAttempts)[0]} ms; requests at the service: ${JSON.stringify(all.map((a) => a.status))}`,
    )
    expect(shortRow).toMatchObject({ state: 'failed', attempts: 1, last_status: 429 })
    expect(longRow).toMatchObject({ state: 'pending', attempts: 1, last_status: 429 })
    expect(waitS).toBeGreaterThan(3600 - 60)
    expect(all.map((a) => a.status)).toEqual([429, 429, 429, 201])
    expect(gapsOf(honouredAttempts)[0]).toBeGreaterThanOrEqual(2_000 - 20)
  })

  it('connection resets: retried, delivered once when they stop, failed after PUSH_MAX_ATTEMPTS when they do not', async () => {
    const endpoint = await register('flaky', flaky)
    flaky.failNext(2, 'reset')
    const first = await publish('flaky')
    await until(() => pushesOf(flaky, endpoint, first.id).length === 1, 'the push after two resets')
    const firstAttempts = attemptsAt(flaky, endpoint)
    await sleep(1_200)
    expect(pushesOf(flaky, endpoint, first.id)).toHaveLength(1)

    flaky.failNext(MAX_ATTEMPTS, 'reset')
    const second = await publish('flaky')
    await until(async () => (await delivery(second.id)).state === 'failed', 'resets to fail the push', 20_000)
    await sleep(1_500)
    const secondAttempts = attemptsAt(flaky, endpoint).slice(firstAttempts.length)
    const row = await delivery(second.id)
    summary.push(
      `  resets: ${JSON.stringify(firstAttempts.map((a) => a.status))} then ${JSON.stringify(secondAttempts.map((a) => a.status))} ` +
        `-> ${row.state} after ${row.attempts} attempts (${row.last_error})`,
    )
    expect(firstAttempts.map((a) => a.status)).toEqual(['reset', 'reset', 201])
    expect(secondAttempts.map((a) => a.status)).toEqual(Array(MAX_ATTEMPTS).fill('reset'))
    expect(row).toMatchObject({ state: 'failed', attempts: MAX_ATTEMPTS })
    expect(pushesOf(flaky, endpoint, second.id)).toEqual([])
  })

  it('nothing is attempted after the event expires, however the push service keeps failing', async () => {
    const endpoint = await register('fleeting', expiring)
    expiring.failNext(50, { status: 503, retryAfter: 1 })
    const e = await publish('fleeting', { ttl: 60 })
    // The API's shortest ttl is 60 s; let this one run out in 3.5 s instead of waiting a minute.
    await t.database.query(
      sql`update events set expires_at = now() + interval '3500 milliseconds' where id = ${Number(e.id)}`,
    )
    const [{ expires_at }] = await t.database.query<{ expires_at: Date | string }>(
      sql`select expires_at from events where id = ${Number(e.id)}`,
    )
    const expiresAt = new Date(expires_at).getTime()
    await until(async () => (await delivery(e.id)).state !== 'pending', 'the push to end', 15_000)
    const endedAt = Date.now()
    await sleep(Math.max(0, expiresAt + 2_000 - Date.now()))
    const attempts = attemptsAt(expiring, endpoint)
    const row = await delivery(e.id)
    summary.push(
      `  expiry: ${attempts.length} attempts at ${JSON.stringify(attempts.map((a) => a.at - e.at))} ms for an event expiring at ` +
        `${expiresAt - e.at} ms; ended ${row.state} at ${endedAt - e.at} ms (${row.last_error}); attempts after expiry: ` +
        `${attempts.filter((a) => a.at >= expiresAt).length}`,
    )
    expect(attempts.length).toBeGreaterThanOrEqual(2)
    expect(attempts.filter((a) => a.at >= expiresAt)).toEqual([])
    expect(row.state).toBe('failed')
    expect(endedAt, 'the push ended only after its event expired').toBeLessThan(expiresAt + 1_500)
    expect(pushesOf(expiring, endpoint, e.id)).toEqual([])
  })

  it('a burst to one healthy push service: never more than PUSH_CONCURRENCY in flight, and not slowed below what the service allows', async () => {
    const users = Array.from({ length: BURST }, (_, i) => `crowd-${i}`)
    const endpoints = await Promise.all(users.map((u) => register(u, good)))
    good.setDelay(BURST_SERVICE_MS)
    const sendsBefore = sends.length
    const maxBefore = maxInFlight
    maxInFlight = 0
    try {
      const started = Date.now()
      const res = await fetch(`${t.url}/v1/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${publisher()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'fault.load', title: 'everyone', to: { users } }),
      })
      expect(res.status).toBe(201)
      await until(() => endpoints.every((e) => good.messagesFor(e).length === 1), 'every crowd push', 30_000)
      const took = Date.now() - started
      const arrivals = good.attempts.filter((a) => endpoints.includes(a.endpoint))
      const atService = maxOverlap(arrivals.map((a) => [a.at, a.at + BURST_SERVICE_MS]))
      const atSender = maxInFlight
      const ideal = Math.ceil(BURST / CONCURRENCY) * BURST_SERVICE_MS
      summary.push(
        `  burst: ${BURST} pushes (one event to ${BURST} users) to one service answering in ${BURST_SERVICE_MS} ms: ` +
          `at most ${atSender} in flight (sender), ${atService} open at the service; all out in ${took} ms ` +
          `(${Math.round((BURST / took) * 10_000) / 10} pushes/s; ${ideal} ms at full concurrency, limit ${BURST_BOUND_MS} ms); ` +
          `${sends.length - sendsBefore} requests; arrivals at ${JSON.stringify(arrivals.map((a) => a.at - started))} ms`,
      )
      expect(atSender).toBeLessThanOrEqual(CONCURRENCY)
      expect(atService).toBeLessThanOrEqual(CONCURRENCY)
      expect(arrivals).toHaveLength(BURST)
      expect(took, 'a burst to one healthy push service drained far slower than its concurrency allows').toBeLessThan(
        BURST_BOUND_MS,
      )
    } finally {
      good.setDelay(0)
      maxInFlight = Math.max(maxInFlight, maxBefore)
    }
  })

  it('one hung push service does not hold up pushes to other services (timeouts retried, concurrency bounded)', async () => {
    // Two users whose browsers use a push service that hangs, two notifications each: ordinary traffic.
    const slowUsers = ['slowpoke-1', 'slowpoke-2']
    const slowEndpoints = await Promise.all(slowUsers.map((u) => register(u, slow)))
    const bystander = await register('bystander-slow', good)
    const hangMs = SEND_TIMEOUT_MS + 1_000
    slow.setDelay(hangMs)
    const started = Date.now()
    const stuck: Array<{ id: string; at: number; endpoint: string }> = []
    for (let round = 0; round < 2; round++) {
      for (const [i, u] of slowUsers.entries()) stuck.push({ ...(await publish(u)), endpoint: slowEndpoints[i] })
    }
    const slowAttempts = () => slow.attempts.filter((a) => slowEndpoints.includes(a.endpoint))
    await until(() => slowAttempts().length >= 1, 'the first request to the hung service')
    await sleep(300)
    const hungRequests = slowAttempts().length
    // Other users, other push service: how long do their pushes take now?
    const latencies = await goodLatencies('bystander-slow', bystander, 5, 400, 25_000)
    slow.setDelay(0)

    // The hung pushes are retried after the timeout and get through once the service answers again.
    await until(
      async () => {
        for (const s of stuck) if ((await delivery(s.id)).state === 'pending') return false
        return true
      },
      'the stuck pushes to settle',
      40_000,
    )
    const rows = await Promise.all(stuck.map((s) => delivery(s.id)))
    const copies = stuck.map((s) => pushesOf(slow, s.endpoint, s.id).length)
    const slowSends = sends.filter((s) => slowEndpoints.includes(s.endpoint))
    const atService = maxOverlap(
      slowAttempts().map((a) => [a.at, a.at + Math.min(hangMs, SEND_TIMEOUT_MS)] as [number, number]),
    )
    summary.push(
      `  hung service (answers after ${hangMs} ms, send timeout ${SEND_TIMEOUT_MS} ms), ${slowUsers.length} users with 2 pushes each: ` +
        `${hungRequests} requests hung at once (at most ${atService} open there); bystander push latencies on a healthy ` +
        `service: ${JSON.stringify(latencies)} ms (limit ${PROMPT_MS} ms); stuck pushes ended ` +
        `${JSON.stringify(rows.map((r) => `${r.state}/${r.attempts}`))}, copies received per event ${JSON.stringify(copies)} ` +
        `(a timed-out request the service had accepted comes again); send durations to it ` +
        `${JSON.stringify(slowSends.map((s) => (s.end ?? Date.now()) - s.start))} ms; took ${Date.now() - started} ms`,
    )
    expect(maxInFlight).toBeLessThanOrEqual(CONCURRENCY)
    expect(atService).toBeLessThanOrEqual(CONCURRENCY)
    for (const r of rows) expect(r.state).toBe('sent')
    for (const c of copies) expect(c).toBeGreaterThanOrEqual(1)
    // The point: a bystander's push must not wait for the hung endpoint's timeouts.
    expect(Math.max(...latencies), 'pushes to a healthy service while another hangs').toBeLessThan(PROMPT_MS)
  }, 90_000)
})
