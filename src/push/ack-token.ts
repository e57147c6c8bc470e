import { createSigner, createVerifier } from 'fast-jwt'
import type { AckGrant } from '../auth.ts'

/** Marks the token kind, so an ackToken is never mistaken for a user token (or the reverse). */
const ACK_TOKEN_TYPE = 'herald-ack'
/** An ackToken lives as long as its event, and at most this long (seconds). */
export const MAX_ACK_TOKEN_TTL_S = 7 * 24 * 3600

/**
 * ackTokens ride in push payloads so the service worker can ack or read one event for one user without
 * the user's JWT. They open nothing else: only the ack and read routes of that event accept them.
 */
export function ackTokens(secret: string) {
  const verify = createVerifier({ key: secret, algorithms: ['HS256'] })
  // One signer for every token (one per push): each token's `exp` is in its claims.
  const signer = createSigner({ key: secret, algorithm: 'HS256' })
  return {
    sign(grant: AckGrant, ttlSeconds: number): string {
      const ttl = Math.max(1, Math.min(Math.floor(ttlSeconds), MAX_ACK_TOKEN_TTL_S))
      return signer({
        typ: ACK_TOKEN_TYPE,
        sub: grant.userId,
        tenant: grant.tenant,
        evt: String(grant.eventId),
        exp: Math.floor(Date.now() / 1000) + ttl,
      })
    },
    /** The grant, or undefined when the token is not a valid, unexpired ackToken. */
    verify(token: string): AckGrant | undefined {
      try {
        const c = verify(token) as { typ?: string; sub?: string; tenant?: string; evt?: string }
        if (c.typ !== ACK_TOKEN_TYPE || !c.sub || !c.tenant || !c.evt || !/^\d+$/.test(c.evt)) return undefined
        return { tenant: c.tenant, userId: c.sub, eventId: Number(c.evt) }
      } catch {
        return undefined
      }
    },
  }
}

export type AckTokens = ReturnType<typeof ackTokens>
