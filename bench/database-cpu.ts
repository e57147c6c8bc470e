// CPU of the PostgreSQL backends serving one database (DATABASE_URL's), read from /proc: on PostgreSQL the
// service's queries run there, outside the service's own process tree. Backends are found by their process
// title (`postgres: <cluster>: <user> <database> <client> <state>`), so another client of the same database
// (none during a bench run) would be counted too.
import { readdirSync, readFileSync } from 'node:fs'
import { cpuMsOf } from './processes.ts'

/** The database name of a postgres:// URL, or undefined. */
export function databaseOf(url: string | undefined): string | undefined {
  if (!url) return undefined
  try {
    return decodeURIComponent(new URL(url).pathname.slice(1)) || undefined
  } catch {
    return undefined
  }
}

/** CPU so far (ms) of each backend of `database`, by pid. */
function backends(database: string): Map<number, number> {
  const out = new Map<number, number>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let title: string
    try {
      title = readFileSync(`/proc/${entry}/cmdline`, 'utf8')
    } catch {
      continue
    }
    if (!title.startsWith('postgres: ') || !title.includes(` ${database} `)) continue
    const ms = cpuMsOf(Number(entry))
    if (Number.isFinite(ms)) out.set(Number(entry), ms)
  }
  return out
}

/**
 * Starts counting: the returned function gives the CPU (ms) the database's backends used since, new backends
 * wholly; a backend that exited meanwhile is missed (the service keeps a pool, so few do). Undefined when there
 * is no database to watch (PGlite: the database runs inside the service and is in its CPU already).
 */
export function databaseCpuSince(database: string | undefined): (() => number) | undefined {
  if (!database) return undefined
  const before = backends(database)
  return () => {
    let ms = 0
    for (const [pid, now] of backends(database)) ms += now - (before.get(pid) ?? 0)
    return ms
  }
}
