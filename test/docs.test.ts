import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { OPERATIONS } from '../src/docs.ts'
import { groupedDigits } from '../src/grouped-digits.ts'
import { problemSchema } from '../src/problems.ts'
import { eventPage, listedEvent, published } from '../src/routes/schemas.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'

// SPEC 8: GET /docs is OpenAPI, generated from the same zod schemas that validate requests.

/** A part of the OpenAPI document: JSON read by path, where a missing part fails the test that reads it. */
// biome-ignore lint/suspicious/noExplicitAny: the document is walked freely; the assertions are the types
type Json = Record<string, any>

const TAGS = new Set([
  'events',
  'stream',
  'push',
  'topics',
  'preferences',
  'directory',
  'event-types',
  'system',
  'admin',
  'webhooks',
  'operations',
  'demo',
])

/**
 * Every `METHOD /path` the app serves, from `printRoutes` (a tree: each line's depth is its indent / 4, its path
 * the concatenation of its ancestors'). HEAD and OPTIONS, static files (`*`) and the docs' own routes are left out.
 */
function servedRoutes(t: TestApp): string[] {
  const stack: string[] = []
  const routes: string[] = []
  for (const line of t.app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (.+) \(([A-Z, ]+)\)$/.exec(line)
    if (!m) continue
    const depth = m[1].length / 4
    stack.length = depth
    stack.push(m[2])
    const path = stack.join('').replace(/\/+/g, '/')
    if (path.endsWith('*') || path === '/docs' || path.startsWith('/docs/')) continue
    for (const method of m[3].split(', ')) {
      if (method !== 'HEAD' && method !== 'OPTIONS') routes.push(`${method} ${path}`)
    }
  }
  return routes
}

/** `/v1/events/:id` as OpenAPI writes it: `/v1/events/{id}`. */
const openapiPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}')

/** The non-null branch of `anyOf: [X, {type: 'null'}]` (a nullish field), or the schema itself. */
const nonNull = (schema: Json): Json => schema.anyOf?.find((s: Json) => s.type !== 'null') ?? schema

/** The error statuses an operation documents (4xx, 5xx), ascending; `default` is not one. */
const errorStatuses = (op: Json): number[] =>
  Object.keys(op.responses)
    .filter((s) => /^[45]\d\d$/.test(s))
    .map(Number)

/** Whether an operation takes the bearer token: every one but those that say `security: []`. */
const needsToken = (op: Json) => op.security === undefined || op.security.length > 0
/** Every operation that takes a token takes X-Herald-Tenant too (test/directors.test.ts). */
const TENANT_HEADER_REF = { $ref: '#/components/parameters/TenantHeader' }

describe('OpenAPI document (SPEC 8)', () => {
  let t: TestApp
  let doc: Json
  beforeAll(async () => {
    // Sign-in on, so its route is served too; anonymous routes limited to 1 request a minute per IP.
    t = await startApp('pglite', { demoSignIn: true, config: { RATE_LIMIT_IP_PER_MIN: 1 } })
    const res = await t.http().get('/docs/json')
    expect(res.status, res.text).toBe(200)
    doc = res.body
  })
  afterAll(() => t.close())

  const operation = (method: string, path: string): Json => doc.paths[path]?.[method.toLowerCase()]
  /** Every operation of the document, by `METHOD /path` (as docs.ts OPERATIONS names them). */
  const operations = (): [string, Json][] =>
    Object.entries(doc.paths as Record<string, Json>).flatMap(([path, ops]) =>
      Object.entries(ops).map(([method, op]): [string, Json] => [`${method.toUpperCase()} ${path}`, op]),
    )

  it('GET /docs/json is an OpenAPI 3 document with bearer auth', () => {
    expect(doc.openapi).toMatch(/^3\./)
    expect(doc.info).toMatchObject({ title: expect.any(String), version: expect.any(String) })
    expect(Object.keys(doc.paths).length).toBeGreaterThan(0)
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' })
    expect(doc.security).toEqual([{ bearerAuth: [] }])
  })

  it('names its server: the service serving it, by a relative URL', () => {
    expect(doc.servers).toEqual([{ url: '/', description: expect.any(String) }])
    expect(doc.info.license).toEqual({ name: 'MIT', identifier: 'MIT' })
  })

  it('every operation has the operationId of its entry in OPERATIONS (src/docs.ts), and every entry is served', () => {
    const documented = operations()
    for (const [key, op] of documented) {
      expect(OPERATIONS[key], `${key}: add it to OPERATIONS in src/docs.ts`).toBeDefined()
      expect(op.operationId, key).toBe(OPERATIONS[key].operationId)
      expect(op.operationId, key).toMatch(/^[a-z]+[A-Z][A-Za-z]*$/)
    }
    expect(documented.map(([key]) => key).sort()).toEqual(Object.keys(OPERATIONS).sort())
    const ids = documented.map(([, op]) => op.operationId)
    expect(new Set(ids).size, 'operationIds are unique').toBe(ids.length)
  })

  it('every route the app serves is in the document, with its method, a summary and a tag', () => {
    const routes = servedRoutes(t)
    expect(routes).toContain('POST /v1/events')
    expect(routes).toContain('POST /demo/token')
    for (const route of routes) {
      const [method, path] = route.split(' ')
      const op = operation(method, openapiPath(path))
      expect(op, `${route} is missing`).toBeDefined()
      expect(op.summary, `${route} has no summary`).toEqual(expect.any(String))
      expect(op.tags?.length, `${route} has no tag`).toBe(1)
      expect(TAGS.has(op.tags[0]), `${route}: tag ${op.tags[0]}`).toBe(true)
    }
  })

  it('the docs themselves are not in the document', () => {
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/docs'))).toEqual([])
  })

  it("the publish body is the SPEC's, with its limits", () => {
    const body = operation('POST', '/v1/events').requestBody.content['application/json'].schema
    expect(Object.keys(body.properties).sort()).toEqual(
      [
        'type',
        'to',
        'title',
        'body',
        'data',
        'priority',
        'url',
        'collapseKey',
        'actions',
        'icon',
        'image',
        'badge',
        'ttl',
        'escalate',
        'store',
        'deliverAt',
      ].sort(),
    )
    // A registered type may render the title and give the defaults (docs/event-types.md).
    expect(body.required.sort()).toEqual(['to', 'type'])
    const p = body.properties
    expect(p.type).toMatchObject({ type: 'string', maxLength: 100, pattern: expect.any(String) })
    expect(new RegExp(p.type.pattern).test('grade.updated')).toBe(true)
    expect(new RegExp(p.type.pattern).test('Grade Updated')).toBe(false)
    expect(Object.keys(p.to.properties).sort()).toEqual(['roles', 'tenant', 'topics', 'users'])
    expect(p.title).toMatchObject({ type: 'string', minLength: 1, maxLength: 200 })
    expect(nonNull(p.body)).toMatchObject({ type: 'string', maxLength: 2000 })
    expect(p.data.description).toMatch(/16384 bytes/)
    expect(p.priority).toMatchObject({ enum: ['low', 'normal', 'high', 'urgent'] })
    expect(p.priority.description).toMatch(/registered type’s default, else `normal`/)
    expect(nonNull(p.url)).toMatchObject({ type: 'string', maxLength: 2048 })
    expect(nonNull(p.collapseKey)).toMatchObject({ type: 'string', minLength: 1, maxLength: 64 })
    const actions = nonNull(p.actions)
    expect(actions).toMatchObject({ type: 'array', maxItems: 2 })
    expect(actions.items.required.sort()).toEqual(['action', 'title'])
    expect(actions.items.additionalProperties).toBe(false)
    expect(actions.items.properties.action).toMatchObject({ enum: ['ack', 'read', 'open'] })
    expect(actions.items.properties.title).toMatchObject({ type: 'string', minLength: 1, maxLength: 40 })
    expect(nonNull(actions.items.properties.url)).toMatchObject({ type: 'string', maxLength: 2048 })
    for (const picture of ['icon', 'image', 'badge']) {
      expect(nonNull(p[picture]), picture).toMatchObject({ type: 'string', maxLength: 2048 })
    }
    expect(p.ttl).toMatchObject({ type: 'integer', minimum: 60, maximum: 2_592_000 })
    expect(p.ttl.description).toMatch(/registered type’s default, else 604800/)
    expect(p.deliverAt).toMatchObject({ type: 'string', format: 'date-time' })
    expect(p.deliverAt.description).toMatch(/RFC 3339.*30 days/)
    const batchBody = operation('POST', '/v1/events/batch').requestBody.content['application/json'].schema
    expect(batchBody.properties.deliverAt).toMatchObject({ type: 'string', format: 'date-time' })

    const headers = operation('POST', '/v1/events').parameters.filter((x: Json) => x.in === 'header')
    expect(headers.map((x: Json) => x.name)).toEqual(['idempotency-key'])
    expect(
      operation('POST', '/v1/events/batch').requestBody.content['application/json'].schema.properties.events,
    ).toMatchObject({ type: 'array', minItems: 1, maxItems: 1000 })
  })

  it('limits in the descriptions read as counts, digits grouped (without Intl, which would cost ~5 MB at start)', () => {
    const directoryBatch = operation('POST', '/v1/directory/users/batch').requestBody.content['application/json']
    expect(directoryBatch.schema.properties.operations.description).toMatch(/^At most 5,000 operations, /)
    const system = operation('POST', '/v1/system/events')
    expect(system.description).toContain('one statement per 1,000 tenants.')
    expect(system.requestBody.content['application/json'].schema.properties.tenants.description).toContain(
      'a list (at most 10,000, duplicates once)',
    )
    expect(groupedDigits(0)).toBe('0')
    expect(groupedDigits(999)).toBe('999')
    expect(groupedDigits(1_234_567)).toBe('1,234,567')
  })

  it('request schemas of the other routes are there: query, path and body', () => {
    const query = operation('GET', '/v1/events').parameters.filter((x: Json) => x.in === 'query')
    expect(query.map((x: Json) => x.name).sort()).toEqual(['after', 'before', 'limit', 'unread'])
    expect(query.find((x: Json) => x.name === 'limit').schema).toMatchObject({ maximum: 500, default: 50 })
    expect(operation('GET', '/v1/events/{id}').parameters).toEqual([
      expect.objectContaining({ in: 'path', name: 'id', required: true }),
      TENANT_HEADER_REF,
    ])
    const subscription = operation('POST', '/v1/push/subscriptions').requestBody.content['application/json'].schema
    expect(subscription.required.sort()).toEqual(['endpoint', 'keys'])
    expect(subscription.properties.keys.required.sort()).toEqual(['auth', 'p256dh'])
    const bulkRead = operation('POST', '/v1/events/read').requestBody.content['application/json'].schema
    expect(bulkRead.anyOf.map((s: Json) => Object.keys(s.properties))).toEqual([['ids'], ['upTo']])
    // An edit takes the four fields it may change, by a publish's rules, and nothing else.
    const edit = operation('PATCH', '/v1/events/{id}')
    expect(edit.parameters).toEqual([
      expect.objectContaining({ in: 'path', name: 'id', required: true }),
      TENANT_HEADER_REF,
    ])
    const editBody = edit.requestBody.content['application/json'].schema
    expect(Object.keys(editBody.properties).sort()).toEqual(['body', 'data', 'title', 'url'])
    expect(editBody.required ?? []).toEqual([])
    expect(editBody.additionalProperties).toBe(false)
    expect(editBody.properties.title).toMatchObject({ type: 'string', minLength: 1, maxLength: 200 })
    expect(nonNull(editBody.properties.body)).toMatchObject({ type: 'string', maxLength: 2000 })
    expect(nonNull(editBody.properties.url)).toMatchObject({ type: 'string', maxLength: 2048 })
    expect(editBody.properties.data.description).toMatch(/16384 bytes/)
    expect(operation('DELETE', '/v1/events/{id}').parameters).toEqual([
      expect.objectContaining({ in: 'path', name: 'id', required: true }),
      TENANT_HEADER_REF,
    ])
  })

  it('the preferences bodies: rules, the push switch and quiet hours, with their rules; urgentBypass is the tenant’s', () => {
    const body = (method: string, path: string) =>
      operation(method, path).requestBody.content['application/json'].schema
    const mine = body('PUT', '/v1/me/preferences')
    expect(Object.keys(mine.properties).sort()).toEqual(['push', 'quietHours', 'rules', 'urgentBypass'])
    expect(mine.additionalProperties).toBe(false)
    expect(mine.properties.rules).toMatchObject({ type: 'array', maxItems: 50 })
    const rule = mine.properties.rules.items
    expect(Object.keys(rule.properties).sort()).toEqual(['inApp', 'push', 'topic', 'type'])
    expect(rule.additionalProperties).toBe(false)
    const typePattern = new RegExp(rule.properties.type.pattern)
    for (const good of ['grades.*', 'attendance.absent', '*']) expect(typePattern.test(good), good).toBe(true)
    for (const bad of ['Grades.*', 'grades.**', '*.posted', 'grades.']) expect(typePattern.test(bad), bad).toBe(false)
    expect(mine.properties.push.properties.minPriority).toMatchObject({
      enum: ['low', 'normal', 'high', 'urgent'],
      default: 'normal',
    })
    const quiet = nonNull(mine.properties.quietHours)
    expect(quiet.required.sort()).toEqual(['end', 'start', 'timeZone'])
    expect(new RegExp(quiet.properties.start.pattern).test('22:00')).toBe(true)
    expect(new RegExp(quiet.properties.start.pattern).test('24:00')).toBe(false)
    expect(quiet.properties.timeZone.description).toMatch(/IANA/)
    expect(quiet.properties.days.items.enum.sort()).toEqual(['fri', 'mon', 'sat', 'sun', 'thu', 'tue', 'wed'])
    const tenant = body('PUT', '/v1/tenant/preferences')
    expect(tenant.properties.urgentBypass).toMatchObject({ type: 'boolean', default: true })
    const reply = operation('GET', '/v1/me/preferences').responses['200'].content['application/json'].schema
    expect(reply.required).toEqual(expect.arrayContaining(['rules', 'updatedAt']))
    expect(operation('PUT', '/v1/tenant/preferences').responses['403']).toBeDefined()
  })

  it('replies a client needs are described', () => {
    const json = (method: string, path: string, status: string) =>
      operation(method, path).responses[status].content['application/json'].schema
    expect(json('POST', '/v1/events', '201').required.sort()).toEqual(['createdAt', 'id'])
    expect(json('POST', '/v1/events', '200').required.sort()).toEqual(['createdAt', 'id'])
    expect(json('POST', '/v1/events/batch', '201').properties.ids.type).toBe('array')
    // 202: a scheduled publish (deliverAt), or live-only events sent (store: false).
    for (const path of ['/v1/events', '/v1/events/batch']) {
      const accepted = json('POST', path, '202').anyOf as Array<{ required: string[] }>
      expect(
        accepted.map((reply) => reply.required.sort()),
        path,
      ).toEqual([['deliverAt', 'scheduledId'], ['live']])
    }
    expect(Object.keys(json('GET', '/v1/scheduled', '200').properties).sort()).toEqual(['next', 'scheduled'])
    expect(Object.keys(json('GET', '/v1/scheduled/{id}', '200').properties)).toEqual(
      expect.arrayContaining(['id', 'state', 'deliverAt', 'eventIds', 'events']),
    )
    expect(operation('DELETE', '/v1/scheduled/{id}').responses['204']).toBeDefined()
    expect(Object.keys(json('GET', '/v1/events', '200').properties).sort()).toEqual(['events', 'next'])
    expect(Object.keys(json('GET', '/v1/events/{id}', '200').properties)).toEqual(
      expect.arrayContaining([
        'id',
        'tenant',
        'type',
        'title',
        'data',
        'priority',
        'actions',
        'icon',
        'image',
        'badge',
        'createdAt',
        'expiresAt',
        'revision',
        'readAt',
        'ackedAt',
      ]),
    )
    const listed = json('GET', '/v1/events', '200').properties.events.items
    expect(Object.keys(listed.properties)).toEqual(
      expect.arrayContaining(['actions', 'icon', 'image', 'badge', 'revision']),
    )
    expect(listed.properties.revision).toMatchObject({ type: 'integer', minimum: 0 })
    // An edit answers the event as it now stands; a recall, nothing.
    expect(Object.keys(json('PATCH', '/v1/events/{id}', '200').properties)).toEqual(
      expect.arrayContaining(['id', 'title', 'body', 'data', 'url', 'revision']),
    )
    expect(operation('DELETE', '/v1/events/{id}').responses['204']).toBeDefined()
    expect(nonNull(listed.properties.actions).items.properties.action.enum).toEqual(['ack', 'read', 'open'])
    expect(json('GET', '/v1/events/unread-count', '200').properties.unread.type).toBe('integer')
    const status = json('GET', '/v1/events/{id}/status', '200')
    expect(Object.keys(status.properties).sort()).toEqual(['acked', 'push', 'read', 'recipients'])
    expect(status.properties.recipients.required.sort()).toEqual(
      ['acked', 'delivered', 'pushed', 'read', 'recipients', 'unread'].sort(),
    )
    const rollCall = json('GET', '/v1/events/{id}/recipients', '200')
    expect(rollCall.required.sort()).toEqual(['next', 'recipients', 'totals'])
    expect(Object.keys(rollCall.properties.recipients.items.properties).sort()).toEqual(
      ['ackedAt', 'deliveredAt', 'displayName', 'pushedAt', 'readAt', 'userId'].sort(),
    )
    expect(json('POST', '/v1/events/{id}/nudge', '200').required.sort()).toEqual(['nudged', 'pushes'])
    expect(json('GET', '/v1/push/vapid-public-key', '200').required).toEqual(['publicKey'])
    expect(json('POST', '/v1/push/subscriptions', '201').required.sort()).toEqual(['id', 'renewToken'])
    expect(json('GET', '/v1/push/subscriptions', '200').properties.subscriptions.type).toBe('array')
    expect(operation('POST', '/v1/events/{id}/ack').responses['204']).toBeDefined()
  })

  it('routes that need no token say so', () => {
    for (const [method, path] of [
      ['GET', '/v1/push/vapid-public-key'],
      ['GET', '/health'],
      ['GET', '/ready'],
      ['POST', '/demo/token'],
    ]) {
      expect(operation(method, path).security, `${method} ${path}`).toEqual([])
    }
    expect(operation('POST', '/v1/events').security).toBeUndefined()
  })

  it('the stream: text/event-stream with notification, update, delete, receipt, nudge, roll-call and reset; the token may be a ?ticket= or ?access_token=', () => {
    const op = operation('GET', '/v1/stream')
    expect(op.tags).toEqual(['stream'])
    expect(op.security).toEqual([{ bearerAuth: [] }, { streamTicketQuery: [] }, { accessTokenQuery: [] }])
    expect(doc.components.securitySchemes.accessTokenQuery).toMatchObject({
      type: 'apiKey',
      in: 'query',
      name: 'access_token',
    })
    expect(doc.components.securitySchemes.streamTicketQuery).toMatchObject({
      type: 'apiKey',
      in: 'query',
      name: 'ticket',
    })
    const params = op.parameters.map((x: Json) => `${x.in}:${x.name}`)
    expect(params).toEqual(expect.arrayContaining(['query:topics', 'query:lastEventId', 'header:last-event-id']))
    const sse = op.responses['200'].content['text/event-stream'].schema
    const frames = ['notification', 'update', 'delete', 'receipt', 'nudge', 'roll-call', 'reset']
    for (const event of frames.map((name) => `event: ${name}`)) {
      expect(sse.description).toContain(event)
    }
  })

  it('every operation documents each error it answers as problem+json, with when, and any other as default', () => {
    expect(doc.components.schemas.Problem.required.sort()).toEqual(['detail', 'status', 'title', 'type'])
    for (const [key, op] of operations()) {
      for (const status of [...errorStatuses(op), 'default']) {
        const reply = op.responses[status]
        expect(reply.content['application/problem+json'].schema, `${key} ${status}`).toEqual({
          $ref: '#/components/schemas/Problem',
        })
        expect(reply.description, `${key} ${status}`).toMatch(/\w/)
      }
      for (const status of [429, 503].filter((s) => op.responses[s])) {
        expect(op.responses[status].headers['Retry-After'].schema.type, `${key} ${status}`).toBe('integer')
      }
    }
  })

  it('errors follow from each route: a token gives 401 and 429, a body 400, 413 and 415, the database 503', () => {
    for (const [key, op] of operations()) {
      const statuses = errorStatuses(op)
      const own = OPERATIONS[key]?.errors ?? {}
      if (needsToken(op)) expect(statuses, key).toEqual(expect.arrayContaining([401, 429]))
      else expect(statuses.includes(401), `${key}: public, yet 401`).toBe(own[401] !== undefined)
      if (op.requestBody) expect(statuses, key).toEqual(expect.arrayContaining([400, 413, 415]))
      expect(statuses.includes(503), key).toBe(OPERATIONS[key]?.database || own[503] !== undefined)
    }
    const errorsOf = (method: string, path: string) => errorStatuses(operation(method, path))
    expect(errorsOf('POST', '/v1/events')).toEqual([400, 401, 403, 409, 413, 415, 422, 429, 503])
    expect(errorsOf('POST', '/v1/events/batch')).toEqual([400, 401, 403, 409, 413, 415, 422, 429, 503])
    expect(errorsOf('GET', '/v1/events/{id}')).toEqual([400, 401, 404, 429, 503])
    // Edit and recall: a recipient who is not its publisher gets 403, anyone else 404.
    expect(errorsOf('PATCH', '/v1/events/{id}')).toEqual([400, 401, 403, 404, 413, 415, 429, 503])
    expect(errorsOf('DELETE', '/v1/events/{id}')).toEqual([400, 401, 403, 404, 429, 503])
    expect(operation('PATCH', '/v1/events/{id}').responses['403'].description).toMatch(/publisher nor an `admin`/)
    expect(errorsOf('GET', '/v1/scheduled')).toEqual([400, 401, 429, 503])
    expect(errorsOf('GET', '/v1/scheduled/{id}')).toEqual([400, 401, 404, 429, 503])
    expect(errorsOf('DELETE', '/v1/scheduled/{id}')).toEqual([400, 401, 404, 409, 429, 503])
    expect(errorsOf('GET', '/v1/events/unread-count')).toEqual([401, 429, 503])
    expect(errorsOf('GET', '/v1/stream')).toEqual([400, 401, 403, 429, 503])
    expect(errorsOf('GET', '/v1/push/vapid-public-key')).toEqual([429])
    expect(errorsOf('POST', '/demo/token')).toEqual([400, 413, 415, 429])
    expect(errorsOf('GET', '/health')).toEqual([])
    // 2xx replies are the routes' own, next to the errors.
    expect(Object.keys(operation('GET', '/v1/stream').responses)).toEqual(expect.arrayContaining(['200', '204']))
  })

  it('what the routes send fits the documented schemas, and event JSON goes out as it was built', async () => {
    const user = t.token({ sub: 'docs-reader' })
    const publisher = t.token({ sub: 'docs-publisher', scope: PUBLISHER })
    const pub = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${publisher}`)
      .set('content-type', 'application/json')
      .send('{"type":"docs.test","title":"Hi","to":{"users":["docs-reader"]},"data":{"z":1,"a":12345678901234567890}}')
    expect(pub.status, pub.text).toBe(201)
    expect(published.parse(pub.body)).toEqual(pub.body)

    const list = await t.http().get('/v1/events?after=0').set('authorization', `Bearer ${user}`)
    expect(list.status, list.text).toBe(200)
    expect(list.headers['content-type']).toMatch(/^application\/json/)
    expect(eventPage.parse(list.body)).toEqual(list.body)
    // Text, not a re-serialized object: key order and the big integer are as published.
    expect(list.text).toContain('"data":{"z":1,"a":12345678901234567890}')

    const one = await t.http().get(`/v1/events/${pub.body.id}`).set('authorization', `Bearer ${user}`)
    expect(one.status, one.text).toBe(200)
    expect(listedEvent.parse(one.body)).toEqual(one.body)
    expect(one.text).toContain('"data":{"z":1,"a":12345678901234567890}')

    const problem = await t.http().get('/v1/events')
    expect(problem.status).toBe(401)
    expect(problem.headers['content-type']).toMatch(/^application\/problem\+json/)
    expect(problemSchema.parse(problem.body)).toEqual(problem.body)
    expect(errorStatuses(operation('GET', '/v1/events'))).toContain(problem.status)
  })

  it('GET /docs serves the UI as HTML', async () => {
    const res = await t.http().get('/docs')
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/html/)
    expect(res.text).toMatch(/swagger/i)
    const init = await t.http().get('/docs/static/swagger-initializer.js')
    expect(init.status).toBe(200)
  })

  it('the docs need no token and are not rate limited', async () => {
    // The limit on anonymous routes is 1 a minute here: the VAPID key route shows it is on.
    const first = await t.http().get('/v1/push/vapid-public-key')
    const second = await t.http().get('/v1/push/vapid-public-key')
    expect([first.status, second.status]).toEqual([200, 429])
    for (let i = 0; i < 5; i++) {
      expect((await t.http().get('/docs/json')).status).toBe(200)
      expect((await t.http().get('/docs')).status).toBe(200)
    }
  })
})
