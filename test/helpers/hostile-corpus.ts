import { createECDH, createHmac } from 'node:crypto'
import net from 'node:net'

/**
 * A deterministic corpus of malformed and adversarial HTTP requests (seeded PRNG, no network), and a raw
 * socket client that sends each exactly as written: duplicate headers, Content-Length lies, bad
 * percent-encoding and raw bytes reach the server as they would from a hostile client, which fetch and
 * supertest would refuse or normalize.
 */

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function prng(seed: number) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)],
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
  }
}
export type Prng = ReturnType<typeof prng>

/** One route as the app serves it: `GET /v1/events/:id`. */
export interface Route {
  method: string
  path: string
}

/**
 * Every `METHOD /path` the app serves, read from Fastify's own route tree (`printRoutes`: each line's depth is
 * its indent / 4, its path the concatenation of its ancestors'), HEAD and static wildcards included, so a new
 * route is in the corpus without anyone listing it here.
 */
export function routesOf(app: { printRoutes(options: { commonPrefix: boolean }): string }): Route[] {
  const stack: string[] = []
  const routes: Route[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (.+) \(([A-Z, ]+)\)$/.exec(line)
    if (!m) continue
    const depth = m[1].length / 4
    stack.length = depth
    stack.push(m[2])
    const path = stack.join('').replace(/\/+/g, '/')
    for (const method of m[3].split(', ')) routes.push({ method, path })
  }
  return routes
}

/** A request as bytes go on the wire. Header values may hold any bytes (written as UTF-8). */
export interface HostileRequest {
  /** What it tries, for the report. */
  name: string
  /** The family it belongs to, for the histogram. */
  family: string
  /** `METHOD /template` of the route it aims at. */
  route: string
  method: string
  /** The request-target, exactly as sent (no normalization, no encoding). */
  target: string
  headers: Array<[string, string]>
  body?: Buffer
  /** Content-Type to add when the request has a body and no content-type header of its own; null: none. */
  contentType?: string | null
  /** When false, no Content-Length is added for the body (the headers say how it is framed). */
  autoLength?: boolean
  /** Bytes sent instead of the request line and headers built from the fields above (request-line tricks). */
  raw?: Buffer
  /** The server may rightly wait for more (a declared body that never comes): no reply is not a failure. */
  mayHang?: boolean
}

export interface CorpusTokens {
  /** A valid token that may publish, broadcast and read delivery status (admin). */
  publisher: string
  /** A valid token with no scope: may read, ack and stream, not publish. */
  reader: string
  /** A valid token whose `topics` claim allows `class:*`. */
  topicReader: string
  /** Validly signed, with odd but well-formed claims (unicode, SQL-looking text, very long ids). */
  oddClaims: string[]
  /** Validly signed, with claims the database cannot store as text (NUL, lone surrogates). */
  unstorableClaims: string[]
  /** Invalid in every other way: expired, wrong key, alg none, bad claims, garbage. */
  invalid: string[]
}

/** Bytes of a JWT signed with `secret` (HS256), or unsigned (`alg: none`), from any header and payload. */
export function signJwt(header: object, payload: object, secret: string | undefined): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url')
  const unsigned = `${part(header)}.${part(payload)}`
  if (secret === undefined) return `${unsigned}.`
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`
}

/** Every way a token can be wrong, signed with `secret` where the point is something other than the key. */
export function invalidTokens(secret: string): string[] {
  const now = Math.floor(Date.now() / 1000)
  const good = { sub: 'hostile-user', tenant: 'hostile', exp: now + 3600 }
  const hs = { alg: 'HS256', typ: 'JWT' }
  return [
    signJwt(hs, { ...good, exp: now - 3600 }, secret), // expired (well past the 30 s clock skew)
    signJwt(hs, good, 'another-secret-that-is-long-enough-0123456789abcdef'), // wrong key
    signJwt({ alg: 'none', typ: 'JWT' }, good, undefined), // alg none
    signJwt({ alg: 'HS512', typ: 'JWT' }, good, secret), // an algorithm that is not pinned
    signJwt(hs, { tenant: 'hostile', exp: now + 3600 }, secret), // no sub
    signJwt(hs, { sub: 'hostile-user', exp: now + 3600 }, secret), // no tenant
    signJwt(hs, { ...good, sub: 42 }, secret), // sub of the wrong type
    signJwt(hs, { ...good, roles: 'admin' }, secret), // roles not an array
    signJwt(hs, { ...good, topics: [{ $ne: null }] }, secret), // an object where a topic goes
    signJwt(hs, { ...good, scope: ['admin'] }, secret), // scope not a string
    signJwt(hs, { ...good, exp: 'never' }, secret), // exp not a number
    signJwt(hs, { ...good, nbf: now + 3600 }, secret), // not yet valid
    signJwt(hs, { ...good, sub: 'x'.repeat(201) }, secret), // sub over 200 characters
    signJwt(hs, { ...good, roles: Array.from({ length: 101 }, (_, i) => `r${i}`) }, secret), // 101 roles
    'not-a-token',
    'a.b.c',
    '..',
    `${signJwt(hs, good, secret)}x`, // a byte added to the signature
    signJwt(hs, good, secret).split('.').slice(0, 2).join('.'), // signature cut off
    Buffer.from('{"alg":"HS256"}').toString('base64'), // base64, not base64url, one part
    'eyJ'.repeat(3000), // long garbage under the header limit
  ]
}

/** A P-256 public key and auth secret a browser could have sent, derived from the seed. */
function pushKeys(random: Prng) {
  const ecdh = createECDH('prime256v1')
  // A private key is any 32 bytes below the curve order; one with a leading zero byte always is.
  ecdh.setPrivateKey(Buffer.concat([Buffer.from([0]), random.bytes(31)]))
  return { p256dh: ecdh.getPublicKey().toString('base64url'), auth: random.bytes(16).toString('base64url') }
}

/** Strings that are hostile in a path segment (already percent-encoded as a client would send them, or not). */
export const HOSTILE_IDS = [
  '-1',
  '1e9',
  '0x10',
  '1.0',
  '01',
  '0',
  '00',
  '+1',
  '%201',
  '1%20',
  '%EF%BC%91', // fullwidth 1
  '%D9%A3', // Arabic-indic 3
  '9'.repeat(18),
  '9'.repeat(19),
  '18446744073709551616',
  '9'.repeat(100),
  '9'.repeat(101), // past Fastify's maxParamLength
  '9'.repeat(6000),
  '..',
  '.',
  '%2e%2e',
  '%2E%2E%2F%2E%2E%2Fetc%2Fpasswd',
  '..%2f..%2f..%2fetc%2fpasswd',
  '%2F',
  '%252e%252e',
  '%C0%AE%C0%AE', // overlong UTF-8 dots
  '1;%20drop%20table%20events',
  '1;drop table events', // raw spaces: not a valid request-target
  "1'%20OR%20'1'%3D'1",
  '1%27%3B--',
  '%00',
  '1%00',
  'null',
  'undefined',
  'NaN',
  'Infinity',
  'true',
  '%5B%5D',
  '%7B%7D',
  '__proto__',
  'constructor',
  '%F0%9F%98%80',
  '%E2%80%AE', // right-to-left override
  '%E2%80%A8', // line separator
  '%ED%A0%80', // a UTF-16 surrogate as UTF-8: invalid
  '%ff',
  '%',
  '%zz',
  '%%30',
  '$(id)',
  '%24%7B7*7%7D',
  '%3Cscript%3E',
  '\u00e9', // a raw non-ASCII byte sequence in the path
  'a'.repeat(100),
]

/** Path tails for static wildcard routes (`*`): traversal in every spelling. */
const STATIC_TRICKS = [
  '../../../../etc/passwd',
  '..%2f..%2f..%2f..%2fetc%2fpasswd',
  '%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
  '%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd',
  '..%252f..%252fetc%252fpasswd',
  '%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd',
  '....//....//etc/passwd',
  '..\\..\\..\\etc\\passwd',
  '..%5c..%5c..%5cpackage.json',
  '../package.json',
  '..%2fpackage.json',
  '%2e%2e/package.json',
  '../src/config.ts',
  '..%2f.env',
  '.env',
  '.git/config',
  'sw.js%00.png',
  'sw.js%00',
  'index.html/..',
  'index.html%2f..%2f..%2fpackage.json',
  '%00',
  'a'.repeat(6000),
  '%ff%fe',
  '%F0%9F%98%80.html',
  '~root',
  'proc/self/environ',
  '/etc/passwd',
]

/** Query strings that are hostile to any route (most ignore them; none may break). */
const QUERY_TRICKS = [
  '?after=-1',
  '?after=1e9',
  '?after=0x10',
  '?after=1&before=2',
  '?before=..%2f..%2f',
  '?after=' + '9'.repeat(19),
  '?after=' + '9'.repeat(18),
  '?limit=0',
  '?limit=-1',
  '?limit=501',
  '?limit=1e3',
  '?limit=0x10',
  '?limit=NaN',
  '?limit=1.5',
  '?limit=Infinity',
  '?limit=1&limit=2',
  '?unread=yes',
  '?unread[]=true',
  '?after[]=1',
  '?after[a]=1',
  '?after=1%3B%20drop%20table%20events',
  '?limit=%00',
  '?__proto__[admin]=1&constructor[prototype][admin]=1',
  '?' + Array.from({ length: 1000 }, (_, i) => `p${i}=${i}`).join('&'),
  '?a=%',
  '?a=%ff%fe',
  '?a=' + 'x'.repeat(8000),
  '?topics=' + 'a,'.repeat(2000),
  '?lastEventId=-1',
  '?access_token=',
  '?access_token=a&access_token=b',
  '?%F0%9F%98%80=%E2%80%AE',
]

/** Raw JSON text for `data`: all valid JSON, hostile in depth, size or spelling. */
const DATA_TRICKS: Array<[string, string]> = [
  ['exactly 16 KiB', `"${'d'.repeat(16 * 1024 - 2)}"`],
  ['16 KiB + 1', `"${'d'.repeat(16 * 1024 - 1)}"`],
  ['10,000 levels of arrays', '['.repeat(10_000) + ']'.repeat(10_000)],
  ['10,000 levels of objects', '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)],
  ['100,000 levels of arrays', '['.repeat(100_000) + ']'.repeat(100_000)],
  ['1e999', '1e999'],
  ['-0', '-0'],
  ['a 20-digit integer', '12345678901234567890'],
  ['a lone surrogate escape', '"\\ud800"'],
  ['a NUL escape', '"\\u0000"'],
  [
    'every control escape',
    `"${Array.from({ length: 32 }, (_, i) => `\\u${i.toString(16).padStart(4, '0')}`).join('')}"`,
  ],
  ['duplicate keys', '{"a":1,"a":2}'],
  ['5,000 zeros', `[${Array(5000).fill(0).join(',')}]`],
  ['a __proto__ key', '{"__proto__":{"admin":true}}'],
  ['a constructor.prototype key', '{"constructor":{"prototype":{"admin":true}}}'],
  ['null', 'null'],
  ['a string with SSE framing', '"\\n\\ndata: fake\\nid: 1\\n\\n"'],
]

/** JSON bodies hostile to any JSON route, each with its content type. */
function bodyTricks(bodyLimit: number): Array<[string, Buffer, string | null]> {
  const json = 'application/json'
  const b = (s: string) => Buffer.from(s, 'utf8')
  return [
    ['empty body, JSON content type', b(''), json],
    ['null', b('null'), json],
    ['true', b('true'), json],
    ['0', b('0'), json],
    ['-1', b('-1'), json],
    ['a string', b('"s"'), json],
    ['an empty array', b('[]'), json],
    ['an array of objects', b('[{}]'), json],
    ['an empty object', b('{}'), json],
    ['an unclosed object', b('{'), json],
    ['a lone close brace', b('}'), json],
    ['a missing value', b('{"a":}'), json],
    ['a trailing comma', b('{"a":1,}'), json],
    ['single quotes', b("{'a':1}"), json],
    ['trailing garbage', b('{}garbage'), json],
    ['a byte-order mark', b('\ufeff{}'), json],
    ['NaN', b('NaN'), json],
    ['1e999', b('1e999'), json],
    ['a __proto__ key', b('{"__proto__":{"admin":true}}'), json],
    ['a constructor.prototype key', b('{"constructor":{"prototype":{"admin":true}}}'), json],
    ['10,000 levels of arrays', b('['.repeat(10_000) + ']'.repeat(10_000)), json],
    ['10,000 levels of objects', b('{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)), json],
    ['300,000 levels of arrays', b('['.repeat(300_000) + ']'.repeat(300_000)), json],
    ['a lone surrogate escape', b('{"title":"\\ud800","type":"\\udfff"}'), json],
    ['a NUL escape', b('{"title":"\\u0000"}'), json],
    ['a raw NUL byte', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0x00, 0x22, 0x7d]), json],
    [
      'invalid UTF-8 bytes',
      Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xed, 0xa0, 0x80, 0x22, 0x7d]),
      json,
    ],
    ['UTF-16LE with a charset', Buffer.from('{"a":"b"}', 'utf16le'), 'application/json; charset=utf-16le'],
    ['latin1 with a charset', Buffer.from('{"a":"\u00e9"}', 'latin1'), 'application/json; charset=latin1'],
    ['just over BODY_LIMIT', b(`{"a":"${'x'.repeat(bodyLimit - 7)}"}`), json],
    ['4 MiB', b(`{"a":"${'x'.repeat(4 * 1024 * 1024)}"}`), json],
    ['just under BODY_LIMIT, all whitespace around {}', b(`${' '.repeat(bodyLimit - 100)}{}`), json],
    ['a string just under BODY_LIMIT', b(`{"title":"${'\u00e9'.repeat((bodyLimit - 100) / 2)}"}`), json],
    ['text/plain', b('{}'), 'text/plain'],
    ['form-urlencoded', b('a=1&b=2'), 'application/x-www-form-urlencoded'],
    [
      'multipart',
      b('--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n'),
      'multipart/form-data; boundary=x',
    ],
    [
      'XML',
      b('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'),
      'application/xml',
    ],
    ['upper-case JSON type', b('{}'), 'APPLICATION/JSON'],
    ['JSON type with junk parameters', b('{}'), 'application/json;;;charset="'],
    ['two content types in one', b('{}'), 'application/json, text/plain'],
    ['a JSON suffix type', b('{}'), 'application/vnd.api+json'],
    ['an empty content type', b('{}'), ''],
    ['no content type', b('{}'), null],
    ['a wildcard content type', b('{}'), '*/*'],
  ]
}

/** Odd header sets that are still well-formed HTTP. */
function headerTricks(): Array<[string, Array<[string, string]>]> {
  return [
    ['a header of 15,000 bytes', [['x-pad', 'p'.repeat(15_000)]]],
    ['a header of 20,000 bytes', [['x-pad', 'p'.repeat(20_000)]]],
    ['500 headers', Array.from({ length: 500 }, (_, i): [string, string] => [`x-h-${i}`, String(i)])],
    ['a hostile X-Request-Id', [['x-request-id', '../../etc/passwd\u00e9'.repeat(50)]]],
    [
      'spoofed forwarding headers',
      [
        ['x-forwarded-for', '127.0.0.1, ::1, 10.0.0.1'],
        ['x-forwarded-host', 'evil.example'],
        ['forwarded', 'for=unknown'],
      ],
    ],
    ['Expect: 100-continue', [['expect', '100-continue']]],
    ['an unknown Expect', [['expect', 'the-unexpected']]],
    ['a Range of many parts', [['range', `bytes=${Array.from({ length: 300 }, (_, i) => `${i}-${i}`).join(',')}`]]],
    ['an impossible Range', [['range', 'bytes=999999999999-1']]],
    ['a suffix Range of zero', [['range', 'bytes=-0']]],
    [
      'odd conditional headers',
      [
        ['if-none-match', '*, "x", W/'],
        ['if-modified-since', 'yesterday'],
      ],
    ],
    ['Content-Encoding: gzip on plain bytes', [['content-encoding', 'gzip']]],
    ['an Accept nothing can satisfy', [['accept', 'application/x-nothing;q=1, */*;q=0']]],
    [
      'an Origin and a preflight method',
      [
        ['origin', 'https://evil.example'],
        ['access-control-request-method', 'DELETE'],
      ],
    ],
    ['UTF-8 bytes in a header value', [['x-note', '\u05e2\u05d1\u05e8\u05d9\u05ea \ud83d\ude00 \u202e']]],
    ['an Idempotency-Key of UTF-8 bytes', [['idempotency-key', '\ud83d\udd11-\u00e9-key']]],
    ['an empty Idempotency-Key', [['idempotency-key', '']]],
    ['an Idempotency-Key of 201 characters', [['idempotency-key', 'k'.repeat(201)]]],
    ['a Last-Event-ID on a route that ignores it', [['last-event-id', '-1']]],
  ]
}

/** Authorization variants: every route gets each. `null` sends no header. */
function authTricks(tokens: CorpusTokens): Array<[string, string | null]> {
  const odd = tokens.oddClaims.map((t, i): [string, string] => [`odd claims #${i}`, `Bearer ${t}`])
  const unstorable = tokens.unstorableClaims.map((t, i): [string, string] => [`unstorable claims #${i}`, `Bearer ${t}`])
  const invalid = tokens.invalid.map((t, i): [string, string] => [`invalid token #${i}`, `Bearer ${t}`])
  return [
    ['no Authorization', null],
    ['a reader token', `Bearer ${tokens.reader}`],
    ['lower-case scheme', `bearer ${tokens.publisher}`],
    ['extra spaces', `Bearer    ${tokens.publisher}   `],
    ['Basic scheme', `Basic ${Buffer.from('admin:admin').toString('base64')}`],
    ['Digest scheme', 'Digest username="admin", realm="x", nonce="1", uri="/", response="0"'],
    ['Bearer with nothing', 'Bearer'],
    ['Bearer with a space', 'Bearer '],
    ['two tokens', `Bearer ${tokens.publisher} ${tokens.reader}`],
    ['a token and a comma', `Bearer ${tokens.publisher}, Bearer ${tokens.reader}`],
    ['a tab instead of a space', `Bearer\t${tokens.publisher}`],
    ['the token alone', tokens.publisher],
    ['a token of UTF-8 bytes', 'Bearer \u00e9\ud83d\ude00\u202e'],
    ...odd,
    ...unstorable,
    ...invalid,
  ]
}

export interface CorpusOptions {
  routes: Route[]
  tokens: CorpusTokens
  /** The app's BODY_LIMIT. */
  bodyLimit: number
  /** A push endpoint the app accepts (on its PUSH_ENDPOINT_ALLOWLIST, loopback, nothing listening). */
  allowedEndpoint: string
  seed: number
  /** Extra requests made of random combinations of the tricks above. */
  randomCombinations: number
}

/** A valid request body for each route that takes one (the base that field mutations start from). */
function baseBodies(keys: { p256dh: string; auth: string }, endpoint: string): Record<string, string> {
  const event = { type: 'hostile.probe', to: { users: ['hostile-victim'] }, title: 'probe' }
  const subscription = { endpoint, expirationTime: null, keys }
  return {
    'POST /v1/events': JSON.stringify(event),
    'POST /v1/events/batch': JSON.stringify({ events: [event, event] }),
    'POST /v1/events/read': JSON.stringify({ ids: ['1'] }),
    'POST /v1/push/subscriptions': JSON.stringify(subscription),
    'POST /v1/push/subscriptions/renew': JSON.stringify(subscription),
    'POST /demo/token': JSON.stringify({ sub: 'demo-user', tenant: 'hostile' }),
  }
}

/** Field mutations of a route's valid body: [what, raw JSON text of the body]. */
function fieldMutations(route: string, base: string, keys: { p256dh: string; auth: string }, endpoint: string) {
  const out: Array<[string, string]> = []
  const obj = JSON.parse(base) as Record<string, unknown>
  const withField = (field: string, raw: string | undefined) => {
    const rest = Object.entries(obj)
      .filter(([k]) => k !== field)
      .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
    if (raw !== undefined) rest.push(`${JSON.stringify(field)}:${raw}`)
    return `{${rest.join(',')}}`
  }
  const s = JSON.stringify
  const wrongTypes = ['1', '-1', '1.5', 'true', 'null', '[]', '{}', '[1,2]', '"1"']
  if (route === 'POST /v1/events' || route === 'POST /v1/events/batch') {
    const single = (field: string, raw: string | undefined) => {
      const ev = JSON.parse(baseBodies(keys, endpoint)['POST /v1/events']) as Record<string, unknown>
      const rest = Object.entries(ev)
        .filter(([k]) => k !== field)
        .map(([k, v]) => `${s(k)}:${s(v)}`)
      if (raw !== undefined) rest.push(`${s(field)}:${raw}`)
      const text = `{${rest.join(',')}}`
      return route === 'POST /v1/events' ? text : `{"events":[${text}]}`
    }
    const fields: Record<string, string[]> = {
      type: [
        ...wrongTypes,
        s(''),
        s('A.B'),
        s('a..b'),
        s('.a'),
        s('a.'),
        s('a b'),
        s('a'.repeat(100)),
        s('a'.repeat(101)),
        s('\u00e9.x'),
        s('a.b\u0000'),
        '"\\ud800"',
        s('a.b;drop table events'),
        s('<script>'),
      ],
      to: [
        ...wrongTypes,
        s({ users: 'u' }),
        s({ users: [1] }),
        s({ users: [] }),
        s({ users: [''] }),
        s({ users: ['\u0000'] }),
        '{"users":["\\udc00"]}',
        s({ users: ['a'.repeat(201)] }),
        s({ users: Array.from({ length: 10_001 }, (_, i) => `u${i}`) }),
        s({ users: Array.from({ length: 10_000 }, (_, i) => `u${i}`) }),
        s({ roles: Array.from({ length: 101 }, (_, i) => `r${i}`) }),
        s({ roles: ['teacher'] }),
        s({ topics: ['a*'] }),
        s({ topics: ['a,b'] }),
        s({ topics: ['a b'] }),
        s({ topics: ['class:7A'] }),
        s({ tenant: 'true' }),
        s({ tenant: true }),
        s({ tenant: false }),
        s({ users: ['u'], extra: 1 }),
        s({ users: ['\ud83d\ude00', '\u202eevil', '\u2028', "1'; drop table events; --"] }),
        s({ users: { $ne: null } }),
      ],
      title: [
        ...wrongTypes,
        s(''),
        s('x'.repeat(200)),
        s('x'.repeat(201)),
        s('\ud83d\ude00'.repeat(100)),
        s('\ud83d\ude00'.repeat(101)),
        s('\u0000'),
        '"a\\ud800"',
        '"\\udc00"',
        s('e\u0301'.repeat(100)),
        s('e\u0301'.repeat(101)),
        s('x'.repeat(100_000)),
      ],
      body: [
        '1',
        '[]',
        '{}',
        s('x'.repeat(2000)),
        s('x'.repeat(2001)),
        s('\u0000'),
        '"\\ud83d"',
        s('ok\r\n\r\ndata: fake\n\nid: 999\n\n'),
      ],
      data: DATA_TRICKS.map(([, raw]) => raw),
      priority: [s(''), s('URGENT'), s('critical'), '1', 'null', '[]'],
      url: [
        s('javascript:alert(1)'),
        s('//evil.example/x'),
        s('http://evil.example'),
        s('https://'),
        s('https://ok.example/a'),
        s('/ok'),
        s('data:text/html,<script>alert(1)</script>'),
        s('/' + 'a'.repeat(2047)),
        s('/' + 'a'.repeat(2048)),
        s('\\\\evil.example'),
        // "Relative" URLs a browser resolves to another host: backslash, tab or newline after the slash.
        s('/\\evil.example/x'),
        s('/\t/evil.example/x'),
        s('/\n/evil.example'),
        s('/\u0085/evil.example'),
        s('https://user:pass@evil.example/'),
        s(' /x'),
        s('/\u0000'),
        s('https://a b'),
        s('/\u202e/\ud83d\ude00'),
        '1',
      ],
      collapseKey: [s(''), s('k'.repeat(64)), s('k'.repeat(65)), '1', 'null', s('\u0000')],
      ttl: ['59', '60', '2592000', '2592001', '1.5', '"60"', '-1', '1e9', 'null', '1e400', '0', '9007199254740993'],
    }
    for (const [field, raws] of Object.entries(fields)) {
      out.push([`${field} missing`, single(field, undefined)])
      for (const raw of raws) out.push([`${field}: ${raw.slice(0, 40)}`, single(field, raw)])
    }
    for (const [k, v] of [
      ['id', '"5"'],
      ['actor', '"admin"'],
      ['tenant', '"other-tenant"'],
      ['createdAt', '"1970-01-01T00:00:00Z"'],
      ['expiresAt', '"9999-01-01T00:00:00Z"'],
      ['__proto__', '{"admin":true}'],
    ])
      out.push([`extra field ${k}`, single(k, v)])
    if (route === 'POST /v1/events/batch') {
      const ev = JSON.parse(base).events[0]
      out.push(['events missing', '{}'])
      for (const raw of wrongTypes) out.push([`events: ${raw}`, `{"events":${raw}}`])
      out.push(['1,001 events', s({ events: Array(1001).fill(ev) })])
      out.push(['1,000 events', s({ events: Array(1000).fill(ev) })])
      out.push(['a valid and an invalid event', s({ events: [ev, { ...ev, title: '' }] })])
      out.push(['an event of the wrong type', s({ events: [ev, 1] })])
    }
  }
  if (route === 'POST /v1/events/read') {
    for (const raw of [
      '[]',
      '["-1"]',
      '["1e9"]',
      '[1]',
      '["1"]',
      s(['9'.repeat(19)]),
      s(Array.from({ length: 1001 }, (_, i) => String(i + 1))),
      s(Array.from({ length: 1000 }, (_, i) => String(i + 1))),
      '"1"',
      'null',
      '["1; drop table events"]',
    ])
      out.push([`ids: ${raw.slice(0, 40)}`, `{"ids":${raw}}`])
    for (const raw of ['"-1"', '"0"', s('9'.repeat(18)), s('9'.repeat(19)), '1', 'null', '"1e9"', '"0x10"', '["1"]'])
      out.push([`upTo: ${raw}`, `{"upTo":${raw}}`])
    out.push(['ids and upTo', '{"ids":["1"],"upTo":"1"}'])
    out.push(['an extra key', '{"ids":["1"],"all":true}'])
  }
  if (route === 'POST /v1/push/subscriptions' || route === 'POST /v1/push/subscriptions/renew') {
    for (const endpointRaw of [
      s('http://127.0.0.1:9/push'),
      s('https://169.254.169.254/latest/meta-data'),
      s('file:///etc/passwd'),
      s('https://user:pw@127.0.0.1:9/push'),
      s('https://127.0.0.1:9@evil.example/push'),
      s('https://evil.example#@127.0.0.1:9/push'),
      s('javascript:alert(1)'),
      s(''),
      s(`https://127.0.0.1:9/${'p'.repeat(2048)}`),
      s('https://[::1]:9/push'),
      s('https://0x7f.0.0.1:9/push'),
      s('https://2130706433:9/push'),
      s('https://\uff46\uff43\uff4d.googleapis.com/x'),
      s('gopher://127.0.0.1:9/_'),
      s('https://localhost:9/push'),
      '1',
      'null',
    ])
      out.push([`endpoint: ${endpointRaw.slice(0, 40)}`, withField('endpoint', endpointRaw)])
    const p256 = Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 7)]).toString('base64url')
    for (const [what, k] of [
      ['p256dh not on the curve', { ...keys, p256dh: p256 }],
      ['p256dh compressed', { ...keys, p256dh: Buffer.alloc(33, 2).toString('base64url') }],
      ['p256dh in standard base64', { ...keys, p256dh: Buffer.from(keys.p256dh, 'base64url').toString('base64') }],
      ['p256dh of 201 characters', { ...keys, p256dh: 'A'.repeat(201) }],
      ['auth of 15 bytes', { ...keys, auth: Buffer.alloc(15, 1).toString('base64url') }],
      ['auth of 17 bytes', { ...keys, auth: Buffer.alloc(17, 1).toString('base64url') }],
      ['auth of 101 characters', { ...keys, auth: 'A'.repeat(101) }],
      ['keys empty', {}],
      ['keys of the wrong types', { p256dh: 1, auth: [] }],
    ] as const)
      out.push([`keys: ${what}`, withField('keys', s(k))])
    out.push(['keys missing', withField('keys', undefined)])
    out.push(['endpoint missing', withField('endpoint', undefined)])
    // Times a browser would never send, but JSON allows: out of Date's range, and outside years 0-9999.
    for (const raw of [
      '1e300',
      '-1e300',
      '8.64e15',
      '-8.64e15',
      '253402300800000',
      '-62198755200000',
      '1.5',
      '-1',
      '0',
      '"2030-01-01"',
      'true',
      '1e999',
    ])
      out.push([`expirationTime: ${raw}`, withField('expirationTime', raw)])
  }
  if (route === 'POST /demo/token') {
    for (const [field, raws] of Object.entries({
      sub: [...wrongTypes, s(''), s('   '), s('x'.repeat(101)), s('\u0000'), '"\\ud800"'],
      tenant: ['1', s(''), s('x'.repeat(101))],
      roles: ['"admin"', s(Array(21).fill('r')), '[1]'],
      topics: ['"*"', s(Array(21).fill('t')), '[""]'],
    }))
      for (const raw of raws) out.push([`${field}: ${raw.slice(0, 40)}`, withField(field, raw)])
  }
  return out
}

/** Last-Event-ID values: header and query. */
export const LAST_EVENT_ID_TRICKS = [
  '-1',
  '1e9',
  '0x10',
  '1.0',
  '01',
  '00',
  '0',
  '  7  ',
  ' ',
  '9'.repeat(18),
  '9'.repeat(19),
  '18446744073709551616',
  'NaN',
  'null',
  'undefined',
  '\uff11\uff12',
  '\u0663',
  '1;drop table events',
  "' or 1=1 --",
  '../',
  '%31',
  'a'.repeat(8000),
  '\ud83d\ude00',
  '1, 2',
  '+1',
  '1e2',
  '\t5',
  '5\t',
  '[]',
]

/** Stream-specific requests: Last-Event-ID in header and query, topics, access_token. */
function streamCases(tokens: CorpusTokens): Array<[string, string, Array<[string, string]>]> {
  const auth: [string, string] = ['authorization', `Bearer ${tokens.topicReader}`]
  const out: Array<[string, string, Array<[string, string]>]> = []
  const q = encodeURIComponent
  for (const v of LAST_EVENT_ID_TRICKS) {
    out.push([`Last-Event-ID: ${v.slice(0, 30)}`, '/v1/stream', [auth, ['last-event-id', v]]])
    out.push([`?lastEventId=${v.slice(0, 30)}`, `/v1/stream?lastEventId=${q(v)}`, [auth]])
  }
  out.push(['two Last-Event-ID headers', '/v1/stream', [auth, ['last-event-id', '1'], ['last-event-id', '2']]])
  out.push(['a header and a query id', '/v1/stream?lastEventId=-1', [auth, ['last-event-id', '1']]])
  out.push(['?lastEventId of 101 characters', `/v1/stream?lastEventId=${'1'.repeat(101)}`, [auth]])
  out.push(['?lastEventId twice', '/v1/stream?lastEventId=1&lastEventId=2', [auth]])
  for (const topics of [
    '*',
    'class:*',
    'class:7A',
    'class:7A,class:7B',
    ',,,',
    'other:*',
    'a,'.repeat(2000),
    Array.from({ length: 101 }, (_, i) => `class:${i}`).join(','),
    'class:' + 'x'.repeat(4000),
    '%00',
    'class:\ud83d\ude00',
    "class:7A'; drop table events; --",
    'class:\u202e',
  ])
    out.push([`?topics=${topics.slice(0, 30)}`, `/v1/stream?topics=${q(topics)}`, [auth]])
  out.push(['?topics twice', '/v1/stream?topics=class:1&topics=class:2', [auth]])
  out.push(['?access_token=garbage', '/v1/stream?access_token=garbage', []])
  out.push(['?access_token= twice', `/v1/stream?access_token=${tokens.reader}&access_token=x`, []])
  out.push([
    '?access_token valid, header garbage',
    `/v1/stream?access_token=${tokens.reader}`,
    [['authorization', 'Bearer garbage']],
  ])
  out.push(['?access_token valid', `/v1/stream?access_token=${tokens.reader}`, []])
  return out
}

/**
 * Builds the corpus: for every route, each authorization trick, header trick, path trick and (for routes with
 * a body) body trick; field mutations of each route's valid body; stream resume and topic tricks; request-line
 * and framing tricks sent as raw bytes; then `randomCombinations` seeded mixes of all of these.
 */
export function hostileCorpus(options: CorpusOptions): HostileRequest[] {
  const random = prng(options.seed)
  const keys = pushKeys(random)
  const bases = baseBodies(keys, options.allowedEndpoint)
  const { tokens } = options
  const out: HostileRequest[] = []
  const publisherAuth: [string, string] = ['authorization', `Bearer ${tokens.publisher}`]

  /** A concrete target for a template: params get a plain valid-looking value, wildcards a file name. */
  const fill = (path: string, id = '1', tail = 'sw.js') => path.replace(/:[A-Za-z0-9_]+/g, id).replace(/\*$/, tail)
  const key = (r: Route) => `${r.method} ${r.path}`
  const base = (r: Route, family: string, name: string): HostileRequest => {
    const body = bases[key(r)]
    return {
      name: `${key(r)}: ${name}`,
      family,
      route: key(r),
      method: r.method,
      target: fill(r.path),
      headers: [publisherAuth],
      body: body === undefined ? undefined : Buffer.from(body),
      contentType: 'application/json',
    }
  }
  const takesBody = (r: Route) => !['GET', 'HEAD'].includes(r.method)
  const allBodies = bodyTricks(options.bodyLimit)
  const mutationCache = new Map<string, Array<[string, string]>>()
  const mutationsOf = (r: Route) => {
    let m = mutationCache.get(key(r))
    if (!m)
      mutationCache.set(key(r), (m = fieldMutations(key(r), bases[key(r)] ?? '{}', keys, options.allowedEndpoint)))
    return m
  }

  /** Routes that get every invalid token; the others get a seeded handful (the check is one code path). */
  const everyInvalidToken = new Set(['POST /v1/events', 'GET /v1/events', 'GET /v1/stream', 'POST /v1/events/:id/ack'])
  for (const r of options.routes) {
    const authVariants = authTricks(tokens).filter(
      ([name]) => !name.startsWith('invalid token') || everyInvalidToken.has(key(r)) || random.next() < 0.3,
    )
    for (const [name, value] of authVariants) {
      const req = base(r, 'authorization', name)
      req.headers = value === null ? [] : [['authorization', value]]
      out.push(req)
    }
    for (const [name, headers] of headerTricks()) {
      const req = base(r, 'headers', name)
      req.headers = [publisherAuth, ...headers]
      out.push(req)
    }
    // Duplicates and conflicts Fastify only sees through Node's header merging.
    out.push({
      ...base(r, 'headers', 'a valid then a garbage Authorization'),
      headers: [publisherAuth, ['authorization', 'Bearer garbage']],
    })
    out.push({
      ...base(r, 'headers', 'a garbage then a valid Authorization'),
      headers: [['authorization', 'Bearer garbage'], publisherAuth],
    })
    out.push({
      ...base(r, 'headers', 'two content types'),
      headers: [publisherAuth, ['content-type', 'application/json'], ['content-type', 'text/plain']],
    })
    if (r.path.includes(':')) {
      for (const id of HOSTILE_IDS) out.push({ ...base(r, 'path', `id ${id.slice(0, 30)}`), target: fill(r.path, id) })
    }
    if (r.path.endsWith('*')) {
      for (const tail of STATIC_TRICKS)
        out.push({ ...base(r, 'path', `file ${tail.slice(0, 40)}`), target: fill(r.path, '1', tail) })
    }
    const target = fill(r.path)
    for (const [name, t] of [
      ['a trailing slash', `${target}/`],
      ['a double slash', `/${target}`],
      ['upper case', target.toUpperCase()],
      ['a percent-encoded letter', target.replace(/[a-z]/, (c) => `%${c.charCodeAt(0).toString(16)}`)],
      ['a dot segment', target.replace(/^\/([^/]+)/, '/$1/../$1')],
      ['a ./ segment', target.replace(/^\//, '/./')],
      ['a ;param', `${target};jsessionid=1`],
      ['an encoded slash', target.replace(/\/([^/]*)$/, '%2F$1')],
      ['a fragment', `${target}#frag`],
      ['a NUL', `${target}%00`],
      ['8,000 more characters', `${target}/${'a'.repeat(8000)}`],
      ['a backslash', target.replace(/\//g, '\\')],
      ['raw UTF-8', `${target}/\u00e9\ud83d\ude00`],
    ] as const)
      out.push({ ...base(r, 'path', name), target: t })
    // HEAD runs the GET handler: it gets the authorization, header and path tricks above, not the rest again.
    if (r.method === 'HEAD') continue
    if (r.method === 'GET') {
      for (const query of QUERY_TRICKS)
        out.push({ ...base(r, 'query', query.slice(0, 40)), target: `${target}${query}` })
    }
    // Every body trick on routes that read one; a few on the others (a body where none belongs).
    for (const [name, body, contentType] of takesBody(r) ? allBodies : allBodies.filter((_, i) => i % 8 === 0)) {
      out.push({ ...base(r, 'body', name), body, contentType })
    }
    for (const [name, raw] of mutationsOf(r)) {
      out.push({ ...base(r, 'fields', name), body: Buffer.from(raw) })
    }
    if (r.method === 'GET' && r.path === '/v1/stream') {
      for (const [name, t, headers] of streamCases(tokens)) out.push({ ...base(r, 'stream', name), target: t, headers })
    }
    // Framing: what Content-Length and Transfer-Encoding claim against what is sent.
    const body = Buffer.from(bases[key(r)] ?? '{}')
    const framing: Array<[string, Array<[string, string]>, Buffer, boolean?]> = [
      ['Content-Length longer than the body', [['content-length', String(body.length + 100)]], body, true],
      ['Content-Length shorter than the body', [['content-length', String(Math.max(1, body.length - 5))]], body],
      ['Content-Length 0 with a body', [['content-length', '0']], body],
      [
        'two different Content-Lengths',
        [
          ['content-length', String(body.length)],
          ['content-length', '1'],
        ],
        body,
      ],
      ['Content-Length -1', [['content-length', '-1']], body],
      ['Content-Length abc', [['content-length', 'abc']], body],
      ['Content-Length 1e3', [['content-length', '1e3']], body],
      ['Content-Length 0x10', [['content-length', '0x10']], body],
      ['Content-Length of 20 digits', [['content-length', '99999999999999999999']], body, true],
      [
        'Content-Length over BODY_LIMIT, body never sent',
        [['content-length', String(options.bodyLimit * 4)]],
        Buffer.alloc(0),
        true,
      ],
      [
        'Content-Length and chunked',
        [
          ['content-length', String(body.length)],
          ['transfer-encoding', 'chunked'],
        ],
        body,
      ],
      [
        'chunked',
        [['transfer-encoding', 'chunked']],
        Buffer.from(`${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`),
      ],
      ['chunked with a bad size', [['transfer-encoding', 'chunked']], Buffer.from('zz\r\nabc\r\n0\r\n\r\n')],
      [
        'chunked with an extension',
        [['transfer-encoding', 'chunked']],
        Buffer.from(`${body.length.toString(16)};ext=1\r\n${body}\r\n0\r\n\r\n`),
      ],
      [
        'chunked without the last chunk',
        [['transfer-encoding', 'chunked']],
        Buffer.from(`${body.length.toString(16)}\r\n${body}\r\n`),
        true,
      ],
      [
        'chunked over BODY_LIMIT',
        [['transfer-encoding', 'chunked']],
        Buffer.from(`${(options.bodyLimit + 10).toString(16)}\r\n${'x'.repeat(options.bodyLimit + 10)}\r\n0\r\n\r\n`),
      ],
      ['Transfer-Encoding gzip, chunked', [['transfer-encoding', 'gzip, chunked']], Buffer.from('0\r\n\r\n')],
      ['Transfer-Encoding: identity', [['transfer-encoding', 'identity']], body],
    ]
    for (const [name, headers, bytes, mayHang] of framing) {
      out.push({
        ...base(r, 'framing', name),
        headers: [publisherAuth, ['content-type', 'application/json'], ...headers],
        body: bytes,
        autoLength: false,
        mayHang,
      })
    }
    // The request line and header block itself.
    const line = (s: string) => Buffer.from(s, 'utf8')
    const auth = `authorization: Bearer ${tokens.publisher}\r\n`
    const rawTricks: Array<[string, Buffer, boolean?]> = [
      ['HTTP/1.0 without Host', line(`${r.method} ${target} HTTP/1.0\r\n${auth}\r\n`)],
      ['HTTP/1.1 without Host', line(`${r.method} ${target} HTTP/1.1\r\n${auth}connection: close\r\n\r\n`)],
      ['HTTP/2 version', line(`${r.method} ${target} HTTP/2.0\r\nhost: x\r\n${auth}\r\n`)],
      ['HTTP/9.9 version', line(`${r.method} ${target} HTTP/9.9\r\nhost: x\r\n${auth}\r\n`)],
      ['no version', line(`${r.method} ${target}\r\nhost: x\r\n\r\n`)],
      [
        'lower-case method',
        line(`${r.method.toLowerCase()} ${target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`),
      ],
      [
        'absolute-form target',
        line(`${r.method} http://evil.example${target} HTTP/1.1\r\nhost: x\r\n${auth}connection: close\r\n\r\n`),
      ],
      ['two Hosts', line(`${r.method} ${target} HTTP/1.1\r\nhost: x\r\nhost: y\r\n${auth}connection: close\r\n\r\n`)],
      [
        'bare LF line endings',
        line(`${r.method} ${target} HTTP/1.1\nhost: x\n${auth.replace('\r\n', '\n')}connection: close\n\n`),
      ],
      [
        'an obs-fold continuation',
        line(`${r.method} ${target} HTTP/1.1\r\nhost: x\r\nx-fold: a\r\n b\r\n${auth}connection: close\r\n\r\n`),
      ],
      [
        'a space before the colon',
        line(
          `${r.method} ${target} HTTP/1.1\r\nhost: x\r\nauthorization : Bearer ${tokens.publisher}\r\nconnection: close\r\n\r\n`,
        ),
      ],
      [
        'a NUL in a header',
        line(`${r.method} ${target} HTTP/1.1\r\nhost: x\r\nx-nul: a\u0000b\r\n${auth}connection: close\r\n\r\n`),
      ],
      [
        'a CR in a header',
        line(`${r.method} ${target} HTTP/1.1\r\nhost: x\r\nx-cr: a\rb\r\n${auth}connection: close\r\n\r\n`),
      ],
      [
        'a header without a colon',
        line(`${r.method} ${target} HTTP/1.1\r\nhost: x\r\nno-colon\r\n${auth}connection: close\r\n\r\n`),
      ],
      [
        'two spaces in the request line',
        line(`${r.method}  ${target}  HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`),
      ],
      [
        'a header line of 70,000 bytes',
        line(`${r.method} ${target} HTTP/1.1\r\nhost: x\r\nx-long: ${'l'.repeat(70_000)}\r\n\r\n`),
      ],
      ['only the request line, never finished', line(`${r.method} ${target} HTTP/1.1\r\nhost: x\r\n`), true],
      ['a TLS ClientHello', Buffer.from('16030100a5010000a10303', 'hex')],
      ['the HTTP/2 preface', line('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')],
      ['an asterisk target', line(`OPTIONS * HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)],
      ['CONNECT', line(`CONNECT 127.0.0.1:22 HTTP/1.1\r\nhost: 127.0.0.1:22\r\nconnection: close\r\n\r\n`)],
      ['an unknown method', line(`BREW ${target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)],
      ['TRACE', line(`TRACE ${target} HTTP/1.1\r\nhost: x\r\n${auth}connection: close\r\n\r\n`)],
      [
        'Upgrade: websocket',
        line(
          `GET ${target} HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n${auth}\r\n`,
        ),
        true,
      ],
      [
        'Upgrade: h2c',
        line(
          `GET ${target} HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\nconnection: upgrade, http2-settings\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n${auth}\r\n`,
        ),
        true,
      ],
      ['random bytes', random.bytes(512)],
    ]
    for (const [name, raw, mayHang] of rawTricks) out.push({ ...base(r, 'request line', name), raw, mayHang })
  }

  // Seeded mixes: one route, one authorization, up to three other tricks stacked.
  const auths = authTricks(tokens)
  const headers = headerTricks()
  const bodies = allBodies.filter(([, b]) => b.length < 64 * 1024)
  for (let i = 0; i < options.randomCombinations; i++) {
    const r = random.pick(options.routes)
    const [authName, authValue] = random.next() < 0.6 ? ['valid', `Bearer ${tokens.publisher}`] : random.pick(auths)
    const req = base(r, 'random mix', `#${i}`)
    const parts = [authName]
    req.headers = authValue === null ? [] : [['authorization', authValue]]
    if (random.next() < 0.5) {
      const [name, hs] = random.pick(headers)
      req.headers.push(...hs)
      parts.push(name)
    }
    if (r.path.includes(':') && random.next() < 0.6) {
      const id = random.pick(HOSTILE_IDS)
      req.target = fill(r.path, id)
      parts.push(`id ${id.slice(0, 20)}`)
    }
    if (random.next() < 0.4) {
      const query = random.pick(QUERY_TRICKS)
      req.target += query
      parts.push(query.slice(0, 20))
    }
    if (takesBody(r) && random.next() < 0.7) {
      const mutations = mutationsOf(r)
      if (mutations.length && random.next() < 0.6) {
        const [name, raw] = random.pick(mutations)
        req.body = Buffer.from(raw)
        parts.push(name.slice(0, 30))
      } else {
        const [name, body, contentType] = random.pick(bodies)
        req.body = body
        req.contentType = contentType
        parts.push(name)
      }
    }
    if (r.path === '/v1/stream' && random.next() < 0.5) {
      const v = random.pick(LAST_EVENT_ID_TRICKS)
      req.headers.push(['last-event-id', v])
      parts.push(`Last-Event-ID ${v.slice(0, 20)}`)
    }
    req.name = `${key(r)}: mix #${i} (${parts.join(' + ')})`
    out.push(req)
  }
  return out
}

/** The bytes of a request as sent. */
export function wireBytes(req: HostileRequest): Buffer {
  if (req.raw) return req.raw
  const headers: Array<[string, string]> = [['host', '127.0.0.1'], ...req.headers]
  const has = (name: string) => headers.some(([n]) => n.toLowerCase() === name)
  if (req.body !== undefined) {
    if (!has('content-type') && req.contentType !== null && req.contentType !== undefined)
      headers.push(['content-type', req.contentType])
    if (req.autoLength !== false && !has('content-length') && !has('transfer-encoding'))
      headers.push(['content-length', String(req.body.length)])
  }
  headers.push(['connection', 'close'])
  const head = `${req.method} ${req.target} HTTP/1.1\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`
  return Buffer.concat([Buffer.from(head, 'utf8'), req.body ?? Buffer.alloc(0)])
}

export interface RawReply {
  /** The status code, or 0 when no status line came back. */
  status: number
  /** `answered`, `no reply` (timed out; we hung up), or `closed` (the server hung up without a status line). */
  outcome: 'answered' | 'no reply' | 'closed'
  headers: Record<string, string>
  /** The body, as far as it came (a stream is cut after its headers). */
  body: string
  ms: number
}

/**
 * Sends bytes on a fresh loopback socket and reads the reply until the server closes (every request says
 * `Connection: close`), `timeoutMs` passes, or an event stream has sent its headers (we hang up then).
 */
export function sendRaw(port: number, bytes: Buffer, timeoutMs: number): Promise<RawReply> {
  const started = Date.now()
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    const chunks: Buffer[] = []
    let settled = false
    const finish = (outcome: 'answered' | 'no reply' | 'closed') => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      let text = Buffer.concat(chunks).toString('latin1')
      // Interim replies (100 Continue) come first: the final one is what counts.
      let skipped = 0
      while (/^HTTP\/1\.[01] 1\d\d /.test(text) && text.includes('\r\n\r\n', 0)) {
        const cut = text.indexOf('\r\n\r\n') + 4
        skipped += cut
        text = text.slice(cut)
      }
      const m = /^HTTP\/1\.[01] ([2-5]\d\d)/.exec(text)
      const end = text.indexOf('\r\n\r\n')
      const headers: Record<string, string> = {}
      for (const line of text
        .slice(0, end === -1 ? text.length : end)
        .split('\r\n')
        .slice(1)) {
        const i = line.indexOf(':')
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
      }
      resolve({
        status: m ? Number(m[1]) : 0,
        outcome: m ? 'answered' : outcome,
        headers,
        body:
          end === -1
            ? ''
            : Buffer.concat(chunks)
                .subarray(skipped + end + 4)
                .toString('utf8'),
        ms: Date.now() - started,
      })
    }
    const timer = setTimeout(() => finish('no reply'), timeoutMs)
    socket.on('data', (d) => {
      chunks.push(d)
      const text = Buffer.concat(chunks).toString('latin1')
      // A stream never ends: its status and headers are the answer.
      if (/HTTP\/1\.1 200/.test(text) && /content-type: text\/event-stream/i.test(text) && text.includes('\r\n\r\n'))
        finish('answered')
    })
    socket.on('error', () => finish('closed'))
    socket.on('close', () => finish('closed'))
    socket.on('connect', () => {
      // A large body may be refused (413) before it is all written: the write then fails, which is fine.
      socket.write(bytes, () => {})
    })
  })
}

/** Runs `work` over `items` with at most `limit` in flight; results in input order. */
export async function pool<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>) {
  const results = new Array<R>(items.length)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++
        results[i] = await work(items[i], i)
      }
    }),
  )
  return results
}
