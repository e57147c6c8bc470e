import { setTimeout as sleep } from 'node:timers/promises'
import type { Page } from 'playwright-core'
import { afterEach, beforeAll, expect, it } from 'vitest'
import type { HeraldEviction, HeraldStatus } from '../public/client.js'
import type { StreamConnection } from '../src/stream/connection.ts'
import { PUBLISHER } from './helpers/app.ts'
import { appAndBrowser, describeBrowser } from './helpers/browser.ts'

// MAX_CONNECTIONS_PER_USER as a browser lives it: more EventSources than the limit settle at the limit (the
// evicted ones are closed by their own browser, never come back), and client.js reports its eviction and stops.
// The operator's report was the opposite: every evicted EventSource came back after `retry:` and evicted the
// next oldest, forever.

const MAX = 3
const TENANT = 'eviction'
/** The stream's `retry:`: an evicted EventSource comes back this long after its stream ended. */
const RETRY_MS = 3_000
/** How long a browser may take to show something (two busy cores, a browser and a server). */
const SEE_MS = 15_000

let counter = 0
/** A user no other test uses. */
const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`

// page.evaluate callbacks run in the browser, and this project compiles without DOM types: these describe
// the little of the page's world the callbacks touch.
interface PageEventSource {
  readyState: number
  addEventListener(type: string, listener: (e: { data: string }) => void): void
}
interface PageWorld {
  EventSource: new (url: string) => PageEventSource
  /** Test A: what each plain EventSource saw. */
  sources: Array<{ es: PageEventSource; evicted: string[]; notifications: string[] }>
  /** Test B: what each client.js client saw. */
  clients: Array<{
    client: { status: HeraldStatus; lastEventId: string | undefined }
    statuses: HeraldStatus[]
    evictions: HeraldEviction[]
    stored: Map<string, string>
  }>
}

describeBrowser('more streams than MAX_CONNECTIONS_PER_USER in Chromium', () => {
  const suite = appAndBrowser({ config: { MAX_CONNECTIONS_PER_USER: MAX } }, 120_000)
  const pages: Array<{ page: Page; errors: string[] }> = []
  /** Per user: streams the server opened, and how many of them it evicted. */
  const server = new Map<string, { opened: number; evicted: number }>()

  beforeAll(() => {
    const hub = suite.t.app.hub
    const add = hub.add.bind(hub)
    hub.add = (c: StreamConnection) => {
      const seen = server.get(c.userId) ?? { opened: 0, evicted: 0 }
      server.set(c.userId, seen)
      seen.opened++
      c.onClose(() => {
        if (c.closeReason === 'evicted') seen.evicted++
      })
      add(c)
    }
  })

  afterEach(async () => {
    const open = pages.splice(0)
    await Promise.all(open.map(({ page }) => page.close()))
    expect(open.flatMap((p) => p.errors)).toEqual([])
  })

  /** A page of the service's origin, and the status of every stream request it makes, in order. */
  async function newPage(): Promise<{ page: Page; streamReplies: number[] }> {
    const page = await suite.browser.context.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(`${page.url()}: ${err.message}`))
    pages.push({ page, errors })
    const streamReplies: number[] = []
    page.on('response', (r) => {
      if (new URL(r.url()).pathname === '/v1/stream') streamReplies.push(r.status())
    })
    await page.goto(`${suite.t.url}/`)
    return { page, streamReplies }
  }

  async function publish(user: string): Promise<string> {
    const res = await suite.t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${suite.t.token({ sub: 'publisher', tenant: TENANT, scope: PUBLISHER })}`)
      .send({ type: 'test.event', title: `For ${user}`, to: { users: [user] } })
    expect(res.status, res.text).toBe(201)
    return res.body.id as string
  }

  it('5 plain EventSources of one user settle at 3: two evicted, closed by the browser, never back', async () => {
    const user = unique('tabs')
    const { page, streamReplies } = await newPage()
    await page.evaluate(
      ({ url, count }) => {
        const w = globalThis as unknown as PageWorld
        w.sources = []
        for (let i = 0; i < count; i++) {
          const source = { es: new w.EventSource(url), evicted: [] as string[], notifications: [] as string[] }
          source.es.addEventListener('evicted', (e) => source.evicted.push(e.data))
          source.es.addEventListener('notification', (e) => source.notifications.push(JSON.parse(e.data).id))
          w.sources.push(source)
        }
      },
      { url: `/v1/stream?access_token=${suite.t.token({ sub: user, tenant: TENANT })}`, count: 5 },
    )
    const readyStates = () =>
      page.evaluate(() => (globalThis as unknown as PageWorld).sources.map((s) => s.es.readyState).sort())
    // CLOSED (2) once each evicted one came back (after `retry:`) and was told 204.
    await expect.poll(readyStates, { timeout: SEE_MS, interval: 200 }).toEqual([1, 1, 1, 2, 2])
    // Settled: more than two retry periods on, nothing reconnected and nothing else was evicted.
    await sleep(2 * RETRY_MS + 500)
    expect(await readyStates()).toEqual([1, 1, 1, 2, 2])
    expect(server.get(user)).toEqual({ opened: 5, evicted: 2 })
    expect(suite.t.app.hub.countForUser(TENANT, user)).toBe(MAX)
    expect(streamReplies.sort()).toEqual([200, 200, 200, 200, 200, 204, 204])

    const sources = () =>
      page.evaluate(() =>
        (globalThis as unknown as PageWorld).sources.map((s) => ({
          readyState: s.es.readyState,
          evicted: s.evicted,
          got: s.notifications,
        })),
      )
    const evictedData = JSON.stringify({ reason: 'too-many-streams', max: MAX })
    expect((await sources()).filter((s) => s.readyState === 2).map((s) => s.evicted)).toEqual([
      [evictedData],
      [evictedData],
    ])
    // The three left are the live ones: each gets what is published next.
    const id = await publish(user)
    await expect
      .poll(async () => (await sources()).filter((s) => s.got.includes(id)).length, { timeout: SEE_MS })
      .toBe(MAX)
    expect((await sources()).filter((s) => s.readyState === 1).every((s) => s.evicted.length === 0)).toBe(true)
  }, 60_000)

  it('client.js: the evicted client says so (status "evicted", onEvicted), stops, and keeps its resume point', async () => {
    const user = unique('client')
    const { page, streamReplies } = await newPage()
    const token = suite.t.token({ sub: user, tenant: TENANT })
    // A string, not a function: vitest would rewrite a function's dynamic import() for Node.
    const startClient = (n: number) =>
      page.evaluate(`import('/client.js').then(({ createHeraldClient }) => {
        window.clients ??= []
        const stored = new Map()
        const storage = {
          getItem: (k) => (stored.has(k) ? stored.get(k) : null),
          setItem: (k, v) => stored.set(k, v),
          removeItem: (k) => stored.delete(k),
        }
        // Each its own stream, as on separate devices: clients of one origin share one by default.
        const client = createHeraldClient({ getToken: () => ${JSON.stringify(token)}, storage, shareAcrossTabs: false })
        const record = { client, statuses: [], evictions: [], stored }
        client.onStatus((s) => record.statuses.push(s))
        client.onEvicted((e) => record.evictions.push(e))
        window.clients[${n}] = record
        client.start()
      })`)
    const status = (n: number) => page.evaluate((i) => (globalThis as unknown as PageWorld).clients[i].client.status, n)

    await startClient(0)
    await expect.poll(() => status(0), { timeout: SEE_MS }).toBe('live')
    const seen = await publish(user)
    await expect
      .poll(() => page.evaluate(() => (globalThis as unknown as PageWorld).clients[0].client.lastEventId), {
        timeout: SEE_MS,
      })
      .toBe(seen)
    for (const n of [1, 2, 3]) {
      await startClient(n)
      await expect.poll(() => status(n), { timeout: SEE_MS }).toBe('live')
    }
    await expect.poll(() => status(0), { timeout: SEE_MS }).toBe('evicted')
    // More than two retry periods: an EventSource left to itself would have come back by now.
    await sleep(2 * RETRY_MS + 500)

    const first = await page.evaluate(() => {
      const c = (globalThis as unknown as PageWorld).clients[0]
      return {
        status: c.client.status,
        statuses: c.statuses,
        evictions: c.evictions,
        lastEventId: c.client.lastEventId,
        stored: [...c.stored.values()],
      }
    })
    expect(first).toEqual({
      status: 'evicted',
      statuses: ['connecting', 'live', 'evicted'],
      evictions: [{ reason: 'too-many-streams', max: MAX }],
      lastEventId: seen,
      // Still the last notification's id, not the frame's "evicted".
      stored: [seen],
    })
    expect(await Promise.all([1, 2, 3].map(status))).toEqual(['live', 'live', 'live'])
    expect(streamReplies).toEqual([200, 200, 200, 200])
    expect(server.get(user)).toEqual({ opened: 4, evicted: 1 })
    expect(suite.t.app.hub.countForUser(TENANT, user)).toBe(MAX)
  }, 60_000)
})
