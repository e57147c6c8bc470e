import { type BurstFigures, burst, PUBLISH_CONCURRENCY, STALL_MS } from '../burst.ts'
import { StreamGenerator } from '../generator.ts'
import { nowMs, type Percentiles, percentiles, ratio, round, Samples } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import { type PlannedAudience, recipients, roleName, type TargetedPlan, topicName } from '../targeted-plan.ts'
import { startTarget, type Target, type TargetKind } from '../targets.ts'
import { type BenchContext, freshTenant, type Row, type ScenarioResult, type Scope, tenantPublisher } from './common.ts'

const OPEN_PHASE_MS = 60_000
/** Roles: each user has one, 1 in 10 of the streams each (a school's teachers, parents, students, ...). */
const ROLES = 10
/** Topics: each stream follows one, 1 in 100 of the streams each (a class). */
const TOPICS = 100

interface Phase {
  name: string
  /** Audiences of this phase's events, in publish order. */
  audiences: PlannedAudience[]
}

/**
 * The events, in phases of one kind each (so the cost of each kind shows), then a mix. Users are picked
 * spread over the whole range; the mix names some streams twice (user and role, role and topic): they must
 * get the event once.
 */
function phases(streams: number, quick: boolean): Phase[] {
  const scale = quick ? 0.2 : 1
  const count = (n: number) => Math.max(2, Math.round(n * scale))
  const userOf = (i: number) => (i * 7919 + 13) % streams
  const mix: PlannedAudience[] = []
  for (let i = 0; i < count(100); i++) {
    const g = userOf(i + 5000)
    if (i % 4 === 0) mix.push({ users: [g] })
    else if (i % 4 === 1) mix.push({ topics: [i % TOPICS] })
    else if (i % 4 === 2) mix.push({ users: [g], roles: [g % ROLES] })
    else mix.push({ roles: [i % ROLES], topics: [(i * 3) % TOPICS, (i * 3 + 1) % TOPICS] })
  }
  return [
    { name: 'user', audiences: Array.from({ length: count(200) }, (_, i) => ({ users: [userOf(i)] })) },
    { name: 'topic', audiences: Array.from({ length: count(100) }, (_, i) => ({ topics: [i % TOPICS] })) },
    { name: 'role', audiences: Array.from({ length: count(20) }, (_, i) => ({ roles: [i % ROLES] })) },
    { name: 'tenant', audiences: Array.from({ length: count(5) }, () => ({ tenant: true })) },
    { name: 'mix', audiences: mix },
  ]
}

/** The publish body's `to` for an audience. */
function to(a: PlannedAudience) {
  return {
    ...(a.users ? { users: a.users.map((g) => `u${g}`) } : {}),
    ...(a.roles ? { roles: a.roles.map(roleName) } : {}),
    ...(a.topics ? { topics: a.topics.map(topicName) } : {}),
    ...(a.tenant ? { tenant: true } : {}),
  }
}

interface PhaseFigures extends BurstFigures {
  phase: string
  /** Streams each event was addressed to, on average. */
  recipientsPerEvent: number
}

interface TargetedFigures {
  server: string
  streams: number
  openFailed: number
  openSec: number
  /** Server CPU per publish to one user before any stream was open (same events, same route). */
  noStreamsCpuUsPerUserPublish: number
  noStreamsPublishLatencyMs: Percentiles | null
  phases: PhaseFigures[]
  lost: number
  duplicated: number
  misaddressed: number
  outOfOrder: number
  closedEarly: number
}

/** Scenario 7: 10,000 streams over roles and topics; events to single users, topics, roles, the tenant, a mix. */
export async function targeted(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const streams = ctx.quick ? 1_000 : 10_000
  const plan: TargetedPlan = { streams, roles: ROLES, topics: TOPICS, events: [] }
  const planned = phases(streams, ctx.quick)
  const firstOf: number[] = []
  for (const p of planned) {
    firstOf.push(plan.events.length)
    plan.events.push(...p.audiences)
  }
  const recipientsOf = plan.events.map((_, n) => recipients(plan, n))

  const run = async (kind: TargetKind) => {
    scope.check()
    ctx.log(`targeted: ${kind}`)
    const target = await startTarget(kind, ctx, scope)
    const figures = await measure(target, ctx, scope, plan, planned, firstOf, recipientsOf)
    await target.server.stop()
    return figures
  }
  const ours = await run('herald')
  const rawNode = await run('rawNode')

  const name = 'targeted'
  const rows: Row[] = [
    [name, 'streams open (10 roles, 100 topics)', ours.streams, rawNode.streams, null],
    [
      name,
      'CPU µs / publish to 1 user, 0 streams',
      ours.noStreamsCpuUsPerUserPublish,
      rawNode.noStreamsCpuUsPerUserPublish,
      ratio(ours.noStreamsCpuUsPerUserPublish, rawNode.noStreamsCpuUsPerUserPublish),
    ],
  ]
  const userPhase = (f: TargetedFigures) => f.phases[0].serverCpuUsPerPublish / f.noStreamsCpuUsPerUserPublish
  rows.push([
    name,
    `CPU / publish to 1 user: ${ours.streams} streams ÷ 0 streams`,
    round(userPhase(ours), 2),
    round(userPhase(rawNode), 2),
    null,
  ])
  ours.phases.forEach((p, i) => {
    const r = rawNode.phases[i]
    const label = `${name}-${p.phase}`
    rows.push(
      [
        label,
        'events × recipients each',
        `${p.events} × ${p.recipientsPerEvent}`,
        `${r.events} × ${r.recipientsPerEvent}`,
        null,
      ],
      [
        label,
        'server CPU µs / publish',
        p.serverCpuUsPerPublish,
        r.serverCpuUsPerPublish,
        ratio(p.serverCpuUsPerPublish, r.serverCpuUsPerPublish),
      ],
      [label, 'deliveries /s', p.deliveriesPerSec, r.deliveriesPerSec, ratio(p.deliveriesPerSec, r.deliveriesPerSec)],
      [
        label,
        'latency p50 ms',
        p.latencyMs?.p50 ?? null,
        r.latencyMs?.p50 ?? null,
        ratio(p.latencyMs?.p50, r.latencyMs?.p50),
      ],
      [
        label,
        'latency p99 ms',
        p.latencyMs?.p99 ?? null,
        r.latencyMs?.p99 ?? null,
        ratio(p.latencyMs?.p99, r.latencyMs?.p99),
      ],
      [
        label,
        'lost / duplicated / misaddressed',
        `${p.lost} / ${p.duplicated} / ${p.misaddressed}`,
        `${r.lost} / ${r.duplicated} / ${r.misaddressed}`,
        null,
      ],
    )
  })
  return {
    line: {
      scenario: name,
      backend: ctx.backend,
      streams: ours.streams,
      lost: ours.lost,
      duplicated: ours.duplicated,
      misaddressed: ours.misaddressed,
      details: ours,
      references: {
        rawNode,
        nchan: {
          skipped: 'not built: Nchan would need a channel per user, role and topic and multiplexed subscribers',
        },
      },
    },
    rows,
  }
}

async function measure(
  target: Target,
  ctx: BenchContext,
  scope: Scope,
  plan: TargetedPlan,
  planned: Phase[],
  firstOf: number[],
  recipientsOf: number[],
): Promise<TargetedFigures> {
  const { server } = target
  const tenant = freshTenant('targeted')
  const publisher = await tenantPublisher(ctx, scope, server, tenant, PUBLISH_CONCURRENCY)
  const publish = (a: PlannedAudience, n: number) =>
    publisher.post(
      '/v1/events',
      JSON.stringify({
        type: 'bench.targeted',
        to: to(a),
        title: `Bench event ${n}`,
        body: 'A notification of ordinary size for some of the people in a school.',
        data: { t: nowMs(), n } satisfies BenchData,
      }),
    )

  // The user phase's publishes with no stream open: what a publish to one user costs on its own. Twice: the
  // first pass warms the code paths (as the warm-up broadcast does before the phases), the second is measured.
  const users = planned[0].audiences
  const publishUsers = async () => {
    const latency = new Samples()
    let nextUser = 0
    await Promise.all(
      Array.from({ length: PUBLISH_CONCURRENCY }, async () => {
        while (nextUser < users.length) {
          const r = await publish(users[nextUser++], -2)
          if (r.status !== 201) throw new Error(`publish answered ${r.status}: ${r.body}`)
          latency.push(r.ms)
        }
      }),
    )
    return latency
  }
  await publishUsers()
  const cpuBefore = server.cpuMs()
  const latency = await publishUsers()
  const noStreamsCpuUsPerUserPublish = round(((server.cpuMs() - cpuBefore) * 1000) / users.length, 1)
  scope.check()

  const { generator, opened } = await StreamGenerator.open({
    host: server.host,
    port: server.port,
    streams: plan.streams,
    events: plan.events.length,
    secret: ctx.secret,
    tenant,
    userPrefix: 'u',
    streamsPerWorker: ctx.streamsPerWorker,
    openPhaseMs: OPEN_PHASE_MS,
    targeted: plan,
  })
  scope.defer(() => generator.close())
  ctx.log(
    `  ${server.name}: ${opened.opened} streams open in ${round(opened.openMs / 1000, 1)} s` +
      (opened.openFailed ? ` (${opened.openFailed} failed: ${JSON.stringify(opened.failures)})` : ''),
  )
  if (opened.openFailed)
    throw new Error(`${opened.openFailed} streams did not open: ${JSON.stringify(opened.failures)}`)

  try {
    // Every stream live before measuring (and the code paths warm): one broadcast, numbered as a warm-up.
    const warm = await publish({ tenant: true }, -1)
    if (warm.status !== 201) throw new Error(`warm-up publish answered ${warm.status}: ${warm.body}`)
    await generator.waitFor((p) => p.warmed >= opened.opened, STALL_MS)
    await generator.report(true)

    const results: PhaseFigures[] = []
    for (const [k, p] of planned.entries()) {
      scope.check()
      await new Promise((r) => setTimeout(r, 500))
      const first = firstOf[k]
      const b = await burst({
        serverCpuMs: () => server.cpuMs(),
        generator,
        events: p.audiences.length,
        publish: (i) => publish(p.audiences[i], first + i),
        accepted: target.accepted,
        expectedFor: (accepted) => accepted.reduce((sum, i) => sum + recipientsOf[first + i], 0),
      })
      results.push({ phase: p.name, recipientsPerEvent: round(b.expected / Math.max(1, b.events), 1), ...b })
      ctx.log(
        `  ${server.name} ${p.name}: ${b.events} events, ${b.delivered}/${b.expected} deliveries, ` +
          `${b.serverCpuUsPerPublish} µs CPU per publish, misaddressed ${b.misaddressed}`,
      )
    }
    const closedEarly = (await generator.report()).closedEarly
    const total = (k: 'lost' | 'duplicated' | 'misaddressed' | 'outOfOrder') => results.reduce((n, r) => n + r[k], 0)
    return {
      server: server.name,
      streams: opened.opened,
      openFailed: opened.openFailed,
      openSec: round(opened.openMs / 1000, 2),
      noStreamsCpuUsPerUserPublish,
      noStreamsPublishLatencyMs: percentiles(latency.values()),
      phases: results,
      lost: total('lost'),
      duplicated: total('duplicated'),
      misaddressed: total('misaddressed'),
      outOfOrder: total('outOfOrder'),
      closedEarly,
    }
  } finally {
    await generator.close()
    publisher.close()
  }
}
