import { createECDH, createHash, randomBytes } from 'node:crypto'
import { and, desc, eq, sql } from 'drizzle-orm'
import { z } from 'zod'
import type { Caller } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { pushSubscriptions } from '../db/schema.ts'
import { describeFieldErrors, HttpProblem } from '../errors.ts'
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

/** Host patterns: `fcm.googleapis.com` (exact), `*.push.apple.com` (any subdomain), `127.0.0.1:8443` (host and port). */
export function endpointAllowed(endpoint: string, allowlist: readonly string[]): boolean {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    return false
  }
  if (url.protocol !== 'https:' || url.username || url.password) return false
  const host = url.hostname.toLowerCase()
  const hostPort = `${host}:${url.port || '443'}`
  return allowlist.some((pattern) => {
    const p = pattern.trim().toLowerCase()
    if (!p) return false
    if (p.startsWith('*.')) return host.endsWith(p.slice(1))
    return p.includes(':') ? p === hostPort : p === host
  })
}

export const parseAllowlist = (value: string) =>
  value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)

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
  if (errors.length) throw new HttpProblem('validation', describeFieldErrors(errors), errors)
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

/** Upserts by endpoint: the endpoint moves to the last user who registered it. */
export async function registerSubscription(
  database: Database,
  caller: Caller,
  s: SubscriptionJson,
  allowlist: readonly string[],
): Promise<Registered> {
  checkSubscription(s, allowlist)
  const renewToken = randomBytes(32).toString('base64url')
  const values = {
    tenant: caller.tenant,
    userId: caller.userId,
    endpoint: s.endpoint,
    p256dh: s.keys.p256dh,
    auth: s.keys.auth,
    expirationTime: s.expirationTime ? new Date(s.expirationTime) : null,
    renewTokenHash: hashRenewToken(renewToken),
  }
  const id = await database.db.transaction(async (tx) => {
    const [row] = await tx
      .insert(pushSubscriptions)
      .values(values)
      .onConflictDoUpdate({ target: pushSubscriptions.endpoint, set: { ...values, updatedAt: sql`now()` } })
      .returning({ id: pushSubscriptions.id })
    // The device's role and topic pushes follow the user's claims: known from this token at once.
    await database.query(storeClaims([caller]), tx)
    return row.id
  })
  return { id: String(id), renewToken }
}

/**
 * The service worker's re-registration after the browser replaced a subscription: the renew token stands
 * for the user who registered the old one. Answers undefined when the token matches nothing.
 */
export async function renewSubscription(
  database: Database,
  renewToken: string,
  s: SubscriptionJson,
  allowlist: readonly string[],
): Promise<Registered | undefined> {
  checkSubscription(s, allowlist)
  return database.db.transaction(async (tx) => {
    const [old] = await tx
      .select()
      .from(pushSubscriptions)
      .where(eq(pushSubscriptions.renewTokenHash, hashRenewToken(renewToken)))
    if (!old) return undefined
    // The new endpoint may already be registered (the page re-subscribed first): it becomes this row.
    await tx
      .delete(pushSubscriptions)
      .where(and(eq(pushSubscriptions.endpoint, s.endpoint), sql`${pushSubscriptions.id} <> ${old.id}`))
    const fresh = randomBytes(32).toString('base64url')
    await tx
      .update(pushSubscriptions)
      .set({
        endpoint: s.endpoint,
        p256dh: s.keys.p256dh,
        auth: s.keys.auth,
        expirationTime: s.expirationTime ? new Date(s.expirationTime) : null,
        renewTokenHash: hashRenewToken(fresh),
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
