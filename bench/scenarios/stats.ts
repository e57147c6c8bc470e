import { randomBytes } from 'node:crypto'
import { type SQL, sql } from 'drizzle-orm'
import postgres from 'postgres'
import { statsOf } from '../../src/audit/stats.ts'
import { type Database, openDatabase } from '../../src/db/client.ts'
import { runMigrations } from '../../src/db/migrate.ts'
import { mintToken } from '../../src/tokens.ts'
import { continueIdsAfterFill, dayBlockIdSql, fillIndexSql, makeDayBlocks, withoutIndexes } from '../bulk-fill.ts'
import { nowMs, round } from '../stats.ts'
import type { BenchContext, Row, ScenarioResult, Scope } from './common.ts'
import { startService } from './common.ts'

/** Tenants the events are spread over; the measured one holds 1/TENANTS of them. */
const TENANTS = 50
/** The events span this many days back from now, evenly. */
const SPAN_DAYS = 90
/** Events inserted per statement (progress is logged between them). */
const FILL_CHUNK = 1_000_000
/** One event in this many gets receipts (three readers each, read within 0-2 h) and a stream delivery row. */
const READ_ONE_IN = 5
/** Stream connections audited, across the tenants. */
const CONNECTIONS = 1_000_000
/** Calls per measured request: median and range. */
const CALLS = 7

/**
 * Scenario 13: the cost of GET /v1/stats and of the audit listing at 10 million events (PostgreSQL only). A fresh
 * database is filled in bulk (generate_series, not the API): events across TENANTS tenants over SPAN_DAYS days,
 * receipts for one in READ_ONE_IN, audited connections; the indexes are dropped for the fill and built again
 * after it (as a bulk load does), then ANALYZE. Then one tenant's statistics over 7 and 30 days and a page of its
 * connections are timed, and the statistics' plan is checked for sequential scans.
 */
export async function statsCost(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const adminUrl = process.env.DATABASE_URL
  if (ctx.backend !== 'postgres' || !adminUrl) {
    return {
      line: { scenario: 'stats', skipped: 'needs DATABASE_URL (PostgreSQL)' },
      rows: [['stats', 'skipped: needs DATABASE_URL', null, null, null]],
    }
  }
  const events = Number(process.env.BENCH_STATS_EVENTS ?? (ctx.quick ? 200_000 : 10_000_000))
  // A database of its own, dropped afterwards.
  const name = `herald_bench_stats_${randomBytes(4).toString('hex')}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${name}`)
  scope.defer(async () => {
    await admin.unsafe(`drop database if exists ${name} with (force)`).catch(() => {})
    await admin.end()
  })
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  // Migrated and filled before the service starts: its log tail starts after the last event, not at the first.
  const database = await openDatabase({ url: url.href, poolSize: 4 })
  scope.defer(() => database.close())
  await runMigrations(database)
  const db = postgres(url.href, { max: 1, onnotice: () => {} })
  scope.defer(() => db.end())

  ctx.log(`stats: filling ${events.toLocaleString()} events over ${TENANTS} tenants and ${SPAN_DAYS} days`)
  const fillStarted = nowMs()
  const tables = ['events', 'receipts', 'stream_connections', 'stream_deliveries', 'push_deliveries']
  // The log as the service writes it: a block of ids a day (src/events/log-blocks.ts), the oldest day block 0.
  await makeDayBlocks(db, SPAN_DAYS)
  let insertedMs = 0
  await withoutIndexes(db, tables, async () => {
    for (let first = 1; first <= events; first += FILL_CHUNK) {
      const last = Math.min(events, first + FILL_CHUNK - 1)
      const ageS = `(${events} - i) * ${SPAN_DAYS * 86_400}::float8 / ${events}`
      await db.unsafe(`
        insert into events (id, tenant, type, title, priority, actor, to_tenant, created_at, expires_at)
        select ${dayBlockIdSql('i', ageS, SPAN_DAYS)}, 'stats-' || (i % ${TENANTS}), 'type-' || (i % 7), 'Event ' || i,
          'normal', 'bench', true, now() - make_interval(secs => ${ageS}), now() + interval '3650 days'
        from generate_series(${first}, ${last}) as i`)
      ctx.log(`stats: ${last.toLocaleString()} events (${round((nowMs() - fillStarted) / 1000)} s)`)
      scope.check()
    }
    await continueIdsAfterFill(db)
    const i = fillIndexSql('e.id')
    await db.unsafe(`
      insert into receipts (tenant, user_id, event_id, acked_at, read_at)
      select e.tenant, 'u' || r, e.id, e.created_at + (${i} % 7200) * interval '1 second',
        e.created_at + (${i} % 7200) * interval '1 second'
      from events e cross join generate_series(1, 3) as r
      where (${i} / ${TENANTS}) % ${READ_ONE_IN} = 0`)
    // Stream deliveries for the same events (one flush's row each), pushes for one in ten (one failed in ten).
    await db.unsafe(`
      insert into stream_deliveries (event_id, user_ids, delivered_at)
      select e.id, array['u1', 'u2', 'u3'], e.created_at + interval '1 second' from events e
      where (${i} / ${TENANTS}) % ${READ_ONE_IN} = 0`)
    await db.unsafe(`
      insert into push_deliveries (event_id, tenant, user_id, state, attempts, updated_at)
      select e.id, e.tenant, 'u4', case when (${i} / ${TENANTS}) % 100 = 0 then 'failed' else 'sent' end, 1,
        e.created_at + interval '2 seconds'
      from events e where (${i} / ${TENANTS}) % 10 = 0`)
    await db.unsafe(`
      insert into stream_connections (id, tenant, user_id, instance_id, opened_at, closed_at, close_reason, user_agent, client_ip)
      select 'c' || i, 'stats-' || (i % ${TENANTS}), 'u' || (i % 500), 'bench',
        now() - (${CONNECTIONS} - i) * interval '30 days' / ${CONNECTIONS},
        now() - (${CONNECTIONS} - i) * interval '30 days' / ${CONNECTIONS} + interval '20 minutes', 'client',
        'Mozilla/5.0 (bench)', '203.0.113.' || (i % 250)
      from generate_series(1, ${CONNECTIONS}) as i`)
    insertedMs = nowMs() - fillStarted
    ctx.log(`stats: rows in ${round(insertedMs / 1000)} s; building the indexes and the receipts key`)
  })
  await db.unsafe('analyze events, receipts, stream_connections, stream_deliveries, push_deliveries')
  const fillMs = nowMs() - fillStarted
  const [{ receipts }] = await db<{ receipts: string }[]>`select count(*) as receipts from receipts`
  ctx.log(`stats: filled in ${round(fillMs / 1000)} s (${receipts} receipts)`)

  // Events 90 days old must outlive the service's retention pass.
  const service = await startService(ctx, scope, { DATABASE_URL: url.href, RETENTION_DAYS: '3650' })
  const tenant = 'stats-7'
  const token = mintToken(ctx.secret, { sub: 'bench-admin', tenant, scope: 'admin' }, 3600)
  const base = `http://${service.host}:${service.port}`
  const DAY = 86_400_000
  const timed = async (path: string) => {
    const ms: number[] = []
    let body: unknown
    for (let i = 0; i < CALLS; i++) {
      const started = nowMs()
      const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })
      body = await res.json()
      if (!res.ok) throw new Error(`${path} answered ${res.status}: ${JSON.stringify(body)}`)
      ms.push(nowMs() - started)
      scope.check()
    }
    ms.sort((a, b) => a - b)
    return {
      medianMs: round(ms[Math.floor(ms.length / 2)], 1),
      minMs: round(ms[0], 1),
      maxMs: round(ms.at(-1) as number, 1),
      body,
    }
  }
  const period = (days: number) =>
    `from=${new Date(Date.now() - days * DAY).toISOString()}&to=${new Date().toISOString()}`
  const week = await timed(`/v1/stats?${period(7)}`)
  const month = await timed(`/v1/stats?${period(30)}`)
  const audit = await timed('/v1/audit/connections?limit=100')
  const auditUser = await timed('/v1/audit/connections?limit=100&user=u7')
  const publishedIn = (s: unknown) =>
    (s as { days: Array<{ published: number }> }).days.reduce((n, d) => n + d.published, 0)

  // The plans of the service's own statements for the 30-day statistics: each is run under EXPLAIN ANALYZE.
  const plans: string[] = []
  const explaining: Database = {
    ...database,
    query: async <R>(statement: SQL) => {
      const rows = await database.query<{ 'QUERY PLAN': string }>(sql`explain (analyze, buffers) ${statement}`)
      plans.push(rows.map((r) => r['QUERY PLAN']).join('\n'))
      return [{}] as R[]
    },
  }
  await statsOf(explaining, tenant, { from: new Date(Date.now() - 30 * DAY), to: new Date() }, undefined, 15)
  const planText = plans.join('\n\n')
  const seqScans = [...planText.matchAll(/Seq Scan on (\w+)/g)].map((m) => m[1])
  ctx.log(`stats: plan of the 30-day statistics:\n${planText}`)

  const line = {
    scenario: 'stats',
    events,
    tenants: TENANTS,
    receipts: Number(receipts),
    connections: CONNECTIONS,
    fillS: round(fillMs / 1000),
    rowsInsertedS: round(insertedMs / 1000),
    tenantEvents7d: publishedIn(week.body),
    tenantEvents30d: publishedIn(month.body),
    stats7d: { medianMs: week.medianMs, minMs: week.minMs, maxMs: week.maxMs },
    stats30d: { medianMs: month.medianMs, minMs: month.minMs, maxMs: month.maxMs },
    auditPage: { medianMs: audit.medianMs, minMs: audit.minMs, maxMs: audit.maxMs },
    auditUserPage: { medianMs: auditUser.medianMs, minMs: auditUser.minMs, maxMs: auditUser.maxMs },
    seqScans,
  }
  const range = (r: { minMs: number; maxMs: number }) => `${r.minMs}-${r.maxMs}`
  const rows: Row[] = [
    ['stats', `fill ${events.toLocaleString()} events, s`, round(fillMs / 1000), null, null],
    ['stats', `7 days (${line.tenantEvents7d} events), median ms (range ${range(week)})`, week.medianMs, null, null],
    [
      'stats',
      `30 days (${line.tenantEvents30d} events), median ms (range ${range(month)})`,
      month.medianMs,
      null,
      null,
    ],
    ['stats', `audit page of 100, median ms (range ${range(audit)})`, audit.medianMs, null, null],
    ['stats', `audit page of one user, median ms (range ${range(auditUser)})`, auditUser.medianMs, null, null],
    ['stats', 'sequential scans in the plan', seqScans.join(', ') || 'none', null, null],
  ]
  return { line, rows }
}
