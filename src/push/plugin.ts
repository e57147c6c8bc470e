import type { Agent } from 'node:https'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { type AckTokens, ackTokens } from './ack-token.ts'
import { PushDispatcher } from './dispatcher.ts'
import { loadAckTokenSecret, loadVapidKeys } from './keys.ts'
import { PushService } from './service.ts'
import { ClaimsRefresher } from './user-claims.ts'

declare module 'fastify' {
  interface FastifyInstance {
    pushDispatcher: PushDispatcher
    pushService: PushService
    /** Signs the ackTokens of push payloads; the auth plugin verifies them. */
    ackTokens: AckTokens
    /** Keeps each user's current roles and topics, which role and topic pushes go by (user-claims.ts). */
    userClaims: ClaimsRefresher
  }
}

export interface PushPluginOptions {
  push: Config['push']
  presenceTtlS: number
  /** https agent for push services (tests trust their own CA through it): the push threads take its `ca`. */
  agent: Agent | undefined
  /** "Now" for quiet hours and for when a push is due; real time unless a test moves it (AppOptions.clock). */
  now?: () => Date
}

/** Web Push: the keys, the dispatcher that sends the outbox, and the devices users register. */
export const pushPlugin = fp(
  async (app: FastifyInstance, { push, presenceTtlS, agent, now }: PushPluginOptions) => {
    const { database } = app
    const vapid = await loadVapidKeys(database, push.vapid)
    const acks = ackTokens(await loadAckTokenSecret(database))
    const dispatcher = new PushDispatcher(
      database,
      vapid,
      acks,
      {
        maxAttempts: push.maxAttempts,
        concurrency: push.concurrency,
        retryBaseMs: push.retryBaseMs,
        // Pushes go out from worker threads, over agents of their own: only this agent's CA crosses to them.
        ca: agent?.options.ca,
        instanceTtlS: presenceTtlS,
        now,
      },
      app.presence.instanceId,
      app.log,
      app.metrics,
    )
    const claims = new ClaimsRefresher(database, app.log)
    const rules = {
      allowlist: push.endpointAllowlist,
      maxDevicesPerUser: push.maxDevicesPerUser,
      renewTokenTtlDays: push.renewTokenTtlDays,
    }
    app.decorate('pushDispatcher', dispatcher)
    app.decorate('pushService', new PushService(database, vapid, rules, dispatcher))
    app.decorate('ackTokens', acks)
    app.decorate('userClaims', claims)
    app.bus.onWake(() => dispatcher.wake())
    dispatcher.start()
    // Claimed pushes are handed back for other instances; claims learnt from tokens are written.
    app.addHook('preClose', async () => {
      await dispatcher.stop()
      await claims.flush()
    })
  },
  { name: 'push', dependencies: ['database', 'cluster'], decorators: { fastify: ['metrics'] } },
)
