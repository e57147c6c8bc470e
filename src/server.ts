import { buildApp } from './app.ts'
import { type Config, ConfigError, loadConfig } from './config.ts'
import { openDatabase, pgliteDirIn } from './db/client.ts'
import { runMigrations } from './db/migrate.ts'
import { loadOrCreateDevSecret } from './tokens.ts'

/** SIGTERM to exit: streams end, pending work is handed back, the process leaves within this. */
const SHUTDOWN_DEADLINE_MS = 10_000

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

  const database = await openDatabase({
    url: config.DATABASE_URL,
    pgliteDir: pgliteDirIn(config.DATA_DIR),
    poolSize: config.DB_POOL_SIZE,
  })
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

  await app.listen({ port: config.PORT, host: config.HOST })
  const shown = config.HOST === '0.0.0.0' || config.HOST === '::' ? 'localhost' : config.HOST
  const url = `http://${shown}:${(app.server.address() as { port: number }).port}`
  const storage = database.kind === 'pglite' ? `embedded PGlite in ${pgliteDirIn(config.DATA_DIR)}` : 'PostgreSQL'
  const lines = [`\nherald is listening on ${url} (${storage})`]
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
