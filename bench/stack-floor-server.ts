// The floor of the service's stack: the least an SSE server built on the same libraries holds once it idles, and
// spends to open a stream.
// Fastify 5 with @fastify/jwt and the zod type provider, drizzle-orm on postgres.js (DATABASE_URL) or PGlite
// (DATA_DIR), better-sse, prom-client's default metrics: one table, one authenticated stream route that replays
// from Last-Event-ID, one publish route that inserts and writes to the tenant's streams. No push, no outbox, no
// preferences, no OpenAPI, no rate limits, no demo. PGlite is opened as the service opens it. Built to JavaScript
// before it runs (bench/processes.ts, builtReference), as the service is.

import type { ServerResponse } from 'node:http'
import fastifyJwt from '@fastify/jwt'
import { createSession } from 'better-sse'
import { and, asc, eq, gt } from 'drizzle-orm'
import { bigserial, jsonb, pgTable, text } from 'drizzle-orm/pg-core'
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite'
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js'
import Fastify from 'fastify'
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod'
import postgres from 'postgres'
import { collectDefaultMetrics } from 'prom-client'
import { z } from 'zod'
import { createPglite } from '../src/db/pglite-setup.ts'

const events = pgTable('stack_floor_events', {
  id: bigserial('id', { mode: 'number' }).primaryKey(),
  tenant: text('tenant').notNull(),
  type: text('type').notNull(),
  title: text('title').notNull(),
  data: jsonb('data'),
})
const CREATE = `create table if not exists stack_floor_events
  (id bigserial primary key, tenant text not null, type text not null, title text not null, data jsonb)`

const secret = process.env.JWT_SECRET
if (!secret) throw new Error('JWT_SECRET is required')
const url = process.env.DATABASE_URL
const dataDir = process.env.DATA_DIR
if (!url && !dataDir) throw new Error('DATABASE_URL or DATA_DIR is required')
const db = url
  ? drizzlePostgres(postgres(url, { max: 4, onnotice: () => {} }))
  : drizzlePglite(await createPglite(dataDir as string))
await db.execute(CREATE)
collectDefaultMetrics()

/** Each tenant's open streams. better-sse opens a stream (head, retry, keep-alive); frames are written as the service writes them. */
const streams = new Map<string, Set<ServerResponse>>()
const frameOf = (row: typeof events.$inferSelect) =>
  `id: ${row.id}\nevent: notification\ndata: ${JSON.stringify(row)}\n\n`

const app = Fastify({ logger: false }).withTypeProvider<ZodTypeProvider>()
app.setValidatorCompiler(validatorCompiler)
app.setSerializerCompiler(serializerCompiler)
await app.register(fastifyJwt, { secret })
app.addHook('onRequest', (req) => req.jwtVerify())

app.get(
  '/v1/stream',
  { schema: { headers: z.object({ 'last-event-id': z.string().regex(/^\d+$/).optional() }) } },
  async (req, reply) => {
    const { tenant } = req.user as { tenant: string }
    const lastEventId = req.headers['last-event-id']
    // A stream that missed nothing reads nothing.
    const missed = lastEventId
      ? await db
          .select()
          .from(events)
          .where(and(eq(events.tenant, tenant), gt(events.id, Number(lastEventId))))
          .orderBy(asc(events.id))
          .limit(100)
      : []
    reply.hijack()
    const session = await createSession(req.raw, reply.raw, { keepAlive: 15_000 })
    for (const row of missed) reply.raw.write(frameOf(row))
    let set = streams.get(tenant)
    if (!set) streams.set(tenant, (set = new Set()))
    set.add(reply.raw)
    session.once('disconnected', () => set.delete(reply.raw))
  },
)

const published = z.object({
  type: z.string().min(1),
  title: z.string().min(1),
  data: z.unknown().optional(),
  to: z.object({ tenant: z.literal(true) }),
})
app.post('/v1/events', { schema: { body: published } }, async (req, reply) => {
  const { tenant } = req.user as { tenant: string }
  const [row] = await db
    .insert(events)
    .values({ tenant, type: req.body.type, title: req.body.title, data: req.body.data ?? null })
    .returning()
  const frame = frameOf(row)
  for (const res of streams.get(tenant) ?? []) res.write(frame)
  return reply.code(201).send({ id: String(row.id) })
})

process.on('SIGTERM', () => void app.close().then(() => process.exit(0)))
const address = await app.listen({ port: Number(process.env.PORT ?? 0), host: process.env.HOST ?? '127.0.0.1' })
console.log(`listening on ${address}`)
