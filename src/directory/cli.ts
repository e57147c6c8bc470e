import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { basename } from 'node:path'
import { createInterface } from 'node:readline'
import type { ParseArgsConfig, parseArgs } from 'node:util'
import { groupedDigits } from '../grouped-digits.ts'
import { MAX_BATCH_OPERATIONS } from './limits.ts'

// `herald directory`: the user directory from the command line (an admin token): import a CSV or JSONL file
// through the batch route, list, get and remove users. Runs in the CLI process (cli.ts gives it its helpers); it
// loads nothing of the server but the directory's limits.

/** What cli.ts lends: its usage errors (exit 2), its command-line parsing and how it reaches the service. */
export interface CliKit {
  usageError(message: string): Error
  /** `<action> [arguments] [--flags]`: the action, one of `actions` (else a usage error), its flags and arguments. */
  parseAction<A extends string, O extends NonNullable<ParseArgsConfig['options']>>(
    args: string[],
    actions: readonly A[],
    options: O,
  ): { action: A } & ReturnType<typeof parseArgs<{ options: O; allowPositionals: true }>>
  /** The token from --token or HERALD_TOKEN; without one, a usage error (saying `missing`, if given). */
  requireToken(flag: string | undefined, missing?: string): string
  serverUrl(flag: string | undefined): string
  callService(method: string, url: URL, token: string, body?: unknown): Promise<Response>
}

export const DIRECTORY_HELP = `herald directory import <users.csv|users.jsonl> --token <admin jwt> [--server URL]
herald directory list [--role R] [--topic T] --token <admin jwt>
herald directory get <id> --token <admin jwt>
herald directory remove <id> --token <admin jwt>

import: creates or replaces each user of the file (the tenant's other users stay), ${groupedDigits(MAX_BATCH_OPERATIONS)} a
request, each request all or nothing. The file is read as a stream, so its size does not matter.
  CSV (.csv): a header line naming the columns, in any order: id (required), roles, topics, displayName, locale,
  timeZone. roles and topics hold several values separated by ";" or spaces ("student;prefect", "class:7A club:*");
  an empty cell is none. Cells may be quoted ("Muller, Kim").
  JSONL (.jsonl, .ndjson): one JSON object a line, as the batch route takes a user:
  {"id":"kim","roles":["student"],"topics":["class:7A"],"displayName":"Kim","locale":"fr-CH","timeZone":"Europe/Zurich"}
  (a line {"op":"delete","id":"kim"} removes a user; "updatedAt", as list prints it, is ignored).
On a bad line it stops and names the line and the field: what came before that line's request is imported,
nothing of that request is. Progress goes to stderr when it is a terminal; a summary line to stdout at the end.
list: every user (or those with the role, the topic), one JSON line each, in id order: an import file.
get: one user as JSON. remove: removes one (exit 1 if there is none).
The token may also come from HERALD_TOKEN and the server from HERALD_URL.`

/** A request's body stays under this (the batch route takes BODY_LIMIT or 8 MiB, whichever is larger). */
const MAX_BATCH_BYTES = 4 * 1024 * 1024

const CSV_COLUMNS = ['id', 'roles', 'topics', 'displayName', 'locale', 'timeZone'] as const

/** A line of the file that cannot be imported: its line number and why. */
class BadLine extends Error {
  constructor(
    readonly line: number,
    readonly problem: string,
  ) {
    super(`line ${line}: ${problem}`)
  }
}

/** A user read from the file, as a batch operation, with the line it came from. */
interface Read {
  line: number
  json: string
}

const list = (cell: string | undefined) => (cell ?? '').split(/[;\s]+/).filter(Boolean)

async function* csvUsers(path: string): AsyncGenerator<Read> {
  const { parse } = await import('csv-parse')
  const parser = createReadStream(path).pipe(
    parse({
      bom: true,
      trim: true,
      skip_empty_lines: true,
      info: true,
      columns: (header: string[]) => {
        const unknown = header.filter((c) => !(CSV_COLUMNS as readonly string[]).includes(c))
        if (unknown.length) {
          throw new BadLine(
            1,
            `unknown column ${unknown.map((c) => `"${c}"`).join(', ')} (columns: ${CSV_COLUMNS.join(', ')})`,
          )
        }
        if (!header.includes('id')) throw new BadLine(1, `no "id" column (columns: ${CSV_COLUMNS.join(', ')})`)
        return header
      },
    }),
  )
  try {
    for await (const { record, info } of parser as AsyncIterable<{
      record: Record<string, string>
      info: { lines: number }
    }>) {
      const op: Record<string, unknown> = {
        op: 'upsert',
        id: record.id,
        roles: list(record.roles),
        topics: list(record.topics),
      }
      for (const field of ['displayName', 'locale', 'timeZone']) if (record[field]) op[field] = record[field]
      yield { line: info.lines, json: JSON.stringify(op) }
    }
  } catch (err) {
    if (err instanceof BadLine) throw err
    const e = err as Error & { lines?: number; code?: string }
    if (e.code?.startsWith('CSV_') && e.lines !== undefined) throw new BadLine(e.lines, e.message)
    throw err
  }
}

async function* jsonlUsers(path: string): AsyncGenerator<Read> {
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY })
  let line = 0
  for await (const text of lines) {
    line++
    // A byte-order mark at the start of the file is not part of the first line.
    const trimmed = (line === 1 ? text.replace(/^\uFEFF/, '') : text).trim()
    if (!trimmed) continue
    let user: unknown
    try {
      user = JSON.parse(trimmed)
    } catch (err) {
      throw new BadLine(line, `not JSON (${(err as Error).message})`)
    }
    if (typeof user !== 'object' || user === null || Array.isArray(user)) {
      throw new BadLine(line, 'not a JSON object; each line is one user, {"id":...,"roles":[...],"topics":[...]}')
    }
    // `updatedAt`, as `list` prints it, is the service's to say: what `list` prints imports as it is.
    const { updatedAt: _, ...fields } = user as Record<string, unknown>
    yield { line, json: JSON.stringify({ op: 'upsert', ...fields }) }
  }
}

/** About how many users the file holds: its lines (less the CSV header), counted without holding the file. */
async function estimateUsers(path: string, csv: boolean): Promise<number> {
  let lines = 0
  let last = 10
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++
    last = chunk[chunk.length - 1]
  }
  if (last !== 10) lines++ // a last line without a newline
  return Math.max(0, lines - (csv ? 1 : 0))
}

const count = groupedDigits

/** The message of a refused batch, each bad operation named by its line in the file. */
function refusal(status: number, text: string, lines: number[]): { message: string; line?: number } {
  let problem: { detail?: string; errors?: Array<{ path: string; message: string }> } | undefined
  try {
    problem = JSON.parse(text)
  } catch {
    problem = undefined
  }
  const named = (problem?.errors ?? []).flatMap((e) => {
    const m = /^body\.operations\.(\d+)(?:\.(.+))?$/.exec(e.path)
    const line = m ? lines[Number(m[1])] : undefined
    return line === undefined ? [] : [{ line, field: m?.[2], message: e.message }]
  })
  if (!named.length) return { message: `the server refused a batch: HTTP ${status} ${problem?.detail ?? text}` }
  named.sort((a, b) => a.line - b.line)
  const [first] = named
  const more = named.length > 1 ? ` (and ${named.length - 1} more in that request)` : ''
  return {
    line: first.line,
    message: `line ${first.line}: ${first.field ? `${first.field}: ` : ''}${first.message}${more}`,
  }
}

/** `herald directory import FILE`: 0 when every user is in, 1 when a line or the server stops it. */
async function importFile(path: string, token: string, server: string, kit: CliKit): Promise<number> {
  const csv = /\.csv$/i.test(path)
  if (!csv && !/\.(jsonl|ndjson)$/i.test(path)) {
    throw kit.usageError(`import takes a .csv or a .jsonl file, not "${basename(path)}"`)
  }
  try {
    await stat(path)
  } catch (err) {
    console.error(`herald directory: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? err})`)
    return 1
  }
  const started = Date.now()
  const url = new URL('/v1/directory/users/batch', server)
  const tty = process.stderr.isTTY === true
  const estimate = tty ? await estimateUsers(path, csv) : 0
  let imported = 0
  let upserted = 0
  let deleted = 0
  const progress = () => {
    if (tty) process.stderr.write(`\rimported ${count(imported)} / ~${count(Math.max(estimate, imported))} users`)
  }
  const stop = (message: string) => {
    if (tty && imported) process.stderr.write('\n')
    console.error(`herald directory import: ${message}`)
    console.log(`imported ${count(imported)} users from ${basename(path)} before stopping`)
    return 1
  }

  let batch: string[] = []
  let lines: number[] = []
  let bytes = 0
  const send = async (): Promise<string | undefined> => {
    if (!batch.length) return undefined
    // The operations as they were read, each stringified once.
    const body = `{"operations":[${batch.join(',')}]}`
    let res: Response
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body,
      })
    } catch (err) {
      const cause = (err as { cause?: { message?: string; code?: string } }).cause
      const why = cause?.message ?? cause?.code ?? (err as Error).message
      return `cannot reach ${url.origin} (${why}); is the server running? Set --server or HERALD_URL.`
    }
    const text = await res.text()
    if (!res.ok) return refusal(res.status, text, lines).message
    const counts = JSON.parse(text) as { upserted: number; deleted: number }
    imported += batch.length
    upserted += counts.upserted
    deleted += counts.deleted
    batch = []
    lines = []
    bytes = 0
    progress()
    return undefined
  }

  progress()
  try {
    for await (const read of csv ? csvUsers(path) : jsonlUsers(path)) {
      if (batch.length === MAX_BATCH_OPERATIONS || bytes + read.json.length > MAX_BATCH_BYTES) {
        const refused = await send()
        if (refused) return stop(refused)
      }
      batch.push(read.json)
      lines.push(read.line)
      bytes += read.json.length + 1
    }
  } catch (err) {
    if (err instanceof BadLine) return stop(err.message)
    throw err
  }
  const refused = await send()
  if (refused) return stop(refused)
  if (tty) process.stderr.write('\n')
  const seconds = ((Date.now() - started) / 1000).toFixed(1)
  console.log(
    `imported ${count(imported)} users from ${basename(path)} in ${seconds} s ` +
      `(${count(upserted)} created or replaced, ${count(deleted)} removed)`,
  )
  return 0
}

/** `herald directory <action> ...`. */
export async function runDirectory(args: string[], kit: CliKit): Promise<number> {
  const { action, values, positionals } = kit.parseAction(args, ['import', 'list', 'get', 'remove'], OPTIONS)
  const token = kit.requireToken(values.token, '--token (or HERALD_TOKEN) is required: a token with the admin scope')
  const server = kit.serverUrl(values.server)
  const wantsOne = action === 'list' ? 0 : 1
  if (positionals.length !== wantsOne) {
    const what = action === 'import' ? 'a file' : action === 'list' ? 'no argument' : 'a user id'
    throw kit.usageError(`${action} takes ${what}, as in: herald directory ${action}${wantsOne ? ' <...>' : ''}`)
  }
  if (action !== 'list' && (values.role !== undefined || values.topic !== undefined)) {
    throw kit.usageError('--role and --topic are for list')
  }
  if (action === 'import') return importFile(positionals[0], token, server, kit)

  if (action === 'list') {
    let cursor: string | undefined
    do {
      const url = new URL('/v1/directory/users', server)
      url.searchParams.set('limit', '1000')
      if (values.role !== undefined) url.searchParams.set('role', values.role)
      if (values.topic !== undefined) url.searchParams.set('topic', values.topic)
      if (cursor) url.searchParams.set('cursor', cursor)
      const res = await kit.callService('GET', url, token)
      const text = await res.text()
      if (!res.ok) {
        console.error(`list failed: HTTP ${res.status} ${text}`)
        return 1
      }
      const page = JSON.parse(text) as { users: Array<Record<string, unknown>>; next: string | null }
      for (const user of page.users) console.log(JSON.stringify(user))
      cursor = page.next ?? undefined
    } while (cursor)
    return 0
  }

  const url = new URL(`/v1/directory/users/${encodeURIComponent(positionals[0])}`, server)
  const res = await kit.callService(action === 'get' ? 'GET' : 'DELETE', url, token)
  const text = await res.text()
  if (!res.ok) {
    console.error(`${action} failed: HTTP ${res.status} ${text}`)
    return 1
  }
  console.log(action === 'get' ? text : JSON.stringify({ id: positionals[0], removed: true }))
  return 0
}

const OPTIONS = {
  token: { type: 'string' },
  server: { type: 'string' },
  role: { type: 'string' },
  topic: { type: 'string' },
} as const
