import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import vm from 'node:vm'
import { sql } from 'drizzle-orm'
import Fastify from 'fastify'
import type { Response } from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PUBLISH_LOCK } from '../src/events/log-tail.ts'
import { MAX_DATA_BYTES } from '../src/events/model.ts'
import { MAX_JSON_DEPTH } from '../src/events/raw-json.ts'
import { PUBLIC_DIR } from '../src/package-files.ts'
import { registerErrorHandling } from '../src/problems.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend, describePostgres } from './helpers/backends.ts'

// The security review's findings on publish input: JSON nesting, the size of `data` as stored, URLs that
// leave the origin, and Idempotency-Key reuse. Each test asserts what the client sees and that nothing
// was published.

interface Problem {
  type: string
  status: number
  detail: string
  errors?: Array<{ path: string; message: string }>
}

/** What no problem detail may contain: the runtime's own words, never meant for a client. */
const INTERNAL_TEXT = /Maximum call stack|RangeError|TypeError|SyntaxError|at .*\.(ts|js):\d+/

/** Asserts an RFC 9457 problem of that status and type, with no internal text, and returns it. */
function expectProblem(res: Response, status: number, type: string): Problem {
  expect(res.status, res.text).toBe(status)
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  const problem = JSON.parse(res.text) as Problem
  expect(problem.type).toBe(`urn:herald:problem:${type}`)
  expect(problem.detail).not.toMatch(INTERNAL_TEXT)
  return problem
}

/** Asserts a 400 validation problem whose errors[].path include `path`. */
function expectFieldError(res: Response, path: string): Problem {
  const problem = expectProblem(res, 400, 'validation')
  expect(
    (problem.errors ?? []).map((e) => e.path),
    res.text,
  ).toContain(path)
  return problem
}

/** `depth` arrays, one inside the other. */
const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth)

/** An event's JSON text with `data` (and any more members) spliced in as raw text. */
const eventText = (to: string, members = '') =>
  `{"type":"input.test","to":{"users":[${JSON.stringify(to)}]},"title":"input"${members}}`

describeEachBackend('publish input', (backend) => {
  let t: TestApp
  let n = 0
  /** A user id no other test uses. */
  const uid = (prefix: string) => `${prefix}-${++n}`
  const publisher = () => t.token({ sub: 'input-publisher', scope: PUBLISHER })

  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(() => t.close())

  /** POSTs raw JSON text, exactly as given. */
  function post(path: string, text: string, key?: string) {
    let req = t.http().post(path).set('authorization', `Bearer ${publisher()}`).set('content-type', 'application/json')
    if (key !== undefined) req = req.set('idempotency-key', key)
    return req.send(text)
  }
  const publish = (text: string, key?: string) => post('/v1/events', text, key)
  const publishBatch = (events: string[], key?: string) =>
    post('/v1/events/batch', `{"events":[${events.join(',')}]}`, key)

  /** The recipient's history, newest first. */
  async function history(sub: string): Promise<Array<{ id: string }>> {
    const res = await t
      .http()
      .get('/v1/events?limit=500')
      .set('authorization', `Bearer ${t.token({ sub })}`)
    expect(res.status, res.text).toBe(200)
    return res.body.events
  }

  /** GET /v1/events/<id> as the recipient: the text as served. */
  async function served(id: string, sub: string): Promise<string> {
    const res = await t
      .http()
      .get(`/v1/events/${id}`)
      .set('authorization', `Bearer ${t.token({ sub })}`)
    expect(res.status, res.text).toBe(200)
    return res.text
  }

  describe('JSON nesting', () => {
    it('an unknown member nested 10,000 levels gets 400 "nested deeper than 64 levels", not 500; nothing is published', async () => {
      const to = uid('deep-unknown')
      const problem = expectProblem(await publish(eventText(to, `,"junk":${nested(10_000)}`)), 400, 'bad-request')
      expect(problem.detail).toBe(`The body is nested deeper than ${MAX_JSON_DEPTH} levels.`)
      expect(await history(to)).toEqual([])
    })

    it('a batch with an unknown member nested 10,000 levels gets 400, not 500; nothing is published', async () => {
      const to = uid('deep-batch')
      const res = await publishBatch([eventText(to), eventText(to, `,"junk":${nested(10_000)}`)])
      expect(expectProblem(res, 400, 'bad-request').detail).toMatch(/nested deeper than 64 levels/)
      expect(await history(to)).toEqual([])
    })

    it('data nested 5,000 levels gets 400 without internal text ("Maximum call stack size exceeded")', async () => {
      const to = uid('deep-data')
      const res = await publish(eventText(to, `,"data":${nested(5_000)}`))
      expect(expectProblem(res, 400, 'bad-request').detail).toMatch(/nested deeper than 64 levels/)
      expect(res.text).not.toMatch(/Maximum call stack/)
      expect(await history(to)).toEqual([])
    })

    it('a body nested exactly 64 levels is accepted (data 63 deep, served back byte for byte); 65 levels get 400', async () => {
      const to = uid('depth-limit')
      // The event object is level 1, so its data may nest 63 more.
      const data = nested(MAX_JSON_DEPTH - 1)
      const res = await publish(eventText(to, `,"data":${data}`))
      expect(res.status, res.text).toBe(201)
      expect(await served(res.body.id, to)).toContain(`"data":${data},`)
      expectProblem(await publish(eventText(to, `,"data":${nested(MAX_JSON_DEPTH)}`)), 400, 'bad-request')
      expect((await history(to)).map((e) => e.id)).toEqual([res.body.id])
    })

    it('a batch nested exactly 64 levels is accepted (data 61 deep); 65 levels get 400', async () => {
      const to = uid('depth-batch')
      // {"events": [ {"data": ...} ] }: the body, the list and the event are levels 1 to 3.
      const ok = await publishBatch([eventText(to, `,"data":${nested(MAX_JSON_DEPTH - 3)}`)])
      expect(ok.status, ok.text).toBe(201)
      expectProblem(await publishBatch([eventText(to, `,"data":${nested(MAX_JSON_DEPTH - 2)}`)]), 400, 'bad-request')
      expect((await history(to)).map((e) => e.id)).toEqual(ok.body.ids)
    })

    it('every JSON route has the limit: a bulk read or a push subscription nested 10,000 levels gets 400, not 500', async () => {
      const token = t.token({ sub: uid('deep-reader') })
      for (const path of ['/v1/events/read', '/v1/push/subscriptions']) {
        const res = await t
          .http()
          .post(path)
          .set('authorization', `Bearer ${token}`)
          .set('content-type', 'application/json')
          .send(`{"ids":${nested(10_000)}}`)
        expect(expectProblem(res, 400, 'bad-request').detail, path).toMatch(/nested deeper than 64 levels/)
      }
    })
  })

  describe('the size of data, as stored', () => {
    it('a 900 KB number (Infinity once parsed, "null" re-serialized) gets 400 naming body.data; nothing is published', async () => {
      const to = uid('huge-number')
      const number = `1${'0'.repeat(900_000)}`
      expect(JSON.stringify(JSON.parse(number))).toBe('null')
      expectFieldError(await publish(eventText(to, `,"data":${number}`)), 'body.data')
      expect(await history(to)).toEqual([])
    })

    it('"\\u0041" × 15,000 (90 KB as sent, 15 KB parsed) gets 400 naming body.data; nothing is published', async () => {
      const to = uid('escapes')
      const data = `"${'\\u0041'.repeat(15_000)}"`
      expect(Buffer.byteLength(JSON.stringify(JSON.parse(data)))).toBeLessThan(MAX_DATA_BYTES)
      const problem = expectFieldError(await publish(eventText(to, `,"data":${data}`)), 'body.data')
      expect(problem.detail).toMatch(/16384 bytes/)
      expect(await history(to)).toEqual([])
    })

    it('data of exactly 16,384 bytes as sent gets 201 and is served back byte for byte; 16,385 bytes get 400', async () => {
      const to = uid('data-limit')
      const atLimit = `"${'A'.repeat(MAX_DATA_BYTES - 2)}"`
      expect(Buffer.byteLength(atLimit)).toBe(MAX_DATA_BYTES)
      const res = await publish(eventText(to, `,"data":${atLimit}`))
      expect(res.status, res.text).toBe(201)
      expect(await served(res.body.id, to)).toContain(`"data":${atLimit},`)
      expectFieldError(await publish(eventText(to, `,"data":"${'A'.repeat(MAX_DATA_BYTES - 1)}"`)), 'body.data')
      // Bytes, not characters: 8,191 two-byte "é" in quotes are the limit too.
      const twoByte = `"${'\u00e9'.repeat((MAX_DATA_BYTES - 2) / 2)}"`
      expect((await publish(eventText(to, `,"data":${twoByte}`))).status).toBe(201)
      expectFieldError(await publish(eventText(to, `,"data":"${'\u00e9'.repeat(MAX_DATA_BYTES / 2)}"`)), 'body.data')
      expect(await history(to)).toHaveLength(2)
    })

    it('whitespace outside strings is not stored, so it does not count: padded data over the limit gets 201', async () => {
      const to = uid('data-spaces')
      const compact = `["${'A'.repeat(MAX_DATA_BYTES - 4)}"]`
      const res = await publish(eventText(to, `,"data":[ ${' '.repeat(1_000)}${compact.slice(1, -1)}\n]`))
      expect(res.status, res.text).toBe(201)
      expect(await served(res.body.id, to)).toContain(`"data":${compact},`)
    })

    it('a batch with one event whose data is over the limit as sent gets 400 naming body.events.1.data; nothing is published', async () => {
      const to = uid('batch-escapes')
      const res = await publishBatch([
        eventText(to, ',"data":"small"'),
        eventText(to, `,"data":"${'\\u0041'.repeat(3_000)}"`),
      ])
      expectFieldError(res, 'body.events.1.data')
      expect(await history(to)).toEqual([])
    })
  })

  describe('URLs', () => {
    const badUrls: Array<[string, string]> = [
      ['a backslash after the slash', '/\\evil.example/x'],
      ['a tab between the slashes', '/\t/evil.example/x'],
      ['a newline between the slashes', '/\n/evil.example'],
      ['a carriage return between the slashes', '/\r/evil.example'],
      ['two backslashes', '\\\\evil.example/x'],
      ['a backslash later in the path', '/a\\b'],
      ['DEL', '/a\u007fb'],
      ['a C1 control (NEL)', '/a\u0085b'],
      ['a leading space', ' /x'],
      ['protocol-relative', '//evil.example/x'],
      ['http', 'http://evil.example/x'],
      ['javascript:', 'javascript:alert(1)'],
      ['data:', 'data:text/html,<script>alert(1)</script>'],
      ['https without a host', 'https://'],
      ['https with credentials', 'https://user:pass@evil.example/x'],
      ['https with a user', 'https://school.example@evil.example/x'],
      ['https with a space in the host', 'https://a b/'],
      ['a bare word', 'grades/42'],
    ]

    it.each(badUrls)('url with %s gets 400 naming body.url; nothing is published', async (_, url) => {
      const to = uid('bad-url')
      expectFieldError(await publish(eventText(to, `,"url":${JSON.stringify(url)}`)), 'body.url')
      expect(await history(to)).toEqual([])
    })

    /** Every URL field of an event, as members to splice into its JSON, and the path a refusal names. */
    const urlFields: Array<[string, (url: string) => string]> = [
      ['url', (url) => `,"url":${JSON.stringify(url)}`],
      ['icon', (url) => `,"icon":${JSON.stringify(url)}`],
      ['image', (url) => `,"image":${JSON.stringify(url)}`],
      ['badge', (url) => `,"badge":${JSON.stringify(url)}`],
      ['actions.0.url', (url) => `,"actions":[{"action":"open","title":"Open","url":${JSON.stringify(url)}}]`],
      [
        'actions.1.url',
        (url) =>
          `,"actions":[{"action":"read","title":"Read"},{"action":"open","title":"Open","url":${JSON.stringify(url)}}]`,
      ],
    ]
    const hostileSchemes = [
      'javascript:alert(1)',
      'JavaScript:alert(document.cookie)',
      'data:text/html,<script>alert(1)</script>',
      'data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=',
      'http://evil.example/x.png',
      '//evil.example/x.png',
    ]
    const everyField = urlFields.flatMap(([field, members]) =>
      hostileSchemes.map((url) => [field, url, members] as const),
    )

    it.each(everyField)('%s = %s gets 400 naming that field; nothing is published', async (field, url, members) => {
      const to = uid('bad-url-field')
      const problem = expectFieldError(await publish(eventText(to, members(url))), `body.${field}`)
      expect(problem.errors?.find((e) => e.path === `body.${field}`)?.message).toMatch(/path on this service|https/)
      expect(await history(to)).toEqual([])
    })

    it.each(urlFields)(
      '%s: a bad one in a batch gets 400 naming it under body.events.1; nothing is published',
      async (field, members) => {
        const to = uid('bad-url-field-batch')
        const res = await publishBatch([eventText(to, members('/ok')), eventText(to, members('javascript:alert(1)'))])
        expectFieldError(res, `body.events.1.${field}`)
        expect(await history(to)).toEqual([])
      },
    )

    it('a bad url in a batch gets 400 naming body.events.1.url; nothing is published', async () => {
      const to = uid('bad-url-batch')
      const res = await publishBatch([eventText(to, ',"url":"/ok"'), eventText(to, ',"url":"/\\\\evil.example"')])
      expectFieldError(res, 'body.events.1.url')
      expect(await history(to)).toEqual([])
    })

    it.each([
      '/grades/42',
      'https://school.example/x?y=1#z',
      '/',
      '/a//b',
      '/%2F%2Fevil.example',
      '/inbox?q=\u00e9\ud83d\ude00',
      'HTTPS://School.Example:8443/x',
    ])('url %s gets 201 and is served back as given', async (url) => {
      const to = uid('good-url')
      const res = await publish(eventText(to, `,"url":${JSON.stringify(url)}`))
      expect(res.status, res.text).toBe(201)
      expect(JSON.parse(await served(res.body.id, to)).url).toBe(url)
      // Resolved against any origin, it stays on that origin or is https.
      const resolved = new URL(url, 'http://service.example')
      expect(resolved.origin === 'http://service.example' || resolved.protocol === 'https:').toBe(true)
    })
  })

  describe('Idempotency-Key', () => {
    it('a key reused with another body gets 422 problem+json; nothing new is published', async () => {
      const to = uid('idem-other')
      const key = `key-${to}`
      const first = await publish(eventText(to, ',"body":"first"'), key)
      expect(first.status, first.text).toBe(201)
      const other = await publish(eventText(to, ',"body":"second"'), key)
      expect(expectProblem(other, 422, 'unprocessable').detail).toContain(key)
      expect((await history(to)).map((e) => e.id)).toEqual([first.body.id])
    })

    it('the same body with other whitespace and member order gets 200 with the same id', async () => {
      const to = uid('idem-same')
      const key = `key-${to}`
      const first = await publish(`{"type":"input.test","to":{"users":["${to}"]},"title":"t","data":{"a":[1,2]}}`, key)
      expect(first.status, first.text).toBe(201)
      const again = await publish(
        `{\n  "title" : "t",\n  "data" : { "a" : [ 1 , 2 ] },\n  "to" : { "users" : [ "${to}" ] },\n  "type" : "input.test"\n}`,
        key,
      )
      expect(again.status, again.text).toBe(200)
      expect(again.body).toEqual(first.body)
      // Defaults spelled out make the same request as validated.
      const sameDefaults = await publish(
        `{"type":"input.test","to":{"users":["${to}"]},"title":"t","data":{"a":[1,2]},"priority":"normal","ttl":604800}`,
        key,
      )
      expect(sameDefaults.status, sameDefaults.text).toBe(200)
      expect((await history(to)).map((e) => e.id)).toEqual([first.body.id])
    })

    it('another spelling of data under the same key (1.0 for 1) gets 422: it would store other bytes', async () => {
      const to = uid('idem-spelling')
      const key = `key-${to}`
      expect((await publish(eventText(to, ',"data":{"n":1}'), key)).status).toBe(201)
      expectProblem(await publish(eventText(to, ',"data":{"n":1.0}'), key), 422, 'unprocessable')
      expect(await history(to)).toHaveLength(1)
    })

    it('batch: the same events get 200 with the same ids; another order of them gets 422', async () => {
      const to = uid('idem-batch')
      const key = `key-${to}`
      const events = [eventText(to, ',"body":"a"'), eventText(to, ',"body":"b"')]
      const first = await publishBatch(events, key)
      expect(first.status, first.text).toBe(201)
      const again = await publishBatch(
        events.map((e) => ` ${e.replaceAll(',', ' , ')} `),
        key,
      )
      expect(again.status, again.text).toBe(200)
      expect(again.body.ids).toEqual(first.body.ids)
      expectProblem(await publishBatch([...events].reverse(), key), 422, 'unprocessable')
      expect(await history(to)).toHaveLength(2)
    })

    it('a single key reused on the batch route is still 409 (not 422), whatever the events', async () => {
      const to = uid('idem-kind')
      const key = `key-${to}`
      expect((await publish(eventText(to), key)).status).toBe(201)
      expectProblem(await publishBatch([eventText(to, ',"body":"other"')], key), 409, 'conflict')
      expect(await history(to)).toHaveLength(1)
    })

    it('a refused request (data over the limit) does not use up the key', async () => {
      const to = uid('idem-refused')
      const key = `key-${to}`
      expectFieldError(await publish(eventText(to, `,"data":"${'\\u0041'.repeat(3_000)}"`), key), 'body.data')
      const ok = await publish(eventText(to, ',"data":"A"'), key)
      expect(ok.status, ok.text).toBe(201)
    })
  })
})

describePostgres('Idempotency-Key in flight [postgres]', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp('postgres')
  })
  afterAll(() => t.close())

  /** Publishes with fetch, so the request is on its way at once (supertest sends only when awaited). */
  const publish = (key: string, body: object) =>
    fetch(`${t.url}/v1/events`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${t.token({ sub: 'in-flight-publisher', scope: PUBLISHER })}`,
        'content-type': 'application/json',
        'idempotency-key': key,
      },
      body: JSON.stringify(body),
    })

  /** Publishes waiting for PUBLISH_LOCK: each is inside its transaction, holding its key's lock. */
  const waitingPublishes = async () => {
    const [row] = await t.database.query<{ n: number }>(sql`
      select count(*)::int as n from pg_locks
      where locktype = 'advisory' and not granted
        and classid = ${PUBLISH_LOCK.classId} and objid = ${PUBLISH_LOCK.objId} and objsubid = 2`)
    return row.n
  }

  it('a reuse while the first request with the key is in flight gets 409; the first then answers 201, a retry 200 with its id', async () => {
    const to = 'in-flight-recipient'
    const key = 'in-flight-key'
    const body = { type: 'input.test', to: { users: [to] }, title: 'in flight' }
    // Every publish takes PUBLISH_LOCK (shared) inside its transaction: held exclusively here, the first
    // keyed publish stops there, with its key locked and its row claimed.
    const blocker = await t.database.pg!.reserve()
    await blocker`select pg_advisory_lock(${PUBLISH_LOCK.classId}::int, ${PUBLISH_LOCK.objId}::int)`
    let first: Promise<globalThis.Response> | undefined
    try {
      first = publish(key, body)
      await expect.poll(waitingPublishes, { timeout: 5_000 }).toBe(1)

      const second = await Promise.race([publish(key, body), sleep(5_000).then(() => 'no answer within 5 s')])
      expect(second).not.toBe('no answer within 5 s')
      const res = second as globalThis.Response
      expect(res.status).toBe(409)
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/)
      const problem = (await res.json()) as Problem
      expect(problem.type).toBe('urn:herald:problem:conflict')
      expect(problem.detail).toMatch(/in flight/)
      // Another body with the key while it is in flight: also 409 (whether it is another request is not known yet).
      expect((await publish(key, { ...body, title: 'other' })).status).toBe(409)
    } finally {
      await blocker`select pg_advisory_unlock(${PUBLISH_LOCK.classId}::int, ${PUBLISH_LOCK.objId}::int)`
      blocker.release()
    }
    const answered = await first!
    expect(answered.status).toBe(201)
    const created = (await answered.json()) as { id: string }
    const retry = await publish(key, body)
    expect(retry.status).toBe(200)
    expect(((await retry.json()) as { id: string }).id).toBe(created.id)

    const list = await t
      .http()
      .get('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: to })}`)
    expect(list.body.events.map((e: { id: string }) => e.id)).toEqual([created.id])
  })
})

describe('problem details never carry internal messages', () => {
  /** The service's error handler on a bare Fastify app, with routes that fail the ways a bug or a library would. */
  async function appWithFailures() {
    const app = Fastify()
    registerErrorHandling(app)
    app.get('/range-error', () => {
      throw Object.assign(new RangeError('Maximum call stack size exceeded'), { statusCode: 400 })
    })
    app.post(
      '/throwing-validator',
      {
        schema: { body: {} },
        validatorCompiler: () => () => {
          throw new RangeError('Maximum call stack size exceeded')
        },
      },
      () => 'unreachable',
    )
    await app.ready()
    return app
  }

  it('a 4xx error that is not meant for clients gets its title as detail, not its message', async () => {
    const app = await appWithFailures()
    const res = await app.inject({ method: 'GET', url: '/range-error' })
    expect(res.statusCode).toBe(400)
    expect(res.json().detail).toBe('Bad request')
    expect(res.body).not.toMatch(INTERNAL_TEXT)
    await app.close()
  })

  it('a validator that throws is the service’s fault: 500 with the generic detail, not a 400 quoting it', async () => {
    const app = await appWithFailures()
    const res = await app.inject({ method: 'POST', url: '/throwing-validator', payload: { a: 1 } })
    expect(res.statusCode).toBe(500)
    expect(res.json().type).toBe('urn:herald:problem:internal')
    expect(res.body).not.toMatch(INTERNAL_TEXT)
    await app.close()
  })
})

describe('the service worker (public/sw.js) opens a clicked notification’s URL', () => {
  /** sw.js run in a sandbox whose `self` records the windows it opens. */
  function serviceWorker(origin: string) {
    const handlers = new Map<string, (event: unknown) => void>()
    const opened: string[] = []
    const self = {
      location: new URL('/sw.js', origin),
      addEventListener: (type: string, handler: (event: unknown) => void) => handlers.set(type, handler),
      clients: { matchAll: async () => [], openWindow: async (url: string) => void opened.push(url) },
    }
    vm.runInNewContext(readFileSync(join(PUBLIC_DIR, 'sw.js'), 'utf8'), { self, URL, fetch })
    async function click(url: string) {
      const pending: Array<Promise<unknown>> = []
      handlers.get('notificationclick')!({
        notification: { close: () => {}, data: { url } },
        waitUntil: (p: Promise<unknown>) => pending.push(p),
      })
      await Promise.all(pending)
    }
    return { opened, click }
  }

  it('on its own origin or over https, and never elsewhere (http, javascript:, data:, "//host", "/\\\\host")', async () => {
    const sw = serviceWorker('http://localhost:8080')
    for (const url of [
      'http://evil.example/x',
      '//evil.example/x',
      '/\\evil.example/x',
      '/\t/evil.example',
      'javascript:alert(1)',
      'data:text/html,<script>alert(1)</script>',
    ])
      await sw.click(url)
    expect(sw.opened).toEqual([])
    for (const url of ['/grades/42', 'https://school.example/x?y=1#z', 'http://localhost:8080/inbox'])
      await sw.click(url)
    expect(sw.opened).toEqual([
      'http://localhost:8080/grades/42',
      'https://school.example/x?y=1#z',
      'http://localhost:8080/inbox',
    ])
  })
})
