import { mkdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { BrowserContext, CDPSession, Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import type { HeraldClient, HeraldClientOptions, HeraldStatus } from '../public/client.js'
import type { StreamConnection } from '../src/stream/connection.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { cspViolations, describeBrowser, launchBrowser, type TestBrowser } from './helpers/browser.ts'
import { type BrowserSubscription, type PushService, startPushService } from './helpers/push-service.ts'

// SPEC sections 4-6 as a user's browser sees them: the client library (public/client.js) on a page, the demo
// inbox (public/index.html + demo.js) and the service worker (public/sw.js), in a real headless Chromium
// against the real server. Only the server runs in-process (to drop its streams and read its state).

/** Every demo user lives in the demo page's default tenant. */
const TENANT = 'demo'
const SCREENSHOT = join(import.meta.dirname, '..', 'test-output', 'demo-inbox.png')
/** How long a browser may take to show something (two busy cores, a browser and a server). */
const SEE_MS = 15_000

let counter = 0
/** A user no other test uses. */
const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`

// page.evaluate callbacks run in the browser, and this project compiles without DOM types: these describe
// the little of the page's world the callbacks touch.
interface SwNotification {
  title: string
  tag: string
  body: string
  requireInteraction: boolean
  data: { id?: string; url?: string; ackToken?: string } | null
}
interface SwRegistration {
  active: { state: string } | null
  getNotifications(): Promise<SwNotification[]>
}
interface PageWorld {
  /** Set by clientScript(). */
  herald: {
    client: HeraldClient
    /** Every onNotification, with the client's status at that moment. */
    received: Array<{ id: string; status: HeraldStatus }>
    statuses: HeraldStatus[]
  }
  /** Messages the service worker posted to this page (init script of the push test). */
  swMessages: Array<{ type: string; id: string | null }>
  navigator: { serviceWorker: { getRegistration(): Promise<SwRegistration | undefined> } }
}

/**
 * A page script that does what an application does with client.js: import it from the service, create a
 * client whose getToken asks the backend (here the demo sign-in), listen, start. It records what the user
 * would see on `window.herald`. Evaluated as text: a function's `import()` would be rewritten by the bundler,
 * and an inline <script> is refused by the page's Content-Security-Policy.
 */
function clientScript(user: string, options: Partial<HeraldClientOptions>) {
  return `(async () => {
    const { createHeraldClient } = await import('/client.js')
    const user = ${JSON.stringify({ sub: user, tenant: TENANT })}
    async function getToken() {
      const res = await fetch('/demo/token', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(user),
      })
      return (await res.json()).token
    }
    const client = createHeraldClient({ getToken, ...${JSON.stringify(options)} })
    const herald = { client, received: [], statuses: [] }
    client.onStatus((s) => herald.statuses.push(s))
    client.onNotification((e) => herald.received.push({ id: e.id, status: client.status }))
    client.start()
    window.herald = herald
  })()`
}

/** Ids of the test page client's notifications, in arrival order. */
const receivedIds = (page: Page) =>
  page.evaluate(() => (globalThis as unknown as PageWorld).herald.received.map((r) => r.id))
const clientStatus = (page: Page) => page.evaluate(() => (globalThis as unknown as PageWorld).herald.client.status)

describeBrowser('the browser client, demo inbox and service worker in Chromium', () => {
  let t: TestApp
  let pushService: PushService
  /** One browser for the page tests; the push test gets its own profile (service worker, permission). */
  let browser: BrowserContext
  const browsers: TestBrowser[] = []
  /** Open streams as the server holds them, so a test can end them from the server's side. */
  const streams = new Set<StreamConnection>()
  const pages: Array<{ page: Page; errors: string[]; violations: string[] }> = []

  beforeAll(async () => {
    pushService = await startPushService()
    t = await startApp('pglite', {
      demoSignIn: true,
      config: { PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*' },
      pushAgent: pushService.agent,
    })
    const hub = t.app.hub
    const add = hub.add.bind(hub)
    hub.add = (c: StreamConnection) => {
      streams.add(c)
      c.onClose(() => streams.delete(c))
      add(c)
    }
    const launched = await launchBrowser()
    browsers.push(launched)
    browser = launched.context
  }, 120_000)

  afterEach(async () => {
    const open = pages.splice(0)
    await Promise.all(open.map(({ page }) => page.close()))
    // An uncaught exception or rejection in the page is a bug even when the user saw the right thing; so is
    // anything the Content-Security-Policy blocked.
    expect(open.flatMap((p) => p.errors)).toEqual([])
    expect(open.flatMap((p) => p.violations)).toEqual([])
  })

  afterAll(async () => {
    await Promise.all(browsers.map((b) => b.close()))
    await t?.close()
    await pushService?.close()
  })

  async function newPage(context = browser): Promise<Page> {
    const page = await context.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(`${page.url()}: ${err.message}`))
    pages.push({ page, errors, violations: await cspViolations(page) })
    return page
  }

  /** The demo origin with the test page client running for `user`; resolves once it exists. */
  async function startClient(page: Page, user: string, options: Partial<HeraldClientOptions> = {}) {
    await page.evaluate(clientScript(user, options))
  }

  const publisherToken = () => t.token({ sub: 'teacher-9', tenant: TENANT, scope: PUBLISHER })

  /** Publishes one event to `user` through the API, as an application backend would; returns its id. */
  async function publish(user: string, fields: Record<string, unknown> = {}): Promise<string> {
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${publisherToken()}`)
      .send({ type: 'test.event', title: `For ${user}`, to: { users: [user] }, ...fields })
    expect(res.status, res.text).toBe(201)
    return res.body.id as string
  }

  /** Ends `user`'s open streams from the server's side, as a shutdown or a proxy's timeout does. */
  function dropStreams(user: string): number {
    const mine = [...streams].filter((c) => c.tenant === TENANT && c.userId === user)
    for (const c of mine) c.close('shutdown')
    return mine.length
  }

  /** Waits until the test page client has received exactly `ids` (and nothing else), in that order. */
  async function expectReceived(page: Page, ids: string[]) {
    await expect.poll(() => receivedIds(page), { timeout: SEE_MS, interval: 50 }).toEqual(ids)
  }

  async function signIn(page: Page, user: string) {
    await page.goto(`${t.url}/`)
    await page.fill('#signin-form input[name="sub"]', user)
    await page.fill('#signin-form input[name="tenant"]', TENANT)
    await page.click('#signin-form button[type="submit"]')
    await expectLive(page)
  }

  /** The demo page's status line says live. */
  async function expectLive(page: Page) {
    await expect.poll(() => page.getAttribute('#status', 'data-status'), { timeout: SEE_MS }).toBe('live')
  }

  const badge = (page: Page) => page.textContent('#badge')
  const unreadItems = (page: Page) => page.locator('.item.unread').evaluateAll((els) => els.map((e) => e.dataset.id))

  it('receives a published event live, and after the server drops the stream gets what was missed, once each', async () => {
    const user = unique('resume')
    const page = await newPage()
    await page.goto(`${t.url}/`)
    await startClient(page, user)
    await expect.poll(() => clientStatus(page), { timeout: SEE_MS }).toBe('live')

    const a = await publish(user, { title: 'Before the drop' })
    await expectReceived(page, [a])

    expect(dropStreams(user)).toBe(1)
    // Published while the browser has no stream (EventSource waits `retry: 3000` before reconnecting).
    const b = await publish(user, { title: 'While away 1' })
    const c = await publish(user, { title: 'While away 2' })
    expect(t.app.hub.countForUser(TENANT, user), 'the browser reconnected before the publishes').toBe(0)

    await expectReceived(page, [a, b, c])
    await expect.poll(() => clientStatus(page), { timeout: SEE_MS }).toBe('live')
    const d = await publish(user, { title: 'After the resume' })
    await expectReceived(page, [a, b, c, d])
    const statuses = await page.evaluate(() => (globalThis as unknown as PageWorld).herald.statuses)
    expect(statuses).toEqual(['connecting', 'live', 'reconnecting', 'live'])
  })

  it('resumes after a reload from the id it remembered, without the events it had already shown', async () => {
    const user = unique('reload')
    const page = await newPage()
    const streamUrls: URL[] = []
    page.on('request', (r) => {
      // The stream itself, not its ticket (POST /v1/stream/tickets).
      if (new URL(r.url()).pathname === '/v1/stream') streamUrls.push(new URL(r.url()))
    })
    await page.goto(`${t.url}/`)
    await startClient(page, user)
    // A new user has no resume point: the first stream carries only what is published once it is open.
    await expect.poll(() => clientStatus(page), { timeout: SEE_MS }).toBe('live')
    const a = await publish(user, { title: 'Seen before the reload' })
    await expectReceived(page, [a])
    expect(streamUrls.map((u) => u.searchParams.get('lastEventId'))).toEqual([null])

    await page.reload()
    // Between the old page's end and the new page's client: nobody is listening.
    const c = await publish(user, { title: 'Published during the reload' })
    await startClient(page, user)
    // While the new client connects and replays.
    const b = await publish(user, { title: 'Published as the page came back' })
    const d = await publish(user, { title: 'Later' })
    await expectReceived(page, [c, b, d])
    expect(streamUrls.at(-1)?.searchParams.get('lastEventId'), 'the reloaded client resumed from A').toBe(a)
  })

  it('keeps two tabs of one user in step: a read and "Mark all read" in one tab clear the badge in the other', async () => {
    const user = unique('tabs')
    const tab1 = await newPage()
    const tab2 = await newPage()
    await signIn(tab1, user)
    await signIn(tab2, user)

    const first = await publish(user, { title: 'Trip form due Friday' })
    const second = await publish(user, { title: 'Maths: 18/20' })
    for (const tab of [tab1, tab2]) {
      await expect.poll(() => unreadItems(tab), { timeout: SEE_MS }).toEqual([second, first])
      await expect.poll(() => badge(tab), { timeout: SEE_MS }).toBe('2')
    }

    await tab1.click(`.item[data-id="${first}"] button`)
    await expect.poll(() => unreadItems(tab2), { timeout: SEE_MS }).toEqual([second])
    await expect.poll(() => badge(tab2), { timeout: SEE_MS }).toBe('1')

    await tab1.click('#read-all')
    await expect.poll(() => badge(tab2), { timeout: SEE_MS }).toBe('0')
    expect(await unreadItems(tab2)).toEqual([])
    await expect.poll(() => badge(tab1), { timeout: SEE_MS }).toBe('0')
    // Neither tab reloaded: the list still shows both events.
    expect(await tab2.locator('.item').count()).toBe(2)
  })

  it('falls back to polling while the stream is blocked, gets events meanwhile, and goes live again when it can', async () => {
    const user = unique('polling')
    const page = await newPage()
    await page.goto(`${t.url}/`)
    await page.route('**/v1/stream**', (route) => route.abort())
    await startClient(page, user, { failuresBeforePolling: 2, pollIntervalMs: 200, streamRetryMs: 1_000 })
    await expect.poll(() => clientStatus(page), { timeout: SEE_MS }).toBe('polling')

    const a = await publish(user, { title: 'Sent while polling' })
    const b = await publish(user, { title: 'Also sent while polling' })
    await expectReceived(page, [a, b])

    await page.unroute('**/v1/stream**')
    await expect.poll(() => clientStatus(page), { timeout: SEE_MS }).toBe('live')
    const c = await publish(user, { title: 'Sent once live again' })
    await expectReceived(page, [a, b, c])
    const received = await page.evaluate(() => (globalThis as unknown as PageWorld).herald.received)
    expect(received).toEqual([
      { id: a, status: 'polling' },
      { id: b, status: 'polling' },
      { id: c, status: 'live' },
    ])
  })

  it('shows a pushed event from the service worker, with its collapse key as tag, and acks it', async () => {
    const user = unique('push')
    const own = await launchBrowser()
    browsers.push(own)
    const context = own.context
    // Without this, showNotification throws; granted before the page loads, as a user's earlier "Allow".
    await context.grantPermissions(['notifications'], { origin: t.url })
    const page = await newPage(context)

    // Chromium's own push service is out of reach here (subscribe never settles): the browser subscribes to
    // the local push service instead, with the VAPID key the page asked for.
    const subscriptions: BrowserSubscription[] = []
    await page.exposeFunction('heraldTestSubscribe', (applicationServerKey: string) => {
      const subscription = pushService.createSubscription({ applicationServerKey })
      subscriptions.push(subscription)
      return subscription
    })
    await page.addInitScript(`
      PushManager.prototype.subscribe = async function (options) {
        const bytes = new Uint8Array(options.applicationServerKey)
        const key = btoa(String.fromCharCode(...bytes)).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '')
        const json = await window.heraldTestSubscribe(key)
        return { endpoint: json.endpoint, expirationTime: null, options, toJSON: () => json }
      }
      window.swMessages = []
      navigator.serviceWorker.addEventListener('message', (e) => window.swMessages.push(e.data))
      navigator.serviceWorker.startMessages()
    `)
    await signIn(page, user)
    await page.click('#push')
    await expect.poll(() => page.textContent('#push-note'), { timeout: SEE_MS }).toMatch(/^Push is on/)
    expect(subscriptions).toHaveLength(1)

    // `ready` may resolve while the worker is still activating: push only to an activated worker.
    await page.waitForFunction(
      async () => {
        const reg = await (globalThis as unknown as PageWorld).navigator.serviceWorker.getRegistration()
        return reg?.active?.state === 'activated'
      },
      undefined,
      { polling: 100, timeout: SEE_MS },
    )
    const cdp = await context.newCDPSession(page)
    const registrationId = await serviceWorkerRegistrationId(cdp, `${t.url}/`)

    // Urgent: pushed even though this user has a stream open.
    const id = await publish(user, {
      title: 'School closes at noon',
      body: 'Storm warning',
      priority: 'urgent',
      collapseKey: 'closure-today',
      url: '/news/closure',
    })
    const [message] = await pushService.waitForMessages(1, SEE_MS)
    expect(message.endpoint).toBe(subscriptions[0].endpoint)
    const payload = message.json() as { id: string; title: string; ackToken?: string }
    expect(payload).toMatchObject({ id, title: 'School closes at noon' })
    expect(payload.ackToken).toEqual(expect.any(String))

    await cdp.send('ServiceWorker.deliverPushMessage', { origin: t.url, registrationId, data: message.payload })
    // The worker posts herald:push once it has shown the notification and acked: only then read the list.
    await page.waitForFunction(
      (eventId) =>
        (globalThis as unknown as PageWorld).swMessages.some((m) => m.type === 'herald:push' && m.id === eventId),
      id,
      { timeout: SEE_MS },
    )

    const shown = await page.evaluate(async () => {
      const reg = await (globalThis as unknown as PageWorld).navigator.serviceWorker.getRegistration()
      const list = (await reg?.getNotifications()) ?? []
      return list.map((n) => ({
        title: n.title,
        body: n.body,
        tag: n.tag,
        requireInteraction: n.requireInteraction,
        data: n.data,
      }))
    })
    expect(shown).toEqual([
      {
        title: 'School closes at noon',
        body: 'Storm warning',
        tag: 'closure-today',
        requireInteraction: true,
        data: { id, url: '/news/closure', ackToken: payload.ackToken },
      },
    ])

    const status = await t.http().get(`/v1/events/${id}/status`).set('authorization', `Bearer ${publisherToken()}`)
    expect(status.status, status.text).toBe(200)
    expect(status.body).toMatchObject({ acked: 1, read: 0, push: { sent: 1, failed: 0 } })
  })

  it('shows an event published while the demo inbox opens (between loading its history and its stream)', async () => {
    const user = unique('signin')
    const page = await newPage()
    let during: string | undefined
    // Holds the demo's first stream request until an event is published: the moment a teacher posts
    // something while the parent's inbox is still opening.
    await page.route('**/v1/stream**', async (route) => {
      during ??= await publish(user, { title: 'Posted while you signed in' })
      await route.continue()
    })
    await signIn(page, user)
    const after = await publish(user, { title: 'Posted once live' })
    await expect.poll(() => badge(page), { timeout: SEE_MS }).toBe('2')
    await expect
      .poll(() => page.locator('.item').evaluateAll((els) => els.map((e) => e.dataset.id)), { timeout: SEE_MS })
      .toEqual([after, during])
  })

  it('renders the demo inbox with read and unread notifications while live (screenshot in test-output/)', async () => {
    const user = unique('inbox')
    const page = await newPage()
    await page.setViewportSize({ width: 1000, height: 900 })
    await signIn(page, user)
    const ids = [
      await publish(user, { title: 'Welcome back', body: 'Term starts on Monday.', priority: 'low' }),
      await publish(user, { title: 'New grade posted', body: 'Maths: 18/20' }),
      await publish(user, { title: 'Trip form due Friday', body: 'Sign it in the app.', priority: 'high' }),
      await publish(user, { title: 'School closes at noon', body: 'Storm warning', priority: 'urgent' }),
    ]
    await expect.poll(() => badge(page), { timeout: SEE_MS }).toBe('4')
    await page.click(`.item[data-id="${ids[0]}"] button`)
    await expect.poll(() => badge(page), { timeout: SEE_MS }).toBe('3')
    expect(await unreadItems(page)).toEqual([ids[3], ids[2], ids[1]])
    expect(await page.textContent('#status')).toBe('live')

    mkdirSync(join(SCREENSHOT, '..'), { recursive: true })
    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    expect(statSync(SCREENSHOT).size).toBeGreaterThan(10_000)
  })
})

/**
 * The DevTools id of the service worker registration for `scope`: ServiceWorker.enable reports every
 * registration through workerRegistrationUpdated (the first id is "0").
 */
async function serviceWorkerRegistrationId(cdp: CDPSession, scope: string): Promise<string> {
  const found = new Promise<string>((resolve) => {
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const match = registrations.find((r) => r.scopeURL === scope && !r.isDeleted)
      if (match) resolve(match.registrationId)
    })
  })
  await cdp.send('ServiceWorker.enable')
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no service worker registration for ${scope} reported`)), SEE_MS)
  })
  try {
    return await Promise.race([found, timeout])
  } finally {
    clearTimeout(timer)
  }
}
