import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { CONFIG_VARIABLES, configTable } from '../src/config.ts'
import { ROOT } from './helpers/process.ts'

// The README and docs/ are what a person who clones the repository reads: they must match the code and stay
// inside the repository.

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
/** Built from parts, so that this file does not itself name what it looks for. */
const OUTSIDE_THE_REPOSITORY = new RegExp(
  ['\\.\\./sha' + 'red', 'TESTING-' + 'NOTES', 'STY' + 'LE\\.md', 'SP' + 'EC\\.md'].join('|'),
)

describe('README', () => {
  it('starts with the two commands', () => {
    const top = readme.split('\n').slice(0, 20).join('\n')
    expect(top).toContain('npm install && npm start')
    expect(top).toContain('npm test')
  })

  it('lists every configuration variable the service reads, and none it does not', () => {
    const section = readme.slice(
      readme.indexOf('## Configuration'),
      readme.indexOf('\n## ', readme.indexOf('## Configuration') + 1),
    )
    const documented = new Set(
      section
        .split('\n')
        .filter((line) => line.startsWith('| `'))
        .flatMap((line) => [...line.split('|')[1].matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1])),
    )
    expect([...documented].sort()).toEqual([...CONFIG_VARIABLES].sort())
  })

  it('shows each variable’s default and meaning as src/config.ts has them (npm run config-table writes it)', () => {
    const table = configTable()
    expect(readme, 'README.md is out of date: run npm run config-table').toContain(table)
  })

  it('and the docs link only to files inside the repository, all of which exist', () => {
    for (const file of [
      'README.md',
      'docs/README.md',
      'docs/streams.md',
      'docs/rest.md',
      'docs/auth.md',
      'docs/push.md',
      'docs/errors.md',
    ]) {
      const text = readFileSync(join(ROOT, file), 'utf8')
      // No link or mention of the workspace outside the clone (its notes, style guide and original contract).
      expect(text, file).not.toMatch(OUTSIDE_THE_REPOSITORY)
      for (const [, target] of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
        if (/^[a-z]+:/.test(target)) continue // an outside web page (RFCs, the HTML standard)
        const resolved = join(ROOT, file, '..', target)
        expect(() => readFileSync(resolved), `${file} links ${target}`).not.toThrow()
      }
    }
  })
})
