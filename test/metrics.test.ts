import { setTimeout as sleep } from 'node:timers/promises'
import { register as globalRegistry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { type PushService, startPushService } from './helpers/push-service.ts'
import { SseClient } from './helpers/sse.ts'

// SPEC section 8: GET /metrics in Prometheus text, and the counts moving as users act.

type Labels = Record<string, string>
interface Family {
  help: string
  type: string
}

/** A parsed scrape: metric families and samples, looked up by name and exact label set. */
class Exposition {
  constructor(
    readonly families: Map<string, Family>,
    private readonly samples: Map<string, number>,
  ) {}

  /** The sample's value; 0 for a series not (yet) exported, as Prometheus' increase() sees it. */
  value(name: string, labels: Labels = {}): number {
    return this.samples.get(sampleKey(name, labels)) ?? 0
  }

  /** The label sets of a metric's samples. */
  labelsOf(name: string): Labels[] {
    return [...this.samples.keys()]
      .filter((key) => key.startsWith(`${name}{`))
      .map((key) =>
        Object.fromEntries(
          [...key.slice(name.length).matchAll(/(\w+)=("(?:[^"\\]|\\.)*")/g)].map(([, k, v]) => [k, JSON.parse(v)]),
        ),
      )
  }
}

const sampleKey = (name: string, labels: Labels) =>
  `${name}{${Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(',')}}`

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*'
const LABEL = `([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"`
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*)?\\})? (\\S+)$`)
/** Go's ParseFloat, as Prometheus reads values: NaN and Inf in any case (prom-client writes `Nan`). */
const VALUE = /^(?:[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|\.\d+)|[-+]?inf(?:inity)?|nan)$/i
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

/**
 * A strict reader of the Prometheus text format (0.0.4): every line is empty, `# HELP`, `# TYPE` or a sample
 * `name{label="value",...} value`; every sample belongs to a family with both HELP and TYPE, declared before it.
 */
function parseExposition(text: string): Exposition {
  const families = new Map<string, Partial<Family>>()
  const samples = new Map<string, number>()
  const lines = text.split('\n')
  expect(lines.pop(), 'the text ends with a newline').toBe('')
  for (const line of lines) {
    if (line === '') continue // the format allows empty lines (prom-client puts one between families)
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line)
    if (meta) {
      const [, kind, name, rest] = meta
      expect(name, line).toMatch(new RegExp(`^${NAME}$`))
      const family = families.get(name) ?? {}
      families.set(name, family)
      if (kind === 'HELP') {
        expect(family.help, `a second HELP for ${name}`).toBeUndefined()
        expect(rest.trim(), `the HELP of ${name}`).not.toBe('')
        family.help = rest
      } else {
        expect(family.type, `a second TYPE for ${name}`).toBeUndefined()
        expect(TYPES.has(rest), line).toBe(true)
        family.type = rest
      }
      continue
    }
    const m = SAMPLE.exec(line)
    if (!m) throw new Error(`not a Prometheus text line: ${JSON.stringify(line)}`)
    const name = m[1]
    const labels: Labels = {}
    for (const [, k, v] of (m[2] ?? '').matchAll(new RegExp(LABEL, 'g'))) {
      expect(labels[k], `label ${k} twice in ${line}`).toBeUndefined()
      labels[k] = v.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
    }
    const raw = m[m.length - 1]
    expect(raw, `the value of ${line}`).toMatch(VALUE)
    const family =
      families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, '')) ?? families.get(`${name}_total`)
    expect(family?.help, `HELP before ${line}`).toBeDefined()
    expect(family?.type, `TYPE before ${line}`).toBeDefined()
    const key = sampleKey(name, labels)
    expect(samples.has(key), `sample ${key} twice`).toBe(false)
    samples.set(key, /inf/i.test(raw) ? (raw.startsWith('-') ? -Infinity : Infinity) : Number(raw))
  }
  return new Exposition(families as Map<string, Family>, samples)
}

/** Polls until `check` holds; some counts move just after the client sees the effect. */
async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(20)
  }
}

let service: PushService

beforeAll(async () => {
  service = await startPushService()
})
afterAll(async () => {
  await service?.close()
})

describeEachBackend('Metrics', (backend) => {
  let t: TestApp
  let tenants = 0

  beforeAll(async () => {
    t = await startApp(backend, {
      pushAgent: service.agent,
      // A `high` event stays held back for an open stream for the whole run: a pending push to observe.
      config: { PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*', PUSH_RETRY_BASE_MS: 100, HIGH_ACK_TIMEOUT_S: 3_600 },
    })
  })
  afterAll(async () => {
    await t?.close()
  })

  async function scrape(app: TestApp = t): Promise<Exposition> {
    const res = await app.http().get('/metrics')
    expect(res.status, res.text).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    return parseExposition(res.text)
  }

  /** Waits until the metric has moved by `delta` from `before`. */
  async function expectRise(before: Exposition, name: string, labels: Labels, delta: number) {
    let now = before.value(name, labels)
    await eventually(
      async () => (now = (await scrape()).value(name, labels)) === before.value(name, labels) + delta,
      `${sampleKey(name, labels)} to go from ${before.value(name, labels)} by ${delta} (it is ${now})`,
    )
  }

  /** A tenant of its own per test, so no test's events reach another's streams or devices. */
  function newTenant() {
    const tenant = `metrics-${backend}-${++tenants}`
    const publisher = t.token({ sub: 'publisher', tenant, scope: PUBLISHER })
    return {
      user: (sub: string) => t.token({ sub, tenant }),
      async publish(event: Record<string, unknown>): Promise<string> {
        const res = await t
          .http()
          .post('/v1/events')
          .set('authorization', `Bearer ${publisher}`)
          .send({ type: 'test.metrics', title: 'Hello', ...event })
        expect(res.status, res.text).toBe(201)
        return res.body.id as string
      },
      async publishBatch(events: Array<Record<string, unknown>>): Promise<void> {
        const res = await t
          .http()
          .post('/v1/events/batch')
          .set('authorization', `Bearer ${publisher}`)
          .send({ events: events.map((e) => ({ type: 'test.metrics', title: 'Hello', ...e })) })
        expect(res.status, res.text).toBe(201)
      },
    }
  }

  async function openStream(token: string, lastEventId?: string): Promise<SseClient> {
    const stream = await SseClient.open(t.url, { token, lastEventId })
    expect(stream.status, stream.body).toBe(200)
    onTestFinished(() => stream.close())
    return stream
  }

  it('GET /metrics is Prometheus text with HELP and TYPE for every metric, Node.js ones included', async () => {
    const m = await scrape()
    const herald = Object.fromEntries([...m.families].filter(([name]) => name.startsWith('herald_')))
    expect(Object.fromEntries(Object.entries(herald).map(([name, f]) => [name, f.type]))).toEqual({
      herald_open_streams: 'gauge',
      herald_streams_opened_total: 'counter',
      herald_streams_closed_total: 'counter',
      herald_events_published_total: 'counter',
      herald_stream_deliveries_total: 'counter',
      herald_replayed_events_total: 'counter',
      herald_stream_resets_total: 'counter',
      herald_push_attempts_total: 'counter',
      herald_pending_pushes: 'gauge',
      herald_stream_buffered_bytes: 'gauge',
      herald_publish_duration_seconds: 'histogram',
      herald_http_request_duration_seconds: 'histogram',
    })
    expect(m.families.get('nodejs_eventloop_lag_seconds')?.type).toBe('gauge')
    // Known label values are exported from the start, at 0.
    expect(m.value('herald_streams_closed_total', { reason: 'slow' })).toBe(0)
    expect(m.value('herald_events_published_total', { priority: 'urgent' })).toBe(0)
    // Nothing is held for slow readers while no stream lags.
    expect(m.value('herald_stream_buffered_bytes')).toBe(0)
    // The histogram's buckets resolve 1-100 ms.
    for (const le of ['0.001', '0.01', '0.1']) {
      expect(m.value('herald_publish_duration_seconds_bucket', { le })).toBeGreaterThanOrEqual(0)
    }
    expect(m.value('herald_publish_duration_seconds_bucket', { le: '+Inf' })).toBe(
      m.value('herald_publish_duration_seconds_count'),
    )
    // Each app keeps its own registry: prom-client's global one stays empty.
    expect(globalRegistry.getMetricsAsArray()).toEqual([])
  })

  it('opening a stream counts it open and opened; closing it counts a close by the client', async () => {
    const ten = newTenant()
    const before = await scrape()
    const stream = await openStream(ten.user('alice'))
    await expectRise(before, 'herald_open_streams', {}, 1)
    expect((await scrape()).value('herald_streams_opened_total')).toBe(before.value('herald_streams_opened_total') + 1)

    stream.close()
    await expectRise(before, 'herald_streams_closed_total', { reason: 'client' }, 1)
    expect((await scrape()).value('herald_open_streams')).toBe(before.value('herald_open_streams'))
  })

  it('publishing counts events by priority and observes the publish latency once per request', async () => {
    const ten = newTenant()
    const before = await scrape()
    await ten.publish({ priority: 'high', to: { users: ['bob'] } })
    await ten.publishBatch([
      { priority: 'low', to: { users: ['bob'] } },
      { priority: 'low', to: { users: ['bob'] } },
      { to: { users: ['bob'] } },
    ])
    const after = await scrape()
    const published = (priority: string) =>
      after.value('herald_events_published_total', { priority }) -
      before.value('herald_events_published_total', { priority })
    expect({ low: published('low'), normal: published('normal'), high: published('high') }).toEqual({
      low: 2,
      normal: 1,
      high: 1,
    })
    expect(after.value('herald_publish_duration_seconds_count')).toBe(
      before.value('herald_publish_duration_seconds_count') + 2,
    )
    expect(after.value('herald_publish_duration_seconds_sum')).toBeGreaterThan(
      before.value('herald_publish_duration_seconds_sum'),
    )
    // The requests' own times, by route pattern and status: one single publish, one batch.
    const answered = (route: string) =>
      after.value('herald_http_request_duration_seconds_count', { method: 'POST', route, status: '201' }) -
      before.value('herald_http_request_duration_seconds_count', { method: 'POST', route, status: '201' })
    expect({ single: answered('/v1/events'), batch: answered('/v1/events/batch') }).toEqual({ single: 1, batch: 1 })
  })

  it('request times are by route pattern, not by path, and leave streams out', async () => {
    const ten = newTenant()
    const stream = await openStream(ten.user('dana'))
    const id = await ten.publish({ to: { users: ['dana'] } })
    await stream.waitForNotifications(1)
    await t
      .http()
      .post(`/v1/events/${id}/read`)
      .set('authorization', `Bearer ${ten.user('dana')}`)
      .expect(204)
    stream.close()
    const m = await scrape()
    const routes = new Set(m.labelsOf('herald_http_request_duration_seconds_count').map((labels) => labels.route))
    expect(routes).toContain('/v1/events/:id/read')
    expect([...routes].filter((r) => r.includes(id))).toEqual([])
    expect(routes).not.toContain('/v1/stream')
  })

  it('a live event counts one delivery per stream it reached', async () => {
    const ten = newTenant()
    const streams = [await openStream(ten.user('carol')), await openStream(ten.user('carol'))]
    const before = await scrape()
    await ten.publish({ to: { users: ['carol'] } })
    await Promise.all(streams.map((s) => s.waitForNotifications(1)))
    expect((await scrape()).value('herald_stream_deliveries_total')).toBe(
      before.value('herald_stream_deliveries_total') + 2,
    )
  })

  it('a resume with Last-Event-ID counts the events it replayed', async () => {
    const ten = newTenant()
    const first = await ten.publish({ to: { users: ['dave'] } })
    await ten.publish({ to: { users: ['dave'] } })
    await ten.publish({ to: { users: ['dave'] } })
    const before = await scrape()
    const stream = await openStream(ten.user('dave'), first)
    await stream.waitForNotifications(2)
    await expectRise(before, 'herald_replayed_events_total', {}, 2)
    expect((await scrape()).value('herald_stream_resets_total')).toBe(before.value('herald_stream_resets_total'))
  })

  it('a resume from an id the log never had counts a reset', async () => {
    const ten = newTenant()
    const before = await scrape()
    const stream = await openStream(ten.user('erin'), '999999999')
    await stream.waitForEvent('reset')
    await expectRise(before, 'herald_stream_resets_total', {}, 1)
  })

  it('pushes count by outcome and status: 201 sent, 503 retry', async () => {
    const ten = newTenant()
    const device = service.createSubscription()
    const res = await t
      .http()
      .post('/v1/push/subscriptions')
      .set('authorization', `Bearer ${ten.user('frank')}`)
      .send(device)
    expect(res.status, res.text).toBe(201)
    const sent = { outcome: 'sent', status: '201' }
    const retried = { outcome: 'retry', status: '503' }

    const before = await scrape()
    await ten.publish({ to: { users: ['frank'] } })
    await expectRise(before, 'herald_push_attempts_total', sent, 1)

    const again = await scrape()
    service.failNext(1, { status: 503 })
    await ten.publish({ to: { users: ['frank'] } })
    await expectRise(again, 'herald_push_attempts_total', retried, 1)
    // The retry comes about 100 ms later and gets through.
    await expectRise(again, 'herald_push_attempts_total', sent, 1)
    expect(service.messagesFor(device.endpoint)).toHaveLength(2)
  })

  it('a push held back for an open stream counts as pending', async () => {
    const ten = newTenant()
    const res = await t
      .http()
      .post('/v1/push/subscriptions')
      .set('authorization', `Bearer ${ten.user('grace')}`)
      .send(service.createSubscription())
    expect(res.status, res.text).toBe(201)
    await openStream(ten.user('grace'))
    const before = await scrape()
    await ten.publish({ priority: 'high', to: { users: ['grace'] } })
    await expectRise(before, 'herald_pending_pushes', {}, 1)
  })

  describe('with METRICS_TOKEN', () => {
    const token = 'scrape-token-0123456789abcdef'
    let guarded: TestApp

    beforeAll(async () => {
      guarded = await startApp(backend, { config: { METRICS_TOKEN: token } })
    })
    afterAll(async () => {
      await guarded?.close()
    })

    it('answers 401 problem+json without the token or with a wrong one', async () => {
      for (const authorization of [undefined, 'Bearer wrong-token', `Basic ${token}`, `Bearer ${token}x`]) {
        const req = guarded.http().get('/metrics')
        const res = authorization ? await req.set('authorization', authorization) : await req
        expect(res.status, String(authorization)).toBe(401)
        expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
        expect(res.headers['www-authenticate']).toBe('Bearer')
        expect(JSON.parse(res.text)).toMatchObject({ status: 401, type: 'urn:herald:problem:unauthorized' })
        expect(res.text).not.toContain('herald_')
      }
    })

    it('answers 200 with the metrics for the right token', async () => {
      const res = await guarded.http().get('/metrics').set('authorization', `Bearer ${token}`)
      expect(res.status, res.text).toBe(200)
      expect(parseExposition(res.text).families.has('herald_open_streams')).toBe(true)
    })
  })
})
