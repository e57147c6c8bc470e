import { fileURLToPath } from 'node:url'
import { type Config, lintFromString, loadConfig, type NormalizedProblem } from '@redocly/openapi-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/app.ts'

// An integrator lints GET /docs/json with `redocly lint` before generating a client: the document must pass
// Redocly's recommended rules with nothing to report, so it is linted here with the library behind that CLI.

/** Redocly's recommended rules (and, beside it, .redocly.lint-ignore.yaml: the few exceptions, with reasons). */
const REDOCLY_CONFIG = fileURLToPath(new URL('./redocly.yaml', import.meta.url))

/** The name the document is linted under, which the ignore file refers to; nothing is written there. */
const DOCUMENT_REF = fileURLToPath(new URL('./openapi.json', import.meta.url))

/** A problem as a line a failing assertion shows: how bad, which rule, what, where. */
const describeProblem = (p: NormalizedProblem) =>
  `${p.severity} ${p.ruleId}: ${p.message} (${p.location.map((l) => l.pointer).join(', ')})`

/** `rule pointer` of each exception the ignore file makes for the document. */
function exceptions(config: Config): string[] {
  const rules = config.ignore[DOCUMENT_REF] ?? {}
  return Object.entries(rules).flatMap(([rule, pointers]) => [...pointers].map((pointer) => `${rule} ${pointer}`))
}

describe('the OpenAPI document under Redocly lint', () => {
  let t: TestApp
  let config: Config
  let problems: NormalizedProblem[]
  beforeAll(async () => {
    // Sign-in on, so the demo's token route is in the document too.
    t = await startApp('pglite', { demoSignIn: true })
    config = await loadConfig({ configPath: REDOCLY_CONFIG })
    problems = await lintFromString({ source: JSON.stringify(t.app.swagger()), absoluteRef: DOCUMENT_REF, config })
  })
  afterAll(() => t.close())

  it('has no errors and no warnings under the recommended rules', () => {
    expect(problems.filter((p) => !p.ignored).map(describeProblem)).toEqual([])
  })

  it('every exception in the ignore file is still needed', () => {
    const ignored = problems.filter((p) => p.ignored).map((p) => `${p.ruleId} ${p.location[0].pointer}`)
    expect(ignored.sort()).toEqual(exceptions(config).sort())
  })
})
