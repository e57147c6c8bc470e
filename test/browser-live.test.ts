import type { BrowserContext } from 'playwright-core'
import { expect, it } from 'vitest'
import { PUBLISHER } from './helpers/app.ts'
import { appAndBrowser, describeBrowser, pageFaults } from './helpers/browser.ts'

// Live-only events in a browser: the client's onLive (by type, '*', and its unsubscribe) over a real stream in
// Chromium, and the demo inbox's live line (an upload's progress bar) and its "Live only" publish, none of which
// lands in the inbox.

const TENANT = 'live-school'
const SEE_MS = 15_000

describeBrowser('live-only events in the browser', () => {
  const suite = appAndBrowser({ demoSignIn: true })

  const office = () => suite.t.token({ sub: 'office', tenant: TENANT, scope: PUBLISHER })
  const send = async (event: Record<string, unknown>) => {
    const res = await suite.t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${office()}`)
      .send({ title: 'Update', ...event })
    expect(res.status, res.text).toBeLessThan(300)
    return res.body as { id?: string; live?: true }
  }

  async function signedIn(context: BrowserContext, sub: string) {
    const page = await context.newPage()
    const faults = await pageFaults(page)
    await page.goto(`${suite.t.url}/`)
    await page.fill('#signin-form input[name=sub]', sub)
    await page.fill('#signin-form input[name=tenant]', TENANT)
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#publish:not([hidden])')
    await expect.poll(() => page.getAttribute('#status', 'data-status'), { timeout: SEE_MS }).toBe('live')
    return { page, faults }
  }

  it('onLive hands each live event to the listeners of its type and of "*", until unsubscribed; onNotification never sees them', async () => {
    const { page, faults } = await signedIn(suite.browser.context, 'kai')
    const token = suite.t.token({ sub: 'kai', tenant: TENANT }, 3600)
    // A string, not a function: the test runner would try to resolve the page's own import of /client.js.
    await page.evaluate(`import('/client.js').then(({ createHeraldClient }) => {
      const progress = []
      const all = []
      const notified = []
      Object.assign(window, { progress, all, notified })
      const client = createHeraldClient({ getToken: async () => ${JSON.stringify(token)}, shareAcrossTabs: false })
      window.stopProgress = client.onLive('upload.progress', (e) => progress.push(e.data.n))
      client.onLive('*', (e) => all.push(e.type))
      client.onNotification((n) => notified.push(n.title))
      client.onStatus((s) => { window.testStatus = s })
      client.start()
    })`)
    await expect.poll(() => page.evaluate('window.testStatus'), { timeout: SEE_MS }).toBe('live')

    await send({ type: 'upload.progress', to: { users: ['kai'] }, store: false, data: { n: 1 } })
    await send({ type: 'exam.submitted', to: { users: ['kai'] }, store: false })
    await expect.poll(() => page.evaluate('window.all'), { timeout: SEE_MS }).toHaveLength(2)
    await page.evaluate('window.stopProgress()')
    await send({ type: 'upload.progress', to: { users: ['kai'] }, store: false, data: { n: 2 } })
    await send({ type: 'marker', title: 'Stored', to: { users: ['kai'] } })
    await expect.poll(() => page.evaluate('window.notified'), { timeout: SEE_MS }).toEqual(['Stored'])
    expect(await page.evaluate('window.progress')).toEqual([1])
    expect(await page.evaluate('window.all')).toEqual(['upload.progress', 'exam.submitted', 'upload.progress'])
    expect(faults).toEqual([])
    await page.close()
  })

  it('the demo inbox shows the latest live update on one line, an upload as a progress bar, and keeps it out of the inbox', async () => {
    const { page, faults } = await signedIn(suite.browser.context, 'ada')
    expect(await page.isHidden('#live')).toBe(true)
    await send({
      type: 'upload.progress',
      title: 'Uploading essay.pdf',
      to: { users: ['ada'] },
      store: false,
      data: { percent: 40 },
    })
    await expect.poll(() => page.textContent('#live-text'), { timeout: SEE_MS }).toBe('Uploading essay.pdf')
    expect(await page.isVisible('#live-progress')).toBe(true)
    expect(await page.evaluate('document.querySelector("#live-progress").value')).toBe(40)

    // From the demo's own form, "Live only": sent, not published; the line follows, the inbox stays empty.
    await page.selectOption('#publish-form select[name=audience]', 'me')
    await page.fill('#publish-form input[name=title]', 'Exam submitted')
    await page.fill('#publish-form textarea[name=body]', '12 of 28')
    await page.check('#publish-form input[name=live]')
    await page.click('#publish-form button[type=submit]')
    await expect.poll(() => page.textContent('#publish-result'), { timeout: SEE_MS }).toMatch(/^Sent live/)
    await expect.poll(() => page.textContent('#live-text'), { timeout: SEE_MS }).toBe('Exam submitted: 12 of 28')
    expect(await page.isHidden('#live-progress')).toBe(true)
    expect(await page.locator('#list li').count()).toBe(0)
    expect(await page.textContent('#badge')).toBe('0')
    expect(faults).toEqual([])
    await page.close()
  })
})
