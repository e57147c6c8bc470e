import { readFile } from 'node:fs/promises'
import type { CliKit } from '../directory/cli.ts'

// `herald types`: a tenant's event types from the command line: list them, register one from a JSON file, remove
// one. Runs in the CLI process (cli.ts gives it its helpers); it loads nothing of the server.

export const TYPES_HELP = `herald types list --token <jwt> [--server URL]
herald types put <type> <file.json> --token <admin jwt>
herald types remove <type> --token <admin jwt>

list: the tenant's registered types, one JSON line each (any token of the tenant).
put: registers the type, or replaces it whole, from a JSON file as PUT /v1/event-types/<type> takes it:
  {"description":"A grade was entered","category":"grades","defaults":{"priority":"high","ttl":86400},
   "inbox":true,"push":true,"templates":{"title":"{{data.student}} scored {{data.score}}",
   "locales":{"fr":{"title":"{{data.student}} a obtenu {{data.score}}"}}}}
  and prints the type as registered. A bad field or template: exit 1 with the server's 400, naming it.
remove: removes the type (exit 1 if it is not registered). put and remove need the admin scope.
The token may also come from HERALD_TOKEN and the server from HERALD_URL. See docs/event-types.md.`

const OPTIONS = {
  token: { type: 'string' },
  server: { type: 'string' },
} as const

export async function runTypes(args: string[], kit: CliKit): Promise<number> {
  const { action, values, positionals } = kit.parseAction(args, ['list', 'put', 'remove'], OPTIONS)
  const wanted = { list: 0, put: 2, remove: 1 }[action]
  if (positionals.length !== wanted) {
    const usage = {
      list: 'herald types list',
      put: 'herald types put grade.updated grade.json',
      remove: 'herald types remove grade.updated',
    }
    throw kit.usageError(
      `${action} takes ${wanted || 'no'} argument${wanted === 1 ? '' : 's'}, as in: ${usage[action]}`,
    )
  }
  const token = kit.requireToken(values.token)
  const server = kit.serverUrl(values.server)

  if (action === 'list') {
    const res = await kit.callService('GET', new URL('/v1/event-types', server), token)
    const text = await res.text()
    if (!res.ok) {
      console.error(`list failed: HTTP ${res.status} ${text}`)
      return 1
    }
    for (const type of (JSON.parse(text) as { eventTypes: unknown[] }).eventTypes) console.log(JSON.stringify(type))
    return 0
  }

  const [type, file] = positionals
  const url = new URL(`/v1/event-types/${encodeURIComponent(type)}`, server)
  let body: unknown
  if (action === 'put') {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (err) {
      throw kit.usageError(`cannot read ${file}: ${(err as Error).message}`)
    }
    try {
      body = JSON.parse(text)
    } catch (err) {
      throw kit.usageError(`${file} is not JSON: ${(err as Error).message}`)
    }
  }
  const res = await kit.callService(action === 'put' ? 'PUT' : 'DELETE', url, token, body)
  const text = await res.text()
  if (!res.ok) {
    console.error(`${action} failed: HTTP ${res.status} ${text}`)
    return 1
  }
  console.log(action === 'put' ? text : JSON.stringify({ type, removed: true }))
  return 0
}
