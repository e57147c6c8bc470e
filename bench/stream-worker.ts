// A load-generator process: holds a StreamPool and answers the parent's requests over IPC.
// Separate processes because one process may hold at most ~20,000 open files here.
import { mintToken } from '../src/tokens.ts'
import { type PoolOptions, StreamPool } from './stream-pool.ts'
import { addressedTo, roleName, roleOf, type TargetedPlan, topicName, topicOf } from './targeted-plan.ts'

/** What the parent sends to open this worker's streams: users `${userPrefix}${userOffset + i}` of one tenant. */
export interface WorkerOpen extends Omit<PoolOptions, 'tokenFor' | 'pathFor' | 'addressedTo'> {
  secret: string
  tenant: string
  userPrefix: string
  userOffset: number
  /** Request path of every stream (default `/v1/stream`); ignored with `targeted`. */
  path?: string
  /** No Authorization header (Nchan has no JWT auth). */
  anonymous?: boolean
  /** Scenario 7: roles and topic per user, and which events are addressed to whom (see targeted-plan.ts). */
  targeted?: TargetedPlan
}

export type WorkerRequest =
  | { seq: number; cmd: 'open'; options: WorkerOpen }
  | { seq: number; cmd: 'report'; newRound?: boolean }
  | { seq: number; cmd: 'reconnect'; concurrency: number }
  | { seq: number; cmd: 'disconnect' }
  | { seq: number; cmd: 'progress' | 'close' }

/** Tokens outlive any scenario by far. */
const TOKEN_TTL_S = 3600

let pool: StreamPool | undefined

/**
 * Stream i's token, minted once: a client reconnects with the token it has (an EventSource with the same URL,
 * a fetch client until it refreshes), so a reconnect storm brings back tokens the service has seen.
 */
function keptTokens(mint: (i: number) => string): (i: number) => string {
  const tokens = new Map<number, string>()
  return (i) => {
    let token = tokens.get(i)
    if (token === undefined) tokens.set(i, (token = mint(i)))
    return token
  }
}

function poolOptions(o: WorkerOpen): PoolOptions {
  const { secret, tenant, userPrefix, userOffset, path, anonymous, targeted, ...options } = o
  const sub = (i: number) => `${userPrefix}${userOffset + i}`
  if (targeted) {
    return {
      ...options,
      tokenFor: keptTokens((i) =>
        mintToken(
          secret,
          {
            sub: sub(i),
            tenant,
            roles: [roleName(roleOf(targeted, userOffset + i))],
            topics: [topicName(topicOf(targeted, userOffset + i))],
          },
          TOKEN_TTL_S,
        ),
      ),
      pathFor: (i) => `/v1/stream?topics=${encodeURIComponent(topicName(topicOf(targeted, userOffset + i)))}`,
      addressedTo: (i) => addressedTo(targeted, userOffset + i),
    }
  }
  return {
    ...options,
    tokenFor: anonymous ? () => undefined : keptTokens((i) => mintToken(secret, { sub: sub(i), tenant }, TOKEN_TTL_S)),
    pathFor: path === undefined ? undefined : () => path,
  }
}

process.on('message', async (m: WorkerRequest) => {
  const reply = (value: unknown) => process.send?.({ seq: m.seq, value })
  switch (m.cmd) {
    case 'open': {
      pool = new StreamPool(poolOptions(m.options))
      reply(await pool.open())
      break
    }
    case 'disconnect':
      reply(pool?.disconnect())
      break
    case 'reconnect':
      reply(await pool?.reconnect(m.concurrency))
      break
    case 'progress':
      reply(pool?.progress())
      break
    case 'report':
      reply(pool?.report(m.newRound))
      break
    case 'close':
      pool?.close()
      reply(true)
      // Let the reply leave before exiting.
      setImmediate(() => process.exit(0))
      break
  }
})

// Orphaned (the parent died): leave too, releasing the sockets.
process.on('disconnect', () => process.exit(0))
