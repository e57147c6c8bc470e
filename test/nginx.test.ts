import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import http2 from 'node:http2'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { ROOT } from './helpers/process.ts'
import { makeCertificates } from './helpers/push-service.ts'

// The nginx configuration the README points to (docs/deploy/nginx.conf), run for real in front of the service:
// it parses, streams over HTTP/2, and keeps tokens out of its access log.

const NGINX = '/usr/sbin/nginx'
const hasNginx = existsSync(NGINX)
if (process.env.CI === 'true' && !hasNginx) throw new Error(`CI=true but ${NGINX} is missing: .ci/run installs nginx.`)

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

describe.skipIf(!hasNginx)(`docs/deploy/nginx.conf${hasNginx ? '' : ` [skipped: ${NGINX} not installed]`}`, () => {
  let t: TestApp
  let prefix: string
  let port: number
  let ca: string
  let nginx: ReturnType<typeof spawn> | undefined

  beforeAll(async () => {
    t = await startApp('pglite', { config: { TRUST_PROXY: '127.0.0.1' } })
    prefix = await mkdtemp(join(tmpdir(), 'herald-nginx-'))
    await mkdir(join(prefix, 'logs'))
    const certs = await makeCertificates(prefix)
    ca = certs.ca
    port = await freePort()
    const upstream = new URL(t.url).port
    // The committed file, with this machine's certificate, ports and upstream put in.
    const conf = (await readFile(join(ROOT, 'docs/deploy/nginx.conf'), 'utf8'))
      .replace('/etc/ssl/herald/fullchain.pem', join(prefix, 'leaf.pem'))
      .replace('/etc/ssl/herald/privkey.pem', join(prefix, 'leaf.key'))
      .replace('listen 8443 ssl http2;', `listen 127.0.0.1:${port} ssl http2;`)
      .replaceAll(/server 127\.0\.0\.1:300[12];/g, `server 127.0.0.1:${upstream};`)
    await writeFile(join(prefix, 'nginx.conf'), conf)
  })
  afterAll(async () => {
    nginx?.kill('SIGTERM')
    await t?.close()
    if (prefix) await rm(prefix, { recursive: true, force: true })
  })

  const args = () => ['-p', prefix, '-c', join(prefix, 'nginx.conf')]

  it('is valid (nginx -t)', () => {
    const check = spawnSync(NGINX, ['-t', ...args()], { encoding: 'utf8' })
    expect(check.status, check.stderr).toBe(0)
    expect(check.stderr).toMatch(/syntax is ok/)
  })

  it('streams over HTTP/2 through nginx, and its access log never holds the token', async () => {
    nginx = spawn(NGINX, [...args(), '-g', 'daemon off;'], { stdio: 'ignore' })
    const tenant = 'nginx'
    const token = t.token({ sub: 'ana', tenant })
    await new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + 10_000
      const attempt = () => {
        const s = http2.connect(`https://127.0.0.1:${port}`, { ca })
        s.once('connect', () => {
          s.close()
          resolve()
        })
        s.once('error', () =>
          Date.now() > deadline ? reject(new Error('nginx did not start')) : setTimeout(attempt, 100),
        )
      }
      attempt()
    })
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca })
    try {
      const stream = session.request({ ':path': `/v1/stream?access_token=${token}` })
      let text = ''
      stream.setEncoding('utf8').on('data', (d: string) => (text += d))
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', resolve))
      expect(headers[':status']).toBe(200)
      expect(headers['content-type']).toMatch(/^text\/event-stream/)

      const published = session.request({
        ':method': 'POST',
        ':path': '/v1/events',
        authorization: `Bearer ${t.token({ sub: 'office', tenant, scope: PUBLISHER })}`,
        'content-type': 'application/json',
      })
      published.end(JSON.stringify({ type: 'school.closing', title: 'Closing at noon', to: { users: ['ana'] } }))
      let answer = ''
      published.setEncoding('utf8').on('data', (d: string) => (answer += d))
      await new Promise((resolve) => published.once('end', resolve))
      const { id } = JSON.parse(answer) as { id: string }

      const deadline = Date.now() + 10_000
      while (!text.includes(`id: ${id}\n`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
      expect(text).toContain(`id: ${id}\nevent: notification\n`)
      stream.close()
    } finally {
      session.close()
    }

    // nginx writes its access log line when the request ends.
    const log = join(prefix, 'logs/access.log')
    const deadline = Date.now() + 5_000
    let lines = ''
    while (!lines.includes('/v1/stream') && Date.now() < deadline) {
      lines = existsSync(log) ? await readFile(log, 'utf8') : ''
      await new Promise((r) => setTimeout(r, 50))
    }
    expect(lines).toMatch(/"GET \/v1\/stream HTTP\/2\.0" 200/)
    expect(lines).not.toContain(token)
    expect(lines).not.toContain('access_token')
  })
})
