import type { Page } from 'playwright-core'
import { expect, it } from 'vitest'
import { appAndBrowser, describeBrowser, screenshot } from './helpers/browser.ts'

// The demo inbox as a person uses it: laid out within its cards on a laptop and a phone, and calm when the
// server goes away (a message on the page, not an uncaught error).

describeBrowser('the demo inbox page', () => {
  const suite = appAndBrowser({ demoSignIn: true })

  async function openPage(width: number) {
    const page = await suite.browser.context.newPage()
    await page.setViewportSize({ width, height: 900 })
    const uncaught: string[] = []
    page.on('pageerror', (err) => uncaught.push(err.message))
    await page.goto(`${suite.t.url}/`)
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
      await screenshot(page, `demo-signin-${width}.png`)
      await page.click('#signin-form button[type=submit]')
      await page.waitForSelector('#publish:not([hidden])')
      expect(await layoutFaults(page, '#publish-form')).toEqual([])
      expect(await layoutFaults(page, '#follow-form')).toEqual([])
      expect(await layoutFaults(page, '#rule-form')).toEqual([])
      expect(await layoutFaults(page, '#settings-form')).toEqual([])
      await screenshot(page, `demo-inbox-${width}.png`)
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
    await page.route(`${suite.t.url}/**`, (route) => route.abort('connectionrefused'))
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

  it('“Send later” schedules the publish: the page says when, nothing arrives yet, and the item is pending', async () => {
    const { page, uncaught } = await openPage(1280)
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#publish:not([hidden])')
    // The browser's local time an hour from now, as a datetime-local input takes it.
    const later = await page.evaluate(() => {
      const d = new Date(Date.now() + 3_600_000)
      d.setSeconds(0, 0)
      const pad = (n: number) => String(n).padStart(2, '0')
      return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`
    })
    await page.fill('#publish-form input[name=deliverAt]', later)
    const title = `Later ${Date.now()}`
    await page.fill('#publish-form input[name=title]', title)
    await page.click('#publish-form button[type=submit]')
    await expect.poll(() => page.textContent('#publish-result')).toMatch(/^Scheduled #\d+ for /)
    const id = /#(\d+)/.exec((await page.textContent('#publish-result')) ?? '')?.[1]
    const shown = await suite.t
      .http()
      .get(`/v1/scheduled/${id}`)
      .set('authorization', `Bearer ${suite.t.token({ sub: 'alice', tenant: 'demo', scope: 'admin' })}`)
    expect(shown.status, shown.text).toBe(200)
    expect(shown.body).toMatchObject({ state: 'pending', actor: 'alice', events: [{ type: 'demo.message' }] })
    expect(Math.abs(Date.parse(shown.body.deliverAt) - (Date.now() + 3_600_000))).toBeLessThan(120_000)
    // Not in the inbox: a publish sent now would have reached the page's stream by this time. (The list itself may
    // still be taking in earlier tests' events: counting it said nothing on a slow machine.)
    await page.waitForTimeout(300)
    expect(await page.locator('#list .item', { hasText: title }).count()).toBe(0)
    expect(uncaught).toEqual([])
    await page.close()
  })

  it('the Topics card follows a topic: its events arrive in the inbox live, and stop once unfollowed', async () => {
    const { page, uncaught } = await openPage(1280)
    await page.fill('#signin-form input[name=sub]', 'topic-fan')
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#topics:not([hidden])')
    await expect.poll(() => page.textContent('#topics-note')).toBe('You follow no topics yet.')
    const publisher = suite.t.token({ sub: 'office', tenant: 'demo', scope: 'events:publish' })
    const publishTo = async (topic: string, title: string) => {
      const res = await suite.t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${publisher}`)
        .send({ type: 'club.news', title, to: { topics: [topic] } })
      expect(res.status, res.text).toBe(201)
    }
    const shown = (title: string) => page.locator('#list .item', { hasText: title }).count()

    // The sign-in form's claim is class:*: following class:7A is allowed, and the open stream follows it.
    await page.fill('#follow-form input[name=topic]', 'class:7A')
    await page.click('#follow-form button[type=submit]')
    await page.waitForSelector('#topic-list li:has-text("class:7A")')
    await publishTo('class:7A', 'Trip to the museum')
    await expect.poll(() => shown('Trip to the museum'), { timeout: 10_000 }).toBe(1)

    // A topic outside the claim: the page says why, nothing is followed.
    await page.fill('#follow-form input[name=topic]', 'staff:room')
    await page.click('#follow-form button[type=submit]')
    await expect.poll(() => page.textContent('#topics-note')).toMatch(/^Could not do that: .*staff:room/)
    expect(await page.locator('#topic-list li').count()).toBe(1)

    await page.click('#topic-list li:has-text("class:7A") button')
    await page.waitForSelector('#topic-list li', { state: 'detached' })
    await publishTo('class:7A', 'Not for you any more')
    // A direct message after it: once it is shown, the topic event would have been too.
    const res = await suite.t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${publisher}`)
      .send({ type: 'direct', title: 'Marker', to: { users: ['topic-fan'] } })
    expect(res.status).toBe(201)
    await expect.poll(() => shown('Marker'), { timeout: 10_000 }).toBe(1)
    expect(await shown('Not for you any more')).toBe(0)
    expect(uncaught).toEqual([])
    await page.close()
  })

  it('the Settings card: a rule hides a kind of event from the inbox at once, and removing it brings it back; a bad time zone is named on the page', async () => {
    const { page, uncaught } = await openPage(1280)
    // A tenant of its own: the badge counts this test's events only.
    await page.fill('#signin-form input[name=sub]', 'settings-fan')
    await page.fill('#signin-form input[name=tenant]', 'settings-school')
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#settings:not([hidden])')
    const publisher = suite.t.token({ sub: 'office', tenant: 'settings-school', scope: 'events:publish' })
    const user = suite.t.token({ sub: 'settings-fan', tenant: 'settings-school' })
    const publish = async (type: string, title: string) => {
      const res = await suite.t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${publisher}`)
        .send({ type, title, to: { users: ['settings-fan'] } })
      expect(res.status, res.text).toBe(201)
    }
    const shown = (title: string) => page.locator('#list .item', { hasText: title }).count()

    await publish('grades.posted', 'Maths: 18/20')
    await expect.poll(() => shown('Maths: 18/20'), { timeout: 10_000 }).toBe(1)
    await expect.poll(() => page.textContent('#badge')).toBe('1')
    await page.fill('#rule-form input[name=pattern]', 'grades.*')
    await page.selectOption('#rule-form select[name=inApp]', 'false')
    await page.click('#rule-form button[type=submit]')
    await page.waitForSelector('#rule-list li:has-text("grades.*")')
    expect(await page.textContent('#rule-list li')).toMatch(/type grades\.\*: hidden from the inbox, not pushed/)
    // Gone from the list and the badge at once, and the next grade never shows; other events still do.
    await expect.poll(() => shown('Maths: 18/20')).toBe(0)
    await expect.poll(() => page.textContent('#badge')).toBe('0')
    await publish('grades.posted', 'Physics: 15/20')
    await publish('direct', 'Marker')
    await expect.poll(() => shown('Marker'), { timeout: 10_000 }).toBe(1)
    expect(await shown('Physics: 15/20')).toBe(0)
    const stored = await suite.t.http().get('/v1/me/preferences').set('authorization', `Bearer ${user}`)
    expect(stored.body.rules).toEqual([{ type: 'grades.*', inApp: false, push: false }])

    // Quiet hours in a zone that does not exist: the page says which field, nothing is stored.
    await page.fill('#settings-form input[name=quietStart]', '22:00')
    await page.fill('#settings-form input[name=quietEnd]', '07:00')
    await page.fill('#settings-form input[name=timeZone]', 'Mars/Olympus')
    await page.click('#settings-form button[type=submit]')
    await expect
      .poll(() => page.textContent('#settings-note'))
      .toMatch(/^Could not do that: .*body\.quietHours\.timeZone/)
    await page.fill('#settings-form input[name=timeZone]', 'Europe/Paris')
    await page.selectOption('#settings-form select[name=minPriority]', 'high')
    await page.click('#settings-form button[type=submit]')
    await expect.poll(() => page.textContent('#settings-note')).toBe('Saved.')
    const saved = await suite.t.http().get('/v1/me/preferences').set('authorization', `Bearer ${user}`)
    expect(saved.body).toMatchObject({
      rules: [{ type: 'grades.*', inApp: false, push: false }],
      push: { enabled: true, minPriority: 'high' },
      quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' },
    })

    await page.click('#rule-list li:has-text("grades.*") button')
    await page.waitForSelector('#rule-list li', { state: 'detached' })
    await expect.poll(() => shown('Physics: 15/20')).toBe(1)
    expect(await shown('Maths: 18/20')).toBe(1)
    expect(uncaught).toEqual([])
    await page.close()
  })
})
