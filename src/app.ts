import { randomUUID } from 'node:crypto'
import type { Agent } from 'node:https'
import { fileURLToPath } from 'node:url'
import fastifyHelmet from '@fastify/helmet'
import fastifyStatic from '@fastify/static'
import Fastify, { type FastifyInstance } from 'fastify'
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import { authPlugin } from './auth.ts'
import { ClusterBus } from './cluster/bus.ts'
import { Presence } from './cluster/presence.ts'
import type { ParsedConfig } from './config.ts'
import { parseOrigins, registerCors, streamCorsHeaders } from './cors.ts'
import type { Database } from './db/client.ts'
import { registerDocs } from './docs.ts'
import { HttpProblem, registerErrorHandling, sendProblem, serializeError } from './errors.ts'
import { LogTail } from './events/log-tail.ts'
import { MAX_JSON_DEPTH, nestsDeeperThan } from './events/raw-json.ts'
import { schedulePruning } from './events/retention.ts'
import { limitsPlugin } from './limits.ts'
import { createMetrics, type Metrics } from './metrics.ts'
import { ackTokens } from './push/ack-token.ts'
import { PushDispatcher } from './push/dispatcher.ts'
import { loadAckTokenSecret, loadVapidKeys, type VapidKeys } from './push/keys.ts'
import { countPendingPushes, type PushPolicy } from './push/outbox.ts'
import { type DeviceRules, parseAllowlist } from './push/subscriptions.ts'
import { ClaimsRefresher } from './push/user-claims.ts'
import { demoRoutes } from './routes/demo.ts'
import { eventRoutes } from './routes/events.ts'
import { healthRoutes } from './routes/health.ts'
import { metricsRoutes } from './routes/metrics.ts'
import { pushRoutes } from './routes/push.ts'
import { streamRoutes } from './routes/stream.ts'
import { receiptFrame, StreamHub } from './stream/hub.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The JSON body's text, when there was one. */
    rawJson: string | undefined
  }
  interface FastifyInstance {
    database: Database
    hub: StreamHub
    logTail: LogTail
    bus: ClusterBus
    presence: Presence
    vapid: VapidKeys
    pushDispatcher: PushDispatcher
    pushPolicy: PushPolicy
    deviceRules: DeviceRules
    pushAgent: Agent | undefined
    metrics: Metrics
  }
}

/** Everything the environment configures, parsed and defaulted (see config.ts). */
export type AppConfig = ParsedConfig

export interface AppOptions {
  log?: LogOptions | false
  /** https agent for push services (tests trust their own CA through it): the push threads take its `ca`. */
  pushAgent?: Agent
  /** Enables the demo page's sign-in: only when the service generated its own secret (see routes/demo.ts). */
  demoSignIn?: boolean
}

/** On shutdown, REST requests in flight get this long to finish before their connections are closed. */
const SHUTDOWN_GRACE_MS = 2_000

/** The demo page, the browser client and the service worker. */
export const PUBLIC_DIR = fileURLToPath(new URL('../public', import.meta.url))

/** What a logged URL shows in place of a credential. */
const REDACTED = '[redacted]'

/** Query parameters whose value is a credential: the stream's token, and a stream ticket. Compared decoded. */
const CREDENTIAL_PARAMS = new Set(['access_token', 'ticket'])

/**
 * A JWT (or a push ackToken, also one): three base64url runs joined by dots. Each run must start where a run
 * starts (the lookbehind), so a long run of letters is scanned once, not once per position.
 */
const JWT_SHAPE = /(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/

/** What lies between a URL's delimiters: a path segment, a query key or value. */
const URL_PIECE = /[^/?#&=;]+/g

/** Percent-decoded as the query parser decodes (`+` is a space); as it is when it does not decode. */
function decodePiece(piece: string): string {
  try {
    return decodeURIComponent(piece.replaceAll('+', ' '))
  } catch {
    return piece
  }
}

/** Each piece that holds something JWT-shaped, as sent or once decoded, is replaced whole. */
const redactTokenShapes = (text: string) =>
  text.replace(URL_PIECE, (piece) => (JWT_SHAPE.test(piece) || JWT_SHAPE.test(decodePiece(piece)) ? REDACTED : piece))

/** One `key=value` of the query: a credential parameter's value goes, however its name is spelled (`access%5Ftoken`). */
function redactParam(pair: string): string {
  const equals = pair.indexOf('=')
  if (equals === -1) return redactTokenShapes(pair)
  const key = pair.slice(0, equals)
  const value = CREDENTIAL_PARAMS.has(decodePiece(key).trim().toLowerCase())
    ? REDACTED
    : redactTokenShapes(pair.slice(equals + 1))
  return `${redactTokenShapes(key)}=${value}`
}

/**
 * Tokens must never reach a log line. The stream takes `?access_token=`, and Fastify decodes query keys, so
 * the value of a credential parameter is cut whatever the spelling of its name; anything JWT-shaped anywhere
 * else in the URL (path included, percent-encoded or not) is cut too. The query starts at the first `?` or `#`,
 * as the router splits it.
 */
export function redactUrl(url: string): string {
  const start = url.slice(1).search(/[?#]/) + 1
  if (start === 0) return redactTokenShapes(url)
  const query = url
    .slice(start + 1)
    .split('&')
    .map(redactParam)
    .join('&')
  return `${redactTokenShapes(url.slice(0, start))}${url[start]}${query}`
}

/**
 * TRUST_PROXY as Fastify's `trustProxy`: unset or `false` trusts no proxy (X-Forwarded-For is ignored, the
 * socket's address is the client's), `true` any, otherwise a list of addresses and CIDRs. A number of hops
 * trusts that many proxies next to us, whoever they are (the client is the address that far back in
 * X-Forwarded-For), as Express does: Fastify 5.12.1 dropped its own hop count, which now trusts nobody, and
 * would silently put every client behind the proxy in one per-IP bucket. It suits a service reachable only
 * through its proxies; addresses are safer.
 */
export function trustProxyOption(value: string | undefined): boolean | string[] | TrustProxyFunction {
  if (value === undefined || value === 'false') return false
  if (value === 'true') return true
  if (/^\d+$/.test(value)) {
    const hops = Number(value)
    return (_address, hop) => hop < hops
  }
  return value.split(',').map((address) => address.trim())
}

type TrustProxyFunction = (address: string, hop: number) => boolean

/**
 * A request id a client may choose (X-Request-Id, to follow its request through our logs): short, and nothing
 * that could forge or break a log line or a log viewer (no spaces, quotes, control characters).
 */
const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/

/** The client's X-Request-Id when it is safe, otherwise one of our own. */
function requestIdOf(request: { headers: Record<string, string | string[] | undefined> }): string {
  const sent = request.headers['x-request-id']
  return typeof sent === 'string' && SAFE_REQUEST_ID.test(sent) ? sent : randomUUID()
}

/**
 * The Content-Security-Policy of every response. The demo page, the docs' UI (swagger-ui) and the service worker
 * load scripts, styles and connections from this origin only, and run nothing inline, so an injected `<script>`
 * or `onclick=` does nothing. No page of ours may be framed (clickjacking). `data:` images: the demo's empty
 * favicon, the icons in swagger-ui's stylesheet.
 */
const CONTENT_SECURITY_POLICY = {
  'default-src': ["'self'"],
  'base-uri': ["'none'"],
  'connect-src': ["'self'"],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
  'img-src': ["'self'", 'data:'],
  'object-src': ["'none'"],
  'script-src': ["'self'"],
  'script-src-attr': ["'none'"],
  'style-src': ["'self'"],
  'worker-src': ["'self'"],
}

/**
 * Security headers on every response (@fastify/helmet): the CSP above, X-Frame-Options for browsers without
 * frame-ancestors, nosniff, no Referer sent from our pages, HSTS (browsers heed it over HTTPS only).
 * Without helmet's default `upgrade-insecure-requests`: a page served over plain HTTP from any host but this
 * machine's loopback (a development server reached over the LAN) would ask HTTPS for its own scripts, and break.
 */
async function registerSecurityHeaders(app: FastifyInstance) {
  await app.register(fastifyHelmet, {
    contentSecurityPolicy: { useDefaults: false, directives: CONTENT_SECURITY_POLICY },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
  })
}

/** How the service logs. */
export interface LogOptions {
  level: string
  /** Where JSON lines go; stdout when unset. Tests capture logs here. */
  stream?: { write(line: string): void }
}

/**
 * Builds the service on an open, migrated database (which it then owns and closes). Does not listen:
 * server.ts does that, tests listen on port 0.
 */
export async function buildApp(config: AppConfig, database: Database, options: AppOptions = {}) {
  const log = options.log ?? false
  const app = Fastify({
    logger: log && {
      level: log.level,
      ...(log.stream ? { stream: log.stream } : {}),
      serializers: {
        err: serializeError,
        req: (req: { method: string; url: string; ip?: string }) => ({
          method: req.method,
          url: redactUrl(req.url),
          remoteAddress: req.ip,
        }),
      },
    },
    bodyLimit: config.BODY_LIMIT,
    // Long-lived streams are not idle; keep-alive REST connections are closed at once on shutdown.
    forceCloseConnections: 'idle',
    // Which proxies' X-Forwarded-For gives the client's IP (per-IP limits, logs); none unless configured.
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    // A client's X-Request-Id is the log's request id only when it is a short safe token (genReqId).
    requestIdHeader: false,
    genReqId: requestIdOf,
    // A client must send its whole request within this (Fastify's default, 0, lets a slow body hold a socket
    // forever). It covers receiving the request only, so open streams are not cut. Node 20 ignores a request
    // timeout shorter than the headers timeout (60 s by default), and checks both only every
    // connectionsCheckingInterval (30 s by default), hence the `http` options.
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    http: {
      headersTimeout: Math.min(60_000, config.REQUEST_TIMEOUT_MS),
      connectionsCheckingInterval: Math.min(1_000, config.REQUEST_TIMEOUT_MS / 4),
    },
    // Router errors (bad percent-encoding, over-long URLs) leave as problem+json like every other error.
    frameworkErrors: (err, _request, reply) => {
      if (err.statusCode === 414) return sendProblem(reply, 'uriTooLong', 'The URL is too long.')
      sendProblem(reply, 'badRequest', err.code === 'FST_ERR_BAD_URL' ? 'The URL is not valid.' : err.message)
    },
  })
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  registerErrorHandling(app)

  // JSON only: a text/plain body is a 415, not a string that fails validation.
  app.removeContentTypeParser('text/plain')
  // An empty body with Content-Type: application/json (common from fetch wrappers on POST .../ack) is no body.
  // The text is kept on the request so publish can store `data` exactly as sent (see events/raw-json.ts).
  // Nesting is limited here, once for every route, before anything is parsed or walked (see MAX_JSON_DEPTH).
  const jsonParser = app.getDefaultJsonParser('error', 'error')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') return done(null, undefined)
    if (nestsDeeperThan(body as string, MAX_JSON_DEPTH)) {
      return done(new HttpProblem('badRequest', `The body is nested deeper than ${MAX_JSON_DEPTH} levels.`))
    }
    request.rawJson = body as string
    jsonParser(request, body as string, done)
  })
  app.decorateRequest('rawJson', undefined)

  const metrics = createMetrics({ countPendingPushes: () => countPendingPushes(database) })
  const hub = new StreamHub(config.HEARTBEAT_MS, config.MAX_CONNECTIONS_PER_USER, metrics)
  const logTail = new LogTail(database, (rows) => hub.dispatch(rows), app.log, config.LOG_POLL_MS)
  const presence = new Presence(database, config.PRESENCE_TTL_S, app.log, {
    maxPerUser: config.MAX_CONNECTIONS_PER_USER,
    oldestOpenedAt: (tenant, userId) => hub.oldestOpenedAt(tenant, userId),
    // The oldest streams here close at once; the instances holding the others are asked to close theirs.
    onOverLimit: (over) => {
      for (const [to, count] of hub.evictAcross(over))
        bus.evict({ to, tenant: over.tenant, userId: over.userId, count })
    },
  })
  const claims = new ClaimsRefresher(database, app.log)
  const vapid = await loadVapidKeys(database, config)
  const acks = ackTokens(await loadAckTokenSecret(database))
  const pushDispatcher = new PushDispatcher(
    database,
    vapid,
    acks,
    {
      maxAttempts: config.PUSH_MAX_ATTEMPTS,
      concurrency: config.PUSH_CONCURRENCY,
      retryBaseMs: config.PUSH_RETRY_BASE_MS,
      // Pushes go out from worker threads, over agents of their own: only this agent's CA crosses to them.
      ca: options.pushAgent?.options.ca,
      instanceTtlS: config.PRESENCE_TTL_S,
    },
    presence.instanceId,
    app.log,
    metrics,
  )
  app.decorate('database', database)
  app.decorate('hub', hub)
  app.decorate('logTail', logTail)
  app.decorate('presence', presence)
  app.decorate('vapid', vapid)
  app.decorate('pushDispatcher', pushDispatcher)
  app.decorate('pushPolicy', { highAckTimeoutS: config.HIGH_ACK_TIMEOUT_S, presenceTtlS: config.PRESENCE_TTL_S })
  app.decorate('deviceRules', {
    allowlist: parseAllowlist(config.PUSH_ENDPOINT_ALLOWLIST),
    maxDevicesPerUser: config.MAX_DEVICES_PER_USER,
    renewTokenTtlDays: config.RENEW_TOKEN_TTL_DAYS,
  })
  app.decorate('pushAgent', options.pushAgent)
  app.decorate('metrics', metrics)
  const bus = new ClusterBus(database, presence.instanceId, app.log)
  app.decorate('bus', bus)
  await presence.start()
  await logTail.start()
  await bus.start({
    onWake: () => {
      logTail.wake()
      pushDispatcher.wake()
    },
    onReceipt: (m) => hub.sendToUser(m.tenant, m.userId, receiptFrame(m.notice)),
    onEvict: (m) => hub.evictOldest(m.tenant, m.userId, m.count),
  })
  pushDispatcher.start()

  const stopPruning = schedulePruning(database, config.RETENTION_DAYS, config.PRUNE_INTERVAL_S, app.log)

  // Streams hold their sockets open: end them before the server waits for connections to finish;
  // then hand back claimed pushes and stop counting this instance's users as present.
  app.addHook('preClose', async () => {
    await bus.stop()
    const ended = hub.closeAll()
    // Connections still open a moment from now (clients that do not read the end of their stream, streams
    // that were still opening) would hold the server's close until the deadline: close them then. A stream's
    // connection is not among the server's own once its parser is released (idle-memory.ts): hence both.
    setTimeout(() => {
      app.server.closeAllConnections()
      for (const c of ended) c.destroy()
    }, SHUTDOWN_GRACE_MS).unref()
    await pushDispatcher.stop()
    await presence.stop()
    await claims.flush()
  })
  app.addHook('onClose', async () => {
    stopPruning()
    logTail.stop()
    await database.close()
  })

  await registerSecurityHeaders(app)
  const corsOrigins = parseOrigins(config.CORS_ORIGINS)
  await registerCors(app, corsOrigins)
  await app.register(limitsPlugin, {
    windowMs: config.RATE_LIMIT_WINDOW_MS,
    publishPerMinute: config.RATE_LIMIT_PUBLISH_PER_MIN,
    pushRegistrationsPerMinute: config.RATE_LIMIT_PUSH_PER_MIN,
    pushTestsPerMinute: config.RATE_LIMIT_PUSH_TEST_PER_MIN,
    receiptsPerMinute: config.RATE_LIMIT_RECEIPTS_PER_MIN,
    bulkReadsPerMinute: config.RATE_LIMIT_BULK_READ_PER_MIN,
    anonymousPerMinute: config.RATE_LIMIT_IP_PER_MIN,
    authFailuresPerMinute: config.RATE_LIMIT_AUTH_FAILURES_PER_MIN,
  })
  await app.register(authPlugin, {
    secret: config.JWT_SECRET,
    publicKey: config.JWT_PUBLIC_KEY,
    ackTokens: acks,
    maxTtlS: config.JWT_MAX_TTL_S,
    onNewCaller: (caller) => claims.remember(caller),
  })
  // Before the routes: the OpenAPI document is collected from them as they are added. Off: /docs is a 404.
  if (config.DOCS_ENABLED) await registerDocs(app)
  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    // The service worker must be fetched fresh, or browsers keep running an old one for a day.
    setHeaders: (res, path) => {
      if (path.endsWith('sw.js')) res.setHeader('cache-control', 'no-cache')
    },
  })
  await app.register(healthRoutes)
  await app.register(metricsRoutes, { token: config.METRICS_TOKEN })
  await app.register(eventRoutes)
  await app.register(pushRoutes)
  await app.register(demoRoutes, { generatedSecret: options.demoSignIn ? config.JWT_SECRET : undefined })
  await app.register(streamRoutes, {
    bufferLimit: config.STREAM_BUFFER_LIMIT_BYTES,
    headers: streamCorsHeaders(corsOrigins),
    maxStreams: config.MAX_STREAMS,
    slowReaderTimeoutMs: config.SLOW_READER_TIMEOUT_MS,
  })
  return app
}
