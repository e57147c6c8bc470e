import type { Caller } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { NotFoundError } from '../service-errors.ts'
import type { PushDispatcher } from './dispatcher.ts'
import type { VapidKeys } from './keys.ts'
import {
  type DeviceRules,
  deleteSubscription,
  listSubscriptions,
  type Registered,
  registerSubscription,
  renewSubscription,
  type SubscriptionJson,
} from './subscriptions.ts'

/** A test notification lives a minute: it means "now" or nothing. */
const TEST_PUSH_TTL_S = 60
/** What a test notification shows: an event's shape without an event (nothing to ack, nothing to fetch). */
const TEST_PUSH_PAYLOAD = JSON.stringify({
  id: null,
  type: 'push.test',
  title: 'Test notification',
  body: 'Push notifications work on this device.',
  priority: 'normal',
  url: null,
})

/** What a test push did on each of the caller's devices. */
export interface TestPushResult {
  sent: number
  failed: number
  devices: Array<{ id: string; outcome: 'sent' | 'failed'; status: number | null }>
}

/** A user's push devices: registering, renewing and removing them, and test notifications. */
export class PushService {
  constructor(
    private readonly database: Database,
    private readonly vapid: VapidKeys,
    private readonly rules: DeviceRules,
    private readonly dispatcher: PushDispatcher,
  ) {}

  /** The VAPID public key browsers subscribe with. */
  get vapidPublicKey(): string {
    return this.vapid.publicKey
  }

  register(caller: Caller, subscription: SubscriptionJson): Promise<Registered> {
    return registerSubscription(this.database, caller, subscription, this.rules)
  }

  /** Re-registers with a renew token from registration; undefined when the token is not a valid one. */
  renew(renewToken: string, subscription: SubscriptionJson): Promise<Registered | undefined> {
    return renewSubscription(this.database, renewToken, subscription, this.rules)
  }

  list(caller: Caller) {
    return listSubscriptions(this.database, caller)
  }

  async remove(caller: Caller, id: number): Promise<void> {
    if (!(await deleteSubscription(this.database, caller, id))) {
      throw new NotFoundError(`No subscription ${id} of yours.`)
    }
  }

  /**
   * Sends a test notification to each of the caller's devices now. Not through the outbox (there is no event),
   * but through the dispatcher's queue like every push, so its bounds hold; a device the push service says is
   * gone is forgotten.
   */
  async sendTest(caller: Caller): Promise<TestPushResult> {
    const outcomes = await this.dispatcher.sendTest(caller, TEST_PUSH_PAYLOAD, {
      TTL: TEST_PUSH_TTL_S,
      urgency: 'normal',
    })
    if (!outcomes.length) throw new NotFoundError('You have no registered devices; register one first.')
    const devices = outcomes.map(({ subscriptionId, outcome }) => ({
      id: String(subscriptionId),
      outcome: outcome.state === 'sent' ? ('sent' as const) : ('failed' as const),
      status: outcome.status ?? null,
    }))
    return {
      sent: devices.filter((d) => d.outcome === 'sent').length,
      failed: devices.filter((d) => d.outcome === 'failed').length,
      devices,
    }
  }
}
