import type { Page } from 'playwright-core'
import { expect, it } from 'vitest'
import { PUBLISHER } from './helpers/app.ts'
import { appAndBrowser, describeBrowser, pageFaults, screenshot } from './helpers/browser.ts'

// A director of two schools in the demo inbox (issue 20, part 3): signed in as director of both, one stream shows
// both schools' events, each labelled with its school; the switcher picks the school the list, the unread count,
// publishing and marking read act in. A third school's events never show.

const NORTH = 'north-school'
const SOUTH = 'south-school'
const WEST = 'west-school'
const DIRECTOR = 'dana'
/** How long a browser may take to show something (two busy cores, browsers and a server). */
const SEE_MS = 15_000

describeBrowser('the demo inbox of a director of several schools', () => {
  const suite = appAndBrowser({ demoSignIn: true })

  /** Publishes as a publisher of `tenant`; returns the event's id. */
  async function publishIn(tenant: string, title: string, to: Record<string, unknown>): Promise<string> {
    const res = await suite.t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${suite.t.token({ sub: `head-of-${tenant}`, tenant, scope: PUBLISHER })}`)
      .send({ type: 'school.news', title, to })
    expect(res.status, res.text).toBe(201)
    return res.body.id as string
  }

  /** The event as the director sees it in `tenant`, over REST. */
  async function asDirector(tenant: string, id: string) {
    const token = suite.t.token({
      sub: DIRECTOR,
      tenant: NORTH,
      roles: ['director'],
      tenants: { [SOUTH]: ['director'] },
    })
    const res = await suite.t
      .http()
      .get(`/v1/events/${id}`)
      .set('authorization', `Bearer ${token}`)
      .set('x-herald-tenant', tenant)
    expect(res.status, res.text).toBe(200)
    return res.body
  }

  const item = (page: Page, id: string) => page.locator(`#list [data-id="${id}"]`)
  /** The list's items as `tenant label: title`, top to bottom. */
  const listed = (page: Page) =>
    page
      .locator('#list .item')
      .evaluateAll((lis) =>
        lis.map(
          (li) =>
            `${li.querySelector('.tenant-label')?.textContent}: ${li.querySelector('.title')?.lastChild?.textContent}`,
        ),
      )
  const badge = (page: Page) => page.textContent('#badge')

  it('streams both schools’ events labelled with their school, and the switcher moves the list, the count, publishing and reading', async () => {
    const page = await suite.browser.context.newPage()
    await page.setViewportSize({ width: 1280, height: 900 })
    const faults = await pageFaults(page)
    const southBefore = await publishIn(SOUTH, 'South: before sign-in', { roles: ['director'] })

    await page.goto(`${suite.t.url}/`)
    await page.fill('#signin-form input[name=sub]', DIRECTOR)
    await page.fill('#signin-form input[name=tenant]', NORTH)
    await page.fill('#signin-form input[name=roles]', 'director')
    await page.fill('#signin-form input[name=directorOf]', SOUTH)
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#publish:not([hidden])')
    await expect.poll(() => page.getAttribute('#status', 'data-status'), { timeout: SEE_MS }).toBe('live')

    // The switcher offers both schools, acting in the current one.
    expect(await page.locator('#tenant-switch').isVisible()).toBe(true)
    expect(await page.locator('#tenant-select option').allTextContents()).toEqual([NORTH, SOUTH])
    expect(await page.inputValue('#tenant-select')).toBe(NORTH)

    // One stream: both schools' events arrive live, each labelled; the third school's never.
    await publishIn(WEST, 'West: everyone', { tenant: true })
    const north = await publishIn(NORTH, 'North: everyone', { tenant: true })
    await publishIn(NORTH, 'North: staff only', { roles: ['staff'] })
    const south = await publishIn(SOUTH, 'South: directors', { roles: ['director'] })
    await expect.poll(() => item(page, south).count(), { timeout: SEE_MS }).toBe(1)
    await expect.poll(() => item(page, north).count(), { timeout: SEE_MS }).toBe(1)
    // (South's event from before sign-in came first: the stream starts after North's history, which was empty.)
    expect(await listed(page)).toEqual([
      `${SOUTH}: South: directors`,
      `${NORTH}: North: everyone`,
      `${SOUTH}: South: before sign-in`,
    ])
    expect(await item(page, south).getAttribute('class')).toContain('elsewhere')
    await expect.poll(() => badge(page), { timeout: SEE_MS }).toBe('1') // North's unread count
    await screenshot(page, 'demo-directors-north.png')

    // Switch to South: its history in the list, its unread count.
    await page.selectOption('#tenant-select', SOUTH)
    await expect
      .poll(() => listed(page), { timeout: SEE_MS })
      .toEqual([`${SOUTH}: South: directors`, `${SOUTH}: South: before sign-in`])
    await expect.poll(() => badge(page), { timeout: SEE_MS }).toBe('2')

    // Marking read acts in South.
    await item(page, southBefore).locator('button', { hasText: 'Mark read' }).click()
    await expect.poll(() => badge(page), { timeout: SEE_MS }).toBe('1')
    expect((await asDirector(SOUTH, southBefore)).readAt).not.toBeNull()

    // Publishing from the form acts in South: South's people get it, as South's event.
    await page.selectOption('#publish-form select[name=audience]', 'tenant')
    await page.fill('#publish-form input[name=title]', 'South: from the director')
    await page.click('#publish-form button[type=submit]')
    await expect.poll(() => page.textContent('#publish-result'), { timeout: SEE_MS }).toMatch(/^Published #\d+/)
    const published = /#(\d+)/.exec((await page.textContent('#publish-result')) ?? '')?.[1] as string
    const pupil = await suite.t
      .http()
      .get(`/v1/events/${published}`)
      .set('authorization', `Bearer ${suite.t.token({ sub: 'pupil', tenant: SOUTH })}`)
    expect(pupil.status, pupil.text).toBe(200)
    expect(pupil.body).toMatchObject({ tenant: SOUTH, actor: DIRECTOR, title: 'South: from the director' })
    await expect.poll(() => item(page, published).count(), { timeout: SEE_MS }).toBe(1)
    expect(await item(page, published).locator('.tenant-label').textContent()).toBe(SOUTH)

    // A North event still streams in while acting in South, marked as elsewhere; reading it reads it in North.
    const northLater = await publishIn(NORTH, 'North: later', { users: [DIRECTOR] })
    await expect.poll(() => item(page, northLater).count(), { timeout: SEE_MS }).toBe(1)
    expect(await item(page, northLater).getAttribute('class')).toContain('elsewhere')
    expect(await item(page, northLater).locator('.tenant-label').textContent()).toBe(NORTH)
    await item(page, northLater).locator('button', { hasText: 'Mark read' }).click()
    await expect.poll(async () => (await asDirector(NORTH, northLater)).readAt, { timeout: SEE_MS }).not.toBeNull()
    await screenshot(page, 'demo-directors-south.png')

    // Back to North: its list again.
    await page.selectOption('#tenant-select', NORTH)
    await expect
      .poll(() => listed(page), { timeout: SEE_MS })
      .toEqual([`${NORTH}: North: later`, `${NORTH}: North: everyone`])
    // On a phone the switcher stays usable beside the inbox's buttons.
    await page.setViewportSize({ width: 375, height: 800 })
    expect(await page.locator('#tenant-select').isVisible()).toBe(true)
    await screenshot(page, 'demo-directors-375.png', false)
    expect(faults).toEqual([])
  })

  it('a user of one school sees no switcher and no labels', async () => {
    const page = await suite.browser.context.newPage()
    await page.goto(`${suite.t.url}/`)
    await page.fill('#signin-form input[name=sub]', 'solo')
    await page.fill('#signin-form input[name=tenant]', NORTH)
    await page.click('#signin-form button[type=submit]')
    await expect.poll(() => page.getAttribute('#status', 'data-status'), { timeout: SEE_MS }).toBe('live')
    const id = await publishIn(NORTH, 'North: to solo', { users: ['solo'] })
    await expect.poll(() => item(page, id).count(), { timeout: SEE_MS }).toBe(1)
    expect(await page.locator('#tenant-switch').isVisible()).toBe(false)
    expect(await page.locator('#list .tenant-label').count()).toBe(0)
    await page.close()
  })
})
