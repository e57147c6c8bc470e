import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHeraldServerClient, HeraldError } from '../src/client/index.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { runToEnd } from './helpers/process.ts'

// Issue 19: the roll-call, nudge and escalation reach the backend client and the CLI as well as the REST API.

const cli = (args: string[], env: Record<string, string> = {}) =>
  runToEnd('src/cli.ts', args, { JWT_SECRET: TEST_JWT_SECRET, ...env })

describe('roll-call and nudge through the backend client and the CLI', () => {
  let t: TestApp
  const tenant = `clients-${process.pid}`
  let teacherToken: string

  beforeAll(async () => {
    t = await startApp('pglite')
    teacherToken = t.token({ sub: 'teacher', tenant, scope: PUBLISHER })
  })
  afterAll(async () => {
    await t?.close()
  })

  const client = () => createHeraldServerClient({ baseUrl: t.url, token: teacherToken })
  const read = async (id: string, user: string) => {
    const res = await t
      .http()
      .post(`/v1/events/${id}/read`)
      .set({ authorization: `Bearer ${t.token({ sub: user, tenant })}` })
    expect(res.status).toBe(204)
  }

  it('the backend client reads a roll-call page by page, and nudges; a second nudge is a HeraldError 429 with the wait', async () => {
    const published = await client().publish({
      type: 'trip.cancelled',
      title: 'Trip cancelled',
      to: { users: ['a', 'b', 'c'] },
      escalate: { after: 900 },
    })
    const id = 'id' in published ? published.id : ''
    await read(id, 'b')
    const first = await client().recipients(id, { state: 'all', limit: 2 })
    expect(first.recipients.map((r) => r.userId)).toEqual(['a', 'b'])
    expect(first.totals).toMatchObject({ recipients: 3, read: 1, unread: 2 })
    const second = await client().recipients(id, { limit: 2, cursor: first.next ?? undefined })
    expect(second.recipients.map((r) => r.userId)).toEqual(['c'])
    expect(second.next).toBeNull()
    expect((await client().recipients(id, { state: 'unread' })).recipients.map((r) => r.userId)).toEqual(['a', 'c'])
    expect((await client().status(id)).recipients).toMatchObject({ recipients: 3, read: 1 })

    expect(await client().nudge(id)).toEqual({ nudged: 2, pushes: 0 })
    const refused = await client()
      .nudge(id)
      .catch((err: unknown) => err)
    expect(refused).toBeInstanceOf(HeraldError)
    expect((refused as HeraldError).status).toBe(429)
    expect((refused as HeraldError).retryAfterS).toBeGreaterThan(500)
  })

  it('the CLI lists the roll-call as JSON lines with the totals last, and nudges; a nudge too soon exits 1 saying when', async () => {
    const published = await client().publish({ type: 'trip.cancelled', title: 'Trip', to: { users: ['x', 'y'] } })
    const id = 'id' in published ? published.id : ''
    await read(id, 'y')
    const env = { HERALD_URL: t.url, HERALD_TOKEN: teacherToken }
    const listed = await cli(['recipients', id, '--state', 'unread'], env)
    expect(listed.code, listed.stderr).toBe(0)
    const lines = listed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(lines[0]).toMatchObject({ userId: 'x', readAt: null })
    expect(lines.at(-1)).toEqual({ totals: { recipients: 2, delivered: 0, pushed: 0, acked: 1, read: 1, unread: 1 } })

    const nudged = await cli(['nudge', id], env)
    expect(nudged.code, nudged.stderr).toBe(0)
    expect(JSON.parse(nudged.stdout)).toEqual({ nudged: 1, pushes: 0 })
    const again = await cli(['nudge', id], env)
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/HTTP 429 .*retry in \d+ s/)

    const badState = await cli(['recipients', id, '--state', 'maybe'], env)
    expect(badState.code).toBe(2)
    expect(badState.stderr).toMatch(/--state takes all, unread, read or acked/)
  })

  it('publish --escalate sends the escalation; a bad value exits 2 with usage', async () => {
    const env = { HERALD_URL: t.url, HERALD_TOKEN: teacherToken }
    const ok = await cli(['publish', '--title', 'Urgent', '--to-user', 'p', '--escalate', '900:acked'], env)
    expect(ok.code, ok.stderr).toBe(0)
    const bad = await cli(['publish', '--title', 'Urgent', '--to-user', 'p', '--escalate', 'soon'], env)
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--escalate takes <seconds>\[:read\|acked\]/)
    const tooShort = await cli(['publish', '--title', 'Urgent', '--to-user', 'p', '--escalate', '5'], env)
    expect(tooShort.code).toBe(1)
    expect(tooShort.stderr).toMatch(/escalate\.after/)
  })
})
