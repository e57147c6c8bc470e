import { describe, expect, it } from 'vitest'
import { ConfigError, DEFAULT_HEARTBEAT_MS, loadConfig } from '../src/config.ts'

describe('configuration', () => {
  it('starts with no configuration at all, on the documented defaults', () => {
    const c = loadConfig({})
    expect(c.http.host, 'unset: the server picks 127.0.0.1 on its generated secret, else 0.0.0.0').toBeUndefined()
    expect(c).toMatchObject({
      http: { port: 3000, bodyLimit: 1048576 },
      database: { dataDir: './data' },
      stream: { heartbeatMs: DEFAULT_HEARTBEAT_MS, maxConnectionsPerUser: 10 },
      log: { level: 'info' },
    })
    expect(c.database.url).toBeUndefined()
    expect(c.auth.jwtSecret).toBeUndefined()
  })

  it('treats empty variables as unset', () => {
    expect(loadConfig({ DATABASE_URL: '', JWT_SECRET: ' ' }).database.url).toBeUndefined()
  })

  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['HEARTBEAT_MS', '5'],
    ['MAX_CONNECTIONS_PER_USER', '0'],
    ['DATABASE_URL', 'mysql://x'],
    ['JWT_SECRET', 'short'],
    ['JWT_PUBLIC_KEY', 'not a pem'],
    ['LOG_LEVEL', 'loud'],
  ])('refuses %s=%s with a message naming the variable', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError)
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`${name}: `))
  })

  it('refuses production without a JWT key, and says what to set', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/JWT_SECRET.*JWT_PUBLIC_KEY/)
    expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32) }).env).toBe('production')
  })

  it('refuses both an HS256 secret and a public key', () => {
    const pem = '-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----'
    expect(() => loadConfig({ JWT_SECRET: 'x'.repeat(32), JWT_PUBLIC_KEY: pem })).toThrow(/choose HS256/)
  })
})
