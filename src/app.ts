import type { Agent } from 'node:https'
import fastifyStatic from '@fastify/static'
import Fastify from 'fastify'
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import { auditPlugin } from './audit/plugin.ts'
import { authPlugin } from './auth.ts'
import { clusterPlugin } from './cluster/plugin.ts'
import type { Config } from './config.ts'
import { registerCors, streamCorsHeaders } from './cors.ts'
import type { Database } from './db/client.ts'
import { databasePlugin } from './db/plugin.ts'
import { directoryPlugin } from './directory/plugin.ts'
import { registerDocs } from './docs.ts'
import { eventTypesPlugin } from './event-types/plugin.ts'
import { eventsPlugin } from './events/plugin.ts'
import { MAX_JSON_DEPTH, nestsDeeperThan } from './events/raw-json.ts'
import { limitsPlugin } from './limits.ts'
import { redactUrl } from './log-redaction.ts'
import { createMetrics, type Metrics } from './metrics.ts'
import { PUBLIC_DIR } from './package-files.ts'
import { HttpProblem, registerErrorHandling, sendProblem, serializeError } from './problems.ts'
import { CHANGE_PUSHES, countPendingPushes, planNudgePushes, planPushes } from './push/outbox.ts'
import { pushPlugin } from './push/plugin.ts'
import { randomId } from './random-id.ts'
import { auditRoutes } from './routes/audit.ts'
import { demoRoutes } from './routes/demo.ts'
import { DIRECTORY_BATCH_BODY_LIMIT, directoryRoutes } from './routes/directory.ts'
import { eventTypeRoutes } from './routes/event-types.ts'
import { eventRoutes } from './routes/events.ts'
import { healthRoutes } from './routes/health.ts'
import { metricsRoutes } from './routes/metrics.ts'
import { preferenceRoutes } from './routes/preferences.ts'
import { pushRoutes } from './routes/push.ts'
import { scheduledRoutes } from './routes/scheduled.ts'
import { statsRoutes } from './routes/stats.ts'
import { streamRoutes } from './routes/stream.ts'
import { systemRoutes } from './routes/system.ts'
import { topicRoutes } from './routes/topics.ts'
import { webhookRoutes } from './routes/webhooks.ts'
import { registerSecurityHeaders } from './security-headers.ts'
import { streamPlugin } from './stream/plugin.ts'
import { StreamTickets } from './stream-tickets.ts'
import { webhooksPlugin } from './webhooks/plugin.ts'

declare module 'fastify' {
  interface FastifyRequest {
    /** The JSON body's text, when there was one. */
    rawJson: string | undefined
  }
  interface FastifyInstance {
    metrics: Metrics
    streamTickets: StreamTickets
  }
}

export interface AppOptions {
  log?: LogOptions | false
  /**
   * https agent for push services (tests trust their own CA through it): the push threads take its `ca`, and so
   * does the webhook sender, for endpoints.
   */
  pushAgent?: Agent
  /** Enables the demo page's sign-in: only when the service generated its own secret (see routes/demo.ts). */
  demoSignIn?: boolean
  /**
   * The scheduler's clock: a scheduled publish is due once its `deliverAt` is at or before it. Real time unless
   * given (tests move it; `deliverAt` is still checked against real time when a publish is accepted). The push
   * dispatcher's too: quiet hours are judged by it, and a push is due once its time has come by it (or by the
   * database's clock, whichever is later).
   */
  clock?: () => Date
}

/**
 * TRUST_PROXY as Fastify's `trustProxy`. A number of hops trusts that many proxies next to us, whoever they are
 * (the client is the address that far back in X-Forwarded-For), as Express does: Fastify 5.12.1 dropped its own
 * hop count, which now trusts nobody, and would silently put every client behind the proxy in one per-IP bucket.
 * It suits a service reachable only through its proxies; addresses are safer.
 */
function trustProxyOption(trusted: Config['http']['trustProxy']): boolean | string[] | TrustProxyFunction {
  if (typeof trusted === 'object' && 'hops' in trusted) return (_address, hop) => hop < trusted.hops
  return trusted
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
  return typeof sent === 'string' && SAFE_REQUEST_ID.test(sent) ? sent : randomId()
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
 *
 * Each subsystem is a plugin that starts what it runs and stops it on close. They are registered in the order
 * they depend on each other, which is also the shutdown order: Fastify runs `preClose` hooks in registration
 * order and `onClose` hooks in reverse. So on shutdown: streams end (clients resume elsewhere); the cluster bus
 * stops listening and this instance leaves presence; claimed pushes are handed back and learnt claims written;
 * then, once requests have finished, the scheduler finishes its pass, pruning and the log tail stop, and the
 * database closes, last.
 */
export async function buildApp(config: Config, database: Database, options: AppOptions = {}) {
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
    bodyLimit: config.http.bodyLimit,
    // Names in paths (user ids, topics) may be 200 characters; the router's default (100) would answer a longer
    // one with 404 or 414 before validation names it (a 400).
    routerOptions: { maxParamLength: 1_000 },
    // Long-lived streams are not idle; keep-alive REST connections are closed at once on shutdown.
    forceCloseConnections: 'idle',
    // Which proxies' X-Forwarded-For gives the client's IP (per-IP limits, logs); none unless configured.
    trustProxy: trustProxyOption(config.http.trustProxy),
    // A client's X-Request-Id is the log's request id only when it is a short safe token (genReqId).
    requestIdHeader: false,
    genReqId: requestIdOf,
    // A client must send its whole request within this (Fastify's default, 0, lets a slow body hold a socket
    // forever). It covers receiving the request only, so open streams are not cut. Node ignores a request
    // timeout shorter than the headers timeout (60 s by default), and checks both only every
    // connectionsCheckingInterval (30 s by default), hence the `http` options.
    requestTimeout: config.http.requestTimeoutMs,
    http: {
      headersTimeout: Math.min(60_000, config.http.requestTimeoutMs),
      connectionsCheckingInterval: Math.min(1_000, config.http.requestTimeoutMs / 4),
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

  app.decorate(
    'metrics',
    createMetrics({
      countPendingPushes: () => countPendingPushes(database),
      bufferedStreamBytes: () => app.hub.bufferedBytes(),
    }),
  )
  // Each answered request, by route pattern (a stream's reply is taken over by the stream: never "answered").
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url
    if (route === undefined) return // no route matched: a 404, not worth a series per path
    app.metrics.requestSeconds.observe(
      { method: request.method, route, status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    )
  })
  app.decorate('streamTickets', new StreamTickets(database))
  // The subsystems, in dependency order (see above for what that means on shutdown).
  await app.register(databasePlugin, { database })
  await app.register(streamPlugin, config.stream)
  await app.register(clusterPlugin, {
    ...config.cluster,
    maxConnectionsPerUser: config.stream.maxConnectionsPerUser,
  })
  await app.register(pushPlugin, {
    push: config.push,
    presenceTtlS: config.cluster.presenceTtlS,
    agent: options.pushAgent,
    now: options.clock,
  })
  const pushPolicy = { highAckTimeoutS: config.push.highAckTimeoutS, presenceTtlS: config.cluster.presenceTtlS }
  await app.register(eventsPlugin, {
    events: config.events,
    planPushes: (inserted, recipients) => planPushes(inserted, recipients, pushPolicy),
    onPushesPlanned: () => app.pushDispatcher.wake(),
    changePushes: CHANGE_PUSHES,
    nudgePushes: planNudgePushes,
    // The webhooks plugin comes after this one (it runs on what the log's plugins start).
    onWebhooksEnqueued: () => app.webhookDispatcher.wake(),
    now: options.clock,
  })
  await app.register(webhooksPlugin, {
    webhooks: config.webhooks,
    presenceTtlS: config.cluster.presenceTtlS,
    ca: options.pushAgent?.options.ca,
    now: options.clock,
  })
  await app.register(directoryPlugin)
  await app.register(eventTypesPlugin, { strictTypes: config.events.strictTypes })
  await app.register(auditPlugin, { presenceTtlS: config.cluster.presenceTtlS })

  // HTTP: headers, CORS, limits and authentication for every route, then the routes.
  await registerSecurityHeaders(app)
  await registerCors(app, config.http.corsOrigins)
  await app.register(limitsPlugin, config.limits)
  await app.register(authPlugin, {
    secret: config.auth.jwtSecret,
    publicKey: config.auth.jwtPublicKey,
    ackTokens: app.ackTokens,
    maxTtlS: config.auth.jwtMaxTtlS,
    onNewCaller: (caller) => app.userClaims.remember(caller),
  })
  // Before the routes: the OpenAPI document is collected from them as they are added. Off: /docs is a 404.
  if (config.http.docsEnabled) await registerDocs(app)
  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    // The service worker must be fetched fresh, or browsers keep running an old one for a day.
    setHeaders: (res, path) => {
      if (path.endsWith('sw.js')) res.setHeader('cache-control', 'no-cache')
    },
  })
  await app.register(healthRoutes)
  await app.register(metricsRoutes, { token: config.http.metricsToken })
  await app.register(eventRoutes)
  await app.register(systemRoutes)
  await app.register(eventTypeRoutes)
  await app.register(scheduledRoutes)
  await app.register(pushRoutes)
  await app.register(topicRoutes)
  await app.register(preferenceRoutes)
  await app.register(webhookRoutes)
  await app.register(auditRoutes)
  await app.register(statsRoutes)
  await app.register(directoryRoutes, {
    batchBodyLimit: Math.max(config.http.bodyLimit, DIRECTORY_BATCH_BODY_LIMIT),
  })
  await app.register(demoRoutes, { generatedSecret: options.demoSignIn ? config.auth.jwtSecret : undefined })
  await app.register(streamRoutes, {
    bufferLimit: config.stream.bufferLimitBytes,
    headers: streamCorsHeaders(config.http.corsOrigins),
    maxStreams: config.stream.maxStreams,
    slowReaderTimeoutMs: config.stream.slowReaderTimeoutMs,
  })
  return app
}
