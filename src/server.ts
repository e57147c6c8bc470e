import { type Config, ConfigError, loadConfig } from './config.ts'
import type { Database } from './db/client.ts'
import { loadDrizzleWithoutLookups } from './db/drizzle-modules.ts'
import { loadOrCreateDevSecret } from './tokens.ts'

// Before anything imports drizzle-orm: main() loads the rest of the service afterwards (see drizzle-modules.ts).
loadDrizzleWithoutLookups()

/** SIGTERM to exit: streams end, pending work is handed back, the process leaves within this. */
const SHUTDOWN_DEADLINE_MS = 10_000

/**
 * Where to listen when HOST is unset. On its own generated secret the service signs in anyone as anyone on the
 * demo page (routes/demo.ts): only this machine may reach it then. With a configured key, every interface, as a
 * container or a host behind a proxy expects.
 */
const defaultHost = (config: Config) => (config.jwtSecretGenerated ? '127.0.0.1' : '0.0.0.0')

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/
const EVERY_INTERFACE = new Set(['0.0.0.0', '::'])

/** The service's URL from this machine. */
const localUrl = (host: string, port: number) =>
  `http://${EVERY_INTERFACE.has(host) ? 'localhost' : host.includes(':') ? `[${host}]` : host}:${port}`

/** Who can reach the service, for the start-up line. */
function reach(host: string): string {
  if (EVERY_INTERFACE.has(host)) return `every interface: HOST=${host}`
  if (LOOPBACK.test(host)) return 'only this machine: set HOST=0.0.0.0 to listen on every interface'
  return `HOST=${host}`
}

/** Reads the environment (the only place that does), opens the database, listens, and shuts down cleanly. */
async function main() {
  let config: Config
  try {
    const parsed = loadConfig(process.env)
    const generated = !parsed.JWT_SECRET && !parsed.JWT_PUBLIC_KEY
    config = {
      ...parsed,
      JWT_SECRET: generated ? loadOrCreateDevSecret(parsed.DATA_DIR) : parsed.JWT_SECRET,
      jwtSecretGenerated: generated,
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(78) // EX_CONFIG
    }
    throw err
  }

  const { openDatabase, pgliteDirIn, waitUntilReachable } = await import('./db/client.ts')
  // The rest of the service loads while the database opens (on PGlite's first start, a child process makes it).
  const loading = Promise.all([import('./db/migrate.ts'), import('./app.ts')])
  loading.catch(() => {}) // awaited once the database is open; not an unhandled rejection meanwhile
  let database: Database
  try {
    database = await openDatabase({
      url: config.DATABASE_URL,
      pgliteDir: pgliteDirIn(config.DATA_DIR),
      poolSize: config.DB_POOL_SIZE,
      role: 'the server',
    })
    await waitUntilReachable(database, config.DATABASE_URL, config.DB_CONNECT_TIMEOUT_S, (line) => console.error(line))
  } catch (err) {
    // The data folder is another process's, or PostgreSQL never answered: the environment needs fixing.
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(78) // EX_CONFIG
    }
    throw err
  }
  const [{ runMigrations }, { buildApp }] = await loading
  await runMigrations(database)
  const app = await buildApp(config, database, {
    log: { level: config.LOG_LEVEL },
    demoSignIn: config.jwtSecretGenerated,
  })

  let closing = false
  const shutdown = (signal: string) => {
    if (closing) return
    closing = true
    app.log.info({ signal }, 'shutting down')
    const deadline = setTimeout(() => {
      app.log.error('shutdown took too long; exiting anyway')
      process.exit(1)
    }, SHUTDOWN_DEADLINE_MS)
    deadline.unref()
    app.close().then(
      () => process.exit(0),
      (err) => {
        app.log.error({ err }, 'error during shutdown')
        process.exit(1)
      },
    )
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))

  const host = config.HOST ?? defaultHost(config)
  await app.listen({ port: config.PORT, host })
  const url = localUrl(host, (app.server.address() as { port: number }).port)
  const storage = database.kind === 'pglite' ? `embedded PGlite in ${pgliteDirIn(config.DATA_DIR)}` : 'PostgreSQL'
  const lines = [`\nherald is listening on ${url} (${reach(host)}; ${storage})`]
  if (config.jwtSecretGenerated) {
    lines.push(
      'Try it: mint a token, open a stream, publish to yourself from another terminal:',
      '  TOKEN=$(npm run -s cli -- token --sub alice --tenant demo --scope "events:publish events:broadcast")',
      `  curl -N -H "Authorization: Bearer $TOKEN" ${url}/v1/stream`,
      `  npm run -s cli -- publish --server ${url} --token $TOKEN --to-user alice --title "Hello"\n`,
    )
  }
  console.log(lines.join('\n'))
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
