// `npm run build` (run by `npm install` too): dist/, as `npm start`, the CLI and the client package use it.
//   node scripts/build.mjs [--outdir DIR] [--no-types]
//
// - The service and the CLI are bundled by esbuild: their own modules become a few files, the packages they use
//   stay in node_modules. Loaded as ~150 modules, the same code held about 18 MB more of every process's
//   memory (bench scenario 8): each module's loader records, source and start-up garbage.
// - Everything a running service finds by path is found from src/package-files.ts, which is bundled into a
//   file at the top of the output, as it sits at the top of src/; the worker entries keep their folders.
// - The client (`herald/client`) is one file of its own: it shares nothing at run time with the service.
// - tsc writes the declaration files (the client's types refer to the service's schemas).
import { spawnSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { build } from 'esbuild'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const { values } = parseArgs({
  options: { outdir: { type: 'string', default: 'dist' }, 'no-types': { type: 'boolean' } },
})
const outdir = values.outdir

rmSync(resolve(ROOT, outdir), { recursive: true, force: true })

/** What every bundle shares: Node's ES modules, with the packages left to Node to load from node_modules. */
const common = {
  absWorkingDir: ROOT,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node22.12',
  packages: 'external',
  // Kept next to each file and read only with `node --enable-source-maps`.
  sourcemap: true,
  logLevel: 'warning',
}

await build({
  ...common,
  entryPoints: ['src/server.ts', 'src/cli.ts', 'src/push/push-worker.ts', 'src/db/pglite-init.ts'],
  outbase: 'src',
  outdir,
  entryNames: '[dir]/[name]',
  // Code shared by the entries (and what they import lazily) goes in chunks at the top of the output.
  splitting: true,
  chunkNames: '[name]-[hash]',
})
await build({ ...common, entryPoints: ['src/client/index.ts'], outfile: `${outdir}/client/index.js` })

if (!values['no-types']) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  const types = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', outdir], {
    cwd: ROOT,
    stdio: 'inherit',
  })
  if (types.status !== 0) process.exit(types.status ?? 1)
}
