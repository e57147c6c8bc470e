import Fastify from 'fastify'
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import { authPlugin } from './auth.ts'
import type { Config } from './config.ts'
import type { Database } from './db/client.ts'
import { registerErrorHandling } from './errors.ts'
import { LogTail } from './events/log-tail.ts'
import { eventRoutes } from './routes/events.ts'
import { healthRoutes } from './routes/health.ts'
import { streamRoutes } from './routes/stream.ts'
import { StreamHub } from './stream/hub.ts'

declare module 'fastify' {
  interface FastifyInstance {
    database: Database
    hub: StreamHub
    logTail: LogTail
  }
}

export type AppConfig = Pick<
  Config,
  | 'JWT_SECRET'
  | 'JWT_PUBLIC_KEY'
  | 'HEARTBEAT_MS'
  | 'MAX_CONNECTIONS_PER_USER'
  | 'STREAM_BUFFER_LIMIT_BYTES'
  | 'BODY_LIMIT'
  | 'LOG_POLL_MS'
>

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
export async function buildApp(config: AppConfig, database: Database, log: LogOptions | false = false) {
  const app = Fastify({
    logger: log && {
      level: log.level,
      ...(log.stream ? { stream: log.stream } : {}),
      serializers: {
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
  })
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)
  registerErrorHandling(app)

  // An empty body with Content-Type: application/json (common from fetch wrappers on POST .../ack) is no body.
  const jsonParser = app.getDefaultJsonParser('error', 'error')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body === '') return done(null, undefined)
    jsonParser(request, body as string, done)
  })

  const hub = new StreamHub(config.HEARTBEAT_MS, config.MAX_CONNECTIONS_PER_USER)
  const logTail = new LogTail(database, (rows) => hub.dispatch(rows), app.log, config.LOG_POLL_MS)
  app.decorate('database', database)
  app.decorate('hub', hub)
  app.decorate('logTail', logTail)
  await logTail.start()

  // Streams hold their sockets open: end them before the server waits for connections to finish.
  app.addHook('preClose', async () => hub.closeAll())
  app.addHook('onClose', async () => {
    logTail.stop()
    await database.close()
  })

  await app.register(authPlugin, { secret: config.JWT_SECRET, publicKey: config.JWT_PUBLIC_KEY })
  await app.register(healthRoutes)
  await app.register(eventRoutes)
  await app.register(streamRoutes, { bufferLimit: config.STREAM_BUFFER_LIMIT_BYTES })
  return app
}
