import { mintToken } from '../../src/tokens.ts'
import { STALL_MS } from '../burst.ts'
import { StreamGenerator } from '../generator.ts'
import { nowMs, type Percentiles, percentiles, ratio, round, Samples } from '../stats.ts'
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
import { startPushReceiver } from './push.ts'

/** Users: one push device and one open stream each. */
const USERS = 10_000
/** Tenant broadcasts per phase, one at a time. */
const BROADCASTS = 10
/** Concurrent requests registering devices and storing preferences, each with its user's own token. */
const CONCURRENCY = 16
const OPEN_PHASE_MS = 60_000

/**
 * What each user stores in the second phase: rules of every kind that the bench's events do not match (so every
 * rule is looked at, and every user still gets every event), a push minimum, and quiet hours that are not now.
 * An `inApp: false` rule gives every stream an in-app filter to run.
 */
function userPreferences() {
  const hour = new Date().getUTCHours()
  const at = (h: number) => `${String(h % 24).padStart(2, '0')}:00`
  return {
    rules: [
      { type: 'grades.*', push: false },
      { type: 'attendance.absent', inApp: false },
      { topic: 'club:*', inApp: false, push: false },
      { type: 'lunch.menu', inApp: true, push: true },
    ],
    push: { enabled: true, minPriority: 'normal' },
    quietHours: { start: at(hour + 3), end: at(hour + 4), timeZone: 'UTC' },
  }
}

/** The tenant's defaults in the second phase: one rule more for every user. */
const TENANT_DEFAULTS = { rules: [{ type: 'canteen.*', inApp: false, push: false }] }

interface PhaseFigures {
  phase: string
  broadcasts: number
  /** POST /v1/events, send to 201: the one publish statement (events, the outbox rows of 10,000 devices, NOTIFY). */
  publishLatencyMs: Percentiles | null
  /** Service CPU per broadcast: the publish statement, and the fan-out to every stream (PGlite: the database too). */
  serviceCpuMsPerPublish: number
  /** Publish sent to event received, over every delivery. */
  deliveryLatencyMs: Percentiles | null
  expected: number
  delivered: number
  lost: number
  duplicated: number
}

/**
 * Scenario 9: broadcasts to 10,000 users, each with a push device and an open stream, first with no preferences
 * stored, then with every user's own and the tenant's defaults stored. What preferences cost a broadcast: the push
 * plan joins each recipient's stored preferences in the publish statement (10,000 outbox rows either way: users
 * online get held-back `normal` pushes), and each stream's in-app filter runs on the event.
 */
export async function preferences(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const users = ctx.quick ? 500 : USERS
  const broadcasts = ctx.quick ? 3 : BROADCASTS
  const { started, serviceEnv } = await startPushReceiver(scope, users)
  const service = await startService(ctx, scope, {
    ...serviceEnv,
    // The held-back pushes of users online come due after this: not during the scenario.
    PRESENCE_TTL_S: '600',
  })
  const tenant = freshTenant('preferences')
  const publisher = await tenantPublisher(
    ctx,
    scope,
    service,
    tenant,
    CONCURRENCY,
    'events:publish events:broadcast admin',
  )
  const sub = (i: number) => `p${i}`
  const tokenOf = (i: number) => mintToken(ctx.secret, { sub: sub(i), tenant })

  ctx.log(`preferences: registering ${users} devices`)
  await eachUser(users, async (i) => {
    const r = await publisher.post('/v1/push/subscriptions', JSON.stringify(started.subscriptions[i]), tokenOf(i))
    if (r.status !== 201) throw new Error(`registering a device answered ${r.status}: ${r.body}`)
  })
  scope.check()

  const { generator, opened } = await StreamGenerator.open({
    host: service.host,
    port: service.port,
    streams: users,
    events: 2 * broadcasts,
    secret: ctx.secret,
    tenant,
    userPrefix: 'p',
    streamsPerWorker: ctx.streamsPerWorker,
    openPhaseMs: OPEN_PHASE_MS,
  })
  scope.defer(() => generator.close())
  ctx.log(`  ${opened.opened} streams open in ${round(opened.openMs / 1000, 1)} s`)
  if (opened.openFailed)
    throw new Error(`${opened.openFailed} streams did not open: ${JSON.stringify(opened.failures)}`)

  let n = 0
  const broadcast = (number: number) =>
    publisher.post(
      '/v1/events',
      JSON.stringify({
        type: 'bench.notice',
        to: { tenant: true },
        title: `Notice ${number}`,
        body: 'A tenant-wide notice of ordinary size, to everyone in the school.',
        data: { t: nowMs(), n: number } satisfies BenchData,
      }),
    )

  // Every stream live and the code paths warm before measuring.
  const warm = await broadcast(-1)
  if (warm.status !== 201) throw new Error(`warm-up broadcast answered ${warm.status}: ${warm.body}`)
  await generator.waitFor((p) => p.warmed >= opened.opened, STALL_MS)
  await generator.report(true)

  /** One broadcast at a time, each waited for on every stream: its publish latency is its own. */
  const phase = async (name: string): Promise<PhaseFigures> => {
    scope.check()
    await new Promise((r) => setTimeout(r, 500))
    ctx.log(`preferences: ${name}: ${broadcasts} broadcasts to ${users} users`)
    const latency = new Samples()
    const cpuBefore = service.cpuMs()
    const expectedBefore = (await generator.progress()).unique
    for (let k = 0; k < broadcasts; k++) {
      const r = await broadcast(n++)
      if (r.status !== 201) throw new Error(`broadcast answered ${r.status}: ${r.body}`)
      latency.push(r.ms)
      await generator.waitFor((p) => p.unique >= expectedBefore + (k + 1) * opened.opened, STALL_MS)
    }
    const serviceCpuMs = service.cpuMs() - cpuBefore
    const report = await generator.report(true)
    const expected = broadcasts * opened.opened
    const figures: PhaseFigures = {
      phase: name,
      broadcasts,
      publishLatencyMs: percentiles(latency.values()),
      serviceCpuMsPerPublish: round(serviceCpuMs / broadcasts, 1),
      deliveryLatencyMs: percentiles(report.latencies),
      expected,
      delivered: report.unique,
      lost: expected - report.unique,
      duplicated: report.duplicated,
    }
    ctx.log(
      `  publish p50 ${figures.publishLatencyMs?.p50} ms, ${figures.serviceCpuMsPerPublish} ms CPU per broadcast, ` +
        `${figures.delivered}/${expected} deliveries`,
    )
    return figures
  }

  try {
    const without = await phase('no preferences stored')

    ctx.log(`preferences: storing ${users} users' preferences and the tenant's defaults`)
    const stored = Date.now()
    const body = JSON.stringify(userPreferences())
    await eachUser(users, async (i) => {
      const r = await publisher.put('/v1/me/preferences', body, tokenOf(i))
      if (r.status !== 200) throw new Error(`storing preferences answered ${r.status}: ${r.body}`)
    })
    const defaults = await publisher.put('/v1/tenant/preferences', JSON.stringify(TENANT_DEFAULTS))
    if (defaults.status !== 200) throw new Error(`storing the tenant's defaults answered ${defaults.status}`)
    const storeSec = round((Date.now() - stored) / 1000, 1)

    const withPrefs = await phase('preferences stored')
    return result(ctx, users, opened.opened, storeSec, without, withPrefs)
  } finally {
    await generator.close()
    publisher.close()
  }
}

/** Runs `task` for every user, CONCURRENCY at a time. */
async function eachUser(count: number, task: (i: number) => Promise<void>) {
  let next = 0
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) await task(next++)
    }),
  )
}

function result(
  ctx: BenchContext,
  users: number,
  streams: number,
  storeSec: number,
  without: PhaseFigures,
  withPrefs: PhaseFigures,
): ScenarioResult {
  const name = 'preferences'
  const rows: Row[] = [
    [name, 'users (a device and a stream each)', `${users} / ${streams} streams`, null, null],
    [name, 'storing every user’s preferences, s', storeSec, null, null],
  ]
  for (const f of [without, withPrefs]) {
    const label = f === without ? `${name}-none` : `${name}-stored`
    rows.push(
      [label, 'broadcasts × recipients', `${f.broadcasts} × ${streams}`, null, null],
      [label, 'publish latency p50 / max ms', `${f.publishLatencyMs?.p50} / ${f.publishLatencyMs?.max}`, null, null],
      [label, 'service CPU ms / broadcast', f.serviceCpuMsPerPublish, null, null],
      [label, 'delivery latency p50 / p99 ms', `${f.deliveryLatencyMs?.p50} / ${f.deliveryLatencyMs?.p99}`, null, null],
      [label, 'lost / duplicated', `${f.lost} / ${f.duplicated}`, null, null],
    )
  }
  rows.push([
    name,
    'stored ÷ none: publish p50, CPU / broadcast',
    `${ratio(withPrefs.publishLatencyMs?.p50, without.publishLatencyMs?.p50)}, ${ratio(withPrefs.serviceCpuMsPerPublish, without.serviceCpuMsPerPublish)}`,
    null,
    null,
  ])
  return {
    line: {
      scenario: name,
      backend: ctx.backend,
      users,
      streams,
      storeSec,
      without,
      withPreferences: withPrefs,
      lost: without.lost + withPrefs.lost,
      duplicated: without.duplicated + withPrefs.duplicated,
      reference: null,
      note: 'no reference: raw Node and Nchan have no preferences',
    },
    rows,
  }
}
