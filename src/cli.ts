import { parseArgs } from 'node:util'
import { createParser } from 'eventsource-parser'
import { type Config, ConfigError, commaList, loadConfig, withDevSecret } from './config.ts'
import type { Database } from './db/client.ts'
import { type CliKit, DIRECTORY_HELP, runDirectory } from './directory/cli.ts'
import { runTypes, TYPES_HELP } from './event-types/cli.ts'
import { DEFAULT_TOKEN_TTL_S, mintToken } from './tokens.ts'

/** Exit codes scripts can rely on. */
const EXIT = { ok: 0, failed: 1, usage: 2, config: 78 } as const
const DEFAULT_URL = 'http://localhost:3000'

class UsageError extends Error {}

/** `--tenants`: a JSON object of tenant to roles, as the token's `tenants` claim. */
function tenantsClaim(text: string): Record<string, string[]> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    value = undefined
  }
  const valid =
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((roles) => Array.isArray(roles) && roles.every((r) => typeof r === 'string'))
  if (!valid) throw new UsageError(`--tenants must be a JSON object of tenant to roles: '{"school-b":["director"]}'`)
  return value as Record<string, string[]>
}

const commands: Record<string, { summary: string; help: string; run: (args: string[]) => Promise<number> }> = {
  token: {
    summary: 'mint a JWT for local use',
    help: `herald token --sub <user> --tenant <tenant> [--roles a,b] [--topics 'class:*,news'] [--scope 'events:publish events:broadcast admin'] [--tenants '{"school-b":["director"]}'] [--ttl seconds]

--tenants: every other tenant the user works in, with their roles there (a director of several schools): their one
stream carries all of them, and REST calls act in one with the X-Herald-Tenant header.
Signs with JWT_SECRET, or the development secret kept in DATA_DIR (what \`npm start\` uses when no key is configured).
Prints the token on stdout.`,
    run: async (args) => {
      const { values } = parse(args, {
        sub: { type: 'string' },
        tenant: { type: 'string' },
        roles: { type: 'string' },
        topics: { type: 'string' },
        scope: { type: 'string' },
        tenants: { type: 'string' },
        ttl: { type: 'string' },
      })
      if (!values.sub || !values.tenant) throw new UsageError('--sub and --tenant are required')
      const tenants = values.tenants === undefined ? undefined : tenantsClaim(values.tenants)
      const ttl = values.ttl === undefined ? DEFAULT_TOKEN_TTL_S : Number(values.ttl)
      if (!Number.isInteger(ttl) || ttl <= 0) throw new UsageError('--ttl must be a positive number of seconds')
      const { auth } = withDevSecret(loadConfig(process.env))
      if (ttl > auth.jwtMaxTtlS) {
        throw new UsageError(
          `--ttl may be at most JWT_MAX_TTL_S (${auth.jwtMaxTtlS} s): the server refuses longer tokens`,
        )
      }
      if (!auth.jwtSecret) {
        throw new ConfigError('JWT_PUBLIC_KEY is set: tokens come from the holder of the private key, not this CLI.')
      }
      const secret = auth.jwtSecret
      const token = mintToken(
        secret,
        {
          sub: values.sub,
          tenant: values.tenant,
          roles: commaList(values.roles),
          topics: commaList(values.topics),
          scope: values.scope ?? '',
          ...(tenants && { tenants }),
        },
        ttl,
      )
      console.log(token)
      return EXIT.ok
    },
  },
  publish: {
    summary: 'publish an event',
    help: `herald publish --token <jwt> --title <text> [--to-user u1,u2] [--to-role r] [--to-topic t] [--to-tenant]
               [--type app.notice] [--body text] [--priority low|normal|high|urgent] [--url /path] [--data '{"k":1}']
               [--action 'ack:Got it'] [--action 'open:View grade:/grades/42'] [--icon url] [--image url] [--badge url]
               [--escalate <seconds>[:read|acked]] [--json '<whole body>'] [--idempotency-key k]
               [--deliver-at <time>] [--live] [--server ${DEFAULT_URL}]

--action <ack|read|open>:<title>[:<url>] adds a button (at most 2, in order): ack acknowledges, read marks read,
open opens its url (or the event's --url) and marks read. URLs are paths on the service or https URLs.
--deliver-at publishes later: an RFC 3339 time with an offset (2026-12-24T08:00:00+01:00), or +<n>s|m|h|d from now
(+30m). The server checks the event now and answers {"scheduledId","deliverAt"}: see \`herald scheduled\`.
--escalate 900 reports every recipient who has not read the event 900 s after it is published, by an
\`event.unread\` webhook (--escalate 900:acked: who has not acked it).
--live sends a live-only update ("store": false): to the matching open streams as \`event: live\`, never stored,
listed, pushed or replayed; the server answers {"live":true}. Not with --deliver-at or --escalate.
The token may also come from HERALD_TOKEN and the server from HERALD_URL. Prints the server's JSON answer.`,
    run: async (args) => {
      const { values, lists, token, endpoint } = authedCommand(args, {
        json: { type: 'string' },
        title: { type: 'string' },
        type: { type: 'string' },
        body: { type: 'string' },
        priority: { type: 'string' },
        url: { type: 'string' },
        data: { type: 'string' },
        action: { type: 'string', multiple: true },
        icon: { type: 'string' },
        image: { type: 'string' },
        badge: { type: 'string' },
        'to-user': { type: 'string' },
        'to-role': { type: 'string' },
        'to-topic': { type: 'string' },
        'to-tenant': { type: 'boolean' },
        'idempotency-key': { type: 'string' },
        'deliver-at': { type: 'string' },
        escalate: { type: 'string' },
        live: { type: 'boolean' },
      })
      const later = {
        ...(values['deliver-at'] === undefined ? {} : { deliverAt: deliverAtFlag(values['deliver-at']) }),
        ...(values.live ? { store: false } : {}),
      }
      let body: unknown
      if (values.json !== undefined) {
        const whole = parseJson(values.json, '--json')
        body = Object.keys(later).length ? { ...(whole as object), ...later } : whole
      } else {
        if (!values.title) throw new UsageError('--title is required (or give the whole body with --json)')
        body = {
          type: values.type ?? 'app.notice',
          title: values.title,
          to: {
            users: commaList(values['to-user']),
            roles: commaList(values['to-role']),
            topics: commaList(values['to-topic']),
            tenant: Boolean(values['to-tenant']),
          },
          ...(values.body !== undefined ? { body: values.body } : {}),
          ...(values.priority !== undefined ? { priority: values.priority } : {}),
          ...(values.url !== undefined ? { url: values.url } : {}),
          ...(values.data !== undefined ? { data: parseJson(values.data, '--data') } : {}),
          ...(lists.action ? { actions: lists.action.map(parseAction) } : {}),
          ...(values.icon !== undefined ? { icon: values.icon } : {}),
          ...(values.image !== undefined ? { image: values.image } : {}),
          ...(values.badge !== undefined ? { badge: values.badge } : {}),
          ...(values.escalate !== undefined ? { escalate: escalateFlag(values.escalate) } : {}),
          ...later,
        }
      }
      return postPublish(endpoint('/v1/events'), token, body, values['idempotency-key'], 'publish')
    },
  },
  edit: {
    summary: 'edit an event you published (an admin: any of the tenant)',
    help: `herald edit <id> --token <jwt> [--title text] [--body text] [--url /path] [--data '{"k":1}']
           [--clear body,url,data] [--server ${DEFAULT_URL}]

Changes the event's title, body, url or data (at least one); --clear removes the body, url or data. Its streams
get an \`update\` and a device it was pushed to shows the new text. For the event's publisher, or a token with
the admin scope. The token may also come from HERALD_TOKEN and the server from HERALD_URL. Prints the event as
it now stands (its revision counts the edits); exit 1 when the server refuses (404: not yours to edit, or
recalled).`,
    run: async (args) => {
      const [id, ...rest] = eventIdFirst(args, 'edit 42 --title "New title"')
      const { values, token, endpoint } = authedCommand(rest, {
        title: { type: 'string' },
        body: { type: 'string' },
        url: { type: 'string' },
        data: { type: 'string' },
        clear: { type: 'string' },
      })
      const cleared = commaList(values.clear)
      const unknown = cleared.filter((field) => !['body', 'url', 'data'].includes(field))
      if (unknown.length) throw new UsageError(`--clear takes body, url and data, not ${unknown.join(', ')}`)
      const changes = {
        ...Object.fromEntries(cleared.map((field) => [field, null])),
        ...(values.title !== undefined ? { title: values.title } : {}),
        ...(values.body !== undefined ? { body: values.body } : {}),
        ...(values.url !== undefined ? { url: values.url } : {}),
        ...(values.data !== undefined ? { data: parseJson(values.data, '--data') } : {}),
      }
      if (!Object.keys(changes).length) {
        throw new UsageError('give what to change: --title, --body, --url, --data or --clear')
      }
      const res = await callService('PATCH', endpoint(`/v1/events/${id}`), token, changes)
      const text = await res.text()
      if (!res.ok) {
        console.error(`edit failed: HTTP ${res.status} ${text}`)
        return EXIT.failed
      }
      console.log(text)
      return EXIT.ok
    },
  },
  recall: {
    summary: 'recall an event you published (an admin: any of the tenant)',
    help: `herald recall <id> --token <jwt> [--server ${DEFAULT_URL}]

Takes the event back: it is gone from every inbox, its streams get a \`delete\`, a push not sent yet is
cancelled and a device it was pushed to is told to close its notification. For the event's publisher, or a token
with the admin scope. The token may also come from HERALD_TOKEN and the server from HERALD_URL. Exit 1 when the
server refuses (404: not yours to recall, or recalled already).`,
    run: async (args) => {
      const [id, ...rest] = eventIdFirst(args, 'recall 42')
      const { token, endpoint } = authedCommand(rest, {})
      const res = await callService('DELETE', endpoint(`/v1/events/${id}`), token)
      if (!res.ok) {
        console.error(`recall failed: HTTP ${res.status} ${await res.text()}`)
        return EXIT.failed
      }
      console.log(JSON.stringify({ id, state: 'recalled' }))
      return EXIT.ok
    },
  },
  recipients: {
    summary: 'the roll-call of an event you published: who got it, acked and read it',
    help: `herald recipients <id> [--state all|unread|read|acked] --token <jwt> [--server ${DEFAULT_URL}]

Lists the event's recipients, one JSON line each ({userId, displayName, deliveredAt, pushedAt, ackedAt, readAt}),
every page of them, then a line with the totals. For the event's publisher, or a token with the admin scope. The
token may also come from HERALD_TOKEN and the server from HERALD_URL. Exit 1 when the server refuses (404: not
yours).`,
    run: async (args) => {
      const [id, ...rest] = eventIdFirst(args, 'recipients 42 --state unread')
      const { values, token, endpoint } = authedCommand(rest, {
        state: { type: 'string' },
      })
      const state = values.state ?? 'all'
      if (!['all', 'unread', 'read', 'acked'].includes(state)) {
        throw new UsageError(`--state takes all, unread, read or acked, not ${state}`)
      }
      let cursor: string | null = null
      let totals: unknown
      do {
        const url = endpoint(`/v1/events/${id}/recipients`)
        url.searchParams.set('state', state)
        url.searchParams.set('limit', '1000')
        if (cursor) url.searchParams.set('cursor', cursor)
        const res = await callService('GET', url, token)
        const text = await res.text()
        if (!res.ok) {
          console.error(`recipients failed: HTTP ${res.status} ${text}`)
          return EXIT.failed
        }
        const page = JSON.parse(text) as { recipients: unknown[]; totals: unknown; next: string | null }
        for (const r of page.recipients) console.log(JSON.stringify(r))
        totals = page.totals
        cursor = page.next
      } while (cursor)
      console.log(JSON.stringify({ totals }))
      return EXIT.ok
    },
  },
  nudge: {
    summary: 'remind the recipients of an event who have not read it',
    help: `herald nudge <id> --token <jwt> [--server ${DEFAULT_URL}]

Pushes the event again to the devices of its recipients who have not read it and sends their open streams a
\`nudge\`; no one who read it is reminded, and no new event is made. Prints {nudged, pushes}. At most once per
NUDGE_MIN_INTERVAL_S per event: sooner, exit 1 with the server's 429, which says how long to wait. For the
event's publisher, or a token with the admin scope.`,
    run: async (args) => {
      const [id, ...rest] = eventIdFirst(args, 'nudge 42')
      const { token, endpoint } = authedCommand(rest, {})
      const res = await callService('POST', endpoint(`/v1/events/${id}/nudge`), token)
      const text = await res.text()
      if (!res.ok) {
        const wait = res.headers.get('retry-after')
        console.error(`nudge failed: HTTP ${res.status} ${text}${wait ? ` (retry in ${wait} s)` : ''}`)
        return EXIT.failed
      }
      console.log(text)
      return EXIT.ok
    },
  },
  scheduled: {
    summary: 'list, show or cancel scheduled publishes (publish --deliver-at)',
    help: `herald scheduled list [--after <id>] [--limit n] --token <jwt> [--server ${DEFAULT_URL}]
herald scheduled show <id> --token <jwt> [--server ${DEFAULT_URL}]
herald scheduled cancel <id> --token <jwt> [--server ${DEFAULT_URL}]

list: the pending scheduled publishes of the token's user (an admin's: of the tenant), oldest first, with
"next" for --after when there are more. show: one of them, with its state, its events and, once published,
their ids. cancel: cancels a pending one; exit 1 if it was published already (the answer names its events).
The token may also come from HERALD_TOKEN and the server from HERALD_URL. Prints the server's JSON answer.`,
    run: async (args) => {
      const [action, rest] = takeAction(args, ['list', 'show', 'cancel'], 'list, show or cancel')
      const id = action === 'list' ? undefined : rest.shift()
      if (action !== 'list' && (id === undefined || !/^[0-9]{1,18}$/.test(id))) {
        throw new UsageError(`${action} needs the scheduled id (a number), as in: herald scheduled ${action} 42`)
      }
      const { values, token, endpoint } = authedCommand(rest, {
        ...(action === 'list' ? { after: { type: 'string' as const }, limit: { type: 'string' as const } } : {}),
      })
      const url = endpoint(id === undefined ? '/v1/scheduled' : `/v1/scheduled/${id}`)
      if (values.after !== undefined) url.searchParams.set('after', values.after)
      if (values.limit !== undefined) url.searchParams.set('limit', values.limit)
      const res = await callService(action === 'cancel' ? 'DELETE' : 'GET', url, token)
      const text = await res.text()
      if (!res.ok) {
        console.error(`${action} failed: HTTP ${res.status} ${text}`)
        return EXIT.failed
      }
      console.log(action === 'cancel' ? JSON.stringify({ id, state: 'cancelled' }) : text)
      return EXIT.ok
    },
  },
  system: {
    summary: 'publish one event into many tenants (platform operators: events:system)',
    help: `herald system publish (--tenants a,b | --all) --title <text> --token <operator jwt>
               [--to-role r] [--to-tenant] [--type system.notice] [--body text] [--priority low|normal|high|urgent]
               [--url /path] [--data '{"k":1}'] [--ttl seconds] [--json '<whole body>'] [--idempotency-key k]
               [--server ${DEFAULT_URL}]

Publishes the event as its own in each tenant listed (--tenants, at most 10,000) or in every tenant the service
knows (--all): each gets its own copy, with its own id, which names no other tenant. All tenants or none. The
audience defaults to the whole tenant (--to-tenant); --to-role narrows it to role holders in every tenant. The
token needs the events:system scope (herald token ... --scope events:system). The token may also come from
HERALD_TOKEN and the server from HERALD_URL. Prints the server's JSON answer: {tenants, createdAt, events:
[{tenant, id}]}; exit 1 when the server refuses.`,
    run: async (args) => {
      const [, rest] = takeAction(args, ['publish'])
      const { values, token, endpoint } = authedCommand(rest, {
        json: { type: 'string' },
        tenants: { type: 'string' },
        all: { type: 'boolean' },
        title: { type: 'string' },
        type: { type: 'string' },
        body: { type: 'string' },
        priority: { type: 'string' },
        url: { type: 'string' },
        data: { type: 'string' },
        ttl: { type: 'string' },
        'to-role': { type: 'string' },
        'to-tenant': { type: 'boolean' },
        'idempotency-key': { type: 'string' },
      })
      if (values.all && values.tenants !== undefined) throw new UsageError('give --tenants or --all, not both')
      const tenants = values.all ? '*' : commaList(values.tenants)
      let body: unknown
      if (values.json !== undefined) {
        const whole = parseJson(values.json, '--json') as object
        body = values.all || values.tenants !== undefined ? { ...whole, tenants } : whole
      } else {
        if (!values.all && !tenants.length) throw new UsageError('--tenants a,b or --all is required')
        if (!values.title) throw new UsageError('--title is required (or give the whole body with --json)')
        const roles = commaList(values['to-role'])
        body = {
          tenants,
          type: values.type ?? 'system.notice',
          title: values.title,
          to: { ...(roles.length ? { roles } : {}), tenant: Boolean(values['to-tenant']) || !roles.length },
          ...(values.body !== undefined ? { body: values.body } : {}),
          ...(values.priority !== undefined ? { priority: values.priority } : {}),
          ...(values.url !== undefined ? { url: values.url } : {}),
          ...(values.data !== undefined ? { data: parseJson(values.data, '--data') } : {}),
          ...(values.ttl !== undefined ? { ttl: Number(values.ttl) } : {}),
        }
      }
      return postPublish(endpoint('/v1/system/events'), token, body, values['idempotency-key'], 'system publish')
    },
  },
  topics: {
    summary: 'the topics a user follows; a topic’s members (admin)',
    help: `herald topics list --token <jwt> [--server ${DEFAULT_URL}]
herald topics follow <topic> --token <jwt>
herald topics unfollow <topic> --token <jwt>
herald topics members <topic> --token <admin jwt>
herald topics add <topic> --users a,b --token <admin jwt>
herald topics remove <topic> --users a,b --token <admin jwt>

list, follow, unfollow: the token's user's topics (follow needs the token's topics claim to allow the topic).
A stream opened without --topics follows them, live. members, add, remove: a topic's members, for a token
with the admin scope (at most 1,000 users a call). The token may also come from HERALD_TOKEN and the server
from HERALD_URL. Prints the server's JSON answer; exit 1 when the server refuses.`,
    run: async (args) => {
      const [action, rest] = takeAction(args, ['list', 'follow', 'unfollow', 'members', 'add', 'remove'])
      const topic = action === 'list' ? undefined : rest.shift()
      if (action !== 'list' && !topic)
        throw new UsageError(`${action} needs a topic, as in: herald topics ${action} class:7A`)
      const bulk = action === 'add' || action === 'remove'
      const { values, token, endpoint } = authedCommand(rest, {
        ...(bulk ? { users: { type: 'string' as const } } : {}),
      })
      const users = commaList(values.users)
      if (bulk && !users.length) throw new UsageError(`${action} needs --users a,b`)
      const path =
        topic === undefined
          ? '/v1/me/topics'
          : ['follow', 'unfollow'].includes(action)
            ? `/v1/me/topics/${encodeURIComponent(topic)}`
            : `/v1/topics/${encodeURIComponent(topic)}/members`
      const method = { list: 'GET', members: 'GET', follow: 'PUT', add: 'PUT', unfollow: 'DELETE', remove: 'DELETE' }[
        action
      ]
      const res = await callService(method, endpoint(path), token, bulk ? { users } : undefined)
      const text = await res.text()
      if (!res.ok) {
        console.error(`${action} failed: HTTP ${res.status} ${text}`)
        return EXIT.failed
      }
      console.log(res.status === 204 ? JSON.stringify({ topic, following: action === 'follow' }) : text)
      return EXIT.ok
    },
  },
  preferences: {
    summary: 'a user’s notification preferences; a tenant’s defaults (admin)',
    help: `herald preferences show [--tenant] --token <jwt> [--server ${DEFAULT_URL}]
herald preferences set --json '<preferences>' [--tenant] --token <jwt>
herald preferences reset [--tenant] --token <jwt>

show, set, reset: the token's user's own preferences, or with --tenant the tenant's defaults (a token with the
admin scope). set replaces them whole with the JSON given, for example
  '{"rules":[{"type":"grades.*","push":false},{"topic":"club:*","inApp":false}],
    "push":{"enabled":true,"minPriority":"high"},
    "quietHours":{"start":"22:00","end":"07:00","timeZone":"Europe/Paris","days":["mon","tue","wed","thu","fri"]}}'
(--tenant also takes "urgentBypass": false, for urgent events to follow them too); reset sets them to nothing.
The token may also come from HERALD_TOKEN and the server from HERALD_URL. Prints the server's JSON answer; exit 1
when the server refuses (400 names the field at fault).`,
    run: async (args) => {
      const [action, rest] = takeAction(args, ['show', 'set', 'reset'], 'show, set or reset')
      const { values, token, endpoint } = authedCommand(rest, {
        tenant: { type: 'boolean' },
        ...(action === 'set' ? { json: { type: 'string' as const } } : {}),
      })
      if (action === 'set' && values.json === undefined) throw new UsageError('set needs --json with the preferences')
      const body = action === 'set' ? parseJson(values.json as string, '--json') : action === 'reset' ? {} : undefined
      const url = endpoint(values.tenant ? '/v1/tenant/preferences' : '/v1/me/preferences')
      const res = await callService(body === undefined ? 'GET' : 'PUT', url, token, body)
      const text = await res.text()
      if (!res.ok) {
        console.error(`${action} failed: HTTP ${res.status} ${text}`)
        return EXIT.failed
      }
      console.log(text)
      return EXIT.ok
    },
  },
  directory: {
    summary: 'the user directory (admin): import a CSV or JSONL file of users; list, get, remove',
    help: DIRECTORY_HELP,
    run: (args) => runDirectory(args, kit),
  },
  types: {
    summary: 'the tenant’s event types: list; put (admin) a type from a JSON file; remove',
    help: TYPES_HELP,
    run: (args) => runTypes(args, kit),
  },
  webhooks: {
    summary: 'the tenant’s webhook endpoints (admin): list, add, remove, enable, deliveries',
    help: `herald webhooks list --token <admin jwt> [--server ${DEFAULT_URL}]
herald webhooks add <url> --events user.online,event.read [--description text] --token <admin jwt>
herald webhooks remove <id> --token <admin jwt>
herald webhooks enable <id> --token <admin jwt>
herald webhooks deliveries <id> [--cursor <delivery id>] [--limit n] --token <admin jwt>

add registers an https endpoint for the event types given (event.published, event.read, event.acked,
event.unread, push.failed, user.online, user.offline) and prints it with its signing secret, shown only then.
list shows each endpoint's health (failingSince, disabledAt); enable turns one disabled after failing for
WEBHOOK_DISABLE_AFTER_H back on; deliveries lists its recent deliveries, newest first ("next" for --cursor).
For a token with the admin scope. The token may also come from HERALD_TOKEN and the server from HERALD_URL.
Prints the server's JSON answer; exit 1 when the server refuses (400 names the field at fault).`,
    run: async (args) => {
      const [action, rest] = takeAction(args, ['list', 'add', 'remove', 'enable', 'deliveries'])
      const target = action === 'list' ? undefined : rest.shift()
      if (action === 'add' && !target) {
        throw new UsageError(
          'add needs the URL, as in: herald webhooks add https://crm.example/hooks --events user.online',
        )
      }
      if (action !== 'list' && action !== 'add' && (target === undefined || !/^[0-9]{1,18}$/.test(target))) {
        throw new UsageError(`${action} needs the webhook id (a number), as in: herald webhooks ${action} 3`)
      }
      const { values, token, endpoint } = authedCommand(rest, {
        ...(action === 'add' ? { events: { type: 'string' as const }, description: { type: 'string' as const } } : {}),
        ...(action === 'deliveries' ? { cursor: { type: 'string' as const }, limit: { type: 'string' as const } } : {}),
      })
      const events = commaList(values.events)
      if (action === 'add' && !events.length) throw new UsageError('add needs --events, as in: --events user.online')
      const path = {
        list: '/v1/webhooks',
        add: '/v1/webhooks',
        remove: `/v1/webhooks/${target}`,
        enable: `/v1/webhooks/${target}/enable`,
        deliveries: `/v1/webhooks/${target}/deliveries`,
      }[action]
      const url = endpoint(path)
      if (values.cursor !== undefined) url.searchParams.set('cursor', values.cursor)
      if (values.limit !== undefined) url.searchParams.set('limit', values.limit)
      const method = { list: 'GET', add: 'POST', remove: 'DELETE', enable: 'POST', deliveries: 'GET' }[action]
      const body =
        action === 'add'
          ? { url: target, events, ...(values.description !== undefined ? { description: values.description } : {}) }
          : undefined
      const res = await callService(method, url, token, body)
      const text = await res.text()
      if (!res.ok) {
        console.error(`${action} failed: HTTP ${res.status} ${text}`)
        return EXIT.failed
      }
      console.log(res.status === 204 ? JSON.stringify({ id: target, state: 'removed' }) : text)
      return EXIT.ok
    },
  },
  stats: {
    summary: 'the tenant’s statistics per day and event type, and who is online now (admin)',
    help: `herald stats [--from 2025-03-01] [--to 2025-03-08] [--type grades.posted] --token <admin jwt> [--server ${DEFAULT_URL}]

One JSON line per UTC day and event type ({day, type, published, deliveredOnStreams, pushed, pushFailures, acked,
read, medianTimeToReadS}), then a line {now: {openStreams, onlineUsers}}. --from and --to are a date or an ISO
date-time; by default the last 7 days, at most 92. For a token with the admin scope. The token may also come from
HERALD_TOKEN and the server from HERALD_URL. Exit 1 when the server refuses (400 names the field at fault).`,
    run: async (args) => {
      const { values, token, endpoint } = authedCommand(args, {
        from: { type: 'string' },
        to: { type: 'string' },
        type: { type: 'string' },
      })
      const url = endpoint('/v1/stats')
      for (const name of ['from', 'to', 'type'] as const) {
        if (values[name] !== undefined) url.searchParams.set(name, values[name])
      }
      const res = await callService('GET', url, token)
      const text = await res.text()
      if (!res.ok) {
        console.error(`stats failed: HTTP ${res.status} ${text}`)
        return EXIT.failed
      }
      const stats = JSON.parse(text) as { days: unknown[]; now: unknown }
      for (const day of stats.days) console.log(JSON.stringify(day))
      console.log(JSON.stringify({ now: stats.now }))
      return EXIT.ok
    },
  },
  audit: {
    summary: 'the tenant’s stream connections: who, from where, when and why they closed (admin)',
    help: `herald audit connections [--user id] [--from 2025-03-01] [--to 2025-03-08] --token <admin jwt> [--server ${DEFAULT_URL}]

One JSON line per stream connection, newest first, every page of them ({id, user, instance, openedAt, closedAt,
closeReason, userAgent, clientIp}). --from and --to are a date or an ISO date-time. Kept AUDIT_RETENTION_DAYS.
For a token with the admin scope. The token may also come from HERALD_TOKEN and the server from HERALD_URL.
Exit 1 when the server refuses (400 names the field at fault).`,
    run: async (args) => {
      const [, rest] = takeAction(args, ['connections'])
      const { values, token, endpoint } = authedCommand(rest, {
        user: { type: 'string' },
        from: { type: 'string' },
        to: { type: 'string' },
      })
      let cursor: string | null = null
      do {
        const url = endpoint('/v1/audit/connections')
        for (const name of ['user', 'from', 'to'] as const) {
          if (values[name] !== undefined) url.searchParams.set(name, values[name])
        }
        url.searchParams.set('limit', '1000')
        if (cursor) url.searchParams.set('cursor', cursor)
        const res = await callService('GET', url, token)
        const text = await res.text()
        if (!res.ok) {
          console.error(`audit failed: HTTP ${res.status} ${text}`)
          return EXIT.failed
        }
        const page = JSON.parse(text) as { connections: unknown[]; next: string | null }
        for (const c of page.connections) console.log(JSON.stringify(c))
        cursor = page.next
      } while (cursor)
      return EXIT.ok
    },
  },
  tail: {
    summary: 'print a stream, one JSON line per event; resumes after drops',
    help: `herald tail --token <jwt> [--topics a,b] [--last-event-id N] [--server ${DEFAULT_URL}]

Prints each notification, edit (update), recall (delete) and receipt as a JSON line on stdout; reconnects with
Last-Event-ID after a drop, like a browser. Stops on Ctrl-C, or with exit code 1 when the server refuses the stream.`,
    run: async (args) => {
      const { values, token, endpoint } = authedCommand(args, {
        topics: { type: 'string' },
        'last-event-id': { type: 'string' },
      })
      const url = endpoint('/v1/stream')
      if (values.topics) url.searchParams.set('topics', values.topics)
      let lastEventId = values['last-event-id']
      let retryMs = 3_000
      for (;;) {
        const res = await fetch(url, {
          headers: {
            authorization: `Bearer ${token}`,
            accept: 'text/event-stream',
            ...(lastEventId ? { 'last-event-id': lastEventId } : {}),
          },
        }).catch((err: unknown) => {
          console.error(`cannot reach ${url.origin} (${reason(err)}); retrying in ${retryMs} ms`)
          return undefined
        })
        if (res && !res.ok) {
          console.error(`stream refused: HTTP ${res.status} ${await res.text()}`)
          return EXIT.failed
        }
        if (res?.status === 204) {
          console.error('stream closed for good: this user opened more streams than the server allows (evicted)')
          return EXIT.failed
        }
        if (res?.body) {
          let evicted = false
          const parser = createParser({
            onEvent: (e) => {
              console.log(JSON.stringify({ event: e.event ?? 'message', id: e.id, data: safeJson(e.data) }))
              // `evicted` ends the stream for good; its `id: evicted` is no resume point.
              if (e.event === 'evicted') evicted = true
              else if (e.id) lastEventId = e.id
            },
            onRetry: (ms) => {
              retryMs = ms
            },
          })
          const decoder = new TextDecoder()
          try {
            for await (const chunk of res.body) parser.feed(decoder.decode(chunk, { stream: true }))
          } catch {
            // dropped: fall through and resume
          }
          if (evicted) {
            console.error('stream closed for good: this user opened more streams than the server allows (evicted)')
            return EXIT.failed
          }
          console.error(`stream ended; resuming after ${lastEventId ?? 'nothing'} in ${retryMs} ms`)
        }
        await new Promise((r) => setTimeout(r, retryMs))
      }
    },
  },
  vapid: {
    summary: 'make a new VAPID key pair for Web Push',
    help: `herald vapid

Prints a new VAPID key pair as environment lines (VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY) to paste into your
configuration. Unset, the service makes a pair once and keeps it in the database. Changing the pair
invalidates every browser's existing push subscription.`,
    run: async (args) => {
      parse(args, {})
      const { default: webpush } = await import('web-push')
      const keys = webpush.generateVAPIDKeys()
      console.log(`VAPID_PUBLIC_KEY=${keys.publicKey}\nVAPID_PRIVATE_KEY=${keys.privateKey}`)
      return EXIT.ok
    },
  },
  prune: {
    summary: 'delete expired events (and their receipts and push records) once',
    help: `herald prune

Deletes events past their own ttl or older than RETENTION_DAYS (default 30), with their receipts and push
records, idempotency keys older than 24 h, and scheduled publishes published or cancelled more than
RETENTION_DAYS ago, from DATABASE_URL or the embedded database in DATA_DIR.
The server also does this every PRUNE_INTERVAL_S. Prints what it deleted as JSON.`,
    run: async (args) => {
      parse(args, {})
      const { prune } = await import('./events/retention.ts')
      await withMigratedDatabase('prune', async (database, config) => {
        console.log(
          JSON.stringify({
            pruned: await prune(database, config.events.retentionDays, config.events.auditRetentionDays),
          }),
        )
      })
      return EXIT.ok
    },
  },
  migrate: {
    summary: 'apply database migrations (DATABASE_URL, or PGlite in DATA_DIR)',
    help: `herald migrate

Applies the migrations in drizzle/ to DATABASE_URL, or to the embedded PGlite in DATA_DIR when it is unset.
The server also does this at start; run it yourself to migrate ahead of a deploy.`,
    run: async (args) => {
      parse(args, {})
      await withMigratedDatabase('migrate', async (database) => {
        console.log(`migrations applied (${database.kind})`)
      })
      return EXIT.ok
    },
  },
}

/** Opens DATABASE_URL (or the embedded database in DATA_DIR), applies migrations, runs `work`, closes. */
async function withMigratedDatabase(command: string, work: (database: Database, config: Config) => Promise<void>) {
  const config = loadConfig(process.env)
  // Loaded here, not at the top: the database drivers take a second to load and only these commands need them.
  const { openDatabase, pgliteDirIn } = await import('./db/client.ts')
  const { runMigrations } = await import('./db/migrate.ts')
  const database = await openDatabase({
    url: config.database.url,
    pgliteDir: pgliteDirIn(config.database.dataDir),
    poolSize: 2,
    role: `herald ${command}`,
  })
  try {
    await runMigrations(database)
    await work(database, config)
  } finally {
    await database.close()
  }
}

type OptionKinds = Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>

/**
 * Strict flag parsing: an unknown flag is a usage error (exit 2), not something silently ignored. Flags that
 * may be repeated (`multiple`) are in `lists`, the others in `values`.
 */
function parse(
  args: string[],
  options: OptionKinds,
): { values: Record<string, string | undefined>; lists: Record<string, string[] | undefined> } {
  let parsed: Record<string, unknown>
  try {
    parsed = parseArgs({ args, options, strict: true }).values
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const values: Record<string, string | undefined> = {}
  const lists: Record<string, string[] | undefined> = {}
  for (const [name, value] of Object.entries(parsed)) {
    if (options[name]?.multiple) lists[name] = value as string[]
    else values[name] = value as string | undefined
  }
  return { values, lists }
}

/**
 * `<id> ...rest` of a command about one event; when the id is missing or not one, a usage error that shows
 * `example` (the command as a user types it: `recall 42`).
 */
function eventIdFirst(args: string[], example: string): [string, ...string[]] {
  const [id, ...rest] = args
  if (id === undefined || !/^[0-9]{1,18}$/.test(id)) {
    throw new UsageError(`${example.split(' ')[0]} needs the event id (a number), as in: herald ${example}`)
  }
  return [id, ...rest]
}

/**
 * A command that calls the service: its flags, with --token and --server besides; the token, from --token or
 * HERALD_TOKEN (a usage error without one); and `endpoint(path)`, the path on --server or HERALD_URL.
 */
function authedCommand(args: string[], options: OptionKinds) {
  const { values, lists } = parse(args, { token: { type: 'string' }, server: { type: 'string' }, ...options })
  const token = requireToken(values.token)
  return { values, lists, token, endpoint: (path: string) => new URL(path, serverUrl(values.server)) }
}

/** The token from --token or HERALD_TOKEN; without one, a usage error saying `missing`. */
function requireToken(
  flag: string | undefined,
  missing = '--token (or HERALD_TOKEN) is required; mint one with `herald token`',
): string {
  const token = flag ?? process.env.HERALD_TOKEN
  if (!token) throw new UsageError(missing)
  return token
}

/**
 * `herald <command> <action> ...`: the action, one of `actions` (else a usage error naming them, as `named`
 * says), and the arguments after it.
 */
function takeAction<A extends string>(
  args: string[],
  actions: readonly A[],
  named = actions.join(', '),
): [action: A, rest: string[]] {
  const [action, ...rest] = args
  if (!(actions as readonly string[]).includes(action)) {
    throw new UsageError(action ? `unknown action "${action}": ${named}` : `${named}?`)
  }
  return [action as A, rest]
}

/** What `herald directory` and `herald types` borrow of this CLI. */
const kit: CliKit = {
  usageError: (message) => new UsageError(message),
  parseAction: (args, actions, options) => {
    const [action, rest] = takeAction(args, actions)
    try {
      return { action, ...parseArgs({ args: rest, options, allowPositionals: true, strict: true }) }
    } catch (err) {
      throw new UsageError((err as Error).message)
    }
  },
  requireToken,
  serverUrl,
  callService,
}

/**
 * `--action ack:Got it`, `--action 'open:View grade:/grades/42'`: what the button does, its title, and for
 * `open` a URL (the last `:` followed by `/` or `https://` starts it, so a title may hold colons).
 */
function parseAction(text: string): { action: string; title: string; url?: string } {
  const match = /^([^:]+):(.+?)(?::(\/.*|https:\/\/.*))?$/s.exec(text)
  if (!match) throw new UsageError(`--action must be <ack|read|open>:<title>[:<url>], got "${text}"`)
  const [, action, title, url] = match
  return url === undefined ? { action, title } : { action, title, url }
}

/** Units of a relative --deliver-at, in seconds. */
const RELATIVE_UNITS_S: Record<string, number> = { s: 1, m: 60, h: 3_600, d: 86_400 }

/** --deliver-at as the server takes it: an RFC 3339 time as given, or +<n><unit> from now as one. */
function deliverAtFlag(text: string): string {
  const relative = /^\+([0-9]{1,7})([smhd])$/.exec(text)
  if (!relative) return text // the server checks it, and names the field if it is not right
  return new Date(Date.now() + Number(relative[1]) * RELATIVE_UNITS_S[relative[2]] * 1000).toISOString()
}

function parseJson(text: string, flag: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new UsageError(`${flag} is not valid JSON`)
  }
}

/** POSTs a publish body (an event, or a platform broadcast) and prints the answer; a refusal exits 1 with it. */
async function postPublish(
  url: URL,
  token: string,
  body: unknown,
  idempotencyKey: string | undefined,
  what: string,
): Promise<number> {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      ...actingTenant(),
      'content-type': 'application/json',
      ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
    },
    body: JSON.stringify(body),
  }).catch((err: unknown) => {
    throw new Error(`cannot reach ${url.origin} (${reason(err)}); is the server running? Set --server or HERALD_URL.`)
  })
  const text = await res.text()
  if (!res.ok) {
    console.error(`${what} failed: HTTP ${res.status} ${text}`)
    return EXIT.failed
  }
  console.log(text)
  return EXIT.ok
}

/** Why a fetch failed, from its cause: `ECONNREFUSED 127.0.0.1:3000`, not undici's bare "fetch failed". */
function reason(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  return cause?.message ?? cause?.code ?? (err as Error).message ?? String(err)
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/** `--escalate 900` or `--escalate 900:acked` as the body's `escalate`. */
function escalateFlag(value: string): { after: number; unless: string } {
  const m = /^([0-9]{1,9})(?::(read|acked))?$/.exec(value)
  if (!m) throw new UsageError(`--escalate takes <seconds>[:read|acked], as in --escalate 900, not ${value}`)
  return { after: Number(m[1]), unless: m[2] ?? 'read' }
}

/** A request to the service with a user's token; a server that cannot be reached is an error naming it. HERALD_TENANT, when set,
 * names the tenant to act in (a token covering several: X-Herald-Tenant). */
function callService(method: string, url: URL, token: string, body?: unknown): Promise<Response> {
  return fetch(url, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...actingTenant(),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).catch((err: unknown) => {
    throw new Error(`cannot reach ${url.origin} (${reason(err)}); is the server running? Set --server or HERALD_URL.`)
  })
}

/**
 * X-Herald-Tenant from HERALD_TENANT: a token covering several tenants (a director of several schools) acts in
 * that one; unset, in the token's own tenant.
 */
function actingTenant(): Record<string, string> {
  const tenant = process.env.HERALD_TENANT?.trim()
  return tenant ? { 'x-herald-tenant': tenant } : {}
}

function serverUrl(flag: string | undefined): string {
  const url = flag ?? process.env.HERALD_URL ?? DEFAULT_URL
  if (!/^https?:\/\//.test(url)) throw new UsageError(`--server must be an http(s) URL, got "${url}"`)
  return url
}

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length))
  return `herald <command> [options]

Commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`)
  .join('\n')}

Run \`herald <command> --help\` for a command's options. HERALD_URL and HERALD_TOKEN stand in for --server and
--token; HERALD_TENANT names the tenant to act in, for a token that covers several (X-Herald-Tenant).`
}

export async function runCli(argv: string[]): Promise<number> {
  const [name, ...args] = argv
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage())
    return name ? EXIT.ok : EXIT.usage
  }
  const command = commands[name]
  if (!command) {
    console.error(`unknown command "${name}"\n\n${usage()}`)
    return EXIT.usage
  }
  if (args.includes('--help') || args.includes('-h')) {
    console.log(command.help)
    return EXIT.ok
  }
  try {
    return await command.run(args)
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`herald ${name}: ${err.message}\n\n${command.help}`)
      return EXIT.usage
    }
    if (err instanceof ConfigError) {
      console.error(err.message)
      return EXIT.config
    }
    console.error(`herald ${name}: ${(err as Error).message}`)
    return EXIT.failed
  }
}

runCli(process.argv.slice(2)).then((code) => {
  process.exitCode = code
})
