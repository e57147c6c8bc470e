import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeBrowser, launchBrowser, type TestBrowser } from './helpers/browser.ts'
import { ROOT } from './helpers/process.ts'

// The demo inbox as a person uses it: laid out within its cards on a laptop and a phone, and calm when the
// server goes away (a message on the page, not an uncaught error).

const SCREENSHOTS = join(ROOT, 'test-output')

describeBrowser('the demo inbox page', () => {
  let t: TestApp
  let browser: TestBrowser

  beforeAll(async () => {
    t = await startApp('pglite', { demoSignIn: true })
    browser = await launchBrowser()
    await mkdir(SCREENSHOTS, { recursive: true })
  })
  afterAll(async () => {
    await browser?.close()
    await t?.close()
  })

  async function openPage(width: number) {
    const page = await browser.context.newPage()
    await page.setViewportSize({ width, height: 900 })
    const uncaught: string[] = []
    page.on('pageerror', (err) => uncaught.push(err.message))
    await page.goto(`${t.url}/`)
    return { page, uncaught }
  }

  /** Fields (inputs, selects, textareas) that stick out of their card, or overlap another field. */
  async function layoutFaults(page: Page, form: string) {
    const faults: string[] = []
    const card = await page.locator(`.card:has(${form})`).boundingBox()
    if (!card) return [`${form} is not shown`]
    const fields = await page.locator(`${form} input, ${form} select, ${form} textarea`).all()
    const boxes: Array<{ name: string; x: number; y: number; width: number; height: number }> = []
    for (const field of fields) {
      const box = await field.boundingBox()
      if (box) boxes.push({ name: (await field.getAttribute('name')) ?? '?', ...box })
    }
    for (const b of boxes) {
      if (b.x + b.width > card.x + card.width + 0.5 || b.x < card.x - 0.5) faults.push(`${b.name} leaves its card`)
    }
    for (const a of boxes) {
      for (const b of boxes) {
        if (a.name >= b.name) continue
        const apart =
          a.x + a.width <= b.x + 0.5 ||
          b.x + b.width <= a.x + 0.5 ||
          a.y + a.height <= b.y + 0.5 ||
          b.y + b.height <= a.y + 0.5
        if (!apart) faults.push(`${a.name} overlaps ${b.name}`)
      }
    }
    return faults
  }

  for (const width of [1280, 390]) {
    it(`at ${width} px wide, every field stays inside its card and none overlaps another`, async () => {
      const { page, uncaught } = await openPage(width)
      expect(await layoutFaults(page, '#signin-form')).toEqual([])
      await page.screenshot({ path: join(SCREENSHOTS, `demo-signin-${width}.png`), fullPage: true })
      await page.click('#signin-form button[type=submit]')
      await page.waitForSelector('#publish:not([hidden])')
      expect(await layoutFaults(page, '#publish-form')).toEqual([])
      await page.screenshot({ path: join(SCREENSHOTS, `demo-inbox-${width}.png`), fullPage: true })
      expect(uncaught).toEqual([])
      await page.close()
    })
  }

  it('with the server unreachable, Publish, Mark read and Mark all read say so on the page and throw nothing', async () => {
    const { page, uncaught } = await openPage(1280)
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#publish:not([hidden])')
    await page.click('#publish-form button[type=submit]')
    await expect.poll(() => page.textContent('#publish-result')).toMatch(/^Published #/)
    await page.waitForSelector('#list .item button')

    // The server goes away: every request fails as a refused connection does.
    await page.route(`${t.url}/**`, (route) => route.abort('connectionrefused'))
    await page.click('#publish-form button[type=submit]')
    await expect.poll(() => page.textContent('#publish-result')).toMatch(/^Could not/)
    expect(await page.textContent('#publish-result')).toMatch(/cannot be reached/)
    expect(await page.textContent('#publish-result')).not.toMatch(/Published #/)

    await page.click('#list .item button')
    await page.waitForSelector('#inbox-note:not([hidden])')
    expect(await page.textContent('#inbox-note')).toMatch(/cannot be reached/)
    await page.click('#read-all')
    expect(await page.textContent('#inbox-note')).toMatch(/cannot be reached/)
    await page.waitForTimeout(200)
    expect(uncaught).toEqual([])
    await page.close()
  })
})
