import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { Priority } from './events/model.ts'
import type { CloseReason } from './stream/connection.ts'

/** A publish is one transaction: 1-100 ms when healthy; the upper buckets show a struggling database. */
const PUBLISH_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

// Label values known in advance start at 0, so rate() sees the first increase and dashboards show every series.
const PRIORITIES: readonly Priority[] = ['low', 'normal', 'high', 'urgent']
const CLOSE_REASONS: readonly CloseReason[] = ['client', 'evicted', 'expired', 'slow', 'shutdown', 'error']

/** What became of one claimed push: `retry` is due again later, `failed` gave up for good. */
export type PushOutcome = 'sent' | 'retry' | 'failed' | 'skipped'

export interface MetricsSources {
  /** Pushes waiting in the outbox, across instances: read on each scrape. */
  countPendingPushes: () => Promise<number>
  /** Bytes written to this instance's open streams that their sockets have not taken yet: read on each scrape. */
  bufferedStreamBytes: () => number
}

export type Metrics = ReturnType<typeof createMetrics>

/**
 * The service's Prometheus metrics, in a registry of their own: each app instance counts for itself (tests
 * build several in one process), and nothing lands in prom-client's global registry. Counts are per instance;
 * Prometheus sums them across instances.
 */
export function createMetrics(sources: MetricsSources) {
  const registry = new Registry()
  const registers = [registry]
  // Node's process metrics under their usual names (nodejs_eventloop_lag_seconds, process_cpu_seconds_total, …),
  // so stock Node.js dashboards and alerts work unchanged.
  collectDefaultMetrics({ register: registry })

  const openStreams = new Gauge({
    name: 'herald_open_streams',
    help: 'SSE streams open on this instance.',
    registers,
  })
  const streamsOpened = new Counter({
    name: 'herald_streams_opened_total',
    help: 'SSE streams opened.',
    registers,
  })
  const streamsClosed = new Counter({
    name: 'herald_streams_closed_total',
    help: 'SSE streams closed, by reason: client (it left), evicted (over the per-user limit), expired (token), slow (did not read), shutdown, error.',
    labelNames: ['reason'] as const,
    registers,
  })
  for (const reason of CLOSE_REASONS) streamsClosed.inc({ reason }, 0)
  const eventsPublished = new Counter({
    name: 'herald_events_published_total',
    help: 'Events published (idempotent repeats not counted), by priority.',
    labelNames: ['priority'] as const,
    registers,
  })
  for (const priority of PRIORITIES) eventsPublished.inc({ priority }, 0)
  const deliveries = new Counter({
    name: 'herald_stream_deliveries_total',
    help: 'Event frames written live to open streams: one per stream an event reached.',
    registers,
  })
  const replayedEvents = new Counter({
    name: 'herald_replayed_events_total',
    help: 'Events written to streams from the log: resumes after Last-Event-ID and slow readers catching up.',
    registers,
  })
  const resets = new Counter({
    name: 'herald_stream_resets_total',
    help: 'Resumes that got a reset event: the Last-Event-ID was no longer (or never) in the log.',
    registers,
  })
  const pushAttempts = new Counter({
    name: 'herald_push_attempts_total',
    help: 'Claimed pushes by outcome (sent, retry, failed, skipped) and the push service status code ("none" without an answer).',
    labelNames: ['outcome', 'status'] as const,
    registers,
  })
  new Gauge({
    name: 'herald_pending_pushes',
    help: 'Pushes waiting in the outbox (all instances): due, held back or waiting to retry. NaN when the database did not answer.',
    registers,
    // Every worker reads the same outbox: one answer, not their sum (workers.ts gathers the workers' metrics).
    aggregator: 'max',
    async collect() {
      // NaN rather than a stale or zero count: the scrape still reports everything else while the database is down.
      this.set(await sources.countPendingPushes().catch(() => Number.NaN))
    },
  })
  new Gauge({
    name: 'herald_stream_buffered_bytes',
    help: 'Bytes written to open streams on this instance and not yet taken by their sockets: what slow readers cost.',
    registers,
    collect() {
      this.set(sources.bufferedStreamBytes())
    },
  })
  const requestSeconds = new Histogram({
    name: 'herald_http_request_duration_seconds',
    help: 'Time from a request read to its answer sent, in seconds, by method, route (its pattern) and status code; streams are not counted (they last).',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: PUBLISH_SECONDS_BUCKETS,
    registers,
  })
  const publishSeconds = new Histogram({
    name: 'herald_publish_duration_seconds',
    help: 'Time to store a publish request (single or batch) and its planned pushes, in seconds.',
    buckets: PUBLISH_SECONDS_BUCKETS,
    registers,
  })

  return {
    registry,
    requestSeconds,
    openStreams,
    streamsOpened,
    streamsClosed,
    eventsPublished,
    deliveries,
    replayedEvents,
    resets,
    pushAttempts,
    publishSeconds,
  }
}
