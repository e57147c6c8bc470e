import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it, onTestFinished, vi } from 'vitest'
import { START_FLAGS } from '../bench/processes.ts'
import { createPostgresDatabase, describeEachBackend, dropPostgresDatabase } from './helpers/backends.ts'
import { type Child, ROOT, runNode } from './helpers/process.ts'
import { type PushService, startPushService } from './helpers/push-service.ts'
import { SseClient } from './helpers/sse.ts'

// `npm start` runs dist/, which scripts/build.mjs bundles with esbuild; every other suite runs the sources. This
// one builds the bundle into a folder of its own and runs it as a user does: the start script's node flags, no
// configuration but a data folder, the built CLI for tokens and publishing. What a bundle can get wrong is what a
// user would meet first: a file found by path (public/, drizzle/, package.json, the push threads' entry, the
// first start's child) or a module loaded lazily.

// A build, then a first start (initdb on PGlite) on a machine that may be busy.
vi.setConfig({ testTimeout: 240_000, hookTimeout: 240_000 })

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))

let outdir: string
let push: PushService
const cleanups: Array<() => unknown> = []

beforeAll(async () => {
  // One level below the project, as dist/ is: the bundle finds public/, drizzle/ and package.json from there.
  outdir = mkdtempSync(join(ROOT, '.build-check-'))
  cleanups.push(() => rmSync(outdir, { recursive: true, force: true }))
  const built = spawnSync(process.execPath, ['scripts/build.mjs', '--outdir', outdir, '--no-types'], {
    cwd: ROOT,
    encoding: 'utf8',
  })
  expect(built.status, built.stderr).toBe(0)
  push = await startPushService()
  cleanups.push(() => push.close())
})
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
})

/** The built CLI, to its end: exit code and output. */
async function cli(args: string[], env: Record<string, string>) {
  const child = runNode([join(outdir, 'cli.js'), ...args], env)
  const { code } = await child.exited
  return { code, stdout: child.stdout, stderr: child.stderr }
}

describeEachBackend('the built service, as npm start runs it', (backend) => {
  it('serves the demo page and the docs, streams a published event and pushes it to an absent user’s device', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'herald-built-'))
    const databaseUrl = backend === 'postgres' ? await createPostgresDatabase() : ''
    // Zero configuration but where to keep data: the service makes its token secret there, and the CLI reads it.
    const env = { DATA_DIR: dataDir, DATABASE_URL: databaseUrl, JWT_SECRET: '', JWT_PUBLIC_KEY: '' }
    const server: Child = runNode([...START_FLAGS, join(outdir, 'server.js')], {
      ...env,
      PORT: '0',
      HOST: '127.0.0.1',
      // On PostgreSQL, two workers behind one port: the primary forks the bundle's entry.
      WORKERS: backend === 'postgres' ? '2' : '1',
      NODE_EXTRA_CA_CERTS: push.caFile,
      PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*',
    })
    onTestFinished(async () => {
      server.proc.kill('SIGKILL')
      rmSync(dataDir, { recursive: true, force: true })
      if (databaseUrl) await dropPostgresDatabase(databaseUrl)
    })
    const [, url] = await server.waitForOutput(/listening on (http:\/\/\S+)/, 180_000)

    const page = await fetch(`${url}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await page.text()).toContain('<title>')
    const docs = await fetch(`${url}/docs/json`)
    expect(docs.status).toBe(200)
    expect(((await docs.json()) as { info: { version: string } }).info.version).toBe(pkg.version)

    const tenant = `built-${backend}`
    const tokenOf = async (sub: string, scope?: string) => {
      const minted = await cli(['token', '--sub', sub, '--tenant', tenant, ...(scope ? ['--scope', scope] : [])], env)
      expect(minted.code, minted.stderr).toBe(0)
      return minted.stdout.trim()
    }
    const kim = await SseClient.open(url, { token: await tokenOf('kim') })
    onTestFinished(() => kim.close())
    expect(kim.status).toBe(200)
    // Lee is not connected: a phone in a pocket, with a device registered for pushes.
    const device = push.createSubscription()
    const registered = await fetch(`${url}/v1/push/subscriptions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await tokenOf('lee')}`, 'content-type': 'application/json' },
      body: JSON.stringify(device),
    })
    expect(registered.status, await registered.text()).toBe(201)

    const title = `Grades are posted (${backend})`
    const publisher = await tokenOf('office', 'events:publish')
    const published = await cli(
      ['publish', '--server', url, '--token', publisher, '--to-user', 'kim,lee', '--title', title],
      env,
    )
    expect(published.code, published.stderr).toBe(0)
    const { id } = JSON.parse(published.stdout)

    await kim.waitForNotifications(1)
    expect(kim.notifications[0]).toMatchObject({ id, title })
    await expect.poll(() => push.messagesFor(device.endpoint).length, { timeout: 60_000 }).toBe(1)
    expect(push.messagesFor(device.endpoint)[0].json()).toMatchObject({ id, title })

    server.proc.kill('SIGTERM')
    expect((await server.exited).code).toBe(0)
  })
})
