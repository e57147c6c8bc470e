import type { Response } from 'supertest'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { cspViolations, describeBrowser, launchBrowser, type TestBrowser } from './helpers/browser.ts'

// Security headers (helmet) on every kind of response, the docs switch, and the Content-Security-Policy
// as Chromium applies it to the demo page and the docs. Headers do not depend on the database: PGlite is enough.

/** The policy's directives, by name. */
function directives(res: Response): Map<string, string> {
  const header = res.headers['content-security-policy'] ?? ''
  return new Map(
    header
      .split(';')
      .map((d: string) => d.trim())
      .filter(Boolean)
      .map((d: string) => {
        const [name, ...values] = d.split(/\s+/)
        return [name, values.join(' ')] as [string, string]
      }),
  )
}

function expectSecurityHeaders(res: Response) {
  const csp = directives(res)
  expect(csp.get('default-src')).toBe("'self'")
  expect(csp.get('script-src')).toBe("'self'")
  expect(csp.get('frame-ancestors')).toBe("'none'")
  expect(csp.get('object-src')).toBe("'none'")
  expect(csp.has('upgrade-insecure-requests')).toBe(false)
  expect(res.headers['x-content-type-options']).toBe('nosniff')
  expect(res.headers['referrer-policy']).toBe('no-referrer')
  expect(res.headers['x-frame-options']).toBe('DENY')
}

describe('security headers', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp('pglite', { demoSignIn: true })
  })
  afterAll(() => t.close())

  const reader = () => `Bearer ${t.token({ sub: 'headers-reader' })}`

  const responses: Array<[string, () => Promise<Response>, number]> = [
    ['the demo page', () => t.http().get('/'), 200],
    ['a static file', () => t.http().get('/demo.js'), 200],
    ['the browser client', () => t.http().get('/client.js'), 200],
    ['the service worker', () => t.http().get('/sw.js'), 200],
    ['the docs UI', () => t.http().get('/docs'), 200],
    ['the docs UI’s static files', () => t.http().get('/docs/static/swagger-initializer.js'), 200],
    ['the OpenAPI document', () => t.http().get('/docs/json'), 200],
    ['an API route', () => t.http().get('/v1/events').set('authorization', reader()), 200],
    ['an API route refusing a caller', () => t.http().get('/v1/events'), 401],
    ['a route that needs no token', () => t.http().get('/v1/push/vapid-public-key'), 200],
    ['health', () => t.http().get('/health'), 200],
    ['an unknown path', () => t.http().get('/no/such/page'), 404],
  ]

  it.each(responses)('are on %s', async (_, request, status) => {
    const res = await request()
    expect(res.status, res.text).toBe(status)
    expectSecurityHeaders(res)
  })

  it('are on a publish too', async () => {
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'headers-publisher', scope: PUBLISHER })}`)
      .send({ type: 'x.y', to: { users: ['headers-reader'] }, title: 'hi' })
    expect(res.status, res.text).toBe(201)
    expectSecurityHeaders(res)
  })
})

describe('DOCS_ENABLED=false', () => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp('pglite', { config: { DOCS_ENABLED: false } })
  })
  afterAll(() => t.close())

  it.each([
    '/docs',
    '/docs/',
    '/docs/json',
    '/docs/yaml',
    '/docs/static/swagger-initializer.js',
    '/docs/static/swagger-ui.css',
  ])('%s is a 404', async (path) => {
    const res = await t.http().get(path)
    expect(res.status).toBe(404)
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/)
  })

  it('the rest of the service is there', async () => {
    expect((await t.http().get('/')).status).toBe(200)
    const res = await t
      .http()
      .get('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'no-docs' })}`)
    expect(res.status, res.text).toBe(200)
  })
})

/** How long a page may take to show something (two busy cores, a browser and a server). */
const SEE_MS = 15_000

describeBrowser('the Content-Security-Policy in Chromium', () => {
  let t: TestApp
  let browser: TestBrowser
  beforeAll(async () => {
    t = await startApp('pglite', { demoSignIn: true })
    browser = await launchBrowser()
  }, 120_000)
  afterAll(async () => {
    await browser?.close()
    await t?.close()
  })

  it('the demo page signs in, goes live, publishes and shows the event, with nothing blocked', async () => {
    const page = await browser.context.newPage()
    const violations = await cspViolations(page)
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    await page.goto(`${t.url}/`)
    await page.fill('#signin-form input[name="sub"]', 'csp-user')
    await page.click('#signin-form button[type="submit"]')
    await expect.poll(() => page.getAttribute('#status', 'data-status'), { timeout: SEE_MS }).toBe('live')
    await page.fill('#publish-form input[name="title"]', 'Under the policy')
    await page.click('#publish-form button[type="submit"]')
    await expect.poll(() => page.textContent('#list'), { timeout: SEE_MS }).toContain('Under the policy')
    expect(errors).toEqual([])
    expect(violations).toEqual([])
    await page.close()
  })

  it('the docs render their operations, with nothing blocked', async () => {
    const page = await browser.context.newPage()
    const violations = await cspViolations(page)
    await page.goto(`${t.url}/docs`)
    await page.waitForSelector('.opblock', { timeout: SEE_MS })
    await page.click('.opblock-summary >> nth=0')
    await page.waitForSelector('.opblock-body', { timeout: SEE_MS })
    expect(violations).toEqual([])
    await page.close()
  })

  it('a script injected into the page is blocked, and seen as a violation (the checks above can fail)', async () => {
    const page = await browser.context.newPage()
    const violations = await cspViolations(page)
    await page.goto(`${t.url}/`)
    await page.addScriptTag({ content: 'window.injected = true' }).catch(() => {})
    expect(await page.evaluate('window.injected === true')).toBe(false)
    await expect.poll(() => violations.length, { timeout: SEE_MS }).toBeGreaterThan(0)
    expect(violations.join('\n')).toMatch(/script-src/)
    await page.close()
  })
})
