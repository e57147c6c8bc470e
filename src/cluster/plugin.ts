import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { ClusterBus } from './bus.ts'
import { Presence } from './presence.ts'

declare module 'fastify' {
  interface FastifyInstance {
    presence: Presence
    bus: ClusterBus
  }
}

/**
 * What instances know of each other: which users have streams where (Presence, for the push rule and the
 * per-user stream cap) and the bus they wake and tell each other through.
 */
export const clusterPlugin = fp(
  async (app: FastifyInstance, options: Config['cluster'] & { maxConnectionsPerUser: number }) => {
    const { database, hub } = app
    const presence = new Presence(database, options.presenceTtlS, app.log, {
      maxPerUser: options.maxConnectionsPerUser,
      oldestOpenedAt: (tenant, userId) => hub.oldestOpenedAt(tenant, userId),
      // The oldest streams here close at once; the instances holding the others are asked to close theirs.
      onOverLimit: (over) => {
        for (const [to, count] of hub.evictAcross(over))
          bus.evict({ to, tenant: over.tenant, userId: over.userId, count })
      },
    })
    const bus = new ClusterBus(database, presence.instanceId, app.log)
    app.decorate('presence', presence)
    app.decorate('bus', bus)
    await presence.start()
    await bus.start({
      onReceipt: (m) => hub.sendReceipt(m.tenant, m.userId, m.notice),
      onEvict: (m) => hub.evictOldest(m.tenant, m.userId, m.count),
      onSubscriptionChange: (m) => hub.applySubscriptionChange(m.tenant, m.userId, m.topic, m.subscribed),
    })
    app.addHook('preClose', async () => {
      await bus.stop()
      await presence.stop()
    })
  },
  { name: 'cluster', dependencies: ['database', 'stream'] },
)
