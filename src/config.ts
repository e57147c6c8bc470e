import { z } from 'zod'

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
/** At start, PostgreSQL has this long to become reachable (a database starting beside the service in compose). */
export const DEFAULT_DB_CONNECT_TIMEOUT_S = 60
/** Events are kept this long at most (each also has its own ttl). */
export const DEFAULT_RETENTION_DAYS = 30
/** How often expired events are pruned. */
export const DEFAULT_PRUNE_INTERVAL_S = 600
/** 1 MiB: a batch of 1,000 events fits, an accidental upload does not. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024
/** Time a client has to send a whole request, headers and body (a body trickled in slowly holds a socket). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000
/** A safety net under the in-process wake-up: re-read the log this often even if nobody woke us. */
export const DEFAULT_LOG_POLL_MS = 1_000
/**
 * The browser vendors' push services, on port 443: Chrome and Opera (FCM, and the legacy GCM host), Firefox,
 * Safari, Edge. The only hosts pushes go to by default; no wildcard over all of googleapis.com.
 */
export const DEFAULT_PUSH_ENDPOINT_ALLOWLIST =
  'fcm.googleapis.com,android.googleapis.com,updates.push.services.mozilla.com,*.push.services.mozilla.com,*.push.apple.com,*.notify.windows.com'
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

const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: intFrom(0, 65535).default(3000),
  /** Unset: 0.0.0.0, or 127.0.0.1 while the service runs on the secret it generated itself (see server.ts). */
  HOST: optionalText,
  /**
   * Which proxies' X-Forwarded-For to believe for the client's IP (per-IP limits, logs): unset or `false`
   * none; `true` any; a number of hops; or comma-separated addresses and CIDRs (Fastify's `trustProxy`).
   */
  TRUST_PROXY: optionalText.pipe(
    z
      .string()
      .regex(
        /^(true|false|\d{1,2}|[0-9a-fA-F:./]+(\s*,\s*[0-9a-fA-F:./]+)*)$/,
        'must be true, false, a number of hops, or comma-separated addresses/CIDRs (127.0.0.1,10.0.0.0/8)',
      )
      .optional(),
  ),
  DATABASE_URL: optionalText.pipe(
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must start with postgres:// or postgresql://')
      .optional(),
  ),
  DB_POOL_SIZE: intFrom(1, 500).default(20),
  DB_CONNECT_TIMEOUT_S: intFrom(0, 3_600).default(DEFAULT_DB_CONNECT_TIMEOUT_S),
  DATA_DIR: z.string().min(1).default('./data'),
  JWT_SECRET: optionalText.pipe(
    z.string().min(32, 'must be at least 32 characters (use: openssl rand -base64 48)').optional(),
  ),
  JWT_PUBLIC_KEY: optionalText.pipe(
    z
      .string()
      .includes('BEGIN PUBLIC KEY', { message: 'must be a PEM public key (-----BEGIN PUBLIC KEY-----)' })
      .optional(),
  ),
  JWT_MAX_TTL_S: intFrom(60, 31_536_000).default(DEFAULT_JWT_MAX_TTL_S),
  /** Serve the OpenAPI document and its UI at /docs. Defaults to on, except with NODE_ENV=production. */
  DOCS_ENABLED: optionalText.pipe(z.enum(['true', 'false']).optional()).transform((v) => v && v === 'true'),
  HEARTBEAT_MS: intFrom(1_000, 300_000).default(DEFAULT_HEARTBEAT_MS),
  MAX_CONNECTIONS_PER_USER: intFrom(1, 1_000).default(DEFAULT_MAX_CONNECTIONS_PER_USER),
  STREAM_BUFFER_LIMIT_BYTES: intFrom(16 * 1024, 256 * 1024 * 1024).default(DEFAULT_STREAM_BUFFER_LIMIT_BYTES),
  SLOW_READER_TIMEOUT_MS: intFrom(100, 600_000).default(DEFAULT_SLOW_READER_TIMEOUT_MS),
  RATE_LIMIT_WINDOW_MS: intFrom(100, 3_600_000).default(DEFAULT_RATE_LIMIT_WINDOW_MS),
  RATE_LIMIT_PUBLISH_PER_MIN: intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_PUBLISH_PER_MIN),
  RATE_LIMIT_IP_PER_MIN: intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_IP_PER_MIN),
  RATE_LIMIT_AUTH_FAILURES_PER_MIN: intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_AUTH_FAILURES_PER_MIN),
  RATE_LIMIT_PUSH_PER_MIN: intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_PUSH_PER_MIN),
  RATE_LIMIT_PUSH_TEST_PER_MIN: intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_PUSH_TEST_PER_MIN),
  RATE_LIMIT_RECEIPTS_PER_MIN: intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_RECEIPTS_PER_MIN),
  RATE_LIMIT_BULK_READ_PER_MIN: intFrom(1, 10_000_000).default(DEFAULT_RATE_LIMIT_BULK_READ_PER_MIN),
  MAX_DEVICES_PER_USER: intFrom(1, 1_000).default(DEFAULT_MAX_DEVICES_PER_USER),
  RENEW_TOKEN_TTL_DAYS: intFrom(1, 3_650).default(DEFAULT_RENEW_TOKEN_TTL_DAYS),
  MAX_STREAMS: intFrom(1, 10_000_000).default(DEFAULT_MAX_STREAMS),
  RETENTION_DAYS: intFrom(1, 3650).default(DEFAULT_RETENTION_DAYS),
  PRUNE_INTERVAL_S: intFrom(10, 86_400).default(DEFAULT_PRUNE_INTERVAL_S),
  BODY_LIMIT: intFrom(1024, 100 * 1024 * 1024).default(DEFAULT_BODY_LIMIT),
  REQUEST_TIMEOUT_MS: intFrom(1_000, 600_000).default(DEFAULT_REQUEST_TIMEOUT_MS),
  LOG_POLL_MS: intFrom(10, 60_000).default(DEFAULT_LOG_POLL_MS),
  VAPID_PUBLIC_KEY: optionalText.pipe(base64url(65, 'an uncompressed P-256 public key (65 bytes)').optional()),
  VAPID_PRIVATE_KEY: optionalText.pipe(base64url(32, 'a P-256 private key (32 bytes)').optional()),
  VAPID_SUBJECT: optionalText.pipe(
    z
      .string()
      .regex(/^(mailto:|https:\/\/)/, 'must be a mailto: or https: URL that push services can contact you at')
      .optional(),
  ),
  PUSH_ENDPOINT_ALLOWLIST: z.string().default(DEFAULT_PUSH_ENDPOINT_ALLOWLIST),
  HIGH_ACK_TIMEOUT_S: intFrom(1, 86_400).default(DEFAULT_HIGH_ACK_TIMEOUT_S),
  PUSH_MAX_ATTEMPTS: intFrom(1, 100).default(DEFAULT_PUSH_MAX_ATTEMPTS),
  PUSH_CONCURRENCY: intFrom(1, 1_000).default(DEFAULT_PUSH_CONCURRENCY),
  PUSH_RETRY_BASE_MS: intFrom(10, 3_600_000).default(DEFAULT_PUSH_RETRY_BASE_MS),
  PRESENCE_TTL_S: intFrom(3, 3_600).default(DEFAULT_PRESENCE_TTL_S),
  CORS_ORIGINS: optionalText,
  /** When set, GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`; unset, it is open (keep it off the internet). */
  METRICS_TOKEN: optionalText,
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
})

/** Every variable the service reads (README's configuration table lists each; a test holds the two together). */
export const CONFIG_VARIABLES = Object.keys(envSchema.shape)

/** The environment, parsed and defaulted. */
export type ParsedConfig = Omit<z.infer<typeof envSchema>, 'DOCS_ENABLED'> & {
  /** Resolved: DOCS_ENABLED when set, otherwise on outside production. */
  DOCS_ENABLED: boolean
}

export type Config = ParsedConfig & {
  /** True when no JWT key was configured and the service made (and kept) its own secret: dev sign-in is allowed. */
  jwtSecretGenerated: boolean
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/**
 * Parses and cross-checks the environment. Throws a ConfigError whose message names every bad variable
 * and how to fix it. JWT_SECRET may still be unset afterwards: the server fills it from DATA_DIR.
 */
export function loadConfig(env: Record<string, string | undefined>): ParsedConfig {
  const parsed = envSchema.safeParse(env)
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`)
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`)
  }
  const config = parsed.data
  if (config.JWT_SECRET && config.JWT_PUBLIC_KEY) {
    throw new ConfigError(
      'Invalid configuration:\n  JWT_SECRET and JWT_PUBLIC_KEY are both set: choose HS256 (JWT_SECRET) or RS256/ES256 (JWT_PUBLIC_KEY).',
    )
  }
  if (Boolean(config.VAPID_PUBLIC_KEY) !== Boolean(config.VAPID_PRIVATE_KEY)) {
    throw new ConfigError(
      'Invalid configuration:\n  VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY go together: set both (make a pair with `herald vapid`) or neither (one is generated and kept).',
    )
  }
  if (config.NODE_ENV === 'production' && !config.JWT_SECRET && !config.JWT_PUBLIC_KEY) {
    throw new ConfigError(
      'Invalid configuration:\n  NODE_ENV=production needs JWT_SECRET (HS256) or JWT_PUBLIC_KEY (RS256/ES256): the tokens come from your application backend.',
    )
  }
  return { ...config, DOCS_ENABLED: config.DOCS_ENABLED ?? config.NODE_ENV !== 'production' }
}
