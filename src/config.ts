import { availableParallelism } from 'node:os'
import { z } from 'zod'
import { loadOrCreateDevSecret } from './tokens.ts'

/** Heartbeat comment interval. 15 s keeps proxies with a 30-60 s idle timeout from cutting streams. */
export const DEFAULT_HEARTBEAT_MS = 15_000
/** Open streams per user before the oldest is closed: a few tabs and devices, not a leak. */
export const DEFAULT_MAX_CONNECTIONS_PER_USER = 10
/** Bytes a stream may have queued in the kernel and Node before we call it a slow reader and drop it. */
export const DEFAULT_STREAM_BUFFER_LIMIT_BYTES = 1024 * 1024
/** A stream that fell behind and has not drained its socket for this long is dropped (it resumes losslessly). */
export const DEFAULT_SLOW_READER_TIMEOUT_MS = 30_000
/** The window rate limits count in. */
export const DEFAULT_RATE_LIMIT_WINDOW_MS = 60_000
/** Publish requests per user per minute: a busy school office, not a runaway loop. */
export const DEFAULT_RATE_LIMIT_PUBLISH_PER_MIN = 600
/** Requests per IP per minute to the routes that need no token (VAPID key, renew, demo sign-in). */
export const DEFAULT_RATE_LIMIT_IP_PER_MIN = 120
/** Failed authentications per IP per minute: enough for a misconfigured client to show up, too few to guess tokens. */
export const DEFAULT_RATE_LIMIT_AUTH_FAILURES_PER_MIN = 30
/** Open streams per instance; past it new streams get 503 (a file-descriptor limit is the usual ceiling). */
export const DEFAULT_MAX_STREAMS = 50_000
/** Registration and renewal of push devices per user per minute: a few browsers, not a script. */
export const DEFAULT_RATE_LIMIT_PUSH_PER_MIN = 30
/** Test pushes per user per minute: each goes to every device of the user. */
export const DEFAULT_RATE_LIMIT_PUSH_TEST_PER_MIN = 5
/** Single acks and reads per user per minute: a service worker acks each push, a person reads quickly. */
export const DEFAULT_RATE_LIMIT_RECEIPTS_PER_MIN = 600
/** Bulk reads (`POST /v1/events/read`) per user per minute: "mark all read" is a button, not a loop. */
export const DEFAULT_RATE_LIMIT_BULK_READ_PER_MIN = 30
/** Push devices per user; registering one more drops the oldest. A family's phones and laptops, not a farm. */
export const DEFAULT_MAX_DEVICES_PER_USER = 20
/** A renew token (the service worker's credential for `pushsubscriptionchange`) lives this long after registration. */
export const DEFAULT_RENEW_TOKEN_TTL_DAYS = 30
/** Longest token lifetime accepted (`exp - iat`): a day, so a leaked token does not work for a month. */
export const DEFAULT_JWT_MAX_TTL_S = 86_400
/** PostgreSQL connections per instance: publishes coalesce, so a few carry many requests at once. */
export const DEFAULT_DB_POOL_SIZE = 20
/** At start, PostgreSQL has this long to become reachable (a database starting beside the service in compose). */
export const DEFAULT_DB_CONNECT_TIMEOUT_S = 60
/** Events are kept this long at most (each also has its own ttl). */
export const DEFAULT_RETENTION_DAYS = 30
/** Stream connections (the connection audit) are kept this long. */
export const DEFAULT_AUDIT_RETENTION_DAYS = 30
/** How often expired events are pruned. */
export const DEFAULT_PRUNE_INTERVAL_S = 600
/** Seconds between two nudges of one event: a reminder every ten minutes at most, not a siren. */
export const DEFAULT_NUDGE_MIN_INTERVAL_S = 600
/** 1 MiB: a batch of 1,000 events fits, an accidental upload does not. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024
/** Time a client has to send a whole request, headers and body (a body trickled in slowly holds a socket). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000
/** A safety net under the in-process wake-up: re-read the log this often even if nobody woke us. */
export const DEFAULT_LOG_POLL_MS = 1_000
/** Events kept in memory for replays (events/recent-log.ts): a minute of 150 publishes a second. */
export const DEFAULT_REPLAY_MEMORY_EVENTS = 10_000
/**
 * The browser vendors' push services, on port 443: Chrome and Opera (FCM, and the legacy GCM host), Firefox,
 * Safari, Edge. The only hosts pushes go to by default; no wildcard over all of googleapis.com.
 */
export const DEFAULT_PUSH_ENDPOINT_ALLOWLIST =
  'fcm.googleapis.com,android.googleapis.com,updates.push.services.mozilla.com,*.push.services.mozilla.com,*.push.apple.com,*.notify.windows.com'
/** Push services may contact this address; set your own in production. */
export const DEFAULT_VAPID_SUBJECT = 'mailto:webpush@localhost'
/** Seconds an open stream has to ack a `high` event before it is pushed anyway. */
export const DEFAULT_HIGH_ACK_TIMEOUT_S = 30
/** Attempts per (event, device) before a push counts as failed. */
export const DEFAULT_PUSH_MAX_ATTEMPTS = 8
/**
 * Pushes in flight per instance; one push service gets at most half. Enough to hide a push service's round
 * trip (20-100 ms to FCM: 100 in flight is 1,000-5,000 pushes/s, more than one core encrypts), few enough
 * not to exhaust sockets.
 */
export const DEFAULT_PUSH_CONCURRENCY = 200
/** First retry of a failed push after about this long; doubling each attempt (with jitter). */
export const DEFAULT_PUSH_RETRY_BASE_MS = 5_000
/** An instance that has not beaten its heartbeat for this long no longer counts its streams as present. */
export const DEFAULT_PRESENCE_TTL_S = 30
/** Webhook requests in flight per instance; one endpoint gets at most half. Endpoints are few and answer fast. */
export const DEFAULT_WEBHOOK_CONCURRENCY = 8
/** An endpoint has this long to answer a delivery (DNS and connecting included) before the attempt failed. */
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 10_000
/**
 * Attempts per delivery. With WEBHOOK_RETRY_BASE_MS doubling up to 6 h between attempts (full jitter), the last
 * comes about half a day to a day and a half after the first.
 */
export const DEFAULT_WEBHOOK_MAX_ATTEMPTS = 15
/** The first retry of a delivery comes within this long, the bound doubling per attempt (up to 6 h). */
export const DEFAULT_WEBHOOK_RETRY_BASE_MS = 30_000
/** An endpoint whose every delivery has failed for this long (a few days) is disabled until an admin enables it. */
export const DEFAULT_WEBHOOK_DISABLE_AFTER_H = 72
/** Sent and failed deliveries are kept this long for the deliveries listing. */
export const DEFAULT_WEBHOOK_RETENTION_DAYS = 30

const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max)
const optionalText = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v))

const base64url = (bytes: number, what: string) =>
  z
    .string()
    .refine(
      (v) => /^[A-Za-z0-9_-]+={0,2}$/.test(v) && Buffer.from(v, 'base64url').length === bytes,
      `must be ${what}, base64url`,
    )

/** One environment variable: how it parses, and what README's configuration table says of it. */
function variable<T extends z.ZodType>(schema: T, meaning: string, shownDefault?: string) {
  return { schema, meaning, shownDefault }
}

/**
 * Every variable the service reads, in the order README's configuration table lists them. The table is made
 * from this (`npm run config-table`), and test/readme.test.ts fails when README's copy differs.
 */
const VARIABLES = {
  PORT: variable(intFrom(0, 65535).default(3000), 'where it listens'),
  HOST: variable(optionalText, 'the interface to listen on', '`127.0.0.1` on the generated secret, else `0.0.0.0`'),
  NODE_ENV: variable(
    z.enum(['development', 'production', 'test']).default('development'),
    '`production` requires `JWT_SECRET` or `JWT_PUBLIC_KEY`, and turns `/docs` off unless `DOCS_ENABLED=true`',
  ),
  DATABASE_URL: variable(
    optionalText.pipe(
      z
        .string()
        .regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://')
        .optional(),
    ),
    'PostgreSQL connection string; unset means embedded PGlite in `DATA_DIR`',
  ),
  WORKERS: variable(
    z.union([z.literal('auto'), intFrom(1, 256)]).default('auto'),
    'instances run as worker processes behind the one port (node:cluster); `auto`: one per available core with `DATABASE_URL`, 1 on PGlite (one process)',
  ),
  DB_POOL_SIZE: variable(intFrom(1, 500).default(DEFAULT_DB_POOL_SIZE), 'PostgreSQL connections per instance'),
  DB_CONNECT_TIMEOUT_S: variable(
    intFrom(0, 3_600).default(DEFAULT_DB_CONNECT_TIMEOUT_S),
    'at start, how long to wait for PostgreSQL to answer before exiting with 78',
  ),
  DATA_DIR: variable(
    z.string().min(1).default('./data'),
    "PGlite's files (locked by the process using them) and the generated development secret",
  ),
  JWT_SECRET: variable(
    optionalText.pipe(z.string().min(32, 'must be at least 32 characters (use: openssl rand -base64 48)').optional()),
    'HS256 secret (at least 32 characters). Unset outside production: generated and kept in `DATA_DIR`',
  ),
  JWT_PUBLIC_KEY: variable(
    optionalText.pipe(
      z
        .string()
        .includes('BEGIN PUBLIC KEY', { message: 'must be a PEM public key (-----BEGIN PUBLIC KEY-----)' })
        .optional(),
    ),
    'PEM public key for RS256 or ES256 tokens, instead of `JWT_SECRET`',
  ),
  JWT_MAX_TTL_S: variable(
    intFrom(60, 31_536_000).default(DEFAULT_JWT_MAX_TTL_S),
    'longest token lifetime accepted (`exp - iat`); tokens must have `exp`',
  ),
  TRUST_PROXY: variable(
    optionalText.pipe(
      z
        .string()
        .regex(
          /^(true|false|\d{1,2}|[0-9a-fA-F:./]+(\s*,\s*[0-9a-fA-F:./]+)*)$/,
          'must be true, false, a number of hops, or comma-separated addresses/CIDRs (127.0.0.1,10.0.0.0/8)',
        )
        .optional(),
    ),
    "proxies whose `X-Forwarded-For` gives the client's address: `true`, a hop count, or addresses/CIDRs (`127.0.0.1,10.0.0.0/8`)",
  ),
  CORS_ORIGINS: variable(
    optionalText,
    'comma-separated origins (or `*`) allowed to call the API and open streams from a browser',
  ),
  DOCS_ENABLED: variable(
    optionalText.pipe(z.enum(['true', 'false']).optional()).transform((v) => v && v === 'true'),
    'serve the OpenAPI document at `/docs`',
    '`true`, `false` in production',
  ),
  METRICS_TOKEN: variable(
    optionalText,
    'when set, `GET /metrics` needs `Authorization: Bearer <METRICS_TOKEN>` (401 otherwise); unset, it is open to anyone who can reach the port',
  ),
  LOG_LEVEL: variable(
    z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    'pino level: `fatal` `error` `warn` `info` `debug` `trace` `silent`',
  ),
  HEARTBEAT_MS: variable(
    intFrom(1_000, 300_000).default(DEFAULT_HEARTBEAT_MS),
    'interval of the `: ping` comment on streams',
  ),
  MAX_CONNECTIONS_PER_USER: variable(
    intFrom(1, 1_000).default(DEFAULT_MAX_CONNECTIONS_PER_USER),
    'open streams per user, across instances; one more closes the oldest (`evicted`)',
  ),
  MAX_STREAMS: variable(
    intFrom(1, 10_000_000).default(DEFAULT_MAX_STREAMS),
    'open streams per instance; past it a new stream gets 503 with `Retry-After`',
  ),
  STREAM_BUFFER_LIMIT_BYTES: variable(
    intFrom(16 * 1024, 256 * 1024 * 1024).default(DEFAULT_STREAM_BUFFER_LIMIT_BYTES),
    'unsent bytes a stream may hold; past it the stream stops taking live events and catches up from the log once its socket drains (memory stays bounded, nothing is lost)',
  ),
  SLOW_READER_TIMEOUT_MS: variable(
    intFrom(100, 600_000).default(DEFAULT_SLOW_READER_TIMEOUT_MS),
    'a stream that fell behind and does not drain its socket for this long is dropped',
  ),
  BODY_LIMIT: variable(
    intFrom(1024, 100 * 1024 * 1024).default(DEFAULT_BODY_LIMIT),
    'largest request body, bytes; larger gets 413',
  ),
  REQUEST_TIMEOUT_MS: variable(
    intFrom(1_000, 600_000).default(DEFAULT_REQUEST_TIMEOUT_MS),
    'time a client has to send a whole request (headers and body); a slower one gets 408 and is disconnected. Open streams are not affected',
  ),
  RATE_LIMIT_WINDOW_MS: variable(
    intFrom(100, 3_600_000).default(DEFAULT_RATE_LIMIT_WINDOW_MS),
    'the window the rate limits count in',
  ),
  RATE_LIMIT_PUBLISH_PER_MIN: variable(
    intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_PUBLISH_PER_MIN),
    'publish requests (single or batch) per user per window',
  ),
  RATE_LIMIT_RECEIPTS_PER_MIN: variable(
    intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_RECEIPTS_PER_MIN),
    'acks of single events per user per window, and as many reads (each route counts its own; ackTokens count for their user)',
  ),
  RATE_LIMIT_BULK_READ_PER_MIN: variable(
    intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_BULK_READ_PER_MIN),
    '`POST /v1/events/read` per user per window',
  ),
  RATE_LIMIT_PUSH_PER_MIN: variable(
    intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_PUSH_PER_MIN),
    'push device registrations per user per window',
  ),
  RATE_LIMIT_PUSH_TEST_PER_MIN: variable(
    intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_PUSH_TEST_PER_MIN),
    'test pushes per user per window',
  ),
  RATE_LIMIT_IP_PER_MIN: variable(
    intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_IP_PER_MIN),
    'requests per client address per window to the routes that need no token (VAPID key, renew, demo sign-in)',
  ),
  RATE_LIMIT_AUTH_FAILURES_PER_MIN: variable(
    intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_AUTH_FAILURES_PER_MIN),
    'failed authentications per client address per window before that address gets 429 instead of 401',
  ),
  RETENTION_DAYS: variable(
    intFrom(1, 3650).default(DEFAULT_RETENTION_DAYS),
    'events older than this are pruned (each event also expires by its own `ttl`)',
  ),
  AUDIT_RETENTION_DAYS: variable(
    intFrom(1, 3650).default(DEFAULT_AUDIT_RETENTION_DAYS),
    'stream connections (`GET /v1/audit/connections`) opened longer ago than this are pruned',
  ),
  PRUNE_INTERVAL_S: variable(
    intFrom(10, 86_400).default(DEFAULT_PRUNE_INTERVAL_S),
    'how often expired events, with their receipts and push records, are pruned',
  ),
  NUDGE_MIN_INTERVAL_S: variable(
    intFrom(1, 604_800).default(DEFAULT_NUDGE_MIN_INTERVAL_S),
    'an event may be nudged (its unread recipients reminded) at most once in this many seconds; sooner is a 429 with Retry-After',
  ),
  TENANT_STRICT_TYPES: variable(
    optionalText.pipe(z.enum(['true', 'false']).optional()).transform((v) => v === 'true'),
    'when `true`, a publish of a type not registered in its tenant (`GET /v1/event-types`) is a 400',
    '`false`',
  ),
  LOG_POLL_MS: variable(
    intFrom(10, 60_000).default(DEFAULT_LOG_POLL_MS),
    'the live tail re-reads the log at least this often, even without a wake-up',
  ),
  REPLAY_MEMORY_EVENTS: variable(
    intFrom(0, 1_000_000).default(DEFAULT_REPLAY_MEMORY_EVENTS),
    'the newest events each instance keeps in memory (for 15 minutes at most): a stream resuming from one of them is replayed without reading the database; `0` reads it for every replay',
  ),
  PRESENCE_TTL_S: variable(
    intFrom(3, 3_600).default(DEFAULT_PRESENCE_TTL_S),
    'an instance that stopped heart-beating stops counting its streams as online after this',
  ),
  VAPID_PUBLIC_KEY: variable(
    optionalText.pipe(base64url(65, 'an uncompressed P-256 public key (65 bytes)').optional()),
    'Web Push identity, public half (both or neither; `herald vapid` makes a pair). Unset: made once and kept in the database, so restarts and other instances use the same key',
    'generated and kept',
  ),
  VAPID_PRIVATE_KEY: variable(
    optionalText.pipe(base64url(32, 'a P-256 private key (32 bytes)').optional()),
    'Web Push identity, private half (both or neither)',
    'generated and kept',
  ),
  VAPID_SUBJECT: variable(
    optionalText.pipe(
      z
        .string()
        .regex(/^(mailto:|https:\/\/)/, 'must be a mailto: or https: URL that push services can contact you at')
        .default(DEFAULT_VAPID_SUBJECT),
    ),
    '`mailto:` or `https:` contact push services may use; set your own',
  ),
  PUSH_ENDPOINT_ALLOWLIST: variable(
    z.string().default(DEFAULT_PUSH_ENDPOINT_ALLOWLIST),
    "comma-separated host patterns a subscription's endpoint must match, `https` only: `fcm.googleapis.com` and `*.push.apple.com` mean port 443; `127.0.0.1:8443` names a port, `127.0.0.1:*` any",
    "the browser vendors' push hosts",
  ),
  MAX_DEVICES_PER_USER: variable(
    intFrom(1, 1_000).default(DEFAULT_MAX_DEVICES_PER_USER),
    'push devices per user; registering one more drops the least recently registered',
  ),
  RENEW_TOKEN_TTL_DAYS: variable(
    intFrom(1, 3_650).default(DEFAULT_RENEW_TOKEN_TTL_DAYS),
    "a device's renew token (for `pushsubscriptionchange`) expires this long after its last registration",
  ),
  HIGH_ACK_TIMEOUT_S: variable(
    intFrom(1, 86_400).default(DEFAULT_HIGH_ACK_TIMEOUT_S),
    'a `high` event not acked on an open stream within this is pushed anyway',
  ),
  PUSH_MAX_ATTEMPTS: variable(
    intFrom(1, 100).default(DEFAULT_PUSH_MAX_ATTEMPTS),
    'attempts per event and device before the push counts as failed',
  ),
  PUSH_CONCURRENCY: variable(
    intFrom(1, 1_000).default(DEFAULT_PUSH_CONCURRENCY),
    'pushes in flight per instance; one push service gets at most half, so a slow one cannot hold them all',
  ),
  PUSH_RETRY_BASE_MS: variable(
    intFrom(10, 3_600_000).default(DEFAULT_PUSH_RETRY_BASE_MS),
    'first retry after about this long, doubling per attempt, with jitter; `Retry-After` wins when longer',
  ),
  WEBHOOK_URL_ALLOWLIST: variable(
    z.string().default(''),
    'comma-separated host patterns (like `PUSH_ENDPOINT_ALLOWLIST`: `hooks.internal`, `*.corp.example`, `10.0.0.5:8080`, `127.0.0.1:*`) a webhook URL may use beyond the rule (any public host, https): these may be http and private, loopback or link-local addresses',
    'empty: any public https host',
  ),
  WEBHOOK_CONCURRENCY: variable(
    intFrom(1, 1_000).default(DEFAULT_WEBHOOK_CONCURRENCY),
    'webhook requests in flight per instance; one endpoint gets at most half',
  ),
  WEBHOOK_TIMEOUT_MS: variable(
    intFrom(100, 120_000).default(DEFAULT_WEBHOOK_TIMEOUT_MS),
    'an endpoint has this long to answer a delivery (DNS and connecting included); a claimed delivery of a killed instance is taken over after twice this and 5 s',
  ),
  WEBHOOK_MAX_ATTEMPTS: variable(
    intFrom(1, 100).default(DEFAULT_WEBHOOK_MAX_ATTEMPTS),
    'attempts per delivery before it counts as `failed`',
  ),
  WEBHOOK_RETRY_BASE_MS: variable(
    intFrom(10, 3_600_000).default(DEFAULT_WEBHOOK_RETRY_BASE_MS),
    'a failed delivery is retried within this long (full jitter), the bound doubling per attempt up to 6 h; `Retry-After` on 429 and 503 wins when longer (up to 6 h)',
  ),
  WEBHOOK_DISABLE_AFTER_H: variable(
    z.coerce.number().positive().max(8_760).default(DEFAULT_WEBHOOK_DISABLE_AFTER_H),
    'an endpoint whose deliveries have all failed for this many hours (fractions allowed) is disabled until an admin enables it',
  ),
  WEBHOOK_RETENTION_DAYS: variable(
    intFrom(1, 3_650).default(DEFAULT_WEBHOOK_RETENTION_DAYS),
    'sent and failed webhook deliveries are kept this long for the deliveries listing',
  ),
}

type Schemas = { [K in keyof typeof VARIABLES]: (typeof VARIABLES)[K]['schema'] }
const envSchema = z.object(
  Object.fromEntries(Object.entries(VARIABLES).map(([name, v]) => [name, v.schema])) as Schemas,
)
type Env = z.infer<typeof envSchema>

/** Every variable the service reads. */
export const CONFIG_VARIABLES = Object.keys(VARIABLES)

/** README's configuration table, as markdown: a variable's default is what its schema gives when it is unset. */
export function configTable(): string {
  const rows = Object.entries(VARIABLES).map(([name, v]) => {
    const parsed = (v.schema as z.ZodType).safeParse(undefined)
    const shown = v.shownDefault ?? (parsed.success && parsed.data !== undefined ? `\`${parsed.data}\`` : 'unset')
    return `| \`${name}\` | ${shown} | ${v.meaning} |`
  })
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n')
}

/** The service's configuration, parsed, defaulted and grouped by the part of the service that reads it. */
export interface Config {
  env: Env['NODE_ENV']
  /** Instances to run as worker processes of one service (server.ts); 1: the process is the instance. */
  workers: number
  http: {
    port: number
    /** Unset: the server picks (server.ts). */
    host: string | undefined
    /** TRUST_PROXY: no proxy, any, the number of proxies next to us, or their addresses and CIDRs. */
    trustProxy: boolean | { hops: number } | string[]
    bodyLimit: number
    requestTimeoutMs: number
    /** Origins allowed by CORS (`*` for any); empty: no cross-origin access. */
    corsOrigins: string[]
    docsEnabled: boolean
    metricsToken: string | undefined
  }
  database: {
    /** PostgreSQL; unset: embedded PGlite in `dataDir`. */
    url: string | undefined
    poolSize: number
    connectTimeoutS: number
    dataDir: string
  }
  auth: {
    /** Set by withDevSecret when no key is configured. */
    jwtSecret: string | undefined
    jwtPublicKey: string | undefined
    jwtMaxTtlS: number
    /** True when no JWT key was configured and the service made (and kept) its own secret: dev sign-in is allowed. */
    jwtSecretGenerated: boolean
  }
  stream: {
    heartbeatMs: number
    maxConnectionsPerUser: number
    maxStreams: number
    bufferLimitBytes: number
    slowReaderTimeoutMs: number
  }
  events: {
    logPollMs: number
    retentionDays: number
    /** Stream connections opened longer ago than this many days are pruned (the connection audit). */
    auditRetentionDays: number
    pruneIntervalS: number
    nudgeMinIntervalS: number
    /** A publish of a type not registered in its tenant is refused (event-types/). */
    strictTypes: boolean
    /** The newest events kept in memory for replays (events/recent-log.ts); 0: none. Unset: the default. */
    replayMemoryEvents?: number
  }
  cluster: {
    presenceTtlS: number
  }
  push: {
    vapid: { publicKey: string | undefined; privateKey: string | undefined; subject: string }
    /** Host patterns of allowed push endpoints (see push/subscriptions.ts). */
    endpointAllowlist: string[]
    maxDevicesPerUser: number
    renewTokenTtlDays: number
    highAckTimeoutS: number
    maxAttempts: number
    concurrency: number
    retryBaseMs: number
  }
  webhooks: {
    /** Host patterns a webhook URL may use beyond public https hosts: http, private addresses (see webhooks/urls.ts). */
    urlAllowlist: string[]
    concurrency: number
    timeoutMs: number
    maxAttempts: number
    retryBaseMs: number
    /** Hours; may be a fraction. */
    disableAfterH: number
    retentionDays: number
  }
  /** Requests per window (`windowMs`), per user unless said otherwise. */
  limits: {
    windowMs: number
    publishPerMinute: number
    receiptsPerMinute: number
    bulkReadsPerMinute: number
    pushRegistrationsPerMinute: number
    pushTestsPerMinute: number
    /** Per client address, on the routes that need no token. */
    anonymousPerMinute: number
    /** Per client address. */
    authFailuresPerMinute: number
  }
  log: { level: Env['LOG_LEVEL'] }
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** A comma-separated list, trimmed, without empty items. */
export const commaList = (value: string | undefined): string[] =>
  (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean)

function trustedProxies(value: string | undefined): Config['http']['trustProxy'] {
  if (value === undefined || value === 'false') return false
  if (value === 'true') return true
  if (/^\d+$/.test(value)) return { hops: Number(value) }
  return commaList(value)
}

/**
 * Parses and cross-checks the environment. Throws a ConfigError whose message names every bad variable
 * and how to fix it. The JWT secret may still be unset afterwards: withDevSecret fills it from DATA_DIR.
 */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const parsed = envSchema.safeParse(env)
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`)
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`)
  }
  const e = parsed.data
  if (e.JWT_SECRET && e.JWT_PUBLIC_KEY) {
    throw new ConfigError(
      'Invalid configuration:\n  JWT_SECRET and JWT_PUBLIC_KEY are both set: choose HS256 (JWT_SECRET) or RS256/ES256 (JWT_PUBLIC_KEY).',
    )
  }
  if (Boolean(e.VAPID_PUBLIC_KEY) !== Boolean(e.VAPID_PRIVATE_KEY)) {
    throw new ConfigError(
      'Invalid configuration:\n  VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY go together: set both (make a pair with `herald vapid`) or neither (one is generated and kept).',
    )
  }
  if (e.NODE_ENV === 'production' && !e.JWT_SECRET && !e.JWT_PUBLIC_KEY) {
    throw new ConfigError(
      'Invalid configuration:\n  NODE_ENV=production needs JWT_SECRET (HS256) or JWT_PUBLIC_KEY (RS256/ES256): the tokens come from your application backend.',
    )
  }
  if (e.WORKERS !== 'auto' && e.WORKERS > 1 && !e.DATABASE_URL) {
    throw new ConfigError(
      `Invalid configuration:\n  WORKERS=${e.WORKERS} needs DATABASE_URL: the embedded database (PGlite) belongs to one process. Unset WORKERS, or point the service at PostgreSQL.`,
    )
  }
  return {
    env: e.NODE_ENV,
    workers: e.WORKERS !== 'auto' ? e.WORKERS : e.DATABASE_URL ? availableParallelism() : 1,
    http: {
      port: e.PORT,
      host: e.HOST,
      trustProxy: trustedProxies(e.TRUST_PROXY),
      bodyLimit: e.BODY_LIMIT,
      requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
      corsOrigins: commaList(e.CORS_ORIGINS).map((origin) => origin.replace(/\/$/, '')),
      docsEnabled: e.DOCS_ENABLED ?? e.NODE_ENV !== 'production',
      metricsToken: e.METRICS_TOKEN,
    },
    database: {
      url: e.DATABASE_URL,
      poolSize: e.DB_POOL_SIZE,
      connectTimeoutS: e.DB_CONNECT_TIMEOUT_S,
      dataDir: e.DATA_DIR,
    },
    auth: {
      jwtSecret: e.JWT_SECRET,
      jwtPublicKey: e.JWT_PUBLIC_KEY,
      jwtMaxTtlS: e.JWT_MAX_TTL_S,
      jwtSecretGenerated: false,
    },
    stream: {
      heartbeatMs: e.HEARTBEAT_MS,
      maxConnectionsPerUser: e.MAX_CONNECTIONS_PER_USER,
      maxStreams: e.MAX_STREAMS,
      bufferLimitBytes: e.STREAM_BUFFER_LIMIT_BYTES,
      slowReaderTimeoutMs: e.SLOW_READER_TIMEOUT_MS,
    },
    events: {
      logPollMs: e.LOG_POLL_MS,
      retentionDays: e.RETENTION_DAYS,
      auditRetentionDays: e.AUDIT_RETENTION_DAYS,
      pruneIntervalS: e.PRUNE_INTERVAL_S,
      nudgeMinIntervalS: e.NUDGE_MIN_INTERVAL_S,
      strictTypes: e.TENANT_STRICT_TYPES,
      replayMemoryEvents: e.REPLAY_MEMORY_EVENTS,
    },
    cluster: { presenceTtlS: e.PRESENCE_TTL_S },
    push: {
      vapid: {
        publicKey: e.VAPID_PUBLIC_KEY,
        privateKey: e.VAPID_PRIVATE_KEY,
        subject: e.VAPID_SUBJECT,
      },
      endpointAllowlist: commaList(e.PUSH_ENDPOINT_ALLOWLIST),
      maxDevicesPerUser: e.MAX_DEVICES_PER_USER,
      renewTokenTtlDays: e.RENEW_TOKEN_TTL_DAYS,
      highAckTimeoutS: e.HIGH_ACK_TIMEOUT_S,
      maxAttempts: e.PUSH_MAX_ATTEMPTS,
      concurrency: e.PUSH_CONCURRENCY,
      retryBaseMs: e.PUSH_RETRY_BASE_MS,
    },
    webhooks: {
      urlAllowlist: commaList(e.WEBHOOK_URL_ALLOWLIST),
      concurrency: e.WEBHOOK_CONCURRENCY,
      timeoutMs: e.WEBHOOK_TIMEOUT_MS,
      maxAttempts: e.WEBHOOK_MAX_ATTEMPTS,
      retryBaseMs: e.WEBHOOK_RETRY_BASE_MS,
      disableAfterH: e.WEBHOOK_DISABLE_AFTER_H,
      retentionDays: e.WEBHOOK_RETENTION_DAYS,
    },
    limits: {
      windowMs: e.RATE_LIMIT_WINDOW_MS,
      publishPerMinute: e.RATE_LIMIT_PUBLISH_PER_MIN,
      receiptsPerMinute: e.RATE_LIMIT_RECEIPTS_PER_MIN,
      bulkReadsPerMinute: e.RATE_LIMIT_BULK_READ_PER_MIN,
      pushRegistrationsPerMinute: e.RATE_LIMIT_PUSH_PER_MIN,
      pushTestsPerMinute: e.RATE_LIMIT_PUSH_TEST_PER_MIN,
      anonymousPerMinute: e.RATE_LIMIT_IP_PER_MIN,
      authFailuresPerMinute: e.RATE_LIMIT_AUTH_FAILURES_PER_MIN,
    },
    log: { level: e.LOG_LEVEL },
  }
}

/**
 * With no JWT key configured, the service signs its own tokens with a secret it generates once and keeps in
 * DATA_DIR (the demo and the CLI use it). The server and the CLI both start from this.
 */
export function withDevSecret(config: Config): Config {
  const { auth } = config
  if (auth.jwtSecret || auth.jwtPublicKey) return config
  return {
    ...config,
    auth: { ...auth, jwtSecret: loadOrCreateDevSecret(config.database.dataDir), jwtSecretGenerated: true },
  }
}
