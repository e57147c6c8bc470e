import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEFAULT_PUSH_ENDPOINT_ALLOWLIST } from '../src/config.ts'
import { endpointAllowed } from '../src/push/subscriptions.ts'
import { WebhookSender } from '../src/webhooks/send.ts'
import { addressKind, checkDestination, parseEndpointUrl, type Resolve, UrlRefused } from '../src/webhooks/urls.ts'
import { startWebhookReceiver, type WebhookReceiver } from './helpers/webhook-receiver.ts'

// Where a webhook may go: the URL rules, which addresses count as private, and the check made again before each
// attempt (with a resolver the test controls, so a host "changes" its DNS).

const PUBLIC_V4 = '93.184.215.14'
const PUBLIC_V6 = '2606:2800:21f:cb07:6820:80da:af6b:8b2c'

/** A resolver that answers `addresses` for every name, and counts its calls. */
function fakeDns(...addresses: string[]): Resolve & { calls: number } {
  const resolve = Object.assign(
    async () => {
      resolve.calls++
      return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }))
    },
    { calls: 0 },
  )
  return resolve
}

const refusal = async (promise: Promise<unknown>) => {
  try {
    await promise
  } catch (err) {
    if (err instanceof UrlRefused) return err.message
    throw err
  }
  return undefined
}

describe('webhook destinations', () => {
  it('names every non-public address, IPv4 and IPv6, and passes public ones', () => {
    const kinds: Array<[string, string | undefined]> = [
      ['127.0.0.1', 'loopback'],
      ['127.9.9.9', 'loopback'],
      ['::1', 'loopback'],
      ['[::1]', 'loopback'],
      ['10.1.2.3', 'private'],
      ['172.16.0.1', 'private'],
      ['172.31.255.255', 'private'],
      ['192.168.1.1', 'private'],
      ['fd12:3456::1', 'private'],
      ['169.254.169.254', 'link-local'],
      ['fe80::1', 'link-local'],
      ['0.0.0.0', 'unspecified'],
      ['::', 'unspecified'],
      ['100.64.0.1', 'shared (carrier-grade NAT)'],
      ['224.0.0.1', 'multicast'],
      ['ff02::1', 'multicast'],
      ['192.0.2.10', 'documentation'],
      ['2001:db8::1', 'documentation'],
      ['255.255.255.255', 'reserved'],
      ['64:ff9b::a00:1', 'reserved'],
      ['2002:a00:1::1', 'reserved'],
      // IPv4-mapped IPv6: judged as the IPv4 address inside.
      ['::ffff:10.0.0.1', 'private'],
      ['::ffff:7f00:1', 'loopback'],
      ['::ffff:93.184.215.14', undefined],
      [PUBLIC_V4, undefined],
      ['172.32.0.1', undefined],
      ['8.8.8.8', undefined],
      [PUBLIC_V6, undefined],
    ]
    for (const [address, kind] of kinds) expect(addressKind(address), address).toBe(kind)
  })

  it('parses the URL rules: https, or http for a host the allowlist names; no credentials', () => {
    const allow = ['hooks.internal', '127.0.0.1:8080']
    const refused = (url: string) => {
      try {
        parseEndpointUrl(url, allow)
        return undefined
      } catch (err) {
        return (err as Error).message
      }
    }
    expect(refused('https://example.com/hook')).toBeUndefined()
    expect(refused('http://hooks.internal/hook'), 'http on port 80: the bare host names it').toBeUndefined()
    expect(refused('http://127.0.0.1:8080/hook')).toBeUndefined()
    expect(refused('http://example.com/hook')).toMatch(/must be https .*example.com is not one/)
    expect(refused('http://hooks.internal:8080/hook'), 'a bare host names the default port only').toMatch(
      /must be https/,
    )
    expect(refused('ftp://example.com/x')).toBe('must be an absolute https URL')
    expect(refused('/relative')).toBe('must be an absolute https URL')
    expect(refused('https://user:pw@example.com/')).toBe('must not contain a user name or password')
  })

  it('refuses a host that is, or resolves to, a non-public address unless the allowlist names it', async () => {
    const check = (url: string, resolve: Resolve, allow: string[] = []) =>
      refusal(checkDestination(new URL(url), allow, resolve))
    const publicDns = fakeDns(PUBLIC_V4, PUBLIC_V6)
    expect(await check('https://example.com/', publicDns)).toBeUndefined()
    expect(await check(`https://${PUBLIC_V4}/`, publicDns)).toBeUndefined()
    expect(publicDns.calls, 'an address literal is not resolved').toBe(1)
    expect(await check('https://10.0.0.8/', publicDns)).toBe(
      'must not point at a private address (10.0.0.8) unless WEBHOOK_URL_ALLOWLIST names it',
    )
    expect(await check('https://[fe80::1]/', publicDns)).toMatch(/link-local address \(fe80::1\)/)
    expect(await check('https://metadata.example/', fakeDns('169.254.169.254'))).toBe(
      'must not point at a link-local address (metadata.example resolves to 169.254.169.254) unless WEBHOOK_URL_ALLOWLIST names it',
    )
    // One private address among public ones is enough: the connection could go to any of them.
    expect(await check('https://mixed.example/', fakeDns(PUBLIC_V4, '::1'))).toMatch(/resolves to ::1/)
    expect(await check('https://gone.example/', fakeDns())).toMatch(/does not resolve \(gone.example: no addresses\)/)
    const failing: Resolve = async () => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' })
    }
    expect(await check('https://nowhere.invalid/', failing)).toMatch(/does not resolve \(nowhere.invalid: ENOTFOUND\)/)
    // Named by the allowlist (with its port): any address.
    expect(await check('https://hooks.internal:8443/', fakeDns('10.0.0.8'), ['hooks.internal:8443'])).toBeUndefined()
    expect(await check('https://127.0.0.1:8443/', publicDns, ['127.0.0.1:*'])).toBeUndefined()
    expect(await check('https://127.0.0.1:8443/', publicDns, ['127.0.0.1:9000'])).toMatch(/loopback/)
  })

  it('leaves push endpoints as they were: https only, the vendors’ hosts on port 443', () => {
    const vendors = DEFAULT_PUSH_ENDPOINT_ALLOWLIST.split(',')
    expect(endpointAllowed('https://fcm.googleapis.com/fcm/send/x', vendors)).toBe(true)
    expect(endpointAllowed('https://web.push.apple.com/x', vendors)).toBe(true)
    expect(endpointAllowed('https://fcm.googleapis.com:8443/x', vendors)).toBe(false)
    expect(endpointAllowed('http://fcm.googleapis.com/x', vendors)).toBe(false)
    expect(endpointAllowed('https://evil.example/x', vendors)).toBe(false)
    expect(endpointAllowed('https://127.0.0.1:8443/x', ['127.0.0.1:*'])).toBe(true)
    expect(endpointAllowed('https://127.0.0.1:8443/x', ['127.0.0.1'])).toBe(false)
  })
})

describe('webhook requests, checked again at send time', () => {
  let receiver: WebhookReceiver
  const secret = `whsec_${Buffer.alloc(32, 7).toString('base64')}`
  beforeAll(async () => {
    receiver = await startWebhookReceiver()
  })
  afterAll(() => receiver.close())

  const sender = (resolve: Resolve, allowlist: string[]) =>
    new WebhookSender({ timeoutMs: 3_000, allowlist, ca: receiver.ca, maxSockets: 2, resolve })

  it('connects to the address it checked, whatever the system resolver says of the name', async () => {
    // `hooks.test` does not resolve on this machine: the request can only reach the receiver through the address
    // the check resolved (the connection uses it, and TLS still checks the certificate for hooks.test).
    const url = `https://hooks.test:${receiver.port}/checked`
    receiver.expect(url, secret)
    const dns = fakeDns('127.0.0.1')
    const s = sender(dns, [`hooks.test:${receiver.port}`])
    const outcome = await s.send({ url, secret, msgId: 'msg_checked', payload: '{"type":"user.online"}' })
    s.close()
    expect(outcome).toEqual({ ok: true, status: 200 })
    expect(dns.calls).toBe(1)
    expect(receiver.receivedAt(url).map((r) => r.id)).toEqual(['msg_checked'])
  })

  it('refuses, without connecting, a host whose DNS now points at a private address', async () => {
    // Registered while it resolved to a public address; now it answers 127.0.0.1 (DNS rebinding).
    const url = `https://hooks.test:${receiver.port}/rebound`
    receiver.expect(url, secret)
    const s = sender(fakeDns('127.0.0.1'), [])
    const outcome = await s.send({ url, secret, msgId: 'msg_rebound', payload: '{}' })
    s.close()
    expect(outcome).toEqual({
      ok: false,
      status: null,
      error:
        'refused: the URL must not point at a loopback address (hooks.test resolves to 127.0.0.1) unless WEBHOOK_URL_ALLOWLIST names it',
    })
    expect(receiver.attemptsAt(url)).toEqual([])
  })

  it('gives up on an endpoint that does not answer within the timeout', async () => {
    const url = receiver.url('/silent')
    receiver.expect(url, secret)
    receiver.failNext(url, 1, 'hang')
    const s = new WebhookSender({
      timeoutMs: 300,
      allowlist: [receiver.allowlistEntry],
      ca: receiver.ca,
      maxSockets: 1,
    })
    const started = Date.now()
    const outcome = await s.send({ url, secret, msgId: 'msg_silent', payload: '{}' })
    s.close()
    expect(outcome).toEqual({ ok: false, status: null, error: 'no answer within 300 ms' })
    expect(Date.now() - started).toBeLessThan(2_000)
  })
})
