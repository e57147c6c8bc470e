import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../config.ts'
import { WebhookDispatcher } from './dispatcher.ts'
import { WebhookService } from './service.ts'
import type { Resolve } from './urls.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Sends the webhook outbox; `wake()` when deliveries were enqueued. */
    webhookDispatcher: WebhookDispatcher
    /** A tenant's webhook endpoints, for its admins. */
    webhookService: WebhookService
  }
}

export interface WebhooksPluginOptions {
  webhooks: Config['webhooks']
  /** An instance whose heartbeat is older than this is dead: its claims are taken over (PRESENCE_TTL_S). */
  presenceTtlS: number
  /** CA certificates endpoints' certificates must chain to, instead of the system's (tests). */
  ca?: string | Buffer | Array<string | Buffer>
  /** "Now" for when a delivery is due and for endpoint health; real time unless a test moves it. */
  now?: () => Date
  /** DNS, for tests. */
  resolve?: Resolve
}

/** Sent and failed deliveries are swept this often. */
const PRUNE_EVERY_MS = 3_600_000

/**
 * Webhooks: the endpoints tenants' admins register (WebhookService) and the dispatcher that sends the outbox
 * (rows written by `enqueueWebhooks` in the statements of the changes they report), with its pruning.
 */
export const webhooksPlugin = fp(
  async (app: FastifyInstance, options: WebhooksPluginOptions) => {
    const { database } = app
    const { webhooks } = options
    const dispatcher = new WebhookDispatcher(
      database,
      {
        concurrency: webhooks.concurrency,
        timeoutMs: webhooks.timeoutMs,
        maxAttempts: webhooks.maxAttempts,
        retryBaseMs: webhooks.retryBaseMs,
        disableAfterH: webhooks.disableAfterH,
        allowlist: webhooks.urlAllowlist,
        instanceTtlS: options.presenceTtlS,
        ca: options.ca,
        now: options.now,
        resolve: options.resolve,
      },
      app.presence.instanceId,
      app.log,
    )
    app.decorate('webhookDispatcher', dispatcher)
    app.decorate(
      'webhookService',
      new WebhookService(database, { allowlist: webhooks.urlAllowlist, resolve: options.resolve }, () =>
        dispatcher.wake(),
      ),
    )
    // A publish (on any instance) may have enqueued `event.published` deliveries.
    app.bus.onWake(() => dispatcher.wake())
    let pruning = false
    const prune = setInterval(async () => {
      if (pruning) return
      pruning = true
      try {
        const deleted = await dispatcher.prune(webhooks.retentionDays)
        if (deleted) app.log.info({ deleted }, 'pruned old webhook deliveries')
      } catch (err) {
        app.log.warn({ err }, 'pruning webhook deliveries failed; retrying at the next turn')
      } finally {
        pruning = false
      }
    }, PRUNE_EVERY_MS)
    prune.unref()
    app.addHook('onReady', async () => dispatcher.start())
    app.addHook('preClose', async () => {
      clearInterval(prune)
      await dispatcher.stop()
    })
  },
  { name: 'webhooks', dependencies: ['database', 'cluster'] },
)
