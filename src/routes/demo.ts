import type { FastifyInstance } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { mintToken } from '../tokens.ts'

/** Demo tokens live an hour; the page asks for a new one when it expires. */
const DEMO_TOKEN_TTL_S = 3600

const signInBody = z.object({
  sub: z.string().trim().min(1).max(100),
  tenant: z.string().trim().min(1).max(100).default('demo'),
  roles: z.array(z.string().trim().min(1).max(100)).max(20).default([]),
  topics: z.array(z.string().trim().min(1).max(200)).max(20).default([]),
  directorOf: z
    .array(z.string().trim().min(1).max(100))
    .max(20)
    .default([])
    .describe(
      'Other tenants the user is a director of: the token’s `tenants` claim, with the role `director` in each.',
    ),
  admin: z.boolean().default(false).describe('Adds the `admin` scope (the /admin page signs in with it).'),
})

export interface DemoOptions {
  /**
   * The secret the service generated for itself, or undefined. Sign-in exists only then: with JWT_SECRET or
   * JWT_PUBLIC_KEY configured, tokens come from the application and this route answers 404.
   */
  generatedSecret: string | undefined
}

/** The demo page's sign-in: mints a token for any user, exactly as `herald token` does. Development only. */
export async function demoRoutes(fastify: FastifyInstance, options: DemoOptions) {
  const app = fastify.withTypeProvider<ZodTypeProvider>()
  const secret = options.generatedSecret

  app.get(
    '/demo/config',
    { schema: { summary: 'Whether the demo page may sign in', tags: ['demo'], security: [] } },
    async () => ({ signIn: Boolean(secret) }),
  )

  if (!secret) return
  app.post(
    '/demo/token',
    {
      schema: {
        summary: 'Mint a token for a demo user (development only)',
        tags: ['demo'],
        security: [],
        body: signInBody,
      },
      config: { rateLimit: app.limits.perIp },
    },
    async (request) => {
      const { sub, tenant, roles, topics, admin, directorOf } = request.body
      const others = directorOf.filter((t) => t !== tenant)
      // Every tenant the user works in: the current one with its `roles`, the others as their director.
      const tenants = others.length
        ? Object.fromEntries([[tenant, roles], ...others.map((t) => [t, ['director']])])
        : undefined
      const token = mintToken(
        secret,
        {
          sub,
          tenant,
          roles,
          topics,
          ...(tenants && { tenants }),
          scope: `events:publish events:broadcast${admin ? ' admin' : ''}`,
        },
        DEMO_TOKEN_TTL_S,
      )
      return { token, expiresIn: DEMO_TOKEN_TTL_S }
    },
  )
}
