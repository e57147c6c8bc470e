import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, type CDPSession, type ConsoleMessage, chromium, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe } from 'vitest'
import { type StartOptions, startApp, type TestApp } from './app.ts'
import { ROOT } from './process.ts'

/** The system's Chromium (Debian's package). Tests never download a browser. */
export const CHROMIUM_PATH = '/usr/bin/chromium'

/** True when the browser suites run (Chromium is installed). */
export const hasChromium = existsSync(CHROMIUM_PATH)

if (process.env.CI === 'true' && !hasChromium) {
  throw new Error(
    `CI=true but ${CHROMIUM_PATH} is missing: the browser suites must run in CI (apt-get install chromium).`,
  )
}

/**
 * Flags measured to work headless on these machines: no sandbox (containers),
 * no GPU, and nothing that phones home or updates itself while a test runs.
 */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
]

/** Browser suites: skipped with a message when Chromium is not installed (but required when CI=true). */
export function describeBrowser(title: string, suite: () => void) {
  describe.skipIf(!hasChromium)(`${title}${hasChromium ? '' : ` [skipped: ${CHROMIUM_PATH} not found]`}`, suite)
}

/** A browser of one test file: its context, and close() that ends the browser and deletes its profile. */
export interface TestBrowser {
  context: BrowserContext
  close(): Promise<void>
}

/**
 * A fresh headless Chromium with its own profile (a persistent context: service workers, permissions and
 * storage behave as in a real profile).
 */
export async function launchBrowser(): Promise<TestBrowser> {
  const profile = await mkdtemp(join(tmpdir(), 'herald-chromium-'))
  // Chromium may still be flushing its profile as it exits: retry instead of failing on ENOTEMPTY.
  const removeProfile = () => rm(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 })
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: CHROMIUM_ARGS,
    })
    return {
      context,
      close: async () => {
        await context.close()
        await removeProfile()
      },
    }
  } catch (err) {
    await removeProfile()
    throw err
  }
}

/** A browser suite's app (PGlite) and browser: `t` and `browser` are set once its beforeAll hooks have run. */
export interface AppAndBrowser {
  t: TestApp
  browser: TestBrowser
}

/**
 * Starts the app (`startApp('pglite', options)`) and a browser before the suite's tests, and closes both after
 * them. Call it in the suite's body; read `t` and `browser` in its tests and hooks.
 */
export function appAndBrowser(options: StartOptions = {}, hookTimeoutMs?: number): AppAndBrowser {
  const suite = {} as AppAndBrowser
  beforeAll(async () => {
    suite.t = await startApp('pglite', options)
    suite.browser = await launchBrowser()
  }, hookTimeoutMs)
  afterAll(async () => {
    await suite.browser?.close()
    await suite.t?.close()
  })
  return suite
}

/**
 * Collects the Content-Security-Policy violations of a page, as Chromium reports them on the console and as
 * the page sees them (`securitypolicyviolation`). Call before the page loads anything.
 */
export async function cspViolations(page: Page): Promise<string[]> {
  const violations: string[] = []
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) violations.push(`${page.url()}: ${message.text()}`)
  })
  await page.addInitScript(`
    document.addEventListener('securitypolicyviolation', (e) =>
      console.error('Content Security Policy violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline')))
  `)
  return violations
}

/**
 * Everything that goes wrong on a page: its Content-Security-Policy violations (cspViolations), uncaught errors
 * (`uncaught: ...`) and console errors (`console: ...`), but those `expected` accepts. Call before the page loads
 * anything.
 */
export async function pageFaults(page: Page, expected?: (message: ConsoleMessage) => boolean): Promise<string[]> {
  const faults = await cspViolations(page)
  page.on('pageerror', (err) => faults.push(`uncaught: ${err.message}`))
  page.on('console', (message) => {
    if (message.type() === 'error' && !expected?.(message)) faults.push(`console: ${message.text()}`)
  })
  return faults
}

/** Saves a screenshot of `page` as test-output/`name`, to look at after the run. */
export async function screenshot(page: Page, name: string, fullPage = true): Promise<void> {
  const folder = join(ROOT, 'test-output')
  await mkdir(folder, { recursive: true })
  await page.screenshot({ path: join(folder, name), fullPage })
}

/**
 * The DevTools id of the service worker registration for `scope`: ServiceWorker.enable reports every
 * registration through workerRegistrationUpdated (the first id is "0"). Rejects after `timeoutMs`.
 */
export async function serviceWorkerRegistrationId(cdp: CDPSession, scope: string, timeoutMs = 15_000): Promise<string> {
  const found = new Promise<string>((resolve) => {
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const match = registrations.find((r) => r.scopeURL === scope && !r.isDeleted)
      if (match) resolve(match.registrationId)
    })
  })
  await cdp.send('ServiceWorker.enable')
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no service worker registration for ${scope} reported`)), timeoutMs)
  })
  try {
    return await Promise.race([found, timeout])
  } finally {
    clearTimeout(timer)
  }
}
