import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { DirectoryService } from './directory.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The user directory: who exists in each tenant, kept by the tenants' backends. */
    directory: DirectoryService
  }
}

/** The user directory (directory.ts). Nothing runs in the background: it only answers requests. */
export const directoryPlugin = fp(
  async (app: FastifyInstance) => {
    app.decorate('directory', new DirectoryService(app.database))
  },
  { name: 'directory', dependencies: ['database'] },
)
