// The reference the service is measured against: the least a Node SSE notification server can do with the
// same requests. Raw `node:http`, the same JWTs (verified with fast-jwt, as the service does), the same
// publish body and event JSON, streams indexed by tenant, user, role and topic in memory. No database, no replay, no
// validation beyond JSON, no backpressure: a ceiling for this machine and this load generator, not a product.
import http from 'node:http'
import { createVerifier } from 'fast-jwt'

interface Claims {
  sub: string
  tenant: string
  roles?: string[]
}

/** Same cadence as the service's default, so both write the same bytes on an idle stream. */
const HEARTBEAT_MS = 15_000
const DAY_MS = 24 * 3600 * 1000

const secret = process.env.JWT_SECRET
if (!secret) throw new Error('JWT_SECRET is required')
const verify = createVerifier({ key: secret, algorithms: ['HS256'], cache: true })

const byTenant = new Map<string, Set<http.ServerResponse>>()
const byUser = new Map<string, Set<http.ServerResponse>>()
const byRole = new Map<string, Set<http.ServerResponse>>()
const byTopic = new Map<string, Set<http.ServerResponse>>()
let lastId = 0

function callerOf(req: http.IncomingMessage): Claims | undefined {
  const auth = req.headers.authorization
  if (!auth?.startsWith('Bearer ')) return undefined
  try {
    const claims = verify(auth.slice(7)) as Claims
    return claims.sub && claims.tenant ? claims : undefined
  } catch {
    return undefined
  }
}

function add(map: Map<string, Set<http.ServerResponse>>, key: string, res: http.ServerResponse) {
  let set = map.get(key)
  if (!set) map.set(key, (set = new Set()))
  set.add(res)
  res.once('close', () => {
    set.delete(res)
    if (set.size === 0) map.delete(key)
  })
}

/** `?topics=a,b`: exact topics only (the service also checks them against the token's claim; this does not). */
function openStream(caller: Claims, topics: string[], res: http.ServerResponse) {
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
    connection: 'keep-alive',
  })
  res.write('retry: 3000\n\n')
  add(byTenant, caller.tenant, res)
  add(byUser, `${caller.tenant}\u0000${caller.sub}`, res)
  for (const role of caller.roles ?? []) add(byRole, `${caller.tenant}\u0000${role}`, res)
  for (const topic of topics) add(byTopic, `${caller.tenant}\u0000${topic}`, res)
}

interface Published {
  type: string
  title: string
  body?: string
  data?: unknown
  to: { users?: string[]; roles?: string[]; topics?: string[]; tenant?: boolean }
}

function publish(caller: Claims, e: Published): { id: string; createdAt: string } {
  const id = ++lastId
  const now = new Date()
  const json = `{"id":"${id}","type":${JSON.stringify(e.type)},"title":${JSON.stringify(e.title)},"body":${JSON.stringify(e.body ?? null)},"data":${JSON.stringify(e.data ?? null)},"priority":"normal","url":null,"collapseKey":null,"actions":null,"icon":null,"image":null,"badge":null,"actor":${JSON.stringify(caller.sub)},"createdAt":"${now.toISOString()}","expiresAt":"${new Date(now.getTime() + 7 * DAY_MS).toISOString()}"}`
  // Serialized once, written to every recipient.
  const frame = `id: ${id}\nevent: notification\ndata: ${json}\n\n`
  if (e.to.tenant) {
    for (const res of byTenant.get(caller.tenant) ?? []) res.write(frame)
  } else {
    // A stream named twice (as a user and by its role, say) gets the event once.
    const to = new Set<http.ServerResponse>()
    const collect = (map: Map<string, Set<http.ServerResponse>>, keys: string[] | undefined) => {
      for (const key of keys ?? []) for (const res of map.get(`${caller.tenant}\u0000${key}`) ?? []) to.add(res)
    }
    collect(byUser, e.to.users)
    collect(byRole, e.to.roles)
    collect(byTopic, e.to.topics)
    for (const res of to) res.write(frame)
  }
  return { id: String(id), createdAt: now.toISOString() }
}

function send(res: http.ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}

const server = http.createServer((req, res) => {
  const [path, query] = (req.url ?? '').split('?')
  if (req.method === 'GET' && path === '/health') return send(res, 200, { status: 'ok' })
  const caller = callerOf(req)
  if (!caller) return send(res, 401, { title: 'Unauthorized' })
  if (req.method === 'GET' && path === '/v1/stream') {
    const topics = new URLSearchParams(query).get('topics')?.split(',').filter(Boolean) ?? []
    return openStream(caller, topics, res)
  }
  if (req.method === 'POST' && path === '/v1/events') {
    let text = ''
    req.setEncoding('utf8')
    req.on('data', (d: string) => (text += d))
    req.on('end', () => {
      try {
        send(res, 201, publish(caller, JSON.parse(text) as Published))
      } catch {
        send(res, 400, { title: 'Bad Request' })
      }
    })
    return
  }
  send(res, 404, { title: 'Not Found' })
})

// As Fastify does (72 s): the publisher's keep-alive sockets, opened first, survive while the streams open.
server.keepAliveTimeout = 72_000

setInterval(() => {
  for (const set of byTenant.values()) for (const res of set) res.write(': ping\n\n')
}, HEARTBEAT_MS).unref()

// Same exit behaviour as the service: end the streams and leave.
process.on('SIGTERM', () => {
  for (const set of byTenant.values()) for (const res of set) res.end()
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2_000).unref()
})

const port = Number(process.env.PORT ?? 0)
const host = process.env.HOST ?? '127.0.0.1'
// Same backlog as Node's default; stated because the connect storm of 10,000 streams depends on it.
server.listen({ port, host, backlog: 511 }, () => {
  const address = server.address() as { port: number }
  console.log(`reference SSE server listening on http://${host}:${address.port}`)
})
