import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { EventTypeService } from './service.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** The tenants' event types: registration, and what they do to a publish (resolve). */
    eventTypes: EventTypeService
  }
}

/** The event types (service.ts). Nothing runs in the background: types are read per publish, through a cache. */
export const eventTypesPlugin = fp(
  async (app: FastifyInstance, options: { strictTypes: boolean }) => {
    app.decorate('eventTypes', new EventTypeService(app.database, options.strictTypes))
  },
  { name: 'event-types', dependencies: ['database'] },
)
