import cluster, { type Worker } from 'node:cluster'
import net from 'node:net'
import { AggregatorRegistry, type Registry } from 'prom-client'

/**
 * WORKERS > 1: the service runs as one primary process and that many workers (node:cluster). Each worker is a
 * whole instance (its own log tail, streams, push and webhook dispatch over the shared outboxes), as separate
 * instances on one PostgreSQL already are, listening on the one port (workerListenOptions); the primary restarts a
 * worker that dies, passes SIGTERM on for a graceful drain, and gathers every worker's metrics for /metrics.
 */

/** A worker tells the primary it listens (the start-up line is printed once, by the primary). */
interface ListeningMessage {
  type: 'herald:listening'
  lines: string[]
}

/** A worker asks the primary for the whole service's metrics (one worker answers each scrape). */
interface MetricsRequest {
  type: 'herald:metrics'
  requestId: number
}

interface MetricsAnswer {
  type: 'herald:metrics-answer'
  requestId: number
  text?: string
  error?: string
}

/** Restarts within this window count as a crash loop: each waits longer, up to MAX_RESTART_DELAY_MS. */
const CRASH_WINDOW_MS = 60_000
const MAX_RESTART_DELAY_MS = 30_000

export interface PrimaryOptions {
  workers: number
  /** Where the workers listen: the primary makes sure nothing else does first (assertPortFree). */
  port: number
  host: string
  /** How long the workers have to drain after SIGTERM before the primary ends them. */
  shutdownDeadlineMs: number
}

/**
 * Runs the primary: forks the workers, keeps them running, and stops them on SIGTERM or SIGINT. Rejects when the
 * port is taken, before any worker starts.
 */
export async function runPrimary({ workers, port, host, shutdownDeadlineMs }: PrimaryOptions): Promise<void> {
  if (workersListenApart(port)) await assertPortFree(port, host)
  const aggregator = new AggregatorRegistry()
  let stopping = false
  let announced = false
  const listening = new Set<number>()
  /** Recent deaths of workers (ms), for the restart delay. */
  let deaths: number[] = []

  const fork = () => {
    const worker = cluster.fork()
    worker.on('message', (message: ListeningMessage | MetricsRequest) => onMessage(worker, message))
  }

  const onMessage = (worker: Worker, message: ListeningMessage | MetricsRequest) => {
    if (message?.type === 'herald:listening') {
      listening.add(worker.id)
      if (!announced && listening.size === workers) {
        announced = true
        console.log(message.lines.join('\n'))
      }
    } else if (message?.type === 'herald:metrics') {
      const answer = (fields: Partial<MetricsAnswer>) =>
        worker.isConnected() && worker.send({ type: 'herald:metrics-answer', requestId: message.requestId, ...fields })
      aggregator.clusterMetrics().then(
        (text) => answer({ text }),
        (err: Error) => answer({ error: err.message }),
      )
    }
  }

  let exitCode = 0
  cluster.on('exit', (worker, code, signal) => {
    listening.delete(worker.id)
    if (stopping) {
      // A worker still starting has no handler yet and ends by the signal itself: it held nothing to drain.
      if (code !== 0 && signal !== 'SIGTERM') exitCode = 1
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(exitCode)
      return
    }
    const now = Date.now()
    deaths = [...deaths.filter((t) => now - t < CRASH_WINDOW_MS), now]
    // The first death restarts at once; a worker dying again and again waits 1, 2, 4 ... 30 s.
    const delay = deaths.length <= 1 ? 0 : Math.min(MAX_RESTART_DELAY_MS, 1000 * 2 ** (deaths.length - 2))
    console.error(
      `herald: worker ${worker.process.pid} ended (${signal ?? `exit code ${code}`}); starting another${delay ? ` in ${delay / 1000} s` : ''}`,
    )
    // Not unref'd: with every worker dead, this timer is what keeps the primary running until the next one starts.
    setTimeout(() => {
      if (!stopping) fork()
    }, delay)
  })

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return
    stopping = true
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM')
    // Each worker has its own deadline; this one ends what is left of them.
    const deadline = setTimeout(() => {
      console.error(`herald: workers still running ${shutdownDeadlineMs} ms after ${signal}; ending them`)
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL')
      process.exit(1)
    }, shutdownDeadlineMs + 2_000)
    deadline.unref()
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0)
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))

  for (let i = 0; i < workers; i++) fork()
}

/**
 * True where each worker listens on the service's port with a socket of its own (SO_REUSEPORT, Linux) and the
 * kernel spreads new connections among them: the primary touches none. Otherwise node:cluster's default holds: the
 * primary accepts every connection and passes it to a worker over IPC, which costs the two processes about 0.2 ms
 * of CPU per connection (bench scenario 3: 0.60-0.64 ms per stream opened with two workers against 0.30-0.34 with
 * their own sockets), and makes the primary one process that every connection waits on. `PORT=0` (any free port)
 * keeps the default: only one socket shared by all can agree on which port that is.
 */
const workersListenApart = (port: number) => port !== 0 && process.platform === 'linux'

/** What a worker adds to its listen options (workersListenApart). */
export function workerListenOptions(port: number): { exclusive: true; reusePort: true } | Record<string, never> {
  return cluster.isWorker && workersListenApart(port) ? { exclusive: true, reusePort: true } : {}
}

/**
 * Fails (EADDRINUSE) when something listens on the port already. Sockets with SO_REUSEPORT share a port with any
 * other such socket of the same user: without this look, a second service started on the port by mistake would
 * quietly take a share of the connections instead of failing to start. Once the workers listen, a socket without
 * the option (this look, in a second service) cannot join them.
 */
async function assertPortFree(port: number, host: string): Promise<void> {
  const probe = net.createServer()
  await new Promise<void>((resolve, reject) => {
    probe.once('error', reject)
    probe.listen({ port, host }, resolve)
  })
  await new Promise<void>((resolve) => probe.close(() => resolve()))
}

/** True in a worker process of a WORKERS > 1 service. */
export const isWorker = () => cluster.isWorker

/** In a worker: tells the primary this worker listens, with the start-up line it would have printed. */
export function announceListening(lines: string[]): void {
  process.send?.({ type: 'herald:listening', lines } satisfies ListeningMessage)
}

let nextRequestId = 0

/**
 * In a worker: makes `registry` this worker's share of the service's metrics, and returns what /metrics serves:
 * every worker's metrics gathered by the primary (counters summed, per-process gauges by their aggregator).
 */
export function clusterMetrics(registry: Registry): () => Promise<string> {
  AggregatorRegistry.setRegistries([registry])
  // Constructing one is what makes prom-client answer the primary's requests in a worker.
  new AggregatorRegistry()
  const waiting = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void }>()
  process.on('message', (message: MetricsAnswer) => {
    if (message?.type !== 'herald:metrics-answer') return
    const request = waiting.get(message.requestId)
    waiting.delete(message.requestId)
    if (message.text !== undefined) request?.resolve(message.text)
    else request?.reject(new Error(message.error ?? 'no metrics from the primary'))
  })
  return () =>
    new Promise((resolve, reject) => {
      const requestId = nextRequestId++
      waiting.set(requestId, { resolve, reject })
      process.send?.({ type: 'herald:metrics', requestId } satisfies MetricsRequest)
    })
}
