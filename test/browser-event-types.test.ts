import { expect, it } from 'vitest'
import { appAndBrowser, describeBrowser } from './helpers/browser.ts'

// The demo inbox's publish form with the tenant's registered event types (docs/event-types.md): a person picks a
// type, types only its data, and the inbox shows the title and body the type's templates rendered.

describeBrowser('the demo inbox publishes a registered event type', () => {
  const suite = appAndBrowser({ demoSignIn: true })

  it('picks the type, sends only data, and the inbox shows the rendered text', async () => {
    const admin = suite.t.token({ sub: 'backend', tenant: 'types-demo', scope: 'admin' })
    const registered = await suite.t
      .http()
      .put('/v1/event-types/grade.updated')
      .set('authorization', `Bearer ${admin}`)
      .send({
        description: 'A grade was entered',
        defaults: { priority: 'high' },
        templates: { title: '{{data.student}} scored {{data.score}}', body: 'In {{data.subject}}' },
      })
    expect(registered.status, registered.text).toBe(201)

    const page = await suite.browser.context.newPage()
    const uncaught: string[] = []
    page.on('pageerror', (err) => uncaught.push(err.message))
    await page.goto(`${suite.t.url}/`)
    await page.fill('#signin-form input[name=sub]', 'kim')
    await page.fill('#signin-form input[name=tenant]', 'types-demo')
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#publish-form select[name=eventType] option[value="grade.updated"]', {
      state: 'attached',
    })
    expect(await page.textContent('#publish-form select[name=eventType] option[value="grade.updated"]')).toBe(
      'grade.updated: A grade was entered',
    )
    await page.selectOption('#publish-form select[name=eventType]', 'grade.updated')
    // The type gives the text: the title is no longer required, and the data field shows.
    expect(await page.inputValue('#publish-form input[name=title]')).toBe('')
    await page.fill('#publish-form textarea[name=data]', '{"student":"Kim","score":18,"subject":"Maths"}')
    await page.click('#publish-form button[type=submit]')
    await expect.poll(() => page.textContent('#publish-result')).toMatch(/^Published #\d+/)
    await page.waitForSelector('#list .item:has-text("Kim scored 18")', { timeout: 10_000 })
    expect(await page.textContent('#list .item:has-text("Kim scored 18")')).toContain('In Maths')

    // What was stored: the type's default priority, as no priority was picked.
    const id = /#(\d+)/.exec((await page.textContent('#publish-result')) ?? '')?.[1]
    const event = await suite.t
      .http()
      .get(`/v1/events/${id}`)
      .set('authorization', `Bearer ${suite.t.token({ sub: 'kim', tenant: 'types-demo' })}`)
    expect(event.body).toMatchObject({ type: 'grade.updated', title: 'Kim scored 18', priority: 'high' })
    expect(uncaught).toEqual([])
    await page.close()
  })
})
