import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it, onTestFinished, vi } from 'vitest'
import { loadOrCreateDevSecret, mintToken } from '../src/tokens.ts'
import { runToEnd, runTs } from './helpers/process.ts'
import { SseClient } from './helpers/sse.ts'

// PGlite's first start (initdb) takes a while on a busy machine; each test starts the server once or twice.
vi.setConfig({ testTimeout: 240_000 })

const dataDir = mkdtempSync(join(tmpdir(), 'herald-server-'))
afterAll(() => rmSync(dataDir, { recursive: true, force: true }))

/** Starts `src/server.ts` as `npm start` does, with no configuration but a private DATA_DIR and a free port. */
async function startServer() {
  const child = runTs('src/server.ts', [], { DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', DATABASE_URL: '' })
  const [, url] = await child.waitForOutput(/listening on (http:\/\/\S+)/, 120_000)
  return { child, url }
}

async function mintDevToken(sub: string) {
  const { code, stdout } = await runToEnd(
    'src/cli.ts',
    ['token', '--sub', sub, '--tenant', 'demo', '--scope', 'events:publish'],
    {
      DATA_DIR: dataDir,
    },
  )
  expect(code).toBe(0)
  return stdout.trim()
}

describe('the server process, with no configuration (embedded PGlite in DATA_DIR)', () => {
  let eventId = ''

  it('serves, tells how to get a token, and ends streams and exits 0 on SIGTERM', async () => {
    const { child, url } = await startServer()
    onTestFinished(() => {
      child.proc.kill('SIGKILL')
    })
    expect(child.stdout).toMatch(/embedded PGlite/)
    expect(child.stdout).toMatch(/token --sub/)
    expect((await fetch(`${url}/health`)).status).toBe(200)
    expect(await (await fetch(`${url}/ready`)).json()).toMatchObject({ status: 'ready', database: 'pglite' })

    const token = await mintDevToken('alice')
    const res = await fetch(`${url}/v1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'school.closing', to: { users: ['alice'] }, title: 'Closing at noon' }),
    })
    expect(res.status).toBe(201)
    eventId = ((await res.json()) as { id: string }).id

    const stream = await SseClient.open(url, { token })
    expect(stream.status).toBe(200)
    const started = Date.now()
    child.proc.kill('SIGTERM')
    await stream.waitForEnd(10_000)
    const { code } = await child.exited
    expect(code).toBe(0)
    expect(Date.now() - started).toBeLessThan(10_000)
  })

  it('exits 0 on SIGTERM while streams are still opening and their clients never hang up', async () => {
    const { child, url } = await startServer()
    onTestFinished(() => {
      child.proc.kill('SIGKILL')
    })
    const secret = loadOrCreateDevSecret(dataDir)
    const { port } = new URL(url)
    // 40 stream requests written at once, none read to the end nor closed by its client; SIGTERM right behind
    // them. (This used to wait out the shutdown deadline and exit 1: streams registered after the others were
    // closed, and sockets whose clients never hang up, kept the server from closing.)
    const sockets = Array.from({ length: 40 }, (_, i) => {
      const socket = net.connect(Number(port), '127.0.0.1')
      socket.on('error', () => {})
      const token = mintToken(secret, { sub: `opening-${i}`, tenant: 'demo' })
      socket.write(`GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n\r\n`)
      return socket
    })
    onTestFinished(() => {
      for (const s of sockets) s.destroy()
    })
    await new Promise((resolve) => setTimeout(resolve, 5))
    const started = Date.now()
    child.proc.kill('SIGTERM')
    const { code } = await child.exited
    expect(code).toBe(0)
    expect(Date.now() - started).toBeLessThan(8_000)
  })

  it('keeps events and its development secret across a restart', async () => {
    expect(eventId).not.toBe('')
    const { child, url } = await startServer()
    try {
      const token = await mintDevToken('alice')
      const res = await fetch(`${url}/v1/events/${eventId}`, { headers: { authorization: `Bearer ${token}` } })
      expect(res.status).toBe(200)
      expect(await res.json()).toMatchObject({ id: eventId, title: 'Closing at noon' })
    } finally {
      child.proc.kill('SIGTERM')
      await child.exited
    }
  })

  it('refuses a bad setting at start with a message naming it', async () => {
    const { code, stderr } = await runToEnd('src/server.ts', [], { DATA_DIR: dataDir, PORT: 'eighty' })
    expect(code).toBe(78)
    expect(stderr).toMatch(/PORT: /)
  })

  it('refuses to start in production without a JWT key', async () => {
    const { code, stderr } = await runToEnd('src/server.ts', [], { DATA_DIR: dataDir, NODE_ENV: 'production' })
    expect(code).toBe(78)
    expect(stderr).toMatch(/JWT_SECRET/)
  })
})

/** Whether a TCP connection to host:port is accepted. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host)
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

// 127.0.0.2 is this machine's loopback too, but not the address 127.0.0.1: a server bound to 127.0.0.1 refuses
// it, one bound to every interface takes it. It tells the bind address apart without leaving the machine.
describe('the address the server listens on when HOST is unset', () => {
  /** The server with this environment, HOST unset; the URL it announced and who it says can reach it. */
  async function startUnbound(env: Record<string, string>) {
    const child = runTs('src/server.ts', [], {
      DATA_DIR: dataDir,
      PORT: '0',
      HOST: '',
      DATABASE_URL: '',
      JWT_SECRET: '',
      JWT_PUBLIC_KEY: '',
      ...env,
    })
    onTestFinished(async () => {
      child.proc.kill('SIGTERM')
      await child.exited
    })
    // PGlite starts first (and creates its folder, when these tests run alone): slow on a busy machine.
    const [, url, reach] = await child.waitForOutput(/listening on (http:\/\/\S+) \(([^;]+);/, 120_000)
    return { url, reach, port: Number(new URL(url).port) }
  }

  it('is 127.0.0.1 while the service runs on its own generated secret, and the start-up line says so', async () => {
    const { url, reach, port } = await startUnbound({})
    expect(url).toBe(`http://127.0.0.1:${port}`)
    expect(reach).toBe('only this machine: set HOST=0.0.0.0 to listen on every interface')
    expect((await fetch(`${url}/health`)).status).toBe(200)
    expect(await accepts('127.0.0.1', port)).toBe(true)
    expect(await accepts('127.0.0.2', port)).toBe(false)
  })

  it('is every interface with a configured JWT_SECRET', async () => {
    const { url, reach, port } = await startUnbound({ JWT_SECRET: 'a-configured-secret-long-enough-for-hs256-0123' })
    expect(url).toBe(`http://localhost:${port}`)
    expect(reach).toBe('every interface: HOST=0.0.0.0')
    expect(await accepts('127.0.0.1', port)).toBe(true)
    expect(await accepts('127.0.0.2', port)).toBe(true)
  })
})
