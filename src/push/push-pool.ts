import os from 'node:os'
import { Piscina } from 'piscina'
import { ENTRY_FLAGS, PUSH_WORKER_FILE } from '../package-files.ts'
import type { PushAnswer, PushRequest, PushWorkerData } from './push-worker.ts'

/**
 * Push threads: the machine's other cores, at least one. A push costs about 0.2 ms of CPU to encrypt and as
 * much again or more to send over TLS (a new connection several times that); a broadcast to thousands of
 * devices done on the main thread would hold every request and stream behind it for seconds. The main
 * thread keeps a core of its own (with PGlite, the database runs on it too).
 */
export const PUSH_THREADS = Math.max(1, os.availableParallelism() - 1)

export interface PushPoolOptions {
  /** Pushes the dispatcher may have in flight at once (PUSH_CONCURRENCY): a thread never queues one of them. */
  concurrency: number
  /** CA certificates to trust instead of the system's (tests' own push services). */
  ca?: PushWorkerData['ca']
}

/**
 * Sends pushes (encryption and HTTPS) from worker threads, through piscina. Each thread runs many pushes at
 * once: most of a push is waiting for the push service. The threads start with the first push, not with
 * the service (most instances in a test suite never push), and stay until close().
 */
export class PushPool {
  private pool: Piscina<PushRequest, PushAnswer> | undefined
  private closed = false

  constructor(private readonly options: PushPoolOptions) {}

  send(request: PushRequest): Promise<PushAnswer> {
    if (this.closed) return Promise.reject(new Error('the push threads are closed'))
    this.pool ??= this.start()
    return this.pool.run(request)
  }

  /** Ends the threads; pushes still in flight are rejected. */
  async close(): Promise<void> {
    this.closed = true
    await this.pool?.destroy()
  }

  private start() {
    return new Piscina<PushRequest, PushAnswer>({
      filename: PUSH_WORKER_FILE,
      name: 'sendPushRequest',
      // All threads at once: piscina adds one only when the others are full, and these never are.
      minThreads: PUSH_THREADS,
      maxThreads: PUSH_THREADS,
      concurrentTasksPerWorker: this.options.concurrency,
      // A thread waiting with Atomics.wait would stop its open connections' I/O and timers.
      atomics: 'disabled',
      workerData: { ca: this.options.ca } satisfies PushWorkerData,
      // From source, tsx's loader; built, the process's own flags (a thread inherits them when given none).
      execArgv: ENTRY_FLAGS.length > 0 ? [...ENTRY_FLAGS] : undefined,
    })
  }
}
