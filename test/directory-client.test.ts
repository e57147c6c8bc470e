import { afterAll, beforeAll, expect, it } from 'vitest'
import { CLIENT_OPERATIONS, createHeraldServerClient, type HeraldError, mintToken } from '../src/client/index.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'

// The backend client's user directory methods (`herald/client`), against the real service.

describeEachBackend('the backend client and the user directory', (backend) => {
  let t: TestApp
  let n = 0
  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(() => t?.close())

  const tenant = () => `dir-client-${backend}-${process.pid}-${++n}`
  const backendOf = (ten: string, scope = 'admin') =>
    createHeraldServerClient({
      baseUrl: t.url,
      token: () => mintToken(TEST_JWT_SECRET, { sub: 'backend', tenant: ten, scope }, 600),
    })

  it('calls the directory’s operations of the service’s OpenAPI document', () => {
    const doc = t.app.swagger() as { paths: Record<string, Record<string, { operationId?: string }>> }
    const names = Object.keys(CLIENT_OPERATIONS).filter((name) => /Directory|directory/.test(name))
    expect(names.sort()).toEqual(
      ['deleteDirectoryUser', 'directoryBatch', 'getDirectoryUser', 'listDirectoryUsers', 'putDirectoryUser'].sort(),
    )
    for (const name of names) {
      const op = CLIENT_OPERATIONS[name as keyof typeof CLIENT_OPERATIONS]
      expect(doc.paths[op.path]?.[op.method.toLowerCase()]?.operationId, name).toBe(op.operationId)
    }
  })

  it('puts (created, then replaced), gets, lists page by page with filters, batches and deletes', async () => {
    const herald = backendOf(tenant())
    const kim = await herald.putDirectoryUser('kim müller', {
      roles: ['student'],
      topics: ['class:7A'],
      locale: 'fr-ch',
      timeZone: 'Europe/Zurich',
    })
    expect(kim).toEqual({
      id: 'kim müller',
      roles: ['student'],
      topics: ['class:7A'],
      displayName: null,
      locale: 'fr-CH',
      timeZone: 'Europe/Zurich',
      updatedAt: expect.any(String),
      created: true,
    })
    const again = await herald.putDirectoryUser('kim müller', { roles: ['student'], topics: ['class:7B'] })
    expect(again).toMatchObject({ topics: ['class:7B'], locale: null, created: false })
    const { created: _, ...stored } = again
    expect(await herald.getDirectoryUser('kim müller')).toEqual(stored)

    const result = await herald.directoryBatch([
      { op: 'upsert', id: 'lee', roles: ['teacher'], topics: ['class:*'], displayName: 'Mr Lee' },
      { op: 'upsert', id: 'max', roles: ['student'], topics: ['class:7A'] },
      { op: 'delete', id: 'nobody' },
    ])
    expect(result).toEqual({ upserted: 2, deleted: 0 })

    const first = await herald.listDirectoryUsers({ limit: 2 })
    expect(first.users.map((u) => u.id)).toEqual(['kim müller', 'lee'])
    const second = await herald.listDirectoryUsers({ limit: 2, cursor: first.next ?? undefined })
    expect(second).toEqual({ users: [expect.objectContaining({ id: 'max' })], next: null })
    expect((await herald.listDirectoryUsers({ topic: 'class:7A' })).users.map((u) => u.id)).toEqual(['lee', 'max'])
    expect((await herald.listDirectoryUsers({ role: 'teacher' })).users.map((u) => u.id)).toEqual(['lee'])

    await herald.deleteDirectoryUser('lee')
    const gone = (await herald.getDirectoryUser('lee').catch((e: unknown) => e)) as HeraldError
    expect(gone).toMatchObject({ status: 404, type: 'urn:herald:problem:not-found' })
    expect(await herald.deleteDirectoryUser('lee').catch((e: HeraldError) => e.status)).toBe(404)
  })

  it('a refusal is a HeraldError: a bad operation names its index and field, a publisher token gets 403', async () => {
    const ten = tenant()
    const herald = backendOf(ten)
    const bad = (await herald
      .directoryBatch([
        { op: 'upsert', id: 'ok', roles: [], topics: [] },
        { op: 'upsert', id: 'bad', roles: [], topics: [], timeZone: 'Mars/Olympus' },
      ])
      .catch((e: unknown) => e)) as HeraldError
    expect(bad).toMatchObject({ status: 400, type: 'urn:herald:problem:validation' })
    expect(bad.problem?.errors?.map((e) => e.path)).toEqual(['body.operations.1.timeZone'])
    expect((await herald.listDirectoryUsers()).users).toEqual([])

    const publisher = backendOf(ten, PUBLISHER)
    const refused = (await publisher.listDirectoryUsers().catch((e: unknown) => e)) as HeraldError
    expect(refused).toMatchObject({ status: 403, type: 'urn:herald:problem:forbidden' })
    expect(refused.message).toBe('Not allowed: The user directory needs the "admin" scope.')
  })
})
