import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { StreamHub } from './hub.ts'

/** On shutdown, streams and REST requests in flight get this long to finish before their connections are closed. */
const SHUTDOWN_GRACE_MS = 2_000

declare module 'fastify' {
  interface FastifyInstance {
    hub: StreamHub
  }
}

/** The open streams of this instance (StreamHub). On shutdown they end first, so clients resume elsewhere. */
export const streamPlugin = fp(
  async (app: FastifyInstance, options: Config['stream']) => {
    const hub = new StreamHub(options.heartbeatMs, options.maxConnectionsPerUser, app.metrics, (err) =>
      app.log.error({ err }, 'fanning events out to streams failed: some may lack them until they resume'),
    )
    app.decorate('hub', hub)
    // Streams hold their sockets open: end them before the server waits for connections to finish.
    app.addHook('preClose', async () => {
      const ended = hub.closeAll()
      // Connections still open a moment from now (clients that do not read the end of their stream, streams
      // that were still opening) would hold the server's close until the deadline: close them then. A stream's
      // connection is not among the server's own once its parser is released (idle-memory.ts): hence both.
      setTimeout(() => {
        app.server.closeAllConnections()
        for (const c of ended) c.destroy()
      }, SHUTDOWN_GRACE_MS).unref()
    })
  },
  { name: 'stream', decorators: { fastify: ['metrics'] } },
)
