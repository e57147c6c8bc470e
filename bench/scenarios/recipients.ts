import http from 'node:http'
import { mintToken } from '../../src/tokens.ts'
import type { PostResult } from '../publisher.ts'
import { nowMs, ratio, round, Samples } from '../stats.ts'
import {
  type BenchContext,
  freshTenant,
  machineQuiet,
  type Row,
  type ScenarioResult,
  type Scope,
  startService,
  tenantPublisher,
} from './common.ts'

/** Users in the directory, all holding ROLE: the audience of a role broadcast. */
const USERS = 10_000
/** Users per `POST /v1/directory/users/batch` (the route's maximum). */
const BATCH = 5_000
/** Publishes per phase, one in flight. */
const PUBLISHES = 30
const ROLE = 'parent'
/** A role nobody holds: the baseline publish resolves no recipient. */
const NOBODY = 'no-such-role'
/** The roll-call's page size (the route's maximum). */
const PAGE = 1_000
/** Whole roll-call walks (every page of one event). */
const WALKS = 5
/** Nudges measured, each of its own 10,000-recipient event (an event is nudged at most once per 10 minutes). */
const NUDGES = 3
/** Unmeasured publishes of each kind before the phases. */
const WARMUPS = 10
/** The service left idle this long, its CPU measured, before the phases. */
const IDLE_MS = 3_000

/** Nearest-rank percentiles with min, rounded to 0.01 ms. */
interface Spread {
  min: number
  p50: number
  p90: number
  p99: number
  max: number
}

function spread(samples: Samples): Spread | null {
  const values = samples.values().sort()
  if (values.length === 0) return null
  const at = (p: number) => round(values[Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1)], 2)
  return { min: round(values[0], 2), p50: at(50), p90: at(90), p99: at(99), max: round(values[values.length - 1], 2) }
}

interface PhaseFigures {
  phase: string
  publishes: number
  /** Recipients recorded for the phase's last event (GET /v1/events/:id/status, after the phase). */
  recipientsPerEvent: number
  /** POST /v1/events, send to 201: the one publish statement (event, recipients resolved and written, push plan). */
  publishLatencyMs: Spread | null
  /** Service CPU per publish (PGlite: the database's too; PostgreSQL: the service's only). */
  serviceCpuMsPerPublish: number
  /** Wall time of the measured publishes. */
  elapsedMs: number
  /** Each publish's latency, in publish order. */
  latenciesMs: number[]
}

/** GETs over one keep-alive connection with the publisher's token, timed send to reply read. */
class Reader {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 })

  constructor(
    private readonly server: { host: string; port: number },
    private readonly token: string,
  ) {}

  get(path: string): Promise<PostResult> {
    const started = nowMs()
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: this.server.host,
          port: this.server.port,
          method: 'GET',
          path,
          headers: { authorization: `Bearer ${this.token}` },
          agent: this.agent,
        },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (text += d))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, ms: nowMs() - started }))
          res.on('error', reject)
        },
      )
      req.on('error', reject)
      req.end()
    })
  }

  close(): void {
    this.agent.destroy()
  }
}

const expectStatus = (r: PostResult, status: number, what: string) => {
  if (r.status !== status) throw new Error(`${what} answered ${r.status}: ${r.body.slice(0, 500)}`)
  return JSON.parse(r.body)
}

/**
 * Scenario 10: what resolving and recording recipients costs a publish. 10,000 users in the directory (the batch
 * route, 2 × 5,000), all holding one role; phases of single publishes, one in flight: to a role nobody holds (no
 * recipient: the baseline), to one user, to the role (10,000 recipients), to the tenant (10,000 and the
 * publisher). No streams and no push devices: the figures are the publish statement's (resolution, the
 * `event_recipients` row, an empty push plan), not fan-out or push. Then the roll-call of a 10,000-recipient event
 * (first page, every page, status) and nudges of such events with everyone unread.
 */
export async function recipientsCost(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const users = ctx.quick ? 2_000 : USERS
  const batch = ctx.quick ? 1_000 : BATCH
  const publishes = ctx.quick ? 5 : PUBLISHES
  const walks = ctx.quick ? 1 : WALKS
  const nudges = ctx.quick ? 1 : NUDGES
  const warmups = ctx.quick ? 2 : WARMUPS
  const service = await startService(ctx, scope)
  const tenant = freshTenant('recipients')
  const scopes = 'events:publish events:broadcast admin'
  const publisher = await tenantPublisher(ctx, scope, service, tenant, 1, scopes)
  const reader = new Reader(service, mintToken(ctx.secret, { sub: 'bench-publisher', tenant, scope: scopes }))
  scope.defer(() => reader.close())
  const userId = (i: number) => `r${String(i).padStart(5, '0')}`

  ctx.log(`recipients: ${users} users into the directory, ${batch} per batch`)
  const importMs: number[] = []
  for (let from = 0; from < users; from += batch) {
    scope.check()
    const operations = Array.from({ length: Math.min(batch, users - from) }, (_, k) => ({
      op: 'upsert',
      id: userId(from + k),
      roles: [ROLE],
      topics: [],
      displayName: `Parent ${from + k}`,
    }))
    const r = await publisher.post('/v1/directory/users/batch', JSON.stringify({ operations }))
    expectStatus(r, 200, 'a directory batch')
    importMs.push(round(r.ms))
  }
  // PostgreSQL's autovacuum analyses the new rows, PGlite settles: not during the phases.
  const settleMs = await machineQuiet(15, 10_000)
  // What the service spends doing nothing (timers, the log tail's polling): phases of other lengths pay it too.
  const idleBefore = service.cpuMs()
  const idleStarted = nowMs()
  await new Promise((r) => setTimeout(r, IDLE_MS))
  const idleCpuMsPerSec = round(((service.cpuMs() - idleBefore) * 1000) / (nowMs() - idleStarted), 1)

  let n = 0
  const publish = async (to: Record<string, unknown>): Promise<{ id: string; ms: number }> => {
    const r = await publisher.post(
      '/v1/events',
      JSON.stringify({
        type: 'bench.notice',
        to,
        title: `Notice ${n}`,
        body: 'A notice of ordinary size, to the parents of the school.',
        data: { n: n++ },
      }),
    )
    return { id: String(expectStatus(r, 201, 'a publish').id), ms: r.ms }
  }
  const status = async (id: string) => {
    const r = await reader.get(`/v1/events/${id}/status`)
    return { body: expectStatus(r, 200, 'the status') as { recipients: { recipients: number } }, ms: r.ms }
  }

  /** `publishes` events to `to(k)`, one at a time, after one not counted (code paths and caches warm). */
  const phase = async (name: string, to: (k: number) => Record<string, unknown>): Promise<PhaseFigures> => {
    scope.check()
    await publish(to(-1))
    await new Promise((r) => setTimeout(r, 500))
    const latency = new Samples()
    const series: number[] = []
    let last = ''
    const cpuBefore = service.cpuMs()
    const started = nowMs()
    for (let k = 0; k < publishes; k++) {
      const { id, ms } = await publish(to(k))
      latency.push(ms)
      series.push(round(ms, 1))
      last = id
    }
    const cpuMs = service.cpuMs() - cpuBefore
    const elapsedMs = round(nowMs() - started)
    const figures: PhaseFigures = {
      phase: name,
      publishes,
      recipientsPerEvent: (await status(last)).body.recipients.recipients,
      publishLatencyMs: spread(latency),
      serviceCpuMsPerPublish: round(cpuMs / publishes, 1),
      elapsedMs,
      latenciesMs: series,
    }
    ctx.log(
      `  ${name}: ${figures.recipientsPerEvent} recipients, publish p50 ${figures.publishLatencyMs?.p50} ms, ` +
        `${figures.serviceCpuMsPerPublish} ms CPU per publish`,
    )
    return figures
  }

  const audiences: Array<[string, (k: number) => Record<string, unknown>]> = [
    ['none', () => ({ roles: [NOBODY] })],
    ['user', (k) => ({ users: [userId(((((k + 1) * 7919) % users) + users) % users)] })],
    ['role', () => ({ roles: [ROLE] })],
    ['tenant', () => ({ tenant: true })],
  ]
  // The first publishes after start are slower (code not optimized yet, the database connections' caches and
  // prepared statements cold): without this, the first phase measured pays for them.
  ctx.log(`recipients: warm-up, ${warmups} publishes of each kind`)
  for (let k = 0; k < warmups; k++) for (const [, to] of audiences) await publish(to(-2 - k))

  ctx.log(`recipients: phases of ${publishes} publishes, one in flight`)
  const phases: PhaseFigures[] = []
  for (const [name, to] of audiences) phases.push(await phase(name, to))
  const [none, user, role] = phases
  for (const [f, expected] of [
    [none, 0],
    [user, 1],
    [role, users],
  ] as const) {
    if (f.recipientsPerEvent !== expected)
      throw new Error(`${f.phase}: ${f.recipientsPerEvent} recipients recorded, expected ${expected}`)
  }

  ctx.log('recipients: roll-call of a role broadcast')
  scope.check()
  const { id: called } = await publish({ roles: [ROLE] })
  const path = (query: string) => `/v1/events/${called}/recipients?limit=${PAGE}${query}`
  const firstPage = new Samples()
  const firstUnread = new Samples()
  const statusMs = new Samples()
  await reader.get(path('')) // warm
  for (let k = 0; k < publishes; k++) {
    firstPage.push((await reader.get(path(''))).ms)
    firstUnread.push((await reader.get(path('&state=unread'))).ms)
    statusMs.push((await status(called)).ms)
  }
  const walkMs = new Samples()
  let pages = 0
  let listed = 0
  for (let w = 0; w < walks; w++) {
    scope.check()
    const started = nowMs()
    let cursor: string | null = null
    pages = 0
    listed = 0
    do {
      const r = await reader.get(path(cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`))
      const page = expectStatus(r, 200, 'a roll-call page') as { recipients: unknown[]; next: string | null }
      pages++
      listed += page.recipients.length
      cursor = page.next
    } while (cursor !== null)
    walkMs.push(nowMs() - started)
  }
  if (listed !== users) throw new Error(`the roll-call listed ${listed} recipients, expected ${users}`)

  ctx.log(`recipients: ${nudges} nudge(s) of a role broadcast, everyone unread`)
  const nudge = async (id: string) => {
    const r = await publisher.post(`/v1/events/${id}/nudge`, '{}')
    return { body: expectStatus(r, 200, 'a nudge') as { nudged: number; pushes: number }, ms: r.ms }
  }
  await nudge((await publish({ users: [userId(0)] })).id) // warm, one recipient
  const nudgeMs: number[] = []
  for (let k = 0; k < nudges; k++) {
    scope.check()
    const { id } = await publish({ roles: [ROLE] })
    const { body, ms } = await nudge(id)
    if (body.nudged !== users) throw new Error(`a nudge reminded ${body.nudged} recipients, expected ${users}`)
    nudgeMs.push(round(ms, 2))
  }

  const rollCall = {
    event: called,
    pageSize: PAGE,
    pages,
    firstPageMs: spread(firstPage),
    firstUnreadPageMs: spread(firstUnread),
    walkAllPagesMs: spread(walkMs),
    statusMs: spread(statusMs),
  }
  return result(ctx, {
    users,
    importMs,
    settleMs,
    idleCpuMsPerSec,
    phases,
    rollCall,
    nudgeMs,
  })
}

interface Figures {
  users: number
  importMs: number[]
  settleMs: number
  /** Service CPU per second while idle (no request), before the phases. */
  idleCpuMsPerSec: number
  phases: PhaseFigures[]
  rollCall: {
    pages: number
    firstPageMs: Spread | null
    firstUnreadPageMs: Spread | null
    walkAllPagesMs: Spread | null
    statusMs: Spread | null
  }
  nudgeMs: number[]
}

function result(ctx: BenchContext, f: Figures): ScenarioResult {
  const name = 'recipients'
  const [none, user, role] = f.phases
  const latencyMs = round((role.publishLatencyMs?.p50 ?? 0) - (none.publishLatencyMs?.p50 ?? 0), 2)
  const cpuMs = round(role.serviceCpuMsPerPublish - none.serviceCpuMsPerPublish, 1)
  const cost = {
    recipients: role.recipientsPerEvent,
    latencyP50Ms: latencyMs,
    serviceCpuMs: cpuMs,
    latencyP50Ratio: ratio(role.publishLatencyMs?.p50, none.publishLatencyMs?.p50),
    serviceCpuRatio: ratio(role.serviceCpuMsPerPublish, none.serviceCpuMsPerPublish),
    latencyUsPerRecipient: round((latencyMs * 1000) / role.recipientsPerEvent, 2),
    // The baseline is not free: a role broadcast reads the tenant's directory whoever holds the role. Against a
    // publish to one user, the whole cost of a 10,000-recipient role broadcast shows.
    vsUser: {
      latencyP50Ms: round((role.publishLatencyMs?.p50 ?? 0) - (user.publishLatencyMs?.p50 ?? 0), 2),
      serviceCpuMs: round(role.serviceCpuMsPerPublish - user.serviceCpuMsPerPublish, 1),
    },
  }
  const sorted = [...f.nudgeMs].sort((a, b) => a - b)
  const nudgeMedian = sorted[Math.floor((sorted.length - 1) / 2)]
  const rows: Row[] = [
    [
      name,
      'users in the directory (batch ms each)',
      `${f.users} (${f.importMs.map((ms) => ms.toLocaleString('en-US')).join(' + ')})`,
      null,
      null,
    ],
    [name, 'service CPU ms / s idle', f.idleCpuMsPerSec, null, null],
  ]
  for (const p of f.phases) {
    const l = p.publishLatencyMs
    rows.push(
      [`${name}-${p.phase}`, 'publishes × recipients', `${p.publishes} × ${p.recipientsPerEvent}`, null, null],
      [`${name}-${p.phase}`, 'publish ms p50 / p90 / p99', `${l?.p50} / ${l?.p90} / ${l?.p99}`, null, null],
      [`${name}-${p.phase}`, 'publish ms min / max', `${l?.min} / ${l?.max}`, null, null],
      [`${name}-${p.phase}`, 'service CPU ms / publish', p.serviceCpuMsPerPublish, null, null],
    )
  }
  const rc = f.rollCall
  rows.push(
    [name, `${cost.recipients} recipients: + publish p50 ms, + CPU ms`, `${latencyMs}, ${cpuMs}`, null, null],
    [name, 'role ÷ none: publish p50, CPU / publish', `${cost.latencyP50Ratio}, ${cost.serviceCpuRatio}`, null, null],
    [
      name,
      'role − user: + publish p50 ms, + CPU ms',
      `${cost.vsUser.latencyP50Ms}, ${cost.vsUser.serviceCpuMs}`,
      null,
      null,
    ],
    [
      `${name}-rollcall`,
      'first page of 1,000 ms p50 (unread)',
      `${rc.firstPageMs?.p50} (${rc.firstUnreadPageMs?.p50})`,
      null,
      null,
    ],
    [
      `${name}-rollcall`,
      `all ${rc.pages} pages ms p50 (min–max)`,
      `${rc.walkAllPagesMs?.p50} (${rc.walkAllPagesMs?.min}–${rc.walkAllPagesMs?.max})`,
      null,
      null,
    ],
    [`${name}-rollcall`, 'status ms p50 / max', `${rc.statusMs?.p50} / ${rc.statusMs?.max}`, null, null],
    [`${name}-nudge`, `nudge of ${f.users} unread ms (each)`, `${nudgeMedian} (${f.nudgeMs.join(', ')})`, null, null],
  )
  return {
    line: {
      scenario: name,
      backend: ctx.backend,
      users: f.users,
      importMs: f.importMs,
      settleMs: f.settleMs,
      idleCpuMsPerSec: f.idleCpuMsPerSec,
      phases: f.phases,
      cost,
      rollCall: f.rollCall,
      nudgeMs: f.nudgeMs,
      reference: null,
      note:
        'no streams and no push devices: the figures are the publish statement (resolving and recording ' +
        'recipients, an empty push plan) and the reads, not fan-out or push; on PostgreSQL the database CPU is ' +
        'not in the service CPU',
    },
    rows,
  }
}
