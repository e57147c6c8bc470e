import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { MAX_JSON_DEPTH } from '../src/events/raw-json.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import {
  type HostileRequest,
  hostileCorpus,
  invalidTokens,
  pool,
  type RawReply,
  type Route,
  routesOf,
  sendRaw,
  signJwt,
  wireBytes,
} from './helpers/hostile-corpus.ts'
import { ROOT } from './helpers/process.ts'
import { SseClient } from './helpers/sse.ts'

// The issue's "hostile input": a generated corpus of malformed and adversarial requests against every route.
// Zero 5xx, the process stays up, and stored text comes back byte for byte. SPEC 7: "Never a 500 for a bad
// request; never a stack trace in a reply."

const SEED = 20_261_121
/** In flight at once: enough to finish in seconds, few enough that PGlite's one connection is not the test. */
const CONCURRENCY = 16
/** An answer takes milliseconds; a request whose declared body never comes is given this long, then dropped. */
const HANG_MS = 1_000
const ANSWER_MS = 8_000
/** Loopback, nothing listening: subscriptions are accepted, and pushes to them fail at once without leaving the machine. */
const PUSH_ALLOWLIST = '127.0.0.1:9'
const PUSH_ENDPOINT = 'https://127.0.0.1:9/push/hostile'

/** What must never appear in a reply: a stack frame, a source path, or a file read through a traversal. */
const LEAKS: Array<[string, RegExp]> = [
  ['a stack frame', /\n\s+at [^\n]*:\d+:\d+/],
  // (Not `/src/…`: a 404 names the path it was asked for, and the corpus asks for ../src/config.ts.)
  ['a source path', new RegExp(`${ROOT}|node_modules/`)],
  ['/etc/passwd', /root:x?:0:0:/],
  ['package.json', /"name":\s*"herald"/],
  ['source code', /export (async )?function /],
  ['.git/config', /\[core\]\s*\n\s*repositoryformatversion/],
]

const tally = (values: Iterable<string | number>) => {
  const counts = new Map<string | number, number>()
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1)
  return [...counts].sort((a, b) => String(a[0]).localeCompare(String(b[0]), 'en', { numeric: true }))
}
const histogram = (values: Iterable<string | number>) =>
  tally(values)
    .map(([k, n]) => `${k}×${n}`)
    .join(' ')

/** The tokens the corpus uses, signed with the test secret (the service's key) unless the point is a bad key. */
function corpusTokens(t: TestApp) {
  const now = Math.floor(Date.now() / 1000)
  const hs = { alg: 'HS256', typ: 'JWT' }
  const signed = (claims: object) => signJwt(hs, { exp: now + 3600, ...claims }, TEST_JWT_SECRET)
  return {
    publisher: t.token({ sub: 'hostile-pub', tenant: 'hostile', scope: `${PUBLISHER} admin` }),
    reader: t.token({ sub: 'hostile-user', tenant: 'hostile' }),
    topicReader: t.token({ sub: 'hostile-topics', tenant: 'hostile', topics: ['class:*'] }),
    oddClaims: [
      signed({ sub: "1'; drop table events; --", tenant: 'hostile', scope: PUBLISHER }),
      signed({ sub: '\ud83d\ude00\u202e\u05e2\u0301', tenant: '\u2028\ufeff', roles: ['\ud83d\ude00'], topics: ['*'] }),
      signed({ sub: 's'.repeat(200), tenant: 't'.repeat(200), scope: `${'x '.repeat(400)}admin` }),
      signed({ sub: '../../etc/passwd', tenant: '%00', exp: now + 10 ** 9 }),
    ],
    // The application backend is trusted to mint tokens, but a claim PostgreSQL cannot hold as text must be a
    // 401, not a 500 (SPEC 7: never a 500 for a bad request).
    unstorableClaims: [
      signed({ sub: 'nul\u0000user', tenant: 'hostile' }),
      signed({ sub: 'u', tenant: 'nul\u0000tenant' }),
    ],
    invalid: invalidTokens(TEST_JWT_SECRET),
  }
}

describeEachBackend('hostile input', (backend) => {
  let t: TestApp
  let port: number
  let routes: Route[]
  let corpus: HostileRequest[]
  let replies: RawReply[]
  let tokens: ReturnType<typeof corpusTokens>
  /** When the corpus began to be sent: an event accepted with a `ttl` has expired once that many seconds passed. */
  let corpusSentFrom: number

  beforeAll(async () => {
    // Sign-in on, so its route is in the corpus too.
    t = await startApp(backend, { demoSignIn: true, config: { PUSH_ENDPOINT_ALLOWLIST: PUSH_ALLOWLIST } })
    port = (t.app.server.address() as AddressInfo).port
    routes = routesOf(t.app)
    corpus = hostileCorpus({
      routes,
      tokens: (tokens = corpusTokens(t)),
      bodyLimit: t.app.initialConfig.bodyLimit ?? 1024 * 1024,
      allowedEndpoint: PUSH_ENDPOINT,
      seed: SEED,
      randomCombinations: 400,
    })
    const started = (corpusSentFrom = Date.now())
    replies = await pool(corpus, CONCURRENCY, (req) => sendRaw(port, wireBytes(req), req.mayHang ? HANG_MS : ANSWER_MS))
    const seconds = (Date.now() - started) / 1000
    console.log(
      `[hostile ${backend}] ${corpus.length} requests over ${routes.length} routes in ${seconds.toFixed(1)} s ` +
        `(${CONCURRENCY} at a time, seed ${SEED})\n` +
        `  by family: ${histogram(corpus.map((r) => r.family))}\n` +
        `  statuses: ${histogram(replies.map((r) => (r.outcome === 'answered' ? r.status : r.outcome)))}`,
    )
  }, 180_000)
  afterAll(() => t?.close())

  it('sends at least 1,000 generated requests, to every route the app serves', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(1_000)
    const served = routes.map((r) => `${r.method} ${r.path}`)
    // The routes of the SPEC are among those read from the app (the list is not empty or half-parsed).
    for (const route of [
      'POST /v1/events',
      'POST /v1/events/batch',
      'GET /v1/events',
      'GET /v1/events/:id',
      'GET /v1/events/unread-count',
      'POST /v1/events/:id/ack',
      'POST /v1/events/:id/read',
      'POST /v1/events/read',
      'GET /v1/events/:id/status',
      'GET /v1/stream',
      'GET /v1/push/vapid-public-key',
      'POST /v1/push/subscriptions',
      'GET /v1/push/subscriptions',
      'DELETE /v1/push/subscriptions/:id',
      'POST /v1/push/test',
      'GET /health',
      'GET /ready',
      'GET /metrics',
    ])
      expect(served).toContain(route)
    const perRoute = tally(corpus.map((r) => r.route))
    console.log(`[hostile ${backend}] requests per route: ${perRoute.map(([route, n]) => `${route} ${n}`).join('; ')}`)
    for (const route of served) expect(perRoute.find(([r]) => r === route)?.[1] ?? 0, route).toBeGreaterThanOrEqual(50)
  })

  it('answers none of them with a 5xx', () => {
    const failures = corpus.map((req, i) => ({ req, reply: replies[i] })).filter(({ reply }) => reply.status >= 500)
    const byRoute = histogram(failures.map(({ req }) => req.route))
    if (failures.length) {
      console.log(
        `[hostile ${backend}] ${failures.length} 5xx (${byRoute}):\n` +
          failures
            .slice(0, 40)
            .map(({ req, reply }) => `  ${reply.status} ${req.name.slice(0, 160)} -> ${reply.body.slice(0, 160)}`)
            .join('\n'),
      )
    } else console.log(`[hostile ${backend}] 0 of ${corpus.length} requests got a 5xx`)
    expect(
      failures.map(({ req, reply }) => `${reply.status} ${req.name.slice(0, 120)}`),
      'requests answered with a 5xx',
    ).toEqual([])
  })

  it('answers every request (only a declared body or header block that never arrives may wait)', () => {
    const unanswered = corpus
      .map((req, i) => ({ req, reply: replies[i] }))
      .filter(({ req, reply }) => reply.outcome !== 'answered' && !req.mayHang)
    const waited = replies.filter((r, i) => r.outcome !== 'answered' && corpus[i].mayHang).length
    const closed = unanswered.filter(({ reply }) => reply.outcome === 'closed')
    const timedOut = unanswered.filter(({ reply }) => reply.outcome === 'no reply')
    console.log(
      `[hostile ${backend}] ${waited} requests with a body or header block that never came went unanswered (as they may); ` +
        `of the others, ${closed.length} were hung up on without a status line and ${timedOut.length} got nothing within ${ANSWER_MS} ms` +
        (timedOut.length ? ` (${histogram(timedOut.map(({ req }) => req.route))})` : ''),
    )
    if (closed.length)
      console.log(
        `  hung up on: ${histogram(closed.map(({ req }) => `${req.family}: ${req.name.replace(/^.*?: /, '')}`))}`,
      )
    // A hang-up without a status line is how Node answers bytes that are not HTTP at all (a TLS hello, random
    // bytes, an upgrade nobody accepts); it is not a reply the service chose, and not a hang.
    expect(
      timedOut.map(({ req }) => req.name.slice(0, 120)),
      'requests that never got an answer (the server held them open)',
    ).toEqual([])
  })

  it('never puts a stack trace, a source path or a file from outside public/ in a reply', () => {
    const leaks: string[] = []
    corpus.forEach((req, i) => {
      for (const [what, re] of LEAKS) if (re.test(replies[i].body)) leaks.push(`${what}: ${req.name.slice(0, 120)}`)
    })
    const problems = replies.filter((r) => (r.headers['content-type'] ?? '').startsWith('application/problem+json'))
    console.log(
      `[hostile ${backend}] ${problems.length} problem+json replies; content types: ` +
        histogram(
          replies.filter((r) => r.status >= 400).map((r) => (r.headers['content-type'] ?? 'none').split(';')[0]),
        ),
    )
    expect(leaks).toEqual([])
  })

  it('refuses every well-formed request with application/problem+json (SPEC 7)', () => {
    // Node answers bytes that are not valid HTTP/1.1 (a bad request line, a header block over 16 KiB, an unknown
    // Expect) before any route runs; Fastify's client-error handler answers the rest of those. Everything else
    // reached the app: its refusals are problem+json.
    const protocolLevel = (r: RawReply) =>
      !r.headers['content-type'] || /"message":"Client Error"/.test(r.body) || [417, 431].includes(r.status)
    const others = corpus
      .map((req, i) => ({ req, reply: replies[i] }))
      .filter(({ reply }) => reply.status >= 400 && reply.status < 500 && !protocolLevel(reply))
      .filter(({ reply }) => !(reply.headers['content-type'] ?? '').startsWith('application/problem+json'))
    const protocol = replies.filter((r) => r.status >= 400 && protocolLevel(r)).length
    // Grouped by what answered (Fastify's own error code when it names one), with one example each.
    const groups = new Map<string, { n: number; example: string }>()
    for (const { req, reply } of others) {
      const code =
        /"code":"([A-Z_]+)"/.exec(reply.body)?.[1] ?? (reply.body ? reply.body.slice(0, 60) : 'no body (HEAD)')
      const key = `${reply.status} ${reply.headers['content-type']?.split(';')[0]} ${code}`
      const group = groups.get(key) ?? { n: 0, example: req.name.slice(0, 90) }
      group.n++
      groups.set(key, group)
    }
    console.log(
      `[hostile ${backend}] ${protocol} refusals of malformed HTTP came from Node/Fastify before any route; ` +
        `${others.length} refusals of well-formed requests were not problem+json` +
        [...groups].map(([key, { n, example }]) => `\n  ${n}× ${key} (e.g. ${example})`).join(''),
    )
    expect(
      others.map(({ req, reply }) => `${reply.status} ${req.name.slice(0, 100)}`),
      'well-formed requests refused without problem+json',
    ).toEqual([])
  })

  it('gives back every event the corpus got accepted, as it was sent', async () => {
    // The corpus's own accepted publishes (limits, unicode, odd numbers in data), made with the corpus publisher's
    // token; each is read back by a user its audience names.
    const publisherAuth = `Bearer ${tokens.publisher}`
    const accepted: Array<{ id: string; sent: Record<string, unknown>; what: string }> = []
    const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
    corpus.forEach((req, i) => {
      const reply = replies[i]
      if (reply.status !== 201 || !req.body || req.raw || req.autoLength === false) return
      const auths = req.headers.filter(([n]) => n.toLowerCase() === 'authorization')
      if (auths.length !== 1 || auths[0][1] !== publisherAuth) return
      let sent: { events?: Array<Record<string, unknown>> } & Record<string, unknown>
      try {
        sent = JSON.parse(decoder.decode(req.body))
      } catch {
        return
      }
      const reply201 = JSON.parse(reply.body) as { id?: string; ids?: string[] }
      if (req.route === 'POST /v1/events' && reply201.id) accepted.push({ id: reply201.id, sent, what: req.name })
      if (req.route === 'POST /v1/events/batch' && reply201.ids)
        // The first few of each batch: a batch of 1,000 identical events says nothing more than its first.
        reply201.ids.slice(0, 5).forEach((id, k) => {
          accepted.push({ id, sent: sent.events![k], what: `${req.name} [${k}]` })
        })
    })
    const mismatches: string[] = []
    await pool(accepted, 16, async ({ id, sent, what }) => {
      const to = sent.to as { users?: string[]; roles?: string[]; topics?: string[] }
      const viewer = t.token({ sub: to.users?.[0] ?? 'anyone', tenant: 'hostile', roles: to.roles, topics: to.topics })
      const res = await fetch(`${t.url}/v1/events/${id}`, { headers: { authorization: `Bearer ${viewer}` } })
      const text = await res.text()
      // A short ttl (60 s) may have run out while a slow machine sent the rest of the corpus: gone, as asked.
      const expired = typeof sent.ttl === 'number' && Date.now() - corpusSentFrom >= sent.ttl * 1000
      if (res.status === 404 && expired) return
      if (res.status !== 200) return void mismatches.push(`${what}: GET /v1/events/${id} answered ${res.status}`)
      const got = JSON.parse(text)
      for (const field of ['type', 'title', 'body', 'url', 'collapseKey'] as const)
        if (got[field] !== (sent[field] ?? null))
          mismatches.push(`${what}: ${field}: ${difference(sent[field], got[field])}`)
      // data: the same JSON value (its exact spelling is what the tricky events below check).
      if (JSON.stringify(JSON.parse(rawData(text))) !== JSON.stringify(sent.data ?? null))
        mismatches.push(`${what}: data differs`)
      if (got.priority !== (sent.priority ?? 'normal')) mismatches.push(`${what}: priority ${got.priority}`)
      if (got.url !== null && !staysOnOriginOrHttps(got.url)) mismatches.push(`${what}: url leaves the origin`)
    })
    console.log(
      `[hostile ${backend}] ${accepted.length} events the corpus got accepted (${replies.filter((r) => r.status === 201).length} requests answered 201) ` +
        `read back by their audience: ${mismatches.length} differed${mismatches.length ? `:\n  ${mismatches.slice(0, 20).join('\n  ')}` : ''}`,
    )
    expect(accepted.length).toBeGreaterThan(50)
    expect(mismatches).toEqual([])
  })

  it('is still up afterwards: /health, no stream left open, and a normal publish reaches a normal stream', async () => {
    const health = await fetch(`${t.url}/health`)
    expect(health.status).toBe(200)
    // Every stream the corpus opened was dropped by its client, so none may stay registered. (Streams opened
    // with a request body used to: the unread body kept Node from reading the socket, so nothing saw the client
    // leave. Such requests now get 400.)
    const settleBy = Date.now() + 3_000
    while (t.app.hub.size > 0 && Date.now() < settleBy) await sleep(50)
    console.log(`[hostile ${backend}] streams still registered after the corpus: ${t.app.hub.size}`)
    expect(t.app.hub.size).toBe(0)
    const tenant = `after-${backend}`
    const stream = await SseClient.open(t.url, { token: t.token({ sub: 'after-user', tenant }) })
    try {
      expect(stream.status).toBe(200)
      await stream.waitFor((c) => c.raw.startsWith('retry: 3000'), 5_000, 'the retry line')
      const res = await t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${t.token({ sub: 'after-pub', tenant, scope: PUBLISHER })}`)
        .send({ type: 'after.corpus', to: { users: ['after-user'] }, title: 'still here' })
      expect(res.status, res.text).toBe(201)
      await stream.waitForNotifications(1)
      expect(stream.notificationIds).toEqual([res.body.id])
      console.log(`[hostile ${backend}] after the corpus: /health 200, a publish reached its stream`)
    } finally {
      stream.close()
    }
  })

  it('gives tricky but valid text back byte for byte: GET /v1/events/<id>, the list and the stream, each once, in order', async () => {
    // The recipient's own id and tenant are tricky too: audiences must match them exactly.
    const tenant = `rt-${backend}-\u05e2\u05d1\u05e8\u05d9\u05ea`
    const recipient = "rt-\ud83d\ude00-'; drop table events; --\u202e"
    const publisher = t.token({ sub: 'rt-pub \u00e9\u0301', tenant, scope: PUBLISHER })
    const stream = await SseClient.open(t.url, { token: t.token({ sub: recipient, tenant }) })
    try {
      expect(stream.status, stream.body).toBe(200)
      await stream.waitFor((c) => c.raw.startsWith('retry: 3000'), 5_000, 'the retry line')
      const cases = trickyEvents()
      const s = JSON.stringify
      const eventText = (c: TrickyEvent) =>
        `{"type":"roundtrip.text","to":{"users":[${s(recipient)}]},"title":${s(c.title)},"body":${s(c.body)},` +
        `"data":${c.data},"url":${s(c.url)},"collapseKey":${s(c.collapseKey)}}`
      // Half one by one, concurrently; half in one batch (its raw data is cut from the batch body).
      const half = Math.ceil(cases.length / 2)
      const singles = await pool(cases.slice(0, half), 8, async (c) => {
        const res = await fetch(`${t.url}/v1/events`, {
          method: 'POST',
          headers: { authorization: `Bearer ${publisher}`, 'content-type': 'application/json' },
          body: eventText(c),
        })
        const text = await res.text()
        expect(res.status, `${c.what}: ${text}`).toBe(201)
        return JSON.parse(text).id as string
      })
      const batch = await fetch(`${t.url}/v1/events/batch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${publisher}`, 'content-type': 'application/json' },
        body: `{"events":[${cases.slice(half).map(eventText).join(',')}]}`,
      })
      const batchText = await batch.text()
      expect(batch.status, batchText).toBe(201)
      const ids = [...singles, ...(JSON.parse(batchText).ids as string[])]
      const sorted = [...ids].sort((a, b) => Number(a) - Number(b))

      // The oracle: every event once, in id order, and nothing else.
      await stream.waitForNotifications(ids.length, 15_000)
      expect(stream.notificationIds).toEqual(sorted)
      const frames = new Map(stream.events.filter((e) => e.event === 'notification').map((e) => [e.id, e.data]))
      const list = await fetch(`${t.url}/v1/events?after=0&limit=500`, {
        headers: { authorization: `Bearer ${t.token({ sub: recipient, tenant })}` },
      })
      const listText = await list.text()
      expect(list.status).toBe(200)

      let checked = 0
      const mismatches: string[] = []
      const same = (what: string, got: unknown, want: unknown) => {
        if (got !== want) mismatches.push(`${what}: ${difference(want, got)}`)
      }
      for (const [i, c] of cases.entries()) {
        const id = ids[i]
        const res = await fetch(`${t.url}/v1/events/${id}`, {
          headers: { authorization: `Bearer ${t.token({ sub: recipient, tenant })}` },
        })
        const bytes = Buffer.from(await res.arrayBuffer())
        expect(res.status, c.what).toBe(200)
        const text = bytes.toString('utf8')
        // Valid UTF-8 both ways: decoding and encoding again gives the same bytes.
        expect(Buffer.from(text, 'utf8').equals(bytes), c.what).toBe(true)
        const event = JSON.parse(text)
        for (const field of ['title', 'body', 'url', 'collapseKey'] as const)
          same(`${c.what}: ${field}`, event[field], c[field])
        same(`${c.what}: actor`, event.actor, 'rt-pub \u00e9\u0301')
        // data as the publisher wrote it (whitespace outside strings dropped), cut from the text, not re-serialized.
        same(`${c.what}: data`, rawData(text), c.expectedData ?? c.data)
        // The stream sends the very same text (without the caller's receipt fields), and so does the list.
        same(`${c.what}: stream frame`, frames.get(id), withoutReceipt(text))
        same(`${c.what}: in GET /v1/events?after=0`, listText.includes(text), true)
        checked++
      }
      if (mismatches.length) console.log(`[hostile ${backend}] not byte for byte:\n  ${mismatches.join('\n  ')}`)
      console.log(
        `[hostile ${backend}] ${checked} events with tricky text (${cases.map((c) => c.what).join(', ')}) read back ` +
          `from GET /v1/events/<id>, the list and the stream; the stream got ${stream.notificationIds.length} ` +
          `notifications, each once, in id order; ${mismatches.length} fields differed`,
      )
      expect(mismatches).toEqual([])
    } finally {
      stream.close()
    }
  })

  it('keeps a leading byte-order mark (U+FEFF) in every text it reads back: tenant, user ids, title, body, collapse key', async () => {
    // PGlite 0.5.16 drops a U+FEFF that starts a text value as it reads query results (fixed at install by
    // scripts/patch-pglite-bom.mjs): titles came back one character short, and an event of a tenant or for a user
    // whose name starts with one missed the live stream, whose tenant and user are read back from the database.
    const tenant = `\ufeffbom-${backend}`
    const recipient = '\ufeffbom-user'
    const actor = '\ufeffbom-pub'
    const sent = { title: '\ufefftitle \ufeff', body: '\ufeffbody', collapseKey: '\ufeffkey' }
    const reader = t.token({ sub: recipient, tenant })
    const live = await SseClient.open(t.url, { token: reader })
    let replay: SseClient | undefined
    try {
      expect(live.status, live.body).toBe(200)
      await live.waitFor((c) => c.raw.startsWith('retry: 3000'), 5_000, 'the retry line')
      const res = await fetch(`${t.url}/v1/events`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${t.token({ sub: actor, tenant, scope: PUBLISHER })}`,
          'content-type': 'application/json',
        },
        body: JSON.stringify({ type: 'bom.text', to: { users: [recipient] }, ...sent }),
      })
      const created = await res.text()
      expect(res.status, created).toBe(201)
      const id = JSON.parse(created).id as string

      const got = await fetch(`${t.url}/v1/events/${id}`, { headers: { authorization: `Bearer ${reader}` } })
      const text = await got.text()
      expect(got.status, text).toBe(200)
      expect(JSON.parse(text)).toMatchObject({ ...sent, actor })
      const list = await fetch(`${t.url}/v1/events?after=0`, { headers: { authorization: `Bearer ${reader}` } })
      expect(await list.text()).toContain(text)

      // Live (the log tail matches the event's tenant and users to the open stream) and replayed from the database.
      await live.waitForNotifications(1)
      replay = await SseClient.open(t.url, { token: reader, lastEventId: '0' })
      await replay.waitForNotifications(1)
      for (const stream of [live, replay]) {
        expect(stream.notificationIds).toEqual([id])
        expect(stream.events.find((e) => e.event === 'notification')?.data).toBe(withoutReceipt(text))
      }
    } finally {
      live.close()
      replay?.close()
    }
  })
})

interface TrickyEvent {
  what: string
  title: string
  body: string
  /** Raw JSON text of `data`, as sent. */
  data: string
  /** What GET should give back for `data` when it is not `data` itself (whitespace outside strings dropped). */
  expectedData?: string
  url: string
  collapseKey: string
}

/** Valid events whose text is hostile to anything that re-encodes, trims, normalizes or splits it. */
function trickyEvents(): TrickyEvent[] {
  const texts: Array<[string, string]> = [
    [
      'emoji',
      'emoji \ud83d\ude00 \ud83d\udc69\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66 \ud83c\udff3\ufe0f\u200d\ud83c\udf08 \ud83c\uddeb\ud83c\uddf7',
    ],
    [
      'right-to-left',
      'RTL \u202eevil\u202c \u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u200f',
    ],
    ['combining marks', 'combining e\u0301\u0308\u0327 Z\u0334\u0321\u031b\u0353a\u0337l\u0338g\u0335o\u0336'],
    ['line and paragraph separators', 'sep \u2028 para \u2029 nel \u0085 end'],
    ['zero-width and BOM', '\ufeffBOM \u200b ZWSP \u200c\u200d \u2060 \ufeff'],
    ['noncharacters and astral', 'nonchar \uffff \ufffe \udbff\udfff \ud835\udd73 \ud841\udf0e'],
    ['SQL', "1; drop table events; -- ' OR '1'='1 $1 $$x$$ E'\\\\' \\x00"],
    ['HTML', '<script>alert(1)</script><img src=x onerror=alert(1)>&amp;&lt;'],
    ['SSE framing', 'x\n\ndata: fake\nid: 99999\nevent: notification\nretry: 1\n\n: comment\r\n'],
    ['CR and controls', 'CR\ronly CRLF\r\n tab\t vt\u000b ff\u000c bel\u0007 del\u007f c1\u0080\u009f'],
    ['backslashes and quotes', 'back\\slash \\\\ \\u0000 \\n " \' ` \u201c\u201d \u00ab\u00bb'],
    ['format strings', '%s %n %d %x {{7*7}} $' + '{7*7} #{7*7} <%= 7*7 %>'],
    ['at the limit', '\ud83d\ude00'.repeat(100)],
  ]
  const data: Array<[string, string, string?]> = [
    ['integer-like keys first', '{"b":1,"a":2,"1":3,"0":4}'],
    ['a 20-digit integer', '12345678901234567890'],
    ['1.0', '1.0'],
    ['-0', '-0'],
    ['1e999', '1e999'],
    ['1E+2', '1E+2'],
    ['a lone surrogate escape', '"\\ud800"'],
    ['NUL and control escapes', '"\\u0000\\u001f\\b\\f"'],
    ['separator escapes', '"\\u2028\\u2029"'],
    ['a raw line separator', '"a\u2028b\u2029c"'],
    ['SQL', '{"sql":"1; drop table events; --","q":"\' OR 1=1"}'],
    ['HTML', '{"html":"<\\/script><script>alert(1)<\\/script>"}'],
    ['duplicate keys', '{"dup":1,"dup":2}'],
    [
      'whitespace outside strings',
      '{ "a" : [ 1 , 2 ] ,\n\t"s" : " spaced  string " }',
      '{"a":[1,2],"s":" spaced  string "}',
    ],
    ['unicode escapes', '"\\ud83d\\ude00 \\u00e9 \\u202e"'],
    // As deep as MAX_JSON_DEPTH lets a batch's data nest: the body, its list and the event are levels 1 to 3.
    ['the deepest data a batch allows', '['.repeat(MAX_JSON_DEPTH - 3) + ']'.repeat(MAX_JSON_DEPTH - 3)],
  ]
  const out: TrickyEvent[] = []
  const n = Math.max(texts.length, data.length)
  for (let i = 0; i < n; i++) {
    const [textWhat, text] = texts[i % texts.length]
    const [dataWhat, raw, expected] = data[i % data.length]
    out.push({
      what: `${textWhat} / data ${dataWhat}`,
      title: cut(text, 200),
      body: cut(`${text} ${'\ud83d\ude00'.repeat(500)} ${text}`, 2000),
      data: raw,
      expectedData: expected,
      url: `/inbox/${encodeURIComponent(cut(text, 20))}?q=\ud83d\ude00&x=<b>`,
      collapseKey: cut(text, 64),
    })
  }
  // The largest body allowed, all astral (2,000 UTF-16 units), and a title of 200 combining marks.
  out.push({
    what: 'the longest body and title',
    title: 'e\u0301'.repeat(100),
    body: '\ud83d\ude00'.repeat(1000),
    data: `"${'\u00e9'.repeat(8000)}"`,
    url: '/x',
    collapseKey: 'k'.repeat(64),
  })
  return out
}

/** Where two values first differ, as code points: short enough to read when the text is 2,000 emoji. */
function difference(sent: unknown, got: unknown): string {
  if (typeof sent !== 'string' || typeof got !== 'string')
    return `sent ${JSON.stringify(sent)}, got ${JSON.stringify(got)}`
  let i = 0
  while (i < sent.length && sent[i] === got[i]) i++
  const around = (text: string) =>
    [...text.slice(i, i + 6)].map((c) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`).join(' ')
  return `${sent.length} UTF-16 units sent, ${got.length} back; first difference at ${i}: sent ${around(sent) || '(end)'}, got ${around(got) || '(end)'}`
}

/** At most `units` UTF-16 code units of `text`, never half a surrogate pair. */
function cut(text: string, units: number): string {
  const head = text.slice(0, units)
  return /[\ud800-\udbff]$/.test(head) ? head.slice(0, -1) : head
}

/** The `data` member's text in an event's JSON (eventJson writes it between `body` and `priority`). */
function rawData(json: string): string {
  const start = json.indexOf(',"data":') + ',"data":'.length
  const end = json.lastIndexOf(',"priority":"')
  return json.slice(start, end)
}

/** Whether a URL, resolved as a page of the service's origin would resolve it, stays there or is https. */
function staysOnOriginOrHttps(url: string): boolean {
  const origin = 'http://service.invalid'
  const resolved = new URL(url, origin)
  return resolved.origin === origin || resolved.protocol === 'https:'
}

/** An event's REST JSON without the caller's receipt: what its stream frame carries. */
const withoutReceipt = (json: string) => json.replace(/,"readAt":(null|"[^"]*"),"ackedAt":(null|"[^"]*")\}$/, '}')
