// Keeps a leading byte-order mark (U+FEFF) in the text PGlite reads back. Run by postinstall, after patch-package.
//
// PGlite 0.5.16 decodes every string of the PostgreSQL protocol (each text value of a query result: titles,
// bodies, data, user ids, tenants) with `new TextDecoder('utf-8')`, which drops a U+FEFF at the start of its
// input: a value that starts with one came back one character short. `ignoreBOM: true` keeps it (postgres.js
// decodes with Buffer#toString, which keeps it too). The decoder is private to PGlite's copy of pg-protocol's
// BufferReader, made anew after every failed query, so nothing outside PGlite can replace it. PGlite's files are
// minified onto single lines: a patch-package diff of this one change would carry those lines whole (200 KB), so
// the expression is edited in place instead.
//
// Each edit must find its text exactly once, or its result exactly once (already applied: a second postinstall);
// anything else, another PGlite version included, fails the install. Then check whether the new version still
// strips the mark (README, "Patched dependencies") and update or delete this script.

import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const VERSION = '0.5.16'
const pkg = join(import.meta.dirname, '..', 'node_modules', '@electric-sql', 'pglite')
const EDITS = [
  // ESM build (import '@electric-sql/pglite', which the service and drizzle-orm/pglite use).
  ['dist/chunk-Y6PULSM7.js', 'new TextDecoder(r(this,ce))', 'new TextDecoder(r(this,ce),{ignoreBOM:true})'],
  // CommonJS build (require('@electric-sql/pglite')).
  ['dist/index.cjs', 'new TextDecoder(c(this,br))', 'new TextDecoder(c(this,br),{ignoreBOM:true})'],
]

const fail = (message) => {
  console.error(`scripts/patch-pglite-bom.mjs: ${message}`)
  process.exit(1)
}
const count = (text, part) => text.split(part).length - 1

const { version } = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8'))
if (version !== VERSION) {
  fail(`written for @electric-sql/pglite ${VERSION}, found ${version}: see the comment at the top of this script`)
}

for (const [file, from, to] of EDITS) {
  const path = join(pkg, file)
  const text = readFileSync(path, 'utf8')
  const found = count(text, from)
  const applied = count(text, to)
  if (found === 1 && applied === 0) {
    writeFileSync(path, text.split(from).join(to))
  } else if (found !== 0 || applied !== 1) {
    fail(`${file}: expected \`${from}\` once (or \`${to}\` once), found them ${found} and ${applied} times`)
  }
}
console.log(`@electric-sql/pglite@${VERSION} keeps a leading U+FEFF (scripts/patch-pglite-bom.mjs) ✔`)
