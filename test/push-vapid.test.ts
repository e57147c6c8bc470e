import { describe, expect, it, onTestFinished, vi } from 'vitest'
import webpush from 'web-push'
import { PUBLISHER, startApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import {
  api,
  appConfig,
  client,
  listenApp,
  PUSH_CONFIG,
  reopenableDatabase,
  service,
  token,
  usePushService,
  waitForPush,
  webPushApp,
} from './helpers/push-fixtures.ts'

// SPEC section 6 (Web Push), with the ack/read/status routes of section 5 as the push path uses them.
// Every push goes through real HTTPS to a local push service that checks VAPID and decrypts like FCM would.
// The VAPID key: served without a token, kept across restarts when generated, or the one configured.

// Several waits of a few seconds each (retries, Retry-After, the high-priority timeout), on a machine that may be busy.
vi.setConfig({ testTimeout: 60_000 })

usePushService()

const BASE64URL = /^[A-Za-z0-9_-]+$/

function expectVapidPublicKey(key: unknown) {
  expect(typeof key).toBe('string')
  expect(key as string).toMatch(BASE64URL)
  const raw = Buffer.from(key as string, 'base64url')
  expect(raw).toHaveLength(65)
  expect(raw[0]).toBe(4) // an uncompressed P-256 point, what pushManager.subscribe() takes
}

describeEachBackend('Web Push', (backend) => {
  const { newTenant } = webPushApp(backend)

  describe('VAPID public key', () => {
    it('is served without a token as {publicKey}: a 65-byte uncompressed P-256 key in base64url', async () => {
      const res = await api.http().get('/v1/push/vapid-public-key')
      expect(res.status, res.text).toBe(200)
      expect(Object.keys(res.body)).toEqual(['publicKey'])
      expectVapidPublicKey(res.body.publicKey)
    })

    it('is the key the pushes are signed with, so subscriptions made with it accept them', async () => {
      const { body } = await api.http().get('/v1/push/vapid-public-key')
      const ten = newTenant()
      const device = await api.register(
        ten.user('alice'),
        service.createSubscription({ applicationServerKey: body.publicKey }),
      )
      const id = await api.publish(ten.publisher, { to: { users: ['alice'] } })
      const push = await waitForPush(device.endpoint, id)
      expect(push.vapid.publicKey).toBe(body.publicKey)
      expect(push.vapid.sub).toBe('mailto:tests@example.com')
      expect(push.vapid.aud).toBe(service.origin)
    })
  })
})

describeEachBackend('Web Push VAPID keys', (backend) => {
  it('without VAPID_* configured, the generated key is kept: the same key after a restart, old subscriptions still get pushes', async () => {
    const db = await reopenableDatabase(backend)
    onTestFinished(() => db.cleanup())
    const tenant = `vapid-${backend}`

    const first = await listenApp(appConfig(), await db.open())
    let key: string
    let endpoint: string
    try {
      const res = await first.api.http().get('/v1/push/vapid-public-key')
      expect(res.status).toBe(200)
      key = res.body.publicKey
      expectVapidPublicKey(key)
      // The browser subscribes with this key: its push service refuses pushes signed by any other (403).
      const device = await first.api.register(
        token('alice', tenant),
        service.createSubscription({ applicationServerKey: key }),
      )
      endpoint = device.endpoint
    } finally {
      await first.app.close()
    }

    const second = await listenApp(appConfig(), await db.open())
    try {
      const res = await second.api.http().get('/v1/push/vapid-public-key')
      expect(res.body).toEqual({ publicKey: key })
      const id = await second.api.publish(token('publisher', tenant, PUBLISHER), { to: { users: ['alice'] } })
      const push = await waitForPush(endpoint, id)
      expect(push.vapid.publicKey).toBe(key)
    } finally {
      await second.app.close()
    }
  })

  it('with VAPID_PUBLIC_KEY/VAPID_PRIVATE_KEY configured, that key is served and signs the pushes', async () => {
    const keys = webpush.generateVAPIDKeys()
    const t = await startApp(backend, {
      pushAgent: service.agent,
      config: {
        ...PUSH_CONFIG,
        VAPID_PUBLIC_KEY: keys.publicKey,
        VAPID_PRIVATE_KEY: keys.privateKey,
        VAPID_SUBJECT: 'https://school.example/contact',
      },
    })
    onTestFinished(() => t.close())
    const api = client(t.url)
    const res = await api.http().get('/v1/push/vapid-public-key')
    expect(res.body).toEqual({ publicKey: keys.publicKey })

    const tenant = 'vapid-configured'
    const device = await api.register(
      token('alice', tenant),
      service.createSubscription({ applicationServerKey: keys.publicKey }),
    )
    const id = await api.publish(token('publisher', tenant, PUBLISHER), { to: { users: ['alice'] } })
    const push = await waitForPush(device.endpoint, id)
    expect(push.vapid.publicKey).toBe(keys.publicKey)
    expect(push.vapid.sub).toBe('https://school.example/contact')
  })
})
