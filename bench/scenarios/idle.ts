import { mintToken } from '../../src/tokens.ts'
import { STALL_MS } from '../burst.ts'
import { StreamGenerator } from '../generator.ts'
import type { RunningServer } from '../processes.ts'
import { Publisher } from '../publisher.ts'
import { nowMs, ratio, round } from '../stats.ts'
import type { BenchData } from '../stream-pool.ts'
import { startTarget, type Target, type TargetKind } from '../targets.ts'
import {
  type BenchContext,
  freshTenant,
  type Row,
  type ScenarioResult,
  type Scope,
  settledRssKiB,
  startInstances,
} from './common.ts'

/** Opening stops after this: "as many streams as the machine allows within 60 s". */
const OPEN_PHASE_MS = 60_000
/**
 * Streams one process may hold: the hard open-file limit is 20,000 here and cannot be raised, and the
 * service needs a few dozen files of its own (database, listening socket, the publisher's connections).
 */
const SINGLE_PROCESS_STREAMS = 19_000
/** Scale-out: instances on one PostgreSQL database, and streams in all (at most 50,000 asked by the issue). */
const INSTANCES = 3
const SCALEOUT_STREAMS = 50_000
/** Opened and closed before the idle RSS is read: code paths compiled, pools and caches at their working size. */
const WARMUP_STREAMS = 200

export interface IdleFigures {
  /** What the process serving the streams is. */
  server: string
  streams: number
  openFailed: number
  openFailures: Record<string, number>
  openSec: number
  streamsOpenedPerSec: number
  /** Server CPU time per stream opened. */
  serverCpuMsPerStreamOpened: number
  /** Settled RSS after the warm-up streams closed, before the measured ones opened. */
  serverRssMiBIdle: number
  /** Settled RSS with every stream open and idle. */
  serverRssMiBStreams: number
  /** (RSS with streams - RSS idle) / streams. */
  rssKiBPerStream: number
  /** Streams that then received one broadcast: they were live and registered, not just accepted sockets. */
  liveStreams: number
  generatorProcesses: number
}

/**
 * Scenario 3: one process holding as many idle authenticated streams as fit, the service and the references (raw
 * Node, Nchan, and the stack's floor: the service's libraries with one stream route). With
 * `--workers N` the service holds N times as many, what its workers' file limits allow together; the references
 * (one process each) as many as one process.
 */
export async function idle(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const streams = ctx.quick ? 1_000 : SINGLE_PROCESS_STREAMS
  const workers = Number(ctx.serviceWorkers)
  const run = async (kind: TargetKind, count = streams) => {
    scope.check()
    ctx.log(`idle: ${kind}, ${count} streams`)
    const target = await startTarget(kind, ctx, scope)
    const figures = await measureOne(target, ctx, scope, count)
    await target.server.stop()
    return figures
  }
  const ours = await run('herald', streams * workers)
  const rawNode = await run('rawNode')
  if (ctx.nchanMissing) ctx.log(`idle: nchan skipped: ${ctx.nchanMissing}`)
  const nchan = ctx.nchanMissing ? undefined : await run('nchan')
  // The service's libraries alone: what opening a stream and holding it cost before anything of the service's own.
  const floor = await run('stackFloor')

  const name = 'idle'
  const compared = (label: string, pick: (f: IdleFigures) => number, withRatio = true): Row => {
    const row: Row = [name, label, pick(ours), pick(rawNode), withRatio ? ratio(pick(ours), pick(rawNode)) : null]
    if (nchan) row.push(pick(nchan), withRatio ? ratio(pick(ours), pick(nchan)) : null)
    else row.push(null, null)
    row.push(pick(floor), withRatio ? ratio(pick(ours), pick(floor)) : null)
    return row
  }
  const rows: Row[] = [
    compared(
      workers > 1 ? `streams open (herald: ${workers} workers)` : 'streams open (1 process)',
      (f) => f.streams,
      false,
    ),
    compared('streams opened /s', (f) => f.streamsOpenedPerSec),
    compared('server CPU ms / stream opened', (f) => f.serverCpuMsPerStreamOpened),
    compared('server RSS MiB, idle', (f) => f.serverRssMiBIdle),
    compared('server RSS MiB, streams open', (f) => f.serverRssMiBStreams),
    compared('RSS KiB / stream', (f) => f.rssKiBPerStream),
    compared('streams live after (got a broadcast)', (f) => f.liveStreams, false),
  ]
  const ratiosTo = (ref: IdleFigures) => ({
    rssKiBPerStream: ratio(ours.rssKiBPerStream, ref.rssKiBPerStream),
    streamsOpenedPerSec: ratio(ours.streamsOpenedPerSec, ref.streamsOpenedPerSec),
    serverCpuPerStreamOpened: ratio(ours.serverCpuMsPerStreamOpened, ref.serverCpuMsPerStreamOpened),
  })
  return {
    line: {
      scenario: name,
      backend: ctx.backend,
      streams: ours.streams,
      rssKiBPerStream: ours.rssKiBPerStream,
      details: ours,
      references: {
        rawNode,
        nchan: nchan ?? { skipped: ctx.nchanMissing },
        stackFloor: floor,
      },
      ratios: { rawNode: ratiosTo(rawNode), nchan: nchan ? ratiosTo(nchan) : null, stackFloor: ratiosTo(floor) },
    },
    rows,
  }
}

/** Scenario 3, scale-out: 3 instances on one PostgreSQL database holding up to 50,000 streams between them. */
export async function idleScaleout(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const name = 'idle-scaleout'
  if (ctx.backend !== 'postgres') {
    const why = 'needs DATABASE_URL (several instances share one PostgreSQL database)'
    ctx.log(`${name}: skipped: ${why}`)
    return {
      line: { scenario: name, backend: ctx.backend, skipped: why },
      rows: [[name, `skipped: ${why}`, null, null, null]],
    }
  }
  const total = ctx.quick ? 3_000 : SCALEOUT_STREAMS
  const per = Math.ceil(total / INSTANCES)
  ctx.log(`${name}: ${INSTANCES} instances, ${total} streams`)
  const servers = await startInstances(ctx, scope, INSTANCES)
  const tenant = freshTenant(name)
  // One publisher, on the first instance: its broadcast must reach the streams of every instance.
  const publisher = new Publisher(
    servers[0].host,
    servers[0].port,
    mintToken(ctx.secret, { sub: 'bench-publisher', tenant, scope: 'events:publish events:broadcast' }),
    1,
  )
  scope.defer(() => publisher.close())
  await publisher.warm()
  await Promise.all(servers.map((s, k) => warmUp(s, ctx, tenant, `warm${k}-`)))
  const idleKiB = await Promise.all(servers.map((s) => settledRssKiB(() => s.rssKiB())))
  scope.check()

  const cpuBefore = servers.map((s) => s.cpuMs())
  const started = nowMs()
  const opened = await Promise.all(
    servers.map((s, k) =>
      StreamGenerator.open({
        host: s.host,
        port: s.port,
        streams: Math.min(per, total - k * per),
        events: 0,
        secret: ctx.secret,
        tenant,
        userPrefix: `i${k}-u`,
        streamsPerWorker: ctx.streamsPerWorker,
        openPhaseMs: OPEN_PHASE_MS,
      }),
    ),
  )
  const openMs = nowMs() - started
  for (const { generator } of opened) scope.defer(() => generator.close())
  const cpuMs = servers.map((s, k) => s.cpuMs() - cpuBefore[k])
  const streamsKiB = await Promise.all(servers.map((s) => settledRssKiB(() => s.rssKiB())))
  const count = opened.reduce((n, o) => n + o.opened.opened, 0)
  ctx.log(`  ${count} streams open on ${INSTANCES} instances in ${round(openMs / 1000, 1)} s`)
  opened.forEach(({ opened: o }, k) => {
    if (o.opened === 0) throw new Error(`no stream opened on instance ${k + 1}: ${JSON.stringify(o.failures)}`)
  })

  // One broadcast published on instance 1: every stream on every instance must get it.
  scope.check()
  const sent = nowMs()
  const r = await publisher.post(
    '/v1/events',
    JSON.stringify({
      type: 'bench.idle',
      to: { tenant: true },
      title: 'Everyone, on every instance',
      data: { t: sent, n: -1 } satisfies BenchData,
    }),
  )
  if (r.status !== 201) throw new Error(`broadcast answered ${r.status}: ${r.body}`)
  const warmed = await Promise.all(
    opened.map(({ generator, opened: o }) => generator.waitFor((p) => p.warmed >= o.opened, STALL_MS)),
  )
  const live = warmed.reduce((n, p) => n + p.warmed, 0)
  const lastArrival = Math.max(...warmed.map((p) => p.lastWarmedMs))
  await Promise.all(opened.map(({ generator }) => generator.close()))
  publisher.close()

  const instances = servers.map((_, k) => {
    const o = opened[k].opened
    return {
      instance: k + 1,
      streams: o.opened,
      openFailed: o.openFailed,
      openFailures: o.failures,
      openSec: round(o.openMs / 1000, 2),
      streamsOpenedPerSec: round(o.opened / (o.openMs / 1000)),
      serverCpuMsPerStreamOpened: round(cpuMs[k] / Math.max(1, o.opened), 3),
      serverRssMiBIdle: round(idleKiB[k] / 1024),
      serverRssMiBStreams: round(streamsKiB[k] / 1024),
      rssKiBPerStream: round((streamsKiB[k] - idleKiB[k]) / Math.max(1, o.opened), 2),
      liveStreams: warmed[k].warmed,
    }
  })
  const rows: Row[] = [
    [name, `streams open (${INSTANCES} instances, 1 database)`, count, null, null],
    [name, 'streams opened /s, all instances', round(count / (openMs / 1000)), null, null],
    ...instances.flatMap((i): Row[] => [
      [name, `instance ${i.instance}: streams / RSS KiB per stream`, `${i.streams} / ${i.rssKiBPerStream}`, null, null],
      [
        name,
        `instance ${i.instance}: RSS MiB idle / open, CPU ms / open`,
        `${i.serverRssMiBIdle} / ${i.serverRssMiBStreams}, ${i.serverCpuMsPerStreamOpened}`,
        null,
        null,
      ],
    ]),
    [name, 'streams that got a broadcast from instance 1', live, null, null],
    [name, 'broadcast: ms to the last stream', round(lastArrival - sent, 1), null, null],
  ]
  return {
    line: {
      scenario: name,
      backend: ctx.backend,
      instances,
      streams: count,
      openSec: round(openMs / 1000, 2),
      streamsOpenedPerSec: round(count / (openMs / 1000)),
      liveStreams: live,
      broadcastMsToLastStream: round(lastArrival - sent, 1),
      references: null,
      ratios: null,
      note: 'no reference: the raw-Node server and Nchan (memory store) are single-process',
    },
    rows,
  }
}

/** Opens and closes a few streams, so that the idle RSS is read with the stream code paths warm. */
async function warmUp(server: RunningServer, ctx: BenchContext, tenant: string, userPrefix: string, target?: Target) {
  const { generator } = await StreamGenerator.open({
    host: server.host,
    port: server.port,
    streams: WARMUP_STREAMS,
    events: 0,
    secret: ctx.secret,
    tenant,
    userPrefix,
    streamsPerWorker: ctx.streamsPerWorker,
    ...target?.streamsOf(tenant),
  })
  await generator.close()
}

async function measureOne(target: Target, ctx: BenchContext, scope: Scope, streams: number): Promise<IdleFigures> {
  const { server } = target
  const tenant = freshTenant('idle')
  const publisher = new Publisher(
    server.host,
    server.port,
    mintToken(ctx.secret, { sub: 'bench-publisher', tenant, scope: 'events:publish events:broadcast' }),
    1,
  )
  scope.defer(() => publisher.close())
  // Its keep-alive socket before the streams: near the open-file limit a new connection may not be accepted.
  await publisher.warm()
  await warmUp(server, ctx, tenant, 'warm-', target)
  const idleKiB = await settledRssKiB(() => server.rssKiB())
  scope.check()

  const cpuBefore = server.cpuMs()
  const { generator, opened } = await StreamGenerator.open({
    host: server.host,
    port: server.port,
    streams,
    events: 0,
    secret: ctx.secret,
    tenant,
    userPrefix: 'u',
    streamsPerWorker: ctx.streamsPerWorker,
    openPhaseMs: OPEN_PHASE_MS,
    ...target.streamsOf(tenant),
  })
  scope.defer(() => generator.close())
  if (opened.opened === 0) throw new Error(`${server.name}: no stream opened: ${JSON.stringify(opened.failures)}`)
  const cpuMs = server.cpuMs() - cpuBefore
  ctx.log(
    `  ${server.name}: ${opened.opened} streams open in ${round(opened.openMs / 1000, 1)} s` +
      (opened.openFailed ? ` (${opened.openFailed} failed: ${JSON.stringify(opened.failures)})` : ''),
  )
  const streamsKiB = await settledRssKiB(() => server.rssKiB())

  try {
    scope.check()
    const { path, body } = target.broadcast(tenant, {
      type: 'bench.idle',
      title: 'Are you there?',
      body: 'One broadcast after the memory was read: every idle stream must still be live.',
      data: { t: nowMs(), n: -1 } satisfies BenchData,
    })
    const r = await publisher.post(path, body)
    if (!target.accepted(r.status)) throw new Error(`broadcast answered ${r.status}: ${r.body}`)
    const live = (await generator.waitFor((p) => p.warmed >= opened.opened, STALL_MS)).warmed
    return {
      server: server.name,
      streams: opened.opened,
      openFailed: opened.openFailed,
      openFailures: opened.failures,
      openSec: round(opened.openMs / 1000, 2),
      streamsOpenedPerSec: round(opened.opened / (opened.openMs / 1000)),
      serverCpuMsPerStreamOpened: round(cpuMs / Math.max(1, opened.opened), 3),
      serverRssMiBIdle: round(idleKiB / 1024),
      serverRssMiBStreams: round(streamsKiB / 1024),
      rssKiBPerStream: round((streamsKiB - idleKiB) / Math.max(1, opened.opened), 2),
      liveStreams: live,
      generatorProcesses: opened.workers,
    }
  } finally {
    await generator.close()
    publisher.close()
  }
}
