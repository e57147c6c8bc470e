import { createECDH, createHash, randomBytes } from 'node:crypto'
import { and, desc, eq, notInArray, sql } from 'drizzle-orm'
import { z } from 'zod'
import type { Caller } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { pushSubscriptions } from '../db/schema.ts'
import { ConflictError, InvalidFieldsError } from '../service-errors.ts'
import { storeClaims } from './user-claims.ts'

/** The browser's `PushSubscription.toJSON()`. */
export const subscriptionSchema = z.object({
  endpoint: z.string().min(1).max(2048),
  // A time in milliseconds PostgreSQL can store (years 1970 to 9999); anything else is not a browser's.
  expirationTime: z.number().int().min(0).max(253_402_300_799_999).nullish(),
  keys: z.object({
    p256dh: z.string().min(1).max(200),
    auth: z.string().min(1).max(100),
  }),
})
export type SubscriptionJson = z.infer<typeof subscriptionSchema>

/**
 * Host patterns: `fcm.googleapis.com` (exact), `*.push.apple.com` (any subdomain), each on port 443 only;
 * `127.0.0.1:8443` names a port, `127.0.0.1:*` any port.
 */
export function endpointAllowed(endpoint: string, allowlist: readonly string[]): boolean {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    return false
  }
  if (url.protocol !== 'https:' || url.username || url.password) return false
  return allowlistNames(url, allowlist)
}

/**
 * True when a pattern of `allowlist` names the URL's host and port: `fcm.googleapis.com` (exact) and
 * `*.push.apple.com` (any subdomain) on the scheme's default port (443 for https, 80 for http);
 * `127.0.0.1:8443` names a port, `127.0.0.1:*` any. Push endpoints and webhook URLs (webhooks/urls.ts) use it.
 */
export function allowlistNames(url: URL, allowlist: readonly string[]): boolean {
  const host = url.hostname.toLowerCase()
  const defaultPort = url.protocol === 'http:' ? '80' : '443'
  const port = url.port || defaultPort
  return allowlist.some((entry) => {
    const { hostPattern, portPattern } = splitPattern(entry.trim().toLowerCase())
    if (!hostPattern) return false
    const hostMatches = hostPattern.startsWith('*.') ? host.endsWith(hostPattern.slice(1)) : hostPattern === host
    return hostMatches && (portPattern === '*' || (portPattern ?? defaultPort) === port)
  })
}

/** `host`, `host:port` or `host:*`; a bracketed IPv6 literal keeps its colons. Without a port: the default's. */
function splitPattern(pattern: string): { hostPattern: string; portPattern: string | undefined } {
  const match = /^(.*?):(\d{1,5}|\*)$/.exec(pattern)
  if (match && (!match[1].includes(':') || match[1].startsWith('['))) {
    return { hostPattern: match[1], portPattern: match[2] }
  }
  return { hostPattern: pattern, portPattern: undefined }
}

/**
 * The endpoint as stored and compared: the WHATWG URL serialization (scheme and host lower-cased, the default
 * port dropped), so `HTTPS://FCM.googleapis.com:443/x` and `https://fcm.googleapis.com/x` are one device.
 */
export const normalizeEndpoint = (endpoint: string) => new URL(endpoint).href

/** The endpoint must be an https URL on the allowlist (the service must never be made to POST anywhere else). */
function checkSubscription(s: SubscriptionJson, allowlist: readonly string[]) {
  const errors: { path: string; message: string }[] = []
  if (!endpointAllowed(s.endpoint, allowlist)) {
    errors.push({ path: 'body.endpoint', message: 'must be an https URL of an allowed push service' })
  }
  const p256dh = Buffer.from(s.keys.p256dh, 'base64url')
  if (p256dh.length !== 65 || p256dh[0] !== 4 || !onP256(p256dh)) {
    errors.push({ path: 'body.keys.p256dh', message: 'must be an uncompressed P-256 public key (65 bytes, base64url)' })
  }
  if (Buffer.from(s.keys.auth, 'base64url').length !== 16) {
    errors.push({ path: 'body.keys.auth', message: 'must be a 16-byte secret, base64url' })
  }
  if (errors.length) throw new InvalidFieldsError(errors)
}

function onP256(point: Buffer): boolean {
  try {
    // computeSecret refuses a point that is not on the curve.
    const ecdh = createECDH('prime256v1')
    ecdh.generateKeys()
    ecdh.computeSecret(point)
    return true
  } catch {
    return false
  }
}

const hashRenewToken = (token: string) => createHash('sha256').update(token).digest('hex')

export interface Registered {
  id: string
  /** Lets the service worker re-register after `pushsubscriptionchange`, without the user's JWT. */
  renewToken: string
}

export interface DeviceRules {
  /** Hosts push endpoints may have (PUSH_ENDPOINT_ALLOWLIST). */
  allowlist: readonly string[]
  /** Devices per user; registering one more drops the least recently registered (MAX_DEVICES_PER_USER). */
  maxDevicesPerUser: number
  /** A renew token works this long after the registration or renewal that issued it (RENEW_TOKEN_TTL_DAYS). */
  renewTokenTtlDays: number
}

type Tx = Parameters<Parameters<Database['db']['transaction']>[0]>[0]

/**
 * The row that holds this endpoint, locked, unless it may be taken over by (tenant, user) with these keys:
 * an endpoint moves to another user only when the keys match too (the same browser, now signed in as someone
 * else). Knowing an endpoint URL is not enough to take a device from its user, in any tenant.
 */
async function assertMayTake(tx: Tx, endpoint: string, owner: { tenant: string; userId: string }, keys: Keys) {
  const [holder] = await tx
    .select()
    .from(pushSubscriptions)
    .where(eq(pushSubscriptions.endpoint, endpoint))
    .for('update')
  if (!holder) return undefined
  const sameUser = holder.tenant === owner.tenant && holder.userId === owner.userId
  const sameKeys = holder.p256dh === keys.p256dh && holder.auth === keys.auth
  if (!sameUser && !sameKeys) {
    throw new ConflictError('This endpoint is registered to another device; subscribe again in the browser.')
  }
  return holder
}

type Keys = SubscriptionJson['keys']

const renewTokenExpiry = (rules: DeviceRules) => sql`now() + make_interval(days => ${rules.renewTokenTtlDays})`

/**
 * Upserts by endpoint (normalized), keeps the user to `maxDevicesPerUser` devices by dropping the least
 * recently registered, and records the token's roles and topics as the user's current claims.
 */
export async function registerSubscription(
  database: Database,
  caller: Caller,
  s: SubscriptionJson,
  rules: DeviceRules,
): Promise<Registered> {
  checkSubscription(s, rules.allowlist)
  const endpoint = normalizeEndpoint(s.endpoint)
  const renewToken = randomBytes(32).toString('base64url')
  const values = {
    tenant: caller.tenant,
    userId: caller.userId,
    endpoint,
    p256dh: s.keys.p256dh,
    auth: s.keys.auth,
    expirationTime: s.expirationTime ? new Date(s.expirationTime) : null,
    renewTokenHash: hashRenewToken(renewToken),
    renewTokenExpiresAt: renewTokenExpiry(rules),
  }
  const id = await database.db.transaction(async (tx) => {
    await assertMayTake(tx, endpoint, caller, s.keys)
    const [row] = await tx
      .insert(pushSubscriptions)
      .values(values)
      .onConflictDoUpdate({ target: pushSubscriptions.endpoint, set: { ...values, updatedAt: sql`now()` } })
      .returning({ id: pushSubscriptions.id })
    await dropDevicesPastLimit(tx, caller, rules.maxDevicesPerUser)
    // The device's role and topic pushes follow the user's claims: known from this token at once.
    await database.query(storeClaims([caller]), tx)
    return row.id
  })
  return { id: String(id), renewToken }
}

/** Deletes the user's devices beyond the newest `max` (by last registration), with their pending pushes' rows kept. */
async function dropDevicesPastLimit(tx: Tx, owner: { tenant: string; userId: string }, max: number) {
  const mine = and(eq(pushSubscriptions.tenant, owner.tenant), eq(pushSubscriptions.userId, owner.userId))
  const kept = tx
    .select({ id: pushSubscriptions.id })
    .from(pushSubscriptions)
    .where(mine)
    .orderBy(desc(pushSubscriptions.updatedAt), desc(pushSubscriptions.id))
    .limit(max)
  await tx.delete(pushSubscriptions).where(and(mine, notInArray(pushSubscriptions.id, kept)))
}

/**
 * The service worker's re-registration after the browser replaced a subscription: the renew token stands
 * for the user who registered the old one, and acts on that one registration only. Answers undefined when
 * the token matches nothing or has expired.
 */
export async function renewSubscription(
  database: Database,
  renewToken: string,
  s: SubscriptionJson,
  rules: DeviceRules,
): Promise<Registered | undefined> {
  checkSubscription(s, rules.allowlist)
  const endpoint = normalizeEndpoint(s.endpoint)
  return database.db.transaction(async (tx) => {
    const [old] = await tx
      .select()
      .from(pushSubscriptions)
      .where(
        and(
          eq(pushSubscriptions.renewTokenHash, hashRenewToken(renewToken)),
          sql`${pushSubscriptions.renewTokenExpiresAt} > now()`,
        ),
      )
      .for('update')
    if (!old) return undefined
    // The new endpoint may already be registered (the page re-subscribed first): that row merges into this
    // one, if it is the same user's or the same browser's (keys); anyone else's is refused, not deleted.
    const holder = await assertMayTake(tx, endpoint, old, s.keys)
    if (holder && holder.id !== old.id) await tx.delete(pushSubscriptions).where(eq(pushSubscriptions.id, holder.id))
    const fresh = randomBytes(32).toString('base64url')
    await tx
      .update(pushSubscriptions)
      .set({
        endpoint,
        p256dh: s.keys.p256dh,
        auth: s.keys.auth,
        expirationTime: s.expirationTime ? new Date(s.expirationTime) : null,
        renewTokenHash: hashRenewToken(fresh),
        renewTokenExpiresAt: renewTokenExpiry(rules),
        updatedAt: sql`now()`,
      })
      .where(eq(pushSubscriptions.id, old.id))
    return { id: String(old.id), renewToken: fresh }
  })
}

/** The caller's devices, newest first. Keys are never shown back. */
export async function listSubscriptions(database: Database, caller: Caller) {
  const rows = await database.db
    .select({
      id: pushSubscriptions.id,
      endpoint: pushSubscriptions.endpoint,
      expirationTime: pushSubscriptions.expirationTime,
      createdAt: pushSubscriptions.createdAt,
      updatedAt: pushSubscriptions.updatedAt,
    })
    .from(pushSubscriptions)
    .where(and(eq(pushSubscriptions.tenant, caller.tenant), eq(pushSubscriptions.userId, caller.userId)))
    .orderBy(desc(pushSubscriptions.id))
  return rows.map((r) => ({ ...r, id: String(r.id) }))
}

/** Deletes one of the caller's devices; false when it is not theirs (or does not exist). */
export async function deleteSubscription(database: Database, caller: Caller, id: number): Promise<boolean> {
  const rows = await database.db
    .delete(pushSubscriptions)
    .where(
      and(
        eq(pushSubscriptions.id, id),
        eq(pushSubscriptions.tenant, caller.tenant),
        eq(pushSubscriptions.userId, caller.userId),
      ),
    )
    .returning({ id: pushSubscriptions.id })
  return rows.length > 0
}
