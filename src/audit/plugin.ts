import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { ConnectionAudit } from './connections.ts'
import { OverviewPass } from './overview.ts'
import { AuditService } from './service.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Records the streams opened and closed here (stream_connections). */
    connectionAudit: ConnectionAudit
    /** Sends the live admin overview to this instance's admin streams. */
    overviewPass: OverviewPass
    auditService: AuditService
  }
}

/**
 * The connection audit, statistics and the live admin overview. Registered after the stream, cluster and events
 * plugins: on shutdown the streams have closed (their closes held) before the audit writes what it holds, and it
 * writes before the database closes.
 */
export const auditPlugin = fp(
  async (app: FastifyInstance, options: { presenceTtlS: number }) => {
    const { database, hub, presence } = app
    const audit = new ConnectionAudit(database, presence.instanceId, app.log)
    const overview = new OverviewPass({
      database,
      log: app.log,
      presenceTtlS: options.presenceTtlS,
      tenantsFollowing: (topic) => hub.tenantsFollowing(topic),
      dispatchLive: (e) => hub.dispatchLive(e),
    })
    app.decorate('connectionAudit', audit)
    app.decorate('overviewPass', overview)
    app.decorate('auditService', new AuditService(database, options.presenceTtlS))
    app.addHook('onReady', async () => overview.start())
    app.addHook('onClose', async () => {
      await overview.stop()
      await audit.stop()
    })
  },
  { name: 'audit', dependencies: ['database', 'stream', 'cluster', 'events'] },
)
