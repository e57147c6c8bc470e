import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { CLIENT_OPERATIONS, createHeraldServerClient, type HeraldError, mintToken } from '../src/client/index.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { runToEnd } from './helpers/process.ts'

// Event types from an application backend (`herald/client`: eventTypes.list/put/remove) and from the command line
// (`herald types list | put TYPE FILE.json | remove TYPE`), against the real service.

describeEachBackend('event types from the backend client and the CLI', (backend) => {
  let t: TestApp
  let dir: string
  let n = 0
  beforeAll(async () => {
    t = await startApp(backend)
    dir = await mkdtemp(join(tmpdir(), 'herald-types-'))
  })
  afterAll(async () => {
    await t?.close()
    await rm(dir, { recursive: true, force: true })
  })

  const tenant = () => `types-client-${backend}-${process.pid}-${++n}`
  const tokenOf = (ten: string, scope = 'admin') =>
    mintToken(TEST_JWT_SECRET, { sub: 'backend', tenant: ten, scope }, 600)
  const backendOf = (ten: string, scope = 'admin') =>
    createHeraldServerClient({ baseUrl: t.url, token: () => tokenOf(ten, scope) })

  it('calls the event types’ operations of the service’s OpenAPI document', () => {
    const doc = t.app.swagger() as { paths: Record<string, Record<string, { operationId?: string }>> }
    for (const name of ['listEventTypes', 'putEventType', 'deleteEventType'] as const) {
      const op = CLIENT_OPERATIONS[name]
      expect(doc.paths[op.path]?.[op.method.toLowerCase()]?.operationId, name).toBe(op.operationId)
    }
  })

  it('puts (created, then replaced), lists, removes; a bad template is a HeraldError naming the field', async () => {
    const ten = tenant()
    const herald = backendOf(ten)
    const created = await herald.eventTypes.put('grade.updated', {
      category: 'grades',
      templates: { title: '{{data.student}} scored {{data.score}}', locales: { 'fr-ch': { title: 'Note' } } },
    })
    expect(created).toMatchObject({
      type: 'grade.updated',
      category: 'grades',
      inbox: true,
      templates: { locales: { 'fr-CH': { title: 'Note' } } },
      created: true,
    })
    expect((await herald.eventTypes.put('grade.updated', { category: 'marks' })).created).toBe(false)
    // Any token of the tenant lists the types.
    const listed = await backendOf(ten, PUBLISHER).eventTypes.list()
    expect(listed.map((e) => [e.type, e.category, e.templates])).toEqual([['grade.updated', 'marks', null]])

    const bad = (await herald.eventTypes
      .put('grade.updated', { templates: { title: '{{> partial}}' } })
      .catch((e: unknown) => e)) as HeraldError
    expect(bad).toMatchObject({ status: 400, type: 'urn:herald:problem:validation' })
    expect(bad.problem?.errors?.map((e) => e.path)).toEqual(['body.templates.title'])

    const refused = (await backendOf(ten, PUBLISHER)
      .eventTypes.remove('grade.updated')
      .catch((e: unknown) => e)) as HeraldError
    expect(refused.status).toBe(403)
    await herald.eventTypes.remove('grade.updated')
    expect(await herald.eventTypes.list()).toEqual([])
    expect(await herald.eventTypes.remove('grade.updated').catch((e: HeraldError) => e.status)).toBe(404)
  })

  it('herald types put, list and remove; a bad file is exit 1 with the 400, a missing argument exit 2', async () => {
    const ten = tenant()
    const cli = (args: string[]) =>
      runToEnd('src/cli.ts', ['types', ...args], { HERALD_URL: t.url, HERALD_TOKEN: tokenOf(ten) })
    const file = join(dir, `${ten}.json`)
    await writeFile(file, JSON.stringify({ description: 'Absent', defaults: { priority: 'high' } }))
    const put = await cli(['put', 'absence.recorded', file])
    expect(put.code, put.stderr).toBe(0)
    expect(JSON.parse(put.stdout)).toMatchObject({ type: 'absence.recorded', defaults: { priority: 'high' } })

    const list = await cli(['list'])
    expect(list.code, list.stderr).toBe(0)
    expect(
      list.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line).type),
    ).toEqual(['absence.recorded'])

    const badFile = join(dir, `${ten}-bad.json`)
    await writeFile(badFile, JSON.stringify({ templates: { title: 'Hi {{secret}}' } }))
    const bad = await cli(['put', 'absence.recorded', badFile])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/HTTP 400.*body\.templates\.title/)

    const usage = await cli(['put', 'absence.recorded'])
    expect(usage.code).toBe(2)

    const removed = await cli(['remove', 'absence.recorded'])
    expect(removed.code, removed.stderr).toBe(0)
    expect(JSON.parse(removed.stdout)).toEqual({ type: 'absence.recorded', removed: true })
    expect((await cli(['remove', 'absence.recorded'])).code).toBe(1)
  })
})
