import { lookup } from 'node:dns/promises'
import { BlockList, isIP } from 'node:net'
import { allowlistNames } from '../push/subscriptions.ts'

// Where webhooks may go: the rules a URL must meet at registration, and the address a delivery connects to,
// checked again at every attempt (a host's DNS may change after it was registered).

/** Longest endpoint URL accepted. */
export const MAX_URL_CHARS = 2048

/** What kind of address a non-public one is, as the refusal names it. */
export type AddressKind =
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'shared (carrier-grade NAT)'
  | 'multicast'
  | 'documentation'
  | 'reserved'

/**
 * Address ranges no webhook goes to unless WEBHOOK_URL_ALLOWLIST names the host: everything but the public
 * internet (RFC 6890's special-purpose registries). IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) match the IPv4
 * ranges (BlockList does that); NAT64, 6to4 and Teredo prefixes are refused whole, as they can lead to any IPv4
 * address.
 */
const RANGES: ReadonlyArray<[AddressKind, 'ipv4' | 'ipv6', string, number]> = [
  ['unspecified', 'ipv4', '0.0.0.0', 8],
  ['private', 'ipv4', '10.0.0.0', 8],
  ['shared (carrier-grade NAT)', 'ipv4', '100.64.0.0', 10],
  ['loopback', 'ipv4', '127.0.0.0', 8],
  ['link-local', 'ipv4', '169.254.0.0', 16],
  ['private', 'ipv4', '172.16.0.0', 12],
  ['reserved', 'ipv4', '192.0.0.0', 24],
  ['documentation', 'ipv4', '192.0.2.0', 24],
  ['reserved', 'ipv4', '192.88.99.0', 24],
  ['private', 'ipv4', '192.168.0.0', 16],
  ['reserved', 'ipv4', '198.18.0.0', 15],
  ['documentation', 'ipv4', '198.51.100.0', 24],
  ['documentation', 'ipv4', '203.0.113.0', 24],
  ['multicast', 'ipv4', '224.0.0.0', 4],
  ['reserved', 'ipv4', '240.0.0.0', 4],
  ['unspecified', 'ipv6', '::', 128],
  ['loopback', 'ipv6', '::1', 128],
  // IPv4-compatible (deprecated): ::a.b.c.d
  ['reserved', 'ipv6', '::', 96],
  ['reserved', 'ipv6', '64:ff9b::', 96],
  ['reserved', 'ipv6', '64:ff9b:1::', 48],
  ['reserved', 'ipv6', '100::', 64],
  ['reserved', 'ipv6', '2001::', 32],
  ['documentation', 'ipv6', '2001:db8::', 32],
  ['reserved', 'ipv6', '2002::', 16],
  ['private', 'ipv6', 'fc00::', 7],
  ['link-local', 'ipv6', 'fe80::', 10],
  ['private', 'ipv6', 'fec0::', 10],
  ['multicast', 'ipv6', 'ff00::', 8],
]

/** One BlockList per kind, in the order above (the first that matches names the address). */
const BLOCKS: ReadonlyArray<[AddressKind, BlockList]> = (() => {
  const byKind = new Map<AddressKind, BlockList>()
  for (const [kind, family, network, prefix] of RANGES) {
    let list = byKind.get(kind)
    if (!list) byKind.set(kind, (list = new BlockList()))
    list.addSubnet(network, prefix, family)
  }
  return [...byKind]
})()

/** The kind of a non-public IP address; undefined for a public one (or for something that is not an address). */
export function addressKind(address: string): AddressKind | undefined {
  const bare = address.replace(/^\[|\]$/g, '').split('%')[0]
  const family = isIP(bare)
  if (!family) return undefined
  const type = family === 4 ? 'ipv4' : 'ipv6'
  // An IPv4-mapped address (::ffff:a.b.c.d) is checked as its IPv4 address.
  const mapped = type === 'ipv6' ? /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare)?.[1] : undefined
  if (mapped) return addressKind(mapped)
  for (const [kind, list] of BLOCKS) if (list.check(bare, type)) return kind
  return undefined
}

/** The address a delivery connects to, once checked. */
export interface Destination {
  url: URL
  /** The host's address (checked unless the allowlist names the host), or undefined for an IP literal. */
  address?: string
  family?: 4 | 6
}

/** Resolves a host name to its addresses (dns.lookup, all of them; tests give their own). */
export type Resolve = (host: string) => Promise<Array<{ address: string; family: number }>>

export const systemResolve: Resolve = (host) => lookup(host, { all: true, verbatim: true })

/** A URL the rules refuse, and why (a sentence fragment: "must be https ..."). */
export class UrlRefused extends Error {
  override name = 'UrlRefused'
}

/**
 * The rules an endpoint URL must meet, before any DNS: absolute http(s), no credentials, https unless
 * `allowlist` names the host (then http too). Returns the parsed URL.
 */
export function parseEndpointUrl(text: string, allowlist: readonly string[]): URL {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new UrlRefused('must be an absolute https URL')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UrlRefused('must be an absolute https URL')
  if (url.username || url.password) throw new UrlRefused('must not contain a user name or password')
  const allowed = allowlistNames(url, allowlist)
  if (url.protocol === 'http:' && !allowed) {
    throw new UrlRefused(`must be https (http only for a host WEBHOOK_URL_ALLOWLIST names; ${url.host} is not one)`)
  }
  return url
}

/**
 * Where a delivery to `url` connects: the host's first address, once every address it resolves to is found
 * public. A host the allowlist names may resolve to any address. Throws UrlRefused when the host is a
 * non-public address, resolves to one, or does not resolve. Run at registration and again before each attempt.
 */
export async function checkDestination(
  url: URL,
  allowlist: readonly string[],
  resolve: Resolve = systemResolve,
): Promise<Destination> {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  const allowed = allowlistNames(url, allowlist)
  if (isIP(host)) {
    const kind = allowed ? undefined : addressKind(host)
    if (kind)
      throw new UrlRefused(`must not point at a ${kind} address (${host}) unless WEBHOOK_URL_ALLOWLIST names it`)
    return { url }
  }
  let addresses: Array<{ address: string; family: number }>
  try {
    addresses = await resolve(host)
  } catch (err) {
    const code = (err as { code?: string }).code
    throw new UrlRefused(`has a host that does not resolve (${host}: ${code ?? (err as Error).message})`)
  }
  if (!addresses.length) throw new UrlRefused(`has a host that does not resolve (${host}: no addresses)`)
  if (!allowed) {
    for (const { address } of addresses) {
      const kind = addressKind(address)
      if (kind) {
        throw new UrlRefused(
          `must not point at a ${kind} address (${host} resolves to ${address}) unless WEBHOOK_URL_ALLOWLIST names it`,
        )
      }
    }
  }
  const [first] = addresses
  return { url, address: first.address, family: first.family === 6 ? 6 : 4 }
}
