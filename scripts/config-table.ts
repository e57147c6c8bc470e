// Writes README.md's configuration table from src/config.ts (`npm run config-table`); test/readme.test.ts fails
// when the two differ.
import { readFileSync, writeFileSync } from 'node:fs'
import { configTable } from '../src/config.ts'

const README = new URL('../README.md', import.meta.url)
const HEADER = '| variable | default | meaning |'

const text = readFileSync(README, 'utf8')
const start = text.indexOf(HEADER)
if (start === -1) throw new Error(`README.md has no configuration table (a line "${HEADER}")`)
const end = text.indexOf('\n\n', start)
writeFileSync(README, `${text.slice(0, start)}${configTable()}${text.slice(end === -1 ? text.length : end)}`)
console.log('README.md: configuration table written from src/config.ts')
