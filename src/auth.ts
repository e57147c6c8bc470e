import { createPublicKey, hash } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { z } from 'zod'
import { storableText } from './db/storable-text.ts'
import { HttpProblem } from './problems.ts'
import { NotAllowedError } from './service-errors.ts'

/** `events:system`: a platform operator's, to publish into other tenants (routes/system.ts); never a tenant's. */
export type Scope = 'events:publish' | 'events:broadcast' | 'admin' | 'events:system'

/** Who is calling, from a verified token. Shared by every request with the same token: never changed. */
export interface Caller {
  readonly userId: string
  readonly tenant: string
  readonly roles: readonly string[]
  /**
   * Every tenant the token covers (its `tenants` claim), with the caller's roles in each, the current one
   * (`tenant`, with `roles`) included. Absent: the token covers its `tenant` only.
   */
  readonly tenants?: ReadonlyMap<string, readonly string[]>
  /** Topic patterns the caller may subscribe to: `class:7A` (exact) or `class:*` (prefix). */
  readonly topics: readonly string[]
  readonly scopes: ReadonlySet<string>
  /** Token expiry, seconds since the epoch. */
  readonly exp?: number
  /** Set when the caller is an ackToken from a push payload: it may ack or read this one event, nothing else. */
  readonly ackEventId?: number
}

/** Names go into the database as they are (user ids, tenants, roles, topics). */
const storableName = storableText(200).min(1)

/** Tenants one token may cover (a director of several schools): each is an index entry of every stream it opens. */
export const MAX_TOKEN_TENANTS = 100

/** The request header naming the tenant a REST call acts in, one the token covers (`tenants`). */
export const TENANT_HEADER = 'x-herald-tenant'

/** `tenants`: each tenant the user works in, with their roles there. */
const tenantsClaim = z
  .record(storableName, z.array(storableName).max(100))
  .refine((tenants) => Object.keys(tenants).length <= MAX_TOKEN_TENANTS, `at most ${MAX_TOKEN_TENANTS} tenants`)

const claimsSchema = z.object({
  sub: storableName,
  tenant: storableName,
  roles: z.array(storableName).max(100).default([]),
  topics: z.array(storableName).max(100).default([]),
  tenants: tenantsClaim.optional(),
  scope: z.string().max(1000).default(''),
  // Optional here so that a token without them gets its own message (checkLifetime).
  exp: z.number().optional(),
  iat: z.number().optional(),
})

/**
 * Clock difference tolerated between a token's issuer and this service: `iat` up to this far in the future,
 * `exp` and `nbf` this much past or ahead. Clocks kept by NTP agree within a second, but a VM resumed from a
 * pause or a container host without time sync drifts by seconds; 30 s absorbs that without letting a token
 * live noticeably longer.
 */
export const CLOCK_SKEW_S = 30

/** What a client is told when fast-jwt refuses its token, by fast-jwt's error code; otherwise "not valid". */
const VERIFY_FAILURES: Record<string, string> = {
  FAST_JWT_EXPIRED: 'The token has expired.',
  FAST_JWT_INACTIVE: 'The token is not valid yet (nbf).',
}

const unauthorized = (detail: string) =>
  new HttpProblem('unauthorized', detail, undefined, { 'www-authenticate': 'Bearer' })

/**
 * A token must expire, within `maxTtlS` of when it was issued (or of now, without `iat`), and must not come
 * from the future: a leaked token then works for a bounded time. Checked after the signature, so only what the
 * issuer signed is judged. Refusals are not cached, and a token accepted once stays acceptable until its `exp`.
 */
function checkLifetime(claims: { exp?: number; iat?: number }, maxTtlS: number, nowS: number) {
  const { exp, iat } = claims
  if (exp === undefined) throw unauthorized('The token has no expiry (exp).')
  if (iat !== undefined && iat > nowS + CLOCK_SKEW_S) {
    throw unauthorized('The token was issued in the future (iat): check the clock of its issuer.')
  }
  if (iat !== undefined && exp - iat > maxTtlS) {
    throw unauthorized(`The token lives ${exp - iat} s (exp - iat); at most ${maxTtlS} s is accepted.`)
  }
  if (iat === undefined && exp - nowS > maxTtlS) {
    throw unauthorized(
      `The token expires more than ${maxTtlS} s from now (exp) and has no iat; at most ${maxTtlS} s is accepted.`,
    )
  }
}

/** What an ackToken grants: one event of one user (push/ack-token.ts issues them). */
export interface AckGrant {
  tenant: string
  userId: string
  eventId: number
}

/** Checks push ackTokens: the grant, or undefined for anything else. */
export interface AckTokenVerifier {
  verify(token: string): AckGrant | undefined
}

export interface AuthOptions {
  /** HS256 shared secret. */
  secret?: string
  /** RS256 or ES256 public key (PEM). */
  publicKey?: string
  /** Verifier of push ackTokens, accepted where a route asks for `authenticateOrAckToken`. */
  ackTokens: AckTokenVerifier
  /** Longest token lifetime accepted, seconds (JWT_MAX_TTL_S). */
  maxTtlS: number
  /** Told of each token verified for the first time here (the user's current roles and topics: user-claims.ts). */
  onNewCaller?: (caller: Caller) => void
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller
  }
  interface FastifyInstance {
    /**
     * onRequest hook: verifies the bearer token and sets `request.caller`, or answers 401, before the body is
     * even read (and before per-user rate limits, which need the caller).
     */
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
    /** onRequest hook: a user token, or an ackToken (then `caller.ackEventId` limits what it may do). */
    authenticateOrAckToken: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}

/**
 * Verified tokens kept, by a hash of the token, until their `exp`, least recently used out first: an
 * application's backend sends the same token with every publish, and after a deploy or a dropped network every
 * stream comes back at once with the token it had (a reconnect storm). Verifying and checking the claims was
 * about a tenth of the service's CPU per single publish, and as much per resumed stream. As many as one
 * instance holds streams (its open-file limit, about 20,000 here): a storm verifies each token once. What is
 * kept is the token's Caller (about 0.3 KB) under its SHA-256, and only for tokens seen.
 */
const TOKEN_CACHE = 20_000

/** Callers of verified tokens by their SHA-256 (see TOKEN_CACHE); a Map keeps them in order of last use. */
class VerifiedTokens {
  private readonly byHash = new Map<string, Caller>()

  /** The caller of a token verified before and not expired since (with the same tolerance as verification). */
  get(key: string, nowMs: number): Caller | undefined {
    const caller = this.byHash.get(key)
    if (caller === undefined) return undefined
    this.byHash.delete(key)
    if (caller.exp === undefined || nowMs > (caller.exp + CLOCK_SKEW_S) * 1000) return undefined
    this.byHash.set(key, caller)
    return caller
  }

  set(key: string, caller: Caller): void {
    if (this.byHash.size >= TOKEN_CACHE) this.byHash.delete(this.byHash.keys().next().value as string)
    this.byHash.set(key, caller)
  }
}

/**
 * The scopes a `scope` claim grants, one set per distinct claim: tokens are cached as long as they last, one per
 * connected user, and nearly all of them carry one of a few scope strings.
 */
function scopeSet(scope: string): ReadonlySet<string> {
  let scopes = scopeSets.get(scope)
  if (scopes) return scopes
  scopes = new Set(scope.split(' ').filter(Boolean))
  if (scopeSets.size >= MAX_SCOPE_SETS) scopeSets.delete(scopeSets.keys().next().value as string)
  scopeSets.set(scope, scopes)
  return scopes
}
const scopeSets = new Map<string, ReadonlySet<string>>()
/** Roles or topics a token has none of: one empty list for every cached caller. */
const NO_NAMES: readonly string[] = Object.freeze([])
const MAX_SCOPE_SETS = 1_000

export const authPlugin = fp(
  async (app: FastifyInstance, options: AuthOptions) => {
    // fast-jwt checks exp and nbf, with the same tolerance as iat (milliseconds).
    const verify = { clockTolerance: CLOCK_SKEW_S * 1000 }
    if (options.secret) {
      await app.register(fastifyJwt, { secret: options.secret, verify: { ...verify, algorithms: ['HS256'] } })
    } else if (options.publicKey) {
      const keyType = createPublicKey(options.publicKey).asymmetricKeyType
      const algorithm = keyType === 'ec' ? 'ES256' : 'RS256'
      await app.register(fastifyJwt, {
        secret: { public: options.publicKey },
        verify: { ...verify, algorithms: [algorithm] },
      })
    } else {
      throw new Error('auth needs a secret or a public key')
    }

    const verified = new VerifiedTokens()
    const verifyToken = (token: string): Caller => {
      // One SHA-256 of the token (about 1 µs): fast-jwt's own cache hashed it twice per first verification.
      const key = hash('sha256', token, 'base64url')
      const known = verified.get(key, Date.now())
      if (known) return known
      let payload: unknown
      try {
        payload = app.jwt.verify(token)
      } catch (err) {
        throw unauthorized(VERIFY_FAILURES[(err as { code?: string }).code ?? ''] ?? 'The token is not valid.')
      }
      const claims = claimsSchema.safeParse(payload)
      if (!claims.success) {
        const fields = claims.error.issues.map((i) => i.path.join('.')).join(', ')
        throw unauthorized(`The token's claims are not valid (${fields}).`)
      }
      const c = claims.data
      checkLifetime(c, options.maxTtlS, Math.floor(Date.now() / 1000))
      const caller: Caller = {
        userId: c.sub,
        tenant: c.tenant,
        roles: c.roles.length ? c.roles : NO_NAMES,
        tenants: c.tenants && coveredTenants(c.tenant, c.roles, c.tenants),
        topics: c.topics.length ? c.topics : NO_NAMES,
        scopes: scopeSet(c.scope),
        exp: c.exp,
      }
      verified.set(key, caller)
      options.onNewCaller?.(caller)
      // The user's roles in the other tenants count there too (the push audience of role events).
      for (const tenant of caller.tenants?.keys() ?? [])
        if (tenant !== caller.tenant) options.onNewCaller?.(inTenant(caller, tenant))
      return caller
    }

    /**
     * The caller acting in the tenant an `X-Herald-Tenant` header names: the token's caller itself for its own
     * tenant, else one the token covers, with the roles it has there (no topics: those claims are the current
     * tenant's). Derived once per token and tenant, and kept as long as the token's caller is.
     */
    const inTenants = new WeakMap<Caller, Map<string, Caller>>()
    const actingIn = (caller: Caller, request: FastifyRequest): Caller => {
      const header = request.headers[TENANT_HEADER]
      if (header === undefined) return caller
      const tenant = typeof header === 'string' ? header.trim() : ''
      if (tenant === caller.tenant) return caller
      if (!caller.tenants?.has(tenant)) {
        throw new HttpProblem('forbidden', 'Your token does not cover the tenant in X-Herald-Tenant.', [
          { path: 'headers.x-herald-tenant', message: 'not a tenant of the token' },
        ])
      }
      let derived = inTenants.get(caller)
      if (!derived) inTenants.set(caller, (derived = new Map()))
      let there = derived.get(tenant)
      if (!there) derived.set(tenant, (there = inTenant(caller, tenant)))
      return there
    }

    app.decorateRequest('caller', null as unknown as Caller)
    /** A failed authentication counts against the caller's IP (429 past the limit), then answers 401. */
    const refuse = async (request: FastifyRequest, reply: FastifyReply, err: unknown): Promise<never> => {
      await app.limits.authFailed(request, reply)
      throw err
    }
    app.decorate('authenticate', async (request: FastifyRequest, reply: FastifyReply) => {
      let caller: Caller
      try {
        caller = verifyToken(bearerToken(request))
      } catch (err) {
        return refuse(request, reply, err)
      }
      request.caller = actingIn(caller, request)
    })
    app.decorate('authenticateOrAckToken', async (request: FastifyRequest, reply: FastifyReply) => {
      let caller: Caller
      try {
        const token = bearerToken(request)
        const grant = options.ackTokens.verify(token)
        caller = grant
          ? {
              userId: grant.userId,
              tenant: grant.tenant,
              roles: [],
              topics: [],
              scopes: new Set(),
              ackEventId: grant.eventId,
            }
          : verifyToken(token)
      } catch (err) {
        return refuse(request, reply, err)
      }
      request.caller = actingIn(caller, request)
    })
  },
  { name: 'auth', dependencies: ['limits'] },
)

/**
 * The `tenants` claim as the caller's map: the current tenant's roles are always `roles` (what `tenants` says
 * of it is ignored), so a token means the same to a service that knows only `tenant` and `roles`.
 */
function coveredTenants(
  tenant: string,
  roles: readonly string[],
  claim: Record<string, string[]>,
): ReadonlyMap<string, readonly string[]> {
  const covered = new Map<string, readonly string[]>(Object.entries(claim))
  covered.set(tenant, roles)
  return covered
}

/** The caller as it is in `tenant`, one its token covers: its roles there, and no topics. */
export const inTenant = (caller: Caller, tenant: string): Caller => ({
  ...caller,
  tenant,
  roles: caller.tenants?.get(tenant) ?? [],
  topics: [],
})

/** The credential of an `Authorization: Bearer <credential>` header, or undefined for any other value. */
export const bearerCredential = (header: string | undefined) => /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1]

/** The token from `Authorization: Bearer`, or `?access_token=` on the stream (EventSource cannot set headers). */
function bearerToken(request: FastifyRequest): string {
  const header = request.headers.authorization
  if (header) {
    const token = bearerCredential(header)
    if (token) return token
    throw new HttpProblem('unauthorized', 'Authorization must be "Bearer <token>".', undefined, {
      'www-authenticate': 'Bearer',
    })
  }
  const query = request.query as { access_token?: unknown } | undefined
  if (request.routeOptions.config?.tokenInQuery && typeof query?.access_token === 'string' && query.access_token) {
    return query.access_token
  }
  throw new HttpProblem('unauthorized', 'A bearer token is required.', undefined, { 'www-authenticate': 'Bearer' })
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Accept `?access_token=` as well as the Authorization header. */
    tokenInQuery?: boolean
  }
}

export function requireScope(caller: Caller, scope: Scope, what: string) {
  if (!caller.scopes.has(scope)) throw new NotAllowedError(`${what} needs the "${scope}" scope.`)
}

/** True when `pattern` (exact, or prefix ending in `*`) matches the concrete topic. */
export function topicMatches(pattern: string, topic: string): boolean {
  return pattern.endsWith('*') ? topic.startsWith(pattern.slice(0, -1)) : pattern === topic
}

/** True when a stream may subscribe to `wanted` (a topic or pattern) under the token's topic claims. */
export function topicAllowed(claims: readonly string[], wanted: string): boolean {
  return claims.some((claim) => {
    if (!wanted.endsWith('*')) return topicMatches(claim, wanted)
    return claim.endsWith('*') && wanted.slice(0, -1).startsWith(claim.slice(0, -1))
  })
}
