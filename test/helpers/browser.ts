import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, chromium, type Page } from 'playwright-core'
import { describe } from 'vitest'

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
