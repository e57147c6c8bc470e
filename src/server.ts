import cluster from 'node:cluster'
import { announceListening, runPrimary, workerListenOptions } from './cluster/workers.ts'
import { type Config, ConfigError, loadConfig, withDevSecret } from './config.ts'
import type { Database } from './db/client.ts'
import { loadDrizzleWithoutLookups } from './db/drizzle-modules.ts'

// Before anything imports drizzle-orm: main() loads the rest of the service afterwards (see drizzle-modules.ts).
loadDrizzleWithoutLookups()

/** SIGTERM to exit: streams end, pending work is handed back, the process leaves within this. */
const SHUTDOWN_DEADLINE_MS = 10_000

/**
 * Where to listen when HOST is unset. On its own generated secret the service signs in anyone as anyone on the
 * demo page (routes/demo.ts): only this machine may reach it then. With a configured key, every interface, as a
 * container or a host behind a proxy expects.
 */
const defaultHost = (config: Config) => (config.auth.jwtSecretGenerated ? '127.0.0.1' : '0.0.0.0')

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
    config = withDevSecret(loadConfig(process.env))
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(78) // EX_CONFIG
    }
    throw err
  }

  const host = config.http.host ?? defaultHost(config)
  if (config.workers > 1 && cluster.isPrimary) {
    // Every core: the workers are the instances; this process only keeps them running (cluster/workers.ts).
    await runPrimary({
      workers: config.workers,
      port: config.http.port,
      host,
      shutdownDeadlineMs: SHUTDOWN_DEADLINE_MS,
    })
    return
  }

  const { openDatabase, pgliteDirIn, waitUntilReachable } = await import('./db/client.ts')
  // The rest of the service loads while the database opens (on PGlite's first start, a child process makes it).
  const loading = Promise.all([import('./db/migrate.ts'), import('./app.ts')])
  loading.catch(() => {}) // awaited once the database is open; not an unhandled rejection meanwhile
  let database: Database
  try {
    database = await openDatabase({
      url: config.database.url,
      pgliteDir: pgliteDirIn(config.database.dataDir),
      poolSize: config.database.poolSize,
      role: 'the server',
    })
    await waitUntilReachable(database, config.database.url, config.database.connectTimeoutS, (line) =>
      console.error(line),
    )
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
    log: { level: config.log.level },
    demoSignIn: config.auth.jwtSecretGenerated,
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
  // A worker stops when the primary says so (SIGTERM); Ctrl-C reaches the whole process group, primary included.
  process.on('SIGINT', () => (cluster.isWorker ? undefined : shutdown('SIGINT')))

  await app.listen({ port: config.http.port, host, ...workerListenOptions(config.http.port) })
  const url = localUrl(host, (app.server.address() as { port: number }).port)
  const storage =
    database.kind === 'pglite' ? `embedded PGlite in ${pgliteDirIn(config.database.dataDir)}` : 'PostgreSQL'
  const workers = cluster.isWorker ? `; ${config.workers} workers` : ''
  const lines = [`\nherald is listening on ${url} (${reach(host)}; ${storage}${workers})`]
  if (config.auth.jwtSecretGenerated) {
    lines.push(
      'Try it: mint a token, open a stream, publish to yourself from another terminal:',
      '  TOKEN=$(npm run -s cli -- token --sub alice --tenant demo --scope "events:publish events:broadcast")',
      `  curl -N -H "Authorization: Bearer $TOKEN" ${url}/v1/stream`,
      `  npm run -s cli -- publish --server ${url} --token $TOKEN --to-user alice --title "Hello"\n`,
    )
  }
  // With workers, the primary prints it once all of them listen.
  if (cluster.isWorker) announceListening(lines)
  else console.log(lines.join('\n'))
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
