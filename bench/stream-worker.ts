// A load-generator process: holds a StreamPool and answers the parent's requests over IPC.
// Separate processes because one process may hold at most ~20,000 open files here.
import { mintToken } from '../src/tokens.ts'
import { type PoolOptions, StreamPool } from './stream-pool.ts'

/** What the parent sends to open this worker's streams: users `${userPrefix}${userOffset + i}` of one tenant. */
export interface WorkerOpen extends Omit<PoolOptions, 'tokenFor'> {
  secret: string
  tenant: string
  userPrefix: string
  userOffset: number
}

export type WorkerRequest =
  | { seq: number; cmd: 'open'; options: WorkerOpen }
  | { seq: number; cmd: 'report'; newRound?: boolean }
  | { seq: number; cmd: 'progress' | 'close' }

/** Tokens outlive any scenario by far. */
const TOKEN_TTL_S = 3600

let pool: StreamPool | undefined

process.on('message', async (m: WorkerRequest) => {
  const reply = (value: unknown) => process.send?.({ seq: m.seq, value })
  switch (m.cmd) {
    case 'open': {
      const { secret, tenant, userPrefix, userOffset, ...options } = m.options
      pool = new StreamPool({
        ...options,
        tokenFor: (i) => mintToken(secret, { sub: `${userPrefix}${userOffset + i}`, tenant }, TOKEN_TTL_S),
      })
      reply(await pool.open())
      break
    }
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
