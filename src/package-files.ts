import { createRequire } from 'node:module'
import { extname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

// The files the service reads or starts, found from this module's own place: src/ when run from source (tsx,
// vitest), dist/ once built. It sits at the top of src/ because the build (scripts/build.mjs) bundles the service
// into dist/ with its shared chunks at the top: a path from here holds in both.

const fromHere = (path: string) => fileURLToPath(new URL(path, import.meta.url))

/** `.ts` from source, `.js` built. */
const extension = extname(fileURLToPath(import.meta.url))

export const PACKAGE_JSON = fromHere('../package.json')
/** The demo inbox, the admin page, the browser client and the service worker, served at `/`. */
export const PUBLIC_DIR = fromHere('../public')
/** drizzle-kit's migrations. */
export const MIGRATIONS_FOLDER = fromHere('../drizzle')
/** The entry of the push threads (push/push-worker.ts). */
export const PUSH_WORKER_FILE = fromHere(`./push/push-worker${extension}`)
/** The entry of the child that makes a new PGlite folder's database (db/pglite-init.ts). */
export const PGLITE_INIT_FILE = fromHere(`./db/pglite-init${extension}`)

/**
 * The node flags a thread or child process needs to run one of the entries above. From source, tsx's loader:
 * threads inherit the process's flags, which carry it under `tsx src/server.ts` but not under vitest (it
 * transforms files itself); resolved from here, so that any working directory will do. Built: none.
 */
export const ENTRY_FLAGS: readonly string[] =
  extension === '.ts' ? ['--import', pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href] : []
