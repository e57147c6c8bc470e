import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import lockfile from 'proper-lockfile'
import { ConfigError } from '../config.ts'

/**
 * A lock not refreshed for this long is stale: its holder is gone (crashed, killed, frozen) and another process
 * may take it. proper-lockfile refreshes it every half of this, from a timer: PGlite's first start (initdb, in
 * WebAssembly) blocks the event loop for many seconds, hence minutes, not seconds. A holder that died on this
 * machine is recognised by its pid at once (holderIsGone), so a restart after a crash does not wait this out.
 */
const STALE_MS = 5 * 60_000

/** Who holds a data folder, as written next to the lock. */
interface Holder {
  pid: number
  hostname: string
  role: string
  since: string
}

/** Another live process holds the folder: a configuration error (exit 78). The message says who, and what to do. */
export class DataDirLockedError extends ConfigError {
  override name = 'DataDirLockedError'
}

/** proper-lockfile's own place for it: a folder beside the data folder (PGlite's folder holds only its files). */
const lockPathOf = (dir: string) => `${dir}.lock`
/** Beside the lock, not in it: proper-lockfile removes its lock folder with rmdir, which wants it empty. */
const holderFile = (dir: string) => `${dir}.lock-holder.json`

/**
 * Takes the exclusive lock on PGlite's data folder for as long as this process holds the database: two
 * processes on one folder (a second `npm start`, or `herald prune` beside a running server) would each keep
 * their own copy of the database in memory and overwrite the other's writes. A lock whose holder died
 * (kill -9, a crash) is taken over at once when its process is gone from this machine, or once it is stale.
 * Resolves with the release.
 */
export async function lockDataDir(dir: string, role: string): Promise<() => Promise<void>> {
  const folder = resolve(dir)
  mkdirSync(folder, { recursive: true })
  const take = () =>
    lockfile.lock(folder, {
      stale: STALE_MS,
      realpath: false,
      // The lock can only be lost if someone deleted it or the machine stalled past STALE_MS: another process
      // may now be writing the folder, so stop rather than overwrite its work.
      onCompromised: (err) => {
        console.error(`The lock on ${folder} was lost (${err.message}); stopping to protect the data.`)
        process.exit(70) // EX_SOFTWARE
      },
    })
  let release: () => Promise<void>
  try {
    release = await take()
  } catch (err) {
    if ((err as { code?: string }).code !== 'ELOCKED') throw err
    const holder = readHolder(folder)
    if (holder && holderIsGone(holder)) {
      rmSync(lockPathOf(folder), { recursive: true, force: true })
      release = await take()
    } else {
      const who = holder
        ? `${holder.role}, pid ${holder.pid} on ${holder.hostname}, since ${holder.since}`
        : 'another process'
      throw new DataDirLockedError(
        `${folder} is in use by ${who}. Stop it first, or give this process another DATA_DIR.`,
      )
    }
  }
  const holder: Holder = { pid: process.pid, hostname: hostname(), role, since: new Date().toISOString() }
  writeFileSync(holderFile(folder), JSON.stringify(holder))
  return async () => {
    rmSync(holderFile(folder), { force: true })
    await release()
  }
}

function readHolder(folder: string): Holder | undefined {
  try {
    return JSON.parse(readFileSync(holderFile(folder), 'utf8')) as Holder
  } catch {
    return undefined // taken a moment ago, holder not written yet; or an older lock
  }
}

/** True when the holder was a process of this machine that no longer runs (or is this process: a restart as PID 1). */
function holderIsGone(holder: Holder): boolean {
  if (holder.hostname !== hostname()) return false
  if (holder.pid === process.pid) return true
  try {
    process.kill(holder.pid, 0)
    return false
  } catch (err) {
    return (err as { code?: string }).code === 'ESRCH'
  }
}
