import { setTimeout as sleep } from 'node:timers/promises'
import type { Page, Request } from 'playwright-core'
import { afterEach, expect, it, onTestFinished } from 'vitest'
import type { HeraldClientOptions, HeraldEviction, HeraldStatus } from '../public/client.js'
import { PUBLISHER } from './helpers/app.ts'
import { appAndBrowser, describeBrowser } from './helpers/browser.ts'
import { SseClient } from './helpers/sse.ts'

// The seventh tab: over HTTP/1.1 a browser opens at most 6 connections per host, so with a stream per tab the
// seventh tab of the service's origin could not even load. client.js shares one stream among the tabs of an
// origin (Web Locks choose the tab that streams, BroadcastChannel carries what it receives to the others), and
// opens it with a single-use ticket rather than the JWT in the URL. The test app serves plain http: HTTP/1.1.

const TENANT = 'tabs'
/** MAX_CONNECTIONS_PER_USER: 8 tabs with a stream each fit (so the old client stalls rather than evicts). */
const MAX = 8
/** How long a browser may take to show something (two busy cores, a browser and a server). */
const SEE_MS = 15_000
/** A tab takes over from a closed leader within this. */
const TAKEOVER_MS = 5_000

let counter = 0
/** A user no other test uses. */
const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`

// page.evaluate callbacks run in the browser, and this project compiles without DOM types: these describe
// the little of the page's world the callbacks touch.
interface PageWorld {
  herald: {
    client: { status: HeraldStatus; stop(): void }
    received: string[]
    statuses: HeraldStatus[]
    evictions: HeraldEviction[]
    /** onUpdate and onDelete, as `update <id> <revision>` and `delete <id>`. */
    changes: string[]
  }
  fetch(url: string): Promise<{ ok: boolean }>
  performance: { now(): number }
}

/** One tab: its page, and the URLs of the stream requests it made (GET /v1/stream) and its ticket requests. */
interface Tab {
  page: Page
  streams: URL[]
  tickets: number
  /** Every URL the page requested. */
  urls: string[]
}

const status = (tab: Tab) => tab.page.evaluate(() => (globalThis as unknown as PageWorld).herald.client.status)
const received = (tab: Tab) => tab.page.evaluate(() => (globalThis as unknown as PageWorld).herald.received)

describeBrowser('tabs of one origin share one stream (client.js in Chromium, over HTTP/1.1)', () => {
  const suite = appAndBrowser({ config: { MAX_CONNECTIONS_PER_USER: MAX } }, 120_000)
  const pages: Array<{ page: Page; errors: string[] }> = []

  afterEach(async () => {
    const open = pages.splice(0)
    await Promise.all(open.map(({ page }) => page.close()))
    // An uncaught exception or rejection in a page is a bug even when every tab saw the right thing.
    expect(open.flatMap((p) => p.errors)).toEqual([])
  })

  /** A new tab of the service's origin (the demo page), recording its stream requests. */
  async function newTab(): Promise<Tab> {
    const page = await suite.browser.context.newPage()
    // Shorter than the test's timeout: a tab that cannot load (no connection left) fails here, saying so.
    page.setDefaultTimeout(SEE_MS)
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(`${page.url()}: ${err.message}`))
    pages.push({ page, errors })
    const tab: Tab = { page, streams: [], tickets: 0, urls: [] }
    page.on('request', (r: Request) => {
      const url = new URL(r.url())
      tab.urls.push(r.url())
      if (url.pathname === '/v1/stream') tab.streams.push(url)
      if (url.pathname === '/v1/stream/tickets' && r.method() === 'POST') tab.tickets++
    })
    await page.goto(`${suite.t.url}/`)
    return tab
  }

  /** Starts a client for `user` in the tab, as an application would, recording what it delivers. */
  async function startClient(tab: Tab, token: string, options: Partial<HeraldClientOptions> = {}) {
    // A string, not a function: vitest would rewrite a function's dynamic import() for Node.
    await tab.page.evaluate(`import('/client.js').then(({ createHeraldClient }) => {
      const client = createHeraldClient({ getToken: () => ${JSON.stringify(token)}, ...${JSON.stringify(options)} })
      const herald = { client, received: [], statuses: [], evictions: [], changes: [] }
      client.onUpdate((e) => herald.changes.push('update ' + e.id + ' ' + e.revision))
      client.onDelete((d) => herald.changes.push('delete ' + d.id))
      client.onStatus((s) => herald.statuses.push(s))
      client.onEvicted((e) => herald.evictions.push(e))
      client.onNotification((e) => herald.received.push(e.id))
      window.herald = herald
      client.start()
    })`)
  }

  /** `count` tabs, each with a client for `user` started. */
  async function openTabs(user: string, count: number, options: Partial<HeraldClientOptions> = {}): Promise<Tab[]> {
    const token = suite.t.token({ sub: user, tenant: TENANT })
    const tabs: Tab[] = []
    for (let i = 0; i < count; i++) {
      const tab = await newTab()
      await startClient(tab, token, options)
      tabs.push(tab)
    }
    return tabs
  }

  async function publish(user: string, title = `For ${user}`): Promise<string> {
    const res = await suite.t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${suite.t.token({ sub: 'publisher', tenant: TENANT, scope: PUBLISHER })}`)
      .send({ type: 'test.event', title, to: { users: [user] } })
    expect(res.status, res.text).toBe(201)
    return res.body.id as string
  }

  const streamsOf = (user: string) => suite.t.app.hub.countForUser(TENANT, user)

  async function expectAllLive(tabs: Tab[]) {
    await expect.poll(() => Promise.all(tabs.map(status)), { timeout: SEE_MS }).toEqual(tabs.map(() => 'live'))
  }

  /** Every tab received exactly `ids`, in that order (nothing missing, nothing twice). */
  async function expectEveryTabReceived(tabs: Tab[], ids: string[]) {
    for (const tab of tabs) await expect.poll(() => received(tab), { timeout: SEE_MS, interval: 100 }).toEqual(ids)
  }

  it('8 tabs of one user hold one stream; each gets all 20 events once, in order; the 8th tab stays responsive', async () => {
    const user = unique('eight')
    const tabs = await openTabs(user, 8)
    await expectAllLive(tabs)
    expect(streamsOf(user)).toBe(1)
    expect(
      tabs.filter((tab) => tab.streams.length > 0),
      'tabs that opened a stream',
    ).toHaveLength(1)

    const ids: string[] = []
    for (let i = 0; i < 20; i++) ids.push(await publish(user, `Event ${i}`))
    await expectEveryTabReceived(tabs, ids)

    // A request of the last tab to the service is not queued behind six streams.
    const ms = await tabs[7].page.evaluate(async () => {
      const w = globalThis as unknown as PageWorld
      const start = w.performance.now()
      const res = await w.fetch('/health')
      if (!res.ok) throw new Error('health failed')
      return w.performance.now() - start
    })
    expect(ms).toBeLessThan(2_000)
    expect(streamsOf(user)).toBe(1)
  }, 120_000)

  it('when the leading tab closes, another takes over within seconds; events around the takeover reach every tab once, in order', async () => {
    const user = unique('takeover')
    const tabs = await openTabs(user, 4)
    await expectAllLive(tabs)
    const leaders = tabs.filter((tab) => tab.streams.length > 0)
    expect(leaders).toHaveLength(1)
    const [leader] = leaders
    const others = tabs.filter((tab) => tab !== leader)

    const ids = [await publish(user, 'Before 1'), await publish(user, 'Before 2')]
    await expectEveryTabReceived(tabs, ids)

    // Published as the leader goes (its stream may or may not have carried them), then while no tab streams.
    ids.push(await publish(user, 'As the leader closes 1'), await publish(user, 'As the leader closes 2'))
    await leader.page.close()
    const closedAt = Date.now()
    ids.push(await publish(user, 'During the takeover 1'), await publish(user, 'During the takeover 2'))

    await expect
      .poll(() => others.filter((tab) => tab.streams.length > 0).length === 1 && streamsOf(user) === 1, {
        timeout: TAKEOVER_MS,
        interval: 50,
      })
      .toBe(true)
    expect(Date.now() - closedAt).toBeLessThan(TAKEOVER_MS)
    const [successor] = others.filter((tab) => tab.streams.length > 0)
    // It resumed from the last id it had seen, with a fresh ticket.
    const resumedFrom = Number(successor.streams[0].searchParams.get('lastEventId'))
    expect(resumedFrom).toBeGreaterThanOrEqual(Number(ids[1]))
    expect(successor.streams[0].searchParams.has('ticket')).toBe(true)

    ids.push(await publish(user, 'After 1'), await publish(user, 'After 2'))
    await expectEveryTabReceived(others, ids)
    await expectAllLive(others)
    expect(streamsOf(user)).toBe(1)
    // The others only ever followed a stream: nobody polled or was evicted.
    for (const tab of others) {
      const statuses = await tab.page.evaluate(() => (globalThis as unknown as PageWorld).herald.statuses)
      expect(statuses.filter((s) => s !== 'connecting' && s !== 'live' && s !== 'reconnecting')).toEqual([])
    }

    // stop() hands the stream over too; the stopped tab gets nothing more.
    await successor.page.evaluate(() => (globalThis as unknown as PageWorld).herald.client.stop())
    const last = others.filter((tab) => tab !== successor)
    await expect
      .poll(() => last.filter((tab) => tab.streams.length > 0).length === 1 && streamsOf(user) === 1, {
        timeout: TAKEOVER_MS,
        interval: 50,
      })
      .toBe(true)
    const final = await publish(user, 'After stop()')
    await expectEveryTabReceived(last, [...ids, final])
    expect(await status(successor)).toBe('stopped')
    expect(await received(successor)).toEqual(ids)
    expect(streamsOf(user)).toBe(1)
  }, 120_000)

  it('edits and recalls reach every tab that shares the stream, once each, also across a takeover', async () => {
    const user = unique('changes')
    const tabs = await openTabs(user, 3)
    await expectAllLive(tabs)
    const [leader] = tabs.filter((tab) => tab.streams.length > 0)
    const others = tabs.filter((tab) => tab !== leader)
    const change = async (id: string, body?: object) => {
      const path = `/v1/events/${id}`
      const req = body ? suite.t.http().patch(path).send(body) : suite.t.http().delete(path)
      const res = await req.set('authorization', `Bearer ${suite.t.token({ sub: 'publisher', tenant: TENANT })}`)
      expect(res.status, res.text).toBe(body ? 200 : 204)
    }
    const changes = (tab: Tab) => tab.page.evaluate(() => (globalThis as unknown as PageWorld).herald.changes)

    const kept = await publish(user, 'Trip on Friday')
    const gone = await publish(user, 'Sent by mistake')
    await expectEveryTabReceived(tabs, [kept, gone])
    await change(kept, { title: 'Trip on Monday' })
    await change(gone)
    const expected = [`update ${kept} 1`, `delete ${gone}`]
    for (const tab of tabs) await expect.poll(() => changes(tab), { timeout: SEE_MS }).toEqual(expected)
    await expectEveryTabReceived(tabs, [kept, gone])

    // The leader goes; the tab that takes over resumes after the recall: nothing comes twice, a new edit once.
    await leader.page.close()
    await expect
      .poll(() => others.filter((tab) => tab.streams.length > 0).length === 1 && streamsOf(user) === 1, {
        timeout: TAKEOVER_MS,
        interval: 50,
      })
      .toBe(true)
    await change(kept, { body: 'Bring lunch' })
    for (const tab of others) {
      await expect.poll(() => changes(tab), { timeout: SEE_MS }).toEqual([...expected, `update ${kept} 2`])
    }
    expect(await received(others[0])).toEqual([kept, gone])
  }, 120_000)

  it('an evicted shared stream stops every tab that shared it: none takes over (which would evict another)', async () => {
    const user = unique('evicted')
    const tabs = await openTabs(user, 3)
    await expectAllLive(tabs)
    const seen = await publish(user)
    await expectEveryTabReceived(tabs, [seen])
    expect(streamsOf(user)).toBe(1)

    // MAX newer streams of the same user (other devices): the shared one is the oldest, and goes.
    const token = suite.t.token({ sub: user, tenant: TENANT })
    const devices = await Promise.all(Array.from({ length: MAX }, () => SseClient.open(suite.t.url, { token })))
    onTestFinished(() => {
      for (const d of devices) d.close()
    })
    await expect.poll(() => Promise.all(tabs.map(status)), { timeout: SEE_MS }).toEqual(tabs.map(() => 'evicted'))
    for (const tab of tabs) {
      const evictions = await tab.page.evaluate(() => (globalThis as unknown as PageWorld).herald.evictions)
      expect(evictions).toEqual([{ reason: 'too-many-streams', max: MAX }])
    }
    // Settled: well past a takeover's time, no tab opened another stream.
    await sleep(TAKEOVER_MS)
    expect(tabs.map((tab) => tab.streams.length).reduce((a, b) => a + b)).toBe(1)
    expect(streamsOf(user)).toBe(MAX)
  }, 60_000)

  it('opens the stream with a single-use ticket, never the JWT; after the server drops it, a new ticket and nothing missed', async () => {
    const user = unique('ticket')
    const token = suite.t.token({ sub: user, tenant: TENANT })
    const tab = await newTab()
    await startClient(tab, token, { streamAuth: 'ticket' })
    await expectAllLive([tab])
    const a = await publish(user, 'Before the drop')
    await expectEveryTabReceived([tab], [a])

    // Ended from the server's side, as a shutdown or a proxy's timeout does.
    const open = suite.t.app.hub.streamsOf(TENANT, user)
    expect(open).toHaveLength(1)
    for (const c of open) c.close('shutdown')
    const b = await publish(user, 'While away 1')
    const c = await publish(user, 'While away 2')
    await expectEveryTabReceived([tab], [a, b, c])
    await expectAllLive([tab])
    const d = await publish(user, 'After the reconnection')
    await expectEveryTabReceived([tab], [a, b, c, d])

    expect(tab.streams).toHaveLength(2)
    expect(tab.tickets).toBe(2)
    for (const url of tab.streams) {
      expect(url.searchParams.get('ticket')).toEqual(expect.any(String))
      expect(url.searchParams.has('access_token')).toBe(false)
    }
    expect(tab.streams[0].searchParams.get('ticket')).not.toBe(tab.streams[1].searchParams.get('ticket'))
    expect(tab.streams[1].searchParams.get('lastEventId'), 'resumed from the last event seen').toBe(a)
    expect(
      tab.urls.filter((u) => u.includes(token)),
      'URLs with the JWT in them',
    ).toEqual([])
    const statuses = await tab.page.evaluate(() => (globalThis as unknown as PageWorld).herald.statuses)
    expect(statuses).toEqual(['connecting', 'live', 'reconnecting', 'live'])
  }, 60_000)

  it('two tabs share one stream; with shareAcrossTabs: false, or without Web Locks, each holds its own', async () => {
    const shared = unique('shared')
    const sharing = await openTabs(shared, 2)
    await expectAllLive(sharing)
    expect(streamsOf(shared)).toBe(1)

    const apart = unique('apart')
    const separate = await openTabs(apart, 2, { shareAcrossTabs: false })
    await expectAllLive(separate)
    expect(streamsOf(apart)).toBe(2)
    expect(separate.map((tab) => tab.streams.length)).toEqual([1, 1])

    // A browser without Web Locks (they exist in secure contexts only, e.g. not on plain http to a host name).
    const noLocks = unique('no-locks')
    const token = suite.t.token({ sub: noLocks, tenant: TENANT })
    const lockless: Tab[] = []
    for (let i = 0; i < 2; i++) {
      const tab = await newTab()
      await tab.page.evaluate(`Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined })`)
      await startClient(tab, token)
      lockless.push(tab)
    }
    await expectAllLive(lockless)
    expect(streamsOf(noLocks)).toBe(2)

    const events = [await publish(shared), await publish(apart), await publish(noLocks)]
    await expectEveryTabReceived(sharing, [events[0]])
    await expectEveryTabReceived(separate, [events[1]])
    await expectEveryTabReceived(lockless, [events[2]])
  }, 60_000)
})
