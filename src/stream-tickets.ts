import { createHash, randomBytes } from 'node:crypto'
import { eq, lt, sql } from 'drizzle-orm'
import type { Caller } from './auth.ts'
import type { Database } from './db/client.ts'
import { streamTickets } from './db/schema.ts'

/** A ticket opens a stream within this long: enough for the request that follows, too short to be worth stealing. */
export const STREAM_TICKET_TTL_S = 30

const hashOf = (ticket: string) => createHash('sha256').update(ticket).digest('base64url')

/** What a ticket stores of its caller (ackTokens never get tickets: they open no stream). */
interface StoredCaller {
  userId: string
  tenant: string
  roles: string[]
  topics: string[]
  /** Caller.tenants, as [tenant, roles] pairs. */
  tenants?: Array<[string, string[]]>
  scopes: string[]
  exp?: number
}

/**
 * Single-use tickets that open a stream (EventSource cannot send the JWT in a header). Stored (hashed) in the
 * database, so that the stream may open on any instance behind a load balancer.
 */
export class StreamTickets {
  constructor(private readonly database: Database) {}

  /** Issues a ticket for the caller's stream. Tickets never used are swept as new ones are issued. */
  issue(caller: Caller): Promise<string> {
    return issueStreamTicket(this.database, caller)
  }

  /** The caller a ticket stands for, once; undefined for an unknown, used or expired ticket. */
  redeem(ticket: string): Promise<Caller | undefined> {
    return redeemStreamTicket(this.database, ticket)
  }
}

async function issueStreamTicket(database: Database, caller: Caller): Promise<string> {
  const ticket = randomBytes(32).toString('base64url')
  const stored: StoredCaller = {
    userId: caller.userId,
    tenant: caller.tenant,
    roles: [...caller.roles],
    topics: [...caller.topics],
    tenants: caller.tenants && [...caller.tenants].map(([tenant, roles]) => [tenant, [...roles]]),
    scopes: [...caller.scopes],
    exp: caller.exp,
  }
  await database.db.insert(streamTickets).values({
    hash: hashOf(ticket),
    caller: JSON.stringify(stored),
    expiresAt: sql`now() + make_interval(secs => ${STREAM_TICKET_TTL_S})`,
  })
  await database.db.delete(streamTickets).where(lt(streamTickets.expiresAt, sql`now()`))
  return ticket
}

/** Redeeming deletes the ticket, so a second use (on any instance) finds nothing. */
async function redeemStreamTicket(database: Database, ticket: string): Promise<Caller | undefined> {
  const [row] = await database.db
    .delete(streamTickets)
    .where(eq(streamTickets.hash, hashOf(ticket)))
    .returning({ caller: streamTickets.caller, expiresAt: streamTickets.expiresAt })
  if (!row || row.expiresAt.getTime() <= Date.now()) return undefined
  const c = JSON.parse(row.caller) as StoredCaller
  return {
    userId: c.userId,
    tenant: c.tenant,
    roles: c.roles,
    tenants: c.tenants && new Map(c.tenants),
    topics: c.topics,
    scopes: new Set(c.scopes),
    exp: c.exp,
  }
}
