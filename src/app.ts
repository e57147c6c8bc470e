import type { Agent } from 'node:https'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import Fastify from 'fastify'
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import { authPlugin } from './auth.ts'
import { ClusterBus } from './cluster/bus.ts'
import { Presence } from './cluster/presence.ts'
import type { ParsedConfig } from './config.ts'
import { parseOrigins, registerCors, streamCorsHeaders } from './cors.ts'
import type { Database } from './db/client.ts'
import { registerDocs } from './docs.ts'
import { registerErrorHandling, sendProblem, serializeError } from './errors.ts'
import { LogTail } from './events/log-tail.ts'
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
  /** https agent for push services (tests trust their own CA through it). */
  pushAgent?: Agent
  /** Enables the demo page's sign-in: only when the service generated its own secret (see routes/demo.ts). */
  demoSignIn?: boolean
}

/** On shutdown, REST requests in flight get this long to finish before their connections are closed. */
const SHUTDOWN_GRACE_MS = 2_000

/** The demo page, the browser client and the service worker. */
export const PUBLIC_DIR = fileURLToPath(new URL('../public', import.meta.url))

/** Tokens must never reach a log line: `?access_token=` (the stream) is cut from logged URLs. */
export const redactUrl = (url: string) => url.replace(/([?&]access_token=)[^&#]*/gi, '$1[redacted]')

/**
 * Builds the service on an open, migrated database (which it then owns and closes). Does not listen:
 * server.ts does that, tests listen on port 0.
 */
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
    requestIdHeader: 'x-request-id',
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
  const jsonParser = app.getDefaultJsonParser('error', 'error')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') return done(null, undefined)
    request.rawJson = body as string
    jsonParser(request, body as string, done)
  })
  app.decorateRequest('rawJson', undefined)

  const metrics = createMetrics({ countPendingPushes: () => countPendingPushes(database) })
  const hub = new StreamHub(config.HEARTBEAT_MS, config.MAX_CONNECTIONS_PER_USER, metrics)
  const logTail = new LogTail(database, (rows) => hub.dispatch(rows), app.log, config.LOG_POLL_MS)
  const presence = new Presence(database, config.PRESENCE_TTL_S, app.log)
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
      agent: options.pushAgent,
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
    onNewCaller: (caller) => claims.remember(caller),
  })
  // Before the routes: the OpenAPI document is collected from them as they are added.
  await registerDocs(app)
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
