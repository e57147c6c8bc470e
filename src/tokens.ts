import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createSigner } from 'fast-jwt'

/** One hour: long enough to try things by hand, short enough not to matter if pasted somewhere. */
export const DEFAULT_TOKEN_TTL_S = 3600

export interface TokenClaims {
  sub: string
  tenant: string
  roles?: string[]
  topics?: string[]
  /** Every tenant the user works in, with their roles there (a director of several schools); `tenant` is the current one. */
  tenants?: Record<string, string[]>
  /** Space-separated: events:publish events:broadcast admin */
  scope?: string
}

/** Mints an HS256 token, as an application backend would. For local use: the CLI, the demo page, tests. */
export function mintToken(secret: string, claims: TokenClaims, ttlSeconds = DEFAULT_TOKEN_TTL_S): string {
  const sign = createSigner({ key: secret, algorithm: 'HS256', expiresIn: ttlSeconds * 1000 })
  return sign({ ...claims })
}

const secretFile = (dataDir: string) => join(dataDir, 'jwt-secret')

/**
 * The development secret: made once and kept in DATA_DIR so tokens survive restarts. Only used when neither
 * JWT_SECRET nor JWT_PUBLIC_KEY is configured (never in production; config.ts refuses that).
 */
export function loadOrCreateDevSecret(dataDir: string): string {
  const file = secretFile(dataDir)
  if (existsSync(file)) return readFileSync(file, 'utf8').trim()
  mkdirSync(dataDir, { recursive: true })
  const secret = randomBytes(48).toString('base64url')
  writeFileSync(file, `${secret}\n`, { mode: 0o600 })
  chmodSync(file, 0o600)
  return secret
}
