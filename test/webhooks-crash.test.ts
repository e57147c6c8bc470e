import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { expect, it, onTestFinished } from 'vitest'
import { mintToken } from '../src/tokens.ts'
import { TEST_JWT_SECRET } from './helpers/app.ts'
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from './helpers/backends.ts'
import { type Child, runTs } from './helpers/process.ts'
import { SseClient } from './helpers/sse.ts'
import { startWebhookReceiver } from './helpers/webhook-receiver.ts'

// Fault: the instance sending a webhook is killed (SIGKILL, no shutdown hook runs) while the receiver holds the
// request open, and another instance on the same database carries on. The delivery is not lost: the dead
// instance's claim is taken over (its heartbeat stops, or the claim expires) and the message goes out again under
// the same webhook-id, which the receiver deduplicates by. The user whose stream the dead instance held is
// reported offline once its presence is swept.

const TENANT = 'crash-hooks'
/** An instance that stopped beating for this long is dead: its claims and presence rows are taken over. */
const PRESENCE_TTL_S = 3
/** An attempt's deadline; a claim lasts twice this and 5 s. */
const WEBHOOK_TIMEOUT_MS = 2_000
const CLAIM_MS = 2 * WEBHOOK_TIMEOUT_MS + 5_000

const token = (sub: string, scope = '') => mintToken(TEST_JWT_SECRET, { sub, tenant: TENANT, scope })

describePostgres('webhooks when an instance is killed mid-delivery', () => {
  it('another instance sends the claimed delivery again (same webhook-id), and reports the dead instance’s user offline', async () => {
    const dbUrl = await createPostgresDatabase()
    const receiver = await startWebhookReceiver()
    const sql = postgres(dbUrl, { max: 1, onnotice: () => {} })
    const dirs: string[] = []
    const children: Child[] = []
    const streams: SseClient[] = []
    onTestFinished(async () => {
      for (const s of streams) s.close()
      for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL')
      await Promise.all(children.map((c) => c.exited))
      await sql.end()
      await receiver.close()
      await dropPostgresDatabase(dbUrl)
      for (const dir of dirs) await rm(dir, { recursive: true, force: true })
    })

    const startServer = async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'herald-webhook-crash-'))
      dirs.push(dataDir)
      const child = runTs('src/server.ts', [], {
        DATABASE_URL: dbUrl,
        DATA_DIR: dataDir,
        JWT_SECRET: TEST_JWT_SECRET,
        PORT: '0',
        HOST: '127.0.0.1',
        NODE_EXTRA_CA_CERTS: receiver.caFile,
        WEBHOOK_URL_ALLOWLIST: receiver.allowlistEntry,
        WEBHOOK_TIMEOUT_MS: String(WEBHOOK_TIMEOUT_MS),
        WEBHOOK_RETRY_BASE_MS: '200',
        PRESENCE_TTL_S: String(PRESENCE_TTL_S),
        LOG_LEVEL: 'warn',
      })
      children.push(child)
      const [, url] = await child.waitForOutput(/listening on (http:\/\/\S+)/, 45_000)
      return { child, url }
    }

    const a = await startServer()
    const url = receiver.url()
    const created = await fetch(`${a.url}/v1/webhooks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token('boss', 'admin')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ url, events: ['user.online', 'user.offline'] }),
    })
    expect(created.status, await created.clone().text()).toBe(201)
    const endpoint = (await created.json()) as { id: string; secret: string }
    receiver.expect(url, endpoint.secret)
    // The first request is held open: the instance is killed while it waits for the answer.
    receiver.failNext(url, 1, 'hang')

    const stream = await SseClient.open(a.url, { token: token('lea') })
    expect(stream.status).toBe(200)
    streams.push(stream)
    await receiver.waitFor(() => receiver.attemptsAt(url).length === 1 && true, 'the first attempt')
    const [held] = receiver.receivedAt(url)
    expect(held.payload).toMatchObject({ type: 'user.online', data: { tenant: TENANT, userId: 'lea' } })
    const [claimed] = await sql`select state, attempts, claimed_by from webhook_deliveries where msg_id = ${held.id}`
    expect(claimed).toMatchObject({ state: 'pending', attempts: 1, claimed_by: expect.any(String) })

    a.child.proc.kill('SIGKILL')
    expect((await a.child.exited).signal).toBe('SIGKILL')
    const killedAt = Date.now()

    const b = await startServer()
    await receiver.waitFor(
      () => receiver.attemptsAt(url).filter((r) => r.id === held.id && r.status === 200).length === 1 && true,
      'the delivery again, from the second instance',
      30_000,
    )
    const again = receiver.receivedAt(url).filter((r) => r.id === held.id)
    expect(again, 'the same message, under the same webhook-id').toHaveLength(2)
    expect(again[1].body).toBe(held.body)
    expect(again[1].at - killedAt, 'taken over within a claim').toBeLessThan(CLAIM_MS + 2_000)

    // The dead instance's stream of lea is gone: once its presence is swept, she is reported offline.
    await receiver.waitFor(
      () => receiver.receivedAt(url).some((r) => r.payload.type === 'user.offline') && true,
      'user.offline for the dead instance’s user',
      30_000,
    )
    const offline = receiver.receivedAt(url).find((r) => r.payload.type === 'user.offline')
    expect(offline?.payload.data).toMatchObject({ tenant: TENANT, userId: 'lea' })

    const listing = await fetch(`${b.url}/v1/webhooks/${endpoint.id}/deliveries`, {
      headers: { authorization: `Bearer ${token('boss', 'admin')}` },
    })
    const { deliveries } = (await listing.json()) as { deliveries: Array<Record<string, unknown>> }
    expect(deliveries.map((d) => [d.type, d.msgId === held.id, d.attempts])).toEqual([
      ['user.offline', false, 1],
      ['user.online', true, 2],
    ])
    await expect
      .poll(async () => (await sql`select count(*)::int as n from webhook_deliveries where state <> 'sent'`)[0].n)
      .toBe(0)
  })
})
