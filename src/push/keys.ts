import { randomBytes } from 'node:crypto'
import { eq } from 'drizzle-orm'
import webpush from 'web-push'
import type { Database } from '../db/client.ts'
import { serviceKeys } from '../db/schema.ts'

export interface VapidKeys {
  publicKey: string
  privateKey: string
  subject: string
}

/**
 * A secret the service makes once and keeps in the database, so every instance (and every restart) uses
 * the same one. Concurrent first starts agree: the first insert wins and everyone reads it back.
 */
async function sharedSecret(database: Database, name: string, make: () => string): Promise<string> {
  await database.db.insert(serviceKeys).values({ name, value: make() }).onConflictDoNothing()
  const [row] = await database.db.select().from(serviceKeys).where(eq(serviceKeys.name, name))
  return row.value
}

/** VAPID keys from the environment, or generated once and kept (browsers' subscriptions stay valid across restarts). */
export async function loadVapidKeys(
  database: Database,
  configured: { publicKey: string | undefined; privateKey: string | undefined; subject: string },
): Promise<VapidKeys> {
  const { subject } = configured
  if (configured.publicKey && configured.privateKey) {
    return { publicKey: configured.publicKey, privateKey: configured.privateKey, subject }
  }
  const stored = JSON.parse(await sharedSecret(database, 'vapid', () => JSON.stringify(webpush.generateVAPIDKeys())))
  return { publicKey: stored.publicKey, privateKey: stored.privateKey, subject }
}

/** The HS256 key of ackTokens: separate from user JWTs, which may be verified by a public key we cannot sign with. */
export const loadAckTokenSecret = (database: Database) =>
  sharedSecret(database, 'ack-token', () => randomBytes(48).toString('base64url'))
