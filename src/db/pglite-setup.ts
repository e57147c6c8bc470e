import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import v8 from 'node:v8'
import { PGlite, type PGliteOptions } from '@electric-sql/pglite'
import { ENTRY_FLAGS, PGLITE_INIT_FILE } from '../package-files.ts'
import { DataDirLockedError, lockDataDir } from './data-lock.ts'

/**
 * PostgreSQL's shared_buffers inside PGlite (PostgreSQL's default: 128 MB). PGlite writes over all of it as it
 * starts, in WebAssembly memory that is never given back: resident from the first second, idle or not (bench
 * scenario 8 measures the service's idle memory). 16 MB (2,048 pages) holds the indexes and recent events a
 * small installation works on; a page that is not in it is read back from the files (the operating system's
 * cache on disk, a copy in memory:// in the tests), and publishing is no slower for it (scenario 4).
 */
const SHARED_BUFFERS_MB = 16

/**
 * How PGlite is opened, by the service and by its first-start child alike. Settings go on PostgreSQL's command
 * line, after PGlite's own: `postgresqlconf` would replace the postgresql.conf initdb wrote (time zone, locale)
 * rather than add to it. (PGlite's `initialMemory` cannot go under the 128 MB its WebAssembly module declares;
 * pages PostgreSQL never touches cost nothing, so it stays at that.)
 */
export function pgliteOptions(): PGliteOptions {
  return { startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${SHARED_BUFFERS_MB}MB`] }
}

/**
 * V8 recompiles a hot WebAssembly function with its optimizing compiler (TurboFan). For PGlite's hottest one
 * (about 100 KB of WebAssembly) that takes seconds of a core and hundreds of MB of compiler memory, within
 * seconds of every start and even idle (the service polls; `--wasm-tiering-budget` at its most only delays it,
 * as the budget is charged by the size of the function), and an idle service keeps part of it. Limiting
 * tier-up to a function index no module has keeps PGlite on its baseline code (Liftoff). The price is speed
 * under sustained load: a single publish costs more of the service's CPU (bench/HISTORY.md has the figures);
 * the tests' short-lived in-memory databases are faster without the recompilation. V8 settles this for each
 * function when it first compiles it, so it cannot be lifted later, once the service is busy.
 */
const NO_WASM_FUNCTION = 2_147_483_647

/**
 * Opens PGlite in `dir` with pgliteOptions. The tier-up filter is V8's, for the whole process (PGlite is its only
 * WebAssembly of any weight), and read as PGlite's functions compile: set here, before they do.
 */
export function createPglite(dir: string): Promise<PGlite> {
  v8.setFlagsFromString(`--wasm-tier-up-filter=${NO_WASM_FUNCTION}`)
  return PGlite.create(dir, pgliteOptions())
}

/** True once initdb has made a database in `dir` (PGlite's own test). */
export const hasDatabase = (dir: string) => existsSync(join(dir, 'PG_VERSION'))

/** Exit code of the first-start child when another process holds the folder (EX_CONFIG, as the service's own). */
const LOCKED_EXIT = 78

/**
 * Makes a new PGlite folder's database in a child process: initdb (a WebAssembly module of its own, run beside a
 * second PGlite instance) and the migrations. Done in the service's process, that memory stays with it, as
 * WebAssembly memory is never given back: the service would keep it idle for as long as it runs after its first
 * start. The child's own peak ends with it.
 * Does nothing when the folder already has a database.
 *
 * The folder's lock (data-lock.ts) is the child's while it writes, and the caller takes it once the child is
 * done: whoever writes the folder holds it, with no exception to reason about. A second server started meanwhile
 * finds it taken and exits 78, naming the child; if it slips in between the child and the caller, the caller is
 * the one told the folder is in use, which is as safe. Should the caller die, the child finishes (still holding
 * the lock) and the folder is whole for the next start. Throws DataDirLockedError when the folder is taken.
 */
export async function createDatabaseInChild(dir: string, role: string): Promise<void> {
  if (hasDatabase(dir)) return
  const child = spawn(process.execPath, [...ENTRY_FLAGS, PGLITE_INIT_FILE, dir, role], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d
  })
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (exitCode) => resolve(exitCode))
  })
  if (code === LOCKED_EXIT) throw new DataDirLockedError(stderr.trim())
  if (code !== 0) throw new Error(`Creating the embedded database in ${dir} failed (exit ${code}):\n${stderr.trim()}`)
}

/**
 * The child's work (pglite-init.ts): takes the folder's lock, makes the database unless another process did
 * meanwhile, applies `migrate` to it and closes it. Exits 78 with the lock's message when the folder is taken.
 */
export async function createDatabase(
  dir: string,
  role: string,
  migrate: (pglite: PGlite) => Promise<void>,
): Promise<never> {
  let unlock: () => Promise<void>
  try {
    unlock = await lockDataDir(dir, `${role} (creating its database for pid ${process.ppid})`)
  } catch (err) {
    if (!(err instanceof DataDirLockedError)) throw err
    console.error(err.message)
    process.exit(LOCKED_EXIT)
  }
  try {
    if (!hasDatabase(dir)) {
      const pglite = await createPglite(dir)
      try {
        await migrate(pglite)
      } finally {
        await pglite.close()
      }
    }
  } finally {
    await unlock()
  }
  process.exit(0)
}
