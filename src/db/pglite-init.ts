// The first start of an embedded database, in a process of its own: `node pglite-init.js <dir> <role>`, run by
// createDatabaseInChild (pglite-setup.ts), which says why. Exits 0 once the database is made and migrated.
import { loadDrizzleWithoutLookups } from './drizzle-modules.ts'

loadDrizzleWithoutLookups()
// Loaded after the hook, so that drizzle-orm loads with it.
const { drizzle } = await import('drizzle-orm/pglite')
const { migrate } = await import('drizzle-orm/pglite/migrator')
const { MIGRATIONS_FOLDER } = await import('../package-files.ts')
const { createDatabase } = await import('./pglite-setup.ts')

const [dir, role] = process.argv.slice(2)
if (!dir || !role) throw new Error('usage: pglite-init <dir> <role>')
await createDatabase(dir, role, (pglite) => migrate(drizzle(pglite), { migrationsFolder: MIGRATIONS_FOLDER }))
