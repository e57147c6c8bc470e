import { sql } from 'drizzle-orm'
import type { FastifyBaseLogger } from 'fastify'
import type { Caller } from '../auth.ts'
import type { Database } from '../db/client.ts'

/**
 * Claims of a token with no `exp` count this long. Tokens without `exp` are refused (auth.ts); this only keeps
 * the arithmetic total.
 */
const NO_EXPIRY_FALLBACK_S = 3_600
/** Claims learnt from authentications are written together, at most this long after the first of them. */
const FLUSH_DELAY_MS = 50

const recordOf = (caller: Caller) => ({
  tenant: caller.tenant,
  user_id: caller.userId,
  roles: [...caller.roles],
  topics: [...caller.topics],
  expires_at: new Date((caller.exp ?? Math.floor(Date.now() / 1000) + NO_EXPIRY_FALLBACK_S) * 1000).toISOString(),
})

/**
 * SQL that stores the roles and topic claims of these callers as their users' current ones (user_claims):
 * the push audience of role and topic events follows them (see planPushes), until their token expires.
 */
export function storeClaims(callers: readonly Caller[]) {
  return sql`
    insert into user_claims (tenant, user_id, roles, topics, expires_at)
    select tenant, user_id, roles, topics, expires_at
    from json_to_recordset(${JSON.stringify(callers.map(recordOf))}::json)
      as c(tenant text, user_id text, roles text[], topics text[], expires_at timestamptz)
    on conflict (tenant, user_id) do update
    set roles = excluded.roles, topics = excluded.topics, expires_at = excluded.expires_at, updated_at = now()`
}

/**
 * Keeps user_claims in step with the tokens users authenticate with: each token seen for the first time
 * (auth.ts verifies a token once, then caches it) is queued, and the queue is written in one statement shortly
 * after. The user's latest token wins. A failed write is logged and dropped: the next authentication writes again.
 */
export class ClaimsRefresher {
  private readonly queued = new Map<string, Caller>()
  private timer: NodeJS.Timeout | undefined
  private writing: Promise<void> | undefined

  constructor(
    private readonly database: Database,
    private readonly log: FastifyBaseLogger,
  ) {}

  remember(caller: Caller): void {
    if (caller.ackEventId !== undefined) return // an ackToken says nothing about roles or topics
    this.queued.set(`${caller.tenant}\u0000${caller.userId}`, caller)
    if (!this.timer) this.timer = setTimeout(() => void this.flush(), FLUSH_DELAY_MS)
  }

  /** Writes what is queued now; resolves when it is written (or failed). */
  async flush(): Promise<void> {
    clearTimeout(this.timer)
    this.timer = undefined
    while (this.writing) await this.writing
    if (!this.queued.size) return
    const callers = [...this.queued.values()]
    this.queued.clear()
    this.writing = this.database
      .query(storeClaims(callers))
      .then(
        () => undefined,
        (err) => this.log.warn({ err, users: callers.length }, 'storing users’ token claims failed'),
      )
      .finally(() => {
        this.writing = undefined
      })
    await this.writing
  }
}
