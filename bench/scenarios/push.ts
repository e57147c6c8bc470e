import webpush from 'web-push'
import { DEFAULT_PUSH_CONCURRENCY } from '../../src/config.ts'
import { mintToken } from '../../src/tokens.ts'
import { Worker } from '../processes.ts'
import type { ReceiverProgress, ReceiverReport, ReceiverStarted } from '../push-receiver.ts'
import { nowMs, type Percentiles, percentiles, round } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import {
  type BenchContext,
  freshTenant,
  type Row,
  type ScenarioResult,
  type Scope,
  startService,
  tenantPublisher,
} from './common.ts'

/** Devices: one user each, one push subscription each, none with an open stream. */
const DEVICES = 2_000
/** Tenant broadcasts of `normal` priority: every user is offline, so each goes to every device. */
const BROADCASTS = 5
/** Concurrent registrations (POST /v1/push/subscriptions), each with its user's own token. */
const REGISTER_CONCURRENCY = 16
const BATCH_SIZE = 1_000
/** Nothing new at the push service for this long: the rest counts as lost (first retry is 5 s after a failure). */
const STALL_MS = 15_000
/**
 * A phase stops waiting after this, whatever is still due (counted as `unfinished`, not lost): the scenario
 * keeps to its time limit. The next phase is then skipped: its pushes would queue behind the rest.
 */
const PHASE_LIMIT_MS = 40_000

export interface PushPhase {
  /** How the pushes were caused. */
  what: string
  events: number
  expected: number
  received: number
  /** Still due when the phase's time was up (the push service was still receiving): not lost, not measured. */
  unfinished: number
  /** Pushes (distinct device, event) received per second, from the first publish sent to the last push received. */
  pushesPerSec: number
  /** Publish sent to push received (decrypted at the push service: the event's `t`). */
  latencyMs: Percentiles | null
  /** First publish sent to first push received, ms. */
  firstPushMs: number
  /** Not received after nothing new came for STALL_MS. */
  lost: number
  duplicated: number
  /** Push requests by the status the push service answered. */
  statuses: Record<string, number>
  undecryptable: number
  vapidChecked: number
  vapidFailed: number
  maxBodyBytes: number
  /** TLS connections opened to the push service during the phase. */
  connections: number
  durationSec: number
  /** Service CPU per push received (publish, outbox planning, claim, encryption, send, record). */
  serviceCpuUsPerPush: number
  serviceCpuPct: number
  /** The bench push service's CPU: near 100, it was the bottleneck. */
  receiverCpuPct: number
}

/**
 * The bench's HTTPS push service (a worker) with `subscriptions` browser subscriptions ready to register, and the
 * environment that points the service at it: its own VAPID keys, and an allowlist of only this push service.
 */
export async function startPushReceiver(scope: Scope, subscriptions: number) {
  const receiver = new Worker('./push-receiver.ts')
  scope.defer(() => receiver.close())
  const vapid = webpush.generateVAPIDKeys()
  const started = await receiver.call<ReceiverStarted>('start', {
    options: { subscriptions, vapidPublicKey: vapid.publicKey },
  })
  const serviceEnv = {
    VAPID_PUBLIC_KEY: vapid.publicKey,
    VAPID_PRIVATE_KEY: vapid.privateKey,
    VAPID_SUBJECT: 'mailto:bench@herald.invalid',
    // host:port: only this push service, nothing else on loopback.
    PUSH_ENDPOINT_ALLOWLIST: new URL(started.origin).host,
    NODE_EXTRA_CA_CERTS: started.caFile,
  }
  return { receiver, started, serviceEnv }
}

/** Scenario 6: encrypted Web Push to a local HTTPS push service. */
export async function pushThroughput(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const devices = ctx.quick ? 200 : DEVICES
  const broadcasts = ctx.quick ? 2 : BROADCASTS

  const { receiver, started, serviceEnv } = await startPushReceiver(scope, devices)
  const service = await startService(ctx, scope, {
    ...serviceEnv,
    ...(ctx.pushConcurrency ? { PUSH_CONCURRENCY: String(ctx.pushConcurrency) } : {}),
  })
  const tenant = freshTenant('push')
  const publisher = await tenantPublisher(ctx, scope, service, tenant, REGISTER_CONCURRENCY)

  ctx.log(`push: registering ${devices} devices`)
  const user = (i: number) => `p${i}`
  const registerStarted = nowMs()
  const registerErrors: Record<string, number> = {}
  let next = 0
  await Promise.all(
    Array.from({ length: REGISTER_CONCURRENCY }, async () => {
      while (next < devices) {
        const i = next++
        const r = await publisher.post(
          '/v1/push/subscriptions',
          JSON.stringify(started.subscriptions[i]),
          mintToken(ctx.secret, { sub: user(i), tenant }),
        )
        if (r.status !== 201) registerErrors[r.status] = (registerErrors[r.status] ?? 0) + 1
      }
    }),
  )
  const registerMs = nowMs() - registerStarted
  if (Object.keys(registerErrors).length) {
    throw new Error(`registering devices failed: ${JSON.stringify(registerErrors)}`)
  }
  await receiver.call('report') // counts from zero
  scope.check()

  const phase = async (what: string, events: number, expected: number, publish: () => Promise<void>) => {
    ctx.log(`push: ${what}: ${expected} pushes expected`)
    const cpu = { service: service.cpuMs(), receiver: receiver.cpuMs() }
    const t0 = nowMs()
    await publish()
    let last = await receiver.call<ReceiverProgress>('progress')
    let changedAt = nowMs()
    let stalled = false
    while (last.unique < expected) {
      stalled = nowMs() - changedAt >= STALL_MS
      if (stalled || nowMs() - t0 >= PHASE_LIMIT_MS) break
      scope.check()
      await new Promise((r) => setTimeout(r, 100))
      const p = await receiver.call<ReceiverProgress>('progress')
      if (p.requests !== last.requests) changedAt = nowMs()
      last = p
    }
    const wallMs = nowMs() - t0
    const serviceCpuMs = service.cpuMs() - cpu.service
    const receiverCpuMs = receiver.cpuMs() - cpu.receiver
    const r = await receiver.call<ReceiverReport>('report')
    const durationMs = r.lastReceiveMs - t0
    const missing = expected - r.unique
    const figures: PushPhase = {
      what,
      events,
      expected,
      received: r.unique,
      unfinished: stalled ? 0 : missing,
      pushesPerSec: durationMs > 0 ? round(r.unique / (durationMs / 1000)) : 0,
      latencyMs: percentiles(r.latencies),
      firstPushMs: r.firstReceiveMs ? round(r.firstReceiveMs - t0) : 0,
      lost: stalled ? missing : 0,
      duplicated: r.duplicated,
      statuses: r.statuses,
      undecryptable: r.undecryptable,
      vapidChecked: r.vapidChecked,
      vapidFailed: r.vapidFailed,
      maxBodyBytes: r.maxBodyBytes,
      connections: r.connections,
      durationSec: round(durationMs / 1000, 2),
      serviceCpuUsPerPush: round((serviceCpuMs * 1000) / Math.max(1, r.unique)),
      serviceCpuPct: round((100 * serviceCpuMs) / wallMs),
      receiverCpuPct: round((100 * receiverCpuMs) / wallMs),
    }
    ctx.log(
      `  ${figures.received}/${expected} pushes, ${figures.pushesPerSec}/s, first after ${figures.firstPushMs} ms, p99 ${figures.latencyMs?.p99} ms, ` +
        `statuses ${JSON.stringify(r.statuses)}` +
        (figures.unfinished ? `; ${figures.unfinished} still due after ${PHASE_LIMIT_MS / 1000} s` : ''),
    )
    return figures
  }

  /** `urgent` events to single users (pushed whatever their presence), one per device, in batches. */
  const onePerUser = (label: string) => async () => {
    for (let first = 0; first < devices; first += BATCH_SIZE) {
      const t = nowMs()
      const events = Array.from({ length: Math.min(BATCH_SIZE, devices - first) }, (_, k) => ({
        type: 'bench.push',
        to: { users: [user(first + k)] },
        priority: 'urgent',
        title: 'Your attention, now',
        body: `An urgent notification for one person (${label}).`,
        data: { t, n: nextN++ } satisfies BenchData,
      }))
      const r = await publisher.post('/v1/events/batch', JSON.stringify({ events }))
      if (r.status !== 201) throw new Error(`batch publish answered ${r.status}: ${r.body}`)
    }
  }
  let nextN = 0

  // The service's first pushes since it started: its code not yet optimized, its TLS connections not yet
  // open. Reported on its own; the phases after it measure the service warmed up.
  const first = await phase(
    `${devices} urgent events, one per user, the first since start`,
    devices,
    devices,
    onePerUser('first'),
  )
  scope.check()

  // Tenant broadcasts, `normal`, everyone offline: every device gets every event.
  const fanout = first.unfinished
    ? undefined
    : await phase(
        `${broadcasts} broadcasts to ${devices} offline devices`,
        broadcasts,
        broadcasts * devices,
        async () => {
          for (let n = 0; n < broadcasts; n++) {
            const r = await publisher.post(
              '/v1/events',
              JSON.stringify({
                type: 'bench.push',
                to: { tenant: true },
                title: `Notice ${n}`,
                body: 'A tenant-wide notice of ordinary size, pushed to everyone who is not online.',
                data: { t: nowMs(), n: nextN++ } satisfies BenchData,
              }),
            )
            if (r.status !== 201) throw new Error(`broadcast answered ${r.status}: ${r.body}`)
          }
        },
      )
  scope.check()

  const single =
    fanout && !fanout.unfinished
      ? await phase(`${devices} urgent events, one per user`, devices, devices, onePerUser('warm'))
      : undefined
  scope.check()

  publisher.close()

  const rows: Row[] = [
    ['push', 'PUSH_CONCURRENCY', ctx.pushConcurrency ?? `default (${DEFAULT_PUSH_CONCURRENCY})`, null, null],
    ['push', 'devices registered /s', round(devices / (registerMs / 1000)), null, null],
  ]
  if (!fanout) rows.push(['push-fanout', 'skipped: the first pushes were still due', null, null, null])
  if (!single) rows.push(['push-single', 'skipped: the broadcast pushes were still due', null, null, null])
  for (const [label, f] of [
    ['push-first', first],
    ['push-fanout', fanout],
    ['push-single', single],
  ] as const) {
    if (!f) continue
    rows.push(
      [label, 'pushes expected / received', `${f.expected} / ${f.received}`, null, null],
      [label, 'pushes /s', f.pushesPerSec, null, null],
      [label, 'latency p50 ms', f.latencyMs?.p50 ?? null, null, null],
      [label, 'latency p99 ms', f.latencyMs?.p99 ?? null, null, null],
      [label, 'service CPU µs / push', f.serviceCpuUsPerPush, null, null],
      [label, 'service / push service CPU %', `${f.serviceCpuPct} / ${f.receiverCpuPct}`, null, null],
      [label, 'TLS connections opened', f.connections, null, null],
      [label, 'lost / duplicated / still due at limit', `${f.lost} / ${f.duplicated} / ${f.unfinished}`, null, null],
      [label, 'undecryptable / VAPID bad', `${f.undecryptable} / ${f.vapidFailed} of ${f.vapidChecked}`, null, null],
    )
    const refused = Object.entries(f.statuses).filter(([s]) => s !== '201')
    if (refused.length) rows.push([label, 'push service answers', JSON.stringify(f.statuses), null, null])
  }
  return {
    line: {
      scenario: 'push',
      backend: ctx.backend,
      devices,
      registerPerSec: round(devices / (registerMs / 1000)),
      pushConcurrency: ctx.pushConcurrency
        ? `PUSH_CONCURRENCY=${ctx.pushConcurrency} (--push-concurrency; one push service gets at most half)`
        : `service default (PUSH_CONCURRENCY ${DEFAULT_PUSH_CONCURRENCY}; one push service gets at most half)`,
      first,
      fanout: fanout ?? { skipped: 'the first pushes were still due when their time was up' },
      single: single ?? { skipped: 'the broadcast pushes were still due when their time was up' },
      reference: null,
      note: 'no reference: nothing comparable to measure against here (raw Node and Nchan do no Web Push)',
    },
    rows,
  }
}
