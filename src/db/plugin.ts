import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Database } from './client.ts'
import { ping } from './migrate.ts'

declare module 'fastify' {
  interface FastifyInstance {
    database: Database
    /** Whether the database answers now, and which kind it is (`/ready`). */
    checkDatabase: () => Promise<{ reachable: boolean; kind: Database['kind'] }>
  }
}

/** The open, migrated database the app was built on: the app owns it and closes it last. */
export const databasePlugin = fp(
  async (app: FastifyInstance, { database }: { database: Database }) => {
    app.decorate('database', database)
    app.decorate('checkDatabase', async () => ({ reachable: await ping(database), kind: database.kind }))
    app.addHook('onClose', () => database.close())
  },
  { name: 'database' },
)
