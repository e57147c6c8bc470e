import { sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import type { EventRow } from '../src/db/schema.ts'
import { RecentLog } from '../src/events/recent-log.ts'
import { type LocalizedText, localizedRow, logFrame } from '../src/wire-format.ts'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { eventRow } from './helpers/event-rows.ts'
import { SseClient, type StreamEvent } from './helpers/sse.ts'
import { live, publish, publishBatch, waitForId, withoutPings } from './helpers/stream-fixtures.ts'

// Replays from memory (events/recent-log.ts): a stream resuming from one of the newest events is replayed from the
// rows the log tail keeps, filtered per stream in JavaScript, instead of from the database. Whoever reads it must not
// be able to tell: two services run side by side, one with its memory (the default) and one without
// (REPLAY_MEMORY_EVENTS=0), the same events are published to both, and the same streams resume on both: each replay
// must be, byte for byte, what the database builds for that stream. Then the recent log itself, without a service.

type Json = Record<string, unknown>
type Side = 'mem' | 'db'
/** One thing on each service: `mem` keeps the newest rows in memory, `db` reads every replay from the database. */
type Pair<T> = Record<Side, T>
/** The events of a scenario by name, as each service numbered them. */
type Ids = Record<string, string>

/** A resumed stream: whose token, which `?topics=`, which request headers. */
interface Reader {
  sub: string
  tenant: string
  roles?: string[]
  /** The token's `topics` claim (what `?topics=` and subscriptions may ask for). */
  claims?: string[]
  /** A director's other schools, with their roles there (the token's `tenants` claim). */
  tenants?: Record<string, string[]>
  /** `?topics=`; none: the stream follows the user's topic subscriptions. */
  topics?: string[]
  headers?: Record<string, string>
}

/** What one service sent a resumed stream before it went live. */
interface Replay {
  /** The replay's frames, as the client read them (the retry line and pings taken out). */
  text: string
  events: StreamEvent[]
  /** The same range as the database builds it for this very stream (LogReader.replayWindow, with its viewer). */
  database: string
  /** Where the service read the replay from: the database's replay reads ran, or they did not. */
  readFrom: 'memory' | 'database'
  /** Each id of the scenario's tenants' rows, as its position among them: the two services number rows apart. */
  positions: Map<string, string>
}

const RETRY_LINE = 'retry: 3000\n\n'

describeEachBackend('replay from memory', (backend) => {
  let apps: Pair<TestApp>
  beforeAll(async () => {
    const [mem, db] = await Promise.all([startApp(backend), startApp(backend, { config: { REPLAY_MEMORY_EVENTS: 0 } })])
    apps = { mem, db }
  })
  afterAll(async () => {
    await Promise.all([apps?.mem.close(), apps?.db.close()])
  })

  const opened: SseClient[] = []
  afterEach(() => {
    for (const c of opened.splice(0)) c.close()
  })

  let scenarios = 0
  /** Tenant names of one scenario: the same on both services (they are in every event's JSON). */
  const tenantNames = (...names: string[]) => {
    const n = ++scenarios
    return names.map((name) => `${name}-${backend}-${process.pid}-${n}`)
  }

  /** Does the same on both services, memory's first, so that both logs get the same rows in the same order. */
  async function both<T>(act: (t: TestApp) => Promise<T>): Promise<Pair<T>> {
    const mem = await act(apps.mem)
    const db = await act(apps.db)
    return { mem, db }
  }

  /** Which of the two services `t` is. */
  const sideOf = (t: TestApp): Side => (t === apps.mem ? 'mem' : 'db')
  /** The same event on both services, by name. */
  const named = (ids: Pair<Ids>, name: string): Pair<string> => ({ mem: ids.mem[name], db: ids.db[name] })

  const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
  const adminOf = (t: TestApp, tenant: string) => t.token({ sub: 'head', tenant, scope: 'admin' })

  /** A request as the holder of `token`, which must succeed (2xx); its answer. */
  async function call(
    t: TestApp,
    method: 'put' | 'patch' | 'delete',
    path: string,
    token: string,
    body?: Json,
  ): Promise<Json> {
    const req = t.http()[method](path).set(bearer(token))
    const res = body === undefined ? await req : await req.send(body)
    expect(res.status, `${method} ${path}: ${res.text}`).toBeLessThan(300)
    return res.body as Json
  }

  /** The id of the newest row of `tenant`'s log: that of an edit or a recall just made. */
  async function newestRow(t: TestApp, tenant: string): Promise<string> {
    const [row] = await t.database.query<{ id: string | number }>(
      sql`select max(id) as id from events where tenant = ${tenant}`,
    )
    return String(row.id)
  }

  /**
   * Opens `reader`'s stream on `t` resuming after `after`, and reads its replay: everything before a marker event
   * published once the stream is open (which comes live, after the replay).
   */
  async function resumeOn(t: TestApp, reader: Reader, after: string, tenants: readonly string[]): Promise<Replay> {
    // Everything published so far is settled, so the whole of it is replayed (none of it comes live).
    await t.app.logTail.sync()
    const reads = [vi.spyOn(t.app.logReader, 'replayWindow'), vi.spyOn(t.app.logReader, 'firstIdAfter')]
    let client: SseClient
    let marker: string
    let readFrom: Replay['readFrom']
    try {
      const token = t.token({
        sub: reader.sub,
        tenant: reader.tenant,
        ...(reader.roles && { roles: reader.roles }),
        ...(reader.claims && { topics: reader.claims }),
        ...(reader.tenants && { tenants: reader.tenants }),
      })
      client = await SseClient.open(t.url, {
        token,
        lastEventId: after,
        topics: reader.topics,
        headers: reader.headers,
      })
      opened.push(client)
      await live(client)
      marker = await publish(t, reader.tenant, { type: 'replay.marker', title: 'marker', to: { users: [reader.sub] } })
      await waitForId(client, marker)
      readFrom = reads.some((spy) => spy.mock.calls.length > 0) ? 'database' : 'memory'
    } finally {
      for (const spy of reads) spy.mockRestore()
    }
    // What the database replays for this stream over the same range (the replay ended where the marker's id began).
    const stream = t.app.hub.streamsOf(reader.tenant, reader.sub).at(-1)
    expect(stream, 'the stream, open on the service').toBeDefined()
    const database = (await t.app.logReader.replayWindow(stream!.viewer, Number(after), Number(marker) - 1, 100_000))
      .map((r) => r.frame)
      .join('')
    client.close()

    const raw = withoutPings(client.raw)
    expect(raw.startsWith(RETRY_LINE), raw.slice(0, 200)).toBe(true)
    const end = raw.indexOf(`id: ${marker}\n`)
    const events = client.events.slice(
      0,
      client.events.findIndex((e) => e.id === marker),
    )
    const rows = await t.database.query<{ id: string | number }>(
      sql`select id from events where tenant in (${sql.join(
        tenants.map((name) => sql`${name}`),
        sql`, `,
      )}) order by id`,
    )
    const positions = new Map(rows.map((r, i) => [String(r.id), `#${i}`]))
    return { text: raw.slice(RETRY_LINE.length, end), events, database, readFrom, positions }
  }

  /** The same resume on both services, from the same event (by name: each service has its own id for it). */
  async function resume(reader: Reader, after: Pair<string>, tenants: readonly string[]): Promise<Pair<Replay>> {
    return {
      mem: await resumeOn(apps.mem, reader, after.mem, tenants),
      db: await resumeOn(apps.db, reader, after.db, tenants),
    }
  }

  /** A replay's text as the other service would have written it: ids as positions, times (theirs differ) left out. */
  const normalised = (r: Replay) =>
    r.text
      .replace(/^id: (\d+)$/gm, (_, id: string) => `id: ${r.positions.get(id) ?? `unknown ${id}`}`)
      .replace(/"id":"(\d+)"/g, (_, id: string) => `"id":"${r.positions.get(id) ?? `unknown ${id}`}"`)
      .replace(/"createdAt":"[^"]*","expiresAt":"[^"]*"/g, '"createdAt":"…","expiresAt":"…"')

  /**
   * A replay as names: an event by its name, an edit as `edit <name>: <title>`, a recall as `recall <name>`, a reset
   * as `reset`. Markers (of earlier resumes) are left out.
   */
  function summary(r: Replay, ids: Ids): string[] {
    const names = new Map(Object.entries(ids).map(([name, id]) => [id, name]))
    const nameOf = (id: unknown) => names.get(String(id)) ?? `unnamed ${String(id)}`
    return r.events.flatMap((e) => {
      if (e.event === 'reset') return ['reset']
      const data = JSON.parse(e.data) as Json
      if (e.event === 'update') return [`edit ${nameOf(data.id)}: ${data.title}`]
      if (e.event === 'delete') return [`recall ${nameOf(data.id)}`]
      if (data.title === 'marker') return []
      return [nameOf(e.id)]
    })
  }

  /**
   * The replay of both services shows `expected`, and each is byte for byte what the database builds for the
   * stream: the memory's replay on its own service, and the two services' replays against each other.
   */
  function expectReplays(
    what: string,
    r: Pair<Replay>,
    ids: Pair<Ids>,
    expected: string[],
    from: Replay['readFrom'] = 'memory',
  ) {
    expect.soft(r.mem.readFrom, `${what}: replayed on the service with memory from`).toBe(from)
    expect.soft(r.db.readFrom, `${what}: replayed on the service without memory from`).toBe('database')
    expect.soft(summary(r.mem, ids.mem), `${what}: the replay with memory`).toEqual(expected)
    expect.soft(summary(r.db, ids.db), `${what}: the replay without memory`).toEqual(expected)
    expect.soft(r.mem.text, `${what}: with memory, as the database builds it on the same service`).toBe(r.mem.database)
    expect.soft(r.db.text, `${what}: without memory, as the database builds it`).toBe(r.db.database)
    expect
      .soft(normalised(r.mem), `${what}: with memory, as the service without memory replays it`)
      .toBe(normalised(r.db))
  }

  it('replays to each stream what its user, roles, tenant and topics let it see, as the database does', async () => {
    const [school, other] = tenantNames('school', 'other')
    const alice: Reader = { sub: 'alice', tenant: school, roles: ['parent'], claims: ['class:*', 'club:*'] }
    // Topic subscriptions: carol's own (within her claim), one an admin made for her (whatever her claim), alice's.
    await both(async (t) => {
      const carol = t.token({ sub: 'carol', tenant: school, topics: ['club:*'] })
      await call(t, 'put', '/v1/me/topics/club%3Achess', carol)
      await call(t, 'put', '/v1/topics/class%3A7B/members', adminOf(t, school), { users: ['carol'] })
      await call(t, 'put', '/v1/me/topics/club%3Ago', t.token({ sub: 'alice', tenant: school, topics: alice.claims }))
    })
    const ids = await both(async (t) => ({
      start: await publish(t, school, { title: 'start', to: { tenant: true } }),
      toAlice: await publish(t, school, { to: { users: ['alice'] } }),
      toBob: await publish(t, school, { to: { users: ['bob'] } }),
      toParents: await publish(t, school, { to: { roles: ['parent'] } }),
      toTeachers: await publish(t, school, { to: { roles: ['teacher'] } }),
      everyone: await publish(t, school, { to: { tenant: true }, data: { menu: ['soup', 'é 成绩 📚'] } }),
      class7A: await publish(t, school, { to: { topics: ['class:7A'] } }),
      class7B: await publish(t, school, { to: { topics: ['class:7B'] }, priority: 'high' }),
      // `classic` starts with `class` but not with `class:`: no `class:*` pattern matches it.
      classic: await publish(t, school, { to: { topics: ['classic'] } }),
      chess: await publish(t, school, { to: { topics: ['club:chess'] } }),
      go: await publish(t, school, { to: { topics: ['club:go', 'club:chess'] } }),
      aliceAndTopic: await publish(t, school, { to: { users: ['alice'], topics: ['class:9Z'] } }),
      // Another tenant's, to the same user ids, roles and topics: never the school's streams'.
      otherToAlice: await publish(t, other, { to: { users: ['alice'], roles: ['parent'], tenant: true } }),
      otherTopic: await publish(t, other, { to: { topics: ['class:7A'] } }),
    }))
    const start = named(ids, 'start')
    const tenants = [school, other]

    const seen = ['toAlice', 'toParents', 'everyone']
    const cases: Array<[string, Reader, string[]]> = [
      ['a topic', { ...alice, topics: ['class:7A'] }, [...seen, 'class7A', 'aliceAndTopic']],
      ['a pattern', { ...alice, topics: ['class:*'] }, [...seen, 'class7A', 'class7B', 'aliceAndTopic']],
      [
        'a topic and a pattern',
        { ...alice, topics: ['class:7B', 'club:*'] },
        [...seen, 'class7B', 'chess', 'go', 'aliceAndTopic'],
      ],
      ['her subscriptions (no ?topics=)', alice, [...seen, 'go', 'aliceAndTopic']],
      [
        'carol’s subscriptions, hers and the admin’s',
        { sub: 'carol', tenant: school, claims: ['club:*'] },
        ['everyone', 'class7B', 'chess', 'go'],
      ],
      ['a teacher without topics', { sub: 'dave', tenant: school, roles: ['teacher'] }, ['toTeachers', 'everyone']],
      [
        'the other tenant’s user',
        { sub: 'alice', tenant: other, claims: ['class:*'], topics: ['class:*'] },
        ['otherToAlice', 'otherTopic'],
      ],
    ]
    for (const [what, reader, expected] of cases) {
      expectReplays(what, await resume(reader, start, tenants), ids, expected)
    }
    // From the beginning (Last-Event-ID 0): nothing was edited or recalled yet, so the memory holds the whole log.
    expectReplays(
      'alice, from the beginning',
      await resume({ ...alice, topics: ['class:7A'] }, { mem: '0', db: '0' }, tenants),
      ids,
      ['start', ...seen, 'class7A', 'aliceAndTopic'],
    )
  })

  it('replays a long run of large events with awkward text in slices, byte for byte as the database does', async () => {
    const [school] = tenantNames('long')
    const controls = Array.from({ length: 31 }, (_, i) => String.fromCharCode(i + 1)).join('')
    const tricky = `quote " backslash \\ slash / ${controls} del \u007f seps \u2028\u2029 é 成绩 📚`
    // 600 events of about 1 KB, every third to someone else: the replay is written in several slices (64 KiB each).
    const events = Array.from({ length: 600 }, (_, i) => ({
      title: `${i}: ${tricky}`,
      body: tricky.repeat(8),
      data: { i, s: tricky, n: [1, 2.5, -3e-7, 1e21], nested: { yes: true, nil: null } },
      url: '/a?b=c&d=%22e%22',
      collapseKey: `k"\\\u2028${i % 7}`,
      priority: i % 2 ? 'high' : 'low',
      to: { users: [i % 3 === 2 ? 'someone' : 'reader'] },
    }))
    const ids = await both(async (t) => {
      const named: Ids = { start: await publish(t, school, { title: 'start', to: { users: ['reader'] } }) }
      const made: string[] = []
      for (let from = 0; from < events.length; from += 200)
        made.push(...(await publishBatch(t, school, events.slice(from, from + 200))))
      made.forEach((id, i) => {
        named[`e${i}`] = id
      })
      return named
    })
    const expected = events.flatMap((_, i) => (i % 3 === 2 ? [] : [`e${i}`]))
    const r = await resume({ sub: 'reader', tenant: school }, named(ids, 'start'), [school])
    expectReplays('the reader', r, ids, expected)
    expect(r.mem.text.length).toBeGreaterThan(4 * 64 * 1024)
  })

  it('replays a director’s schools as the database does: each school’s events to them, their roles there, its broadcasts', async () => {
    const [a, b, c] = tenantNames('school-a', 'school-b', 'school-c')
    const director: Reader = {
      sub: 'dana',
      tenant: a,
      roles: ['director'],
      claims: ['news'],
      topics: ['news'],
      tenants: { [b]: ['director', 'staff'] },
    }
    const ids = await both(async (t) => ({
      start: await publish(t, a, { title: 'start', to: { users: ['dana'] } }),
      aToDana: await publish(t, a, { to: { users: ['dana'] } }),
      bToDana: await publish(t, b, { to: { users: ['dana'] } }),
      aToDirectors: await publish(t, a, { to: { roles: ['director'] } }),
      bToStaff: await publish(t, b, { to: { roles: ['staff'] } }),
      aEveryone: await publish(t, a, { to: { tenant: true } }),
      bEveryone: await publish(t, b, { to: { tenant: true } }),
      aNews: await publish(t, a, { to: { topics: ['news'] } }),
      // Never: her topics are the current school's; a school her token does not name; a role she has only in b.
      bNews: await publish(t, b, { to: { topics: ['news'] } }),
      cToDana: await publish(t, c, { to: { users: ['dana'], tenant: true } }),
      aToStaff: await publish(t, a, { to: { roles: ['staff'] } }),
      bToOthers: await publish(t, b, { to: { users: ['someone'] } }),
    }))
    const start = named(ids, 'start')
    const tenants = [a, b, c]
    expectReplays('the director', await resume(director, start, tenants), ids, [
      'aToDana',
      'bToDana',
      'aToDirectors',
      'bToStaff',
      'aEveryone',
      'bEveryone',
      'aNews',
    ])
    // A teacher of b only: b's events, none of a's.
    expectReplays('a teacher of b', await resume({ sub: 'dana', tenant: b }, start, tenants), ids, [
      'bToDana',
      'bEveryone',
    ])
  })

  it('leaves out what a user’s in-app preferences hide, in their own school only, as the database does', async () => {
    const [school, other] = tenantNames('prefs', 'prefs-other')
    await both(async (t) => {
      const admin = adminOf(t, school)
      await call(t, 'put', '/v1/tenant/preferences', admin, { rules: [{ type: 'lunch.*', inApp: false }] })
      const alice = t.token({ sub: 'alice', tenant: school })
      const rules = [
        { type: 'grades.*', inApp: false },
        { topic: 'club:*', inApp: false },
      ]
      await call(t, 'put', '/v1/me/preferences', alice, { rules })
      // bob's own rule wins over the school's.
      const bob = t.token({ sub: 'bob', tenant: school })
      await call(t, 'put', '/v1/me/preferences', bob, { rules: [{ type: 'lunch.menu', inApp: true }] })
    })
    const ids = await both(async (t) => ({
      start: await publish(t, school, { title: 'start', to: { tenant: true } }),
      grade: await publish(t, school, { type: 'grades.posted', to: { users: ['alice', 'bob'] } }),
      absence: await publish(t, school, { type: 'attendance.absent', to: { users: ['alice'] } }),
      club: await publish(t, school, { type: 'club.news', to: { users: ['alice'], topics: ['club:chess'] } }),
      // Urgent gets through her rule (the school lets it).
      urgentGrade: await publish(t, school, { type: 'grades.closure', priority: 'urgent', to: { users: ['alice'] } }),
      lunch: await publish(t, school, { type: 'lunch.menu', to: { tenant: true } }),
      // Her rules are her own school's: the other school's grades reach her.
      otherGrade: await publish(t, other, { type: 'grades.posted', to: { users: ['alice'] } }),
      last: await publish(t, school, { to: { users: ['alice', 'bob', 'carol'] } }),
    }))
    const start = named(ids, 'start')
    const tenants = [school, other]
    const alice: Reader = { sub: 'alice', tenant: school, claims: ['club:*'], topics: ['club:*'] }
    expectReplays('alice', await resume(alice, start, tenants), ids, ['absence', 'urgentGrade', 'last'])
    expectReplays(
      'alice, a director of both schools',
      await resume({ ...alice, tenants: { [other]: [] } }, start, tenants),
      ids,
      ['absence', 'urgentGrade', 'otherGrade', 'last'],
    )
    expectReplays('bob', await resume({ sub: 'bob', tenant: school }, start, tenants), ids, ['grade', 'lunch', 'last'])
    expectReplays('carol', await resume({ sub: 'carol', tenant: school }, start, tenants), ids, ['last'])
  })

  it('replays each stream in its locale (the directory’s, else Accept-Language), an edit of a localized event too', async () => {
    const [school] = tenantNames('locales')
    await both(async (t) => {
      const admin = adminOf(t, school)
      for (const [id, locale] of [
        ['amelie', 'fr-CH'],
        ['oliver', 'en-GB'],
      ]) {
        await call(t, 'put', `/v1/directory/users/${id}`, admin, { roles: [], topics: [], locale })
      }
      await call(t, 'put', '/v1/event-types/grade.updated', admin, {
        templates: {
          title: 'Grade: {{data.score}}',
          body: '{{data.subject}}',
          locales: {
            fr: { title: 'Note : {{data.score}}' },
            'en-GB': { title: 'Mark: {{data.score}}', body: '{{data.subject}} (UK)' },
          },
        },
      })
    })
    const grade = (data: Json, to: Json = { tenant: true }) => ({ type: 'grade.updated', title: undefined, data, to })
    const ids = await both(async (t) => ({
      first: await publish(t, school, grade({ score: 18, subject: 'Maths' })),
      second: await publish(t, school, grade({ score: 9, subject: 'Art' }, { users: ['amelie', 'oliver', 'zoe'] })),
      plain: await publish(t, school, { title: 'One text for all', to: { tenant: true } }),
    }))
    // The edit changes the data only: the event keeps its text per locale, and the edit's row carries it.
    const edited = await both(async (t) => {
      const mine = ids[sideOf(t)]
      const publisher = t.token({ sub: 'publisher', tenant: school, scope: 'events:publish' })
      await call(t, 'patch', `/v1/events/${mine.first}`, publisher, { data: { score: 19, subject: 'Maths' } })
      return { ...mine, third: await publish(t, school, grade({ score: 7, subject: 'History' })) }
    })
    const after = named(ids, 'plain')
    const readers: Array<[string, Reader, Array<[string, string | null]>]> = [
      [
        'amelie (fr-CH in the directory)',
        { sub: 'amelie', tenant: school },
        [
          ['Note : 18', 'Maths'],
          ['Note : 7', 'History'],
        ],
      ],
      [
        'oliver (en-GB in the directory)',
        { sub: 'oliver', tenant: school },
        [
          ['Mark: 18', 'Maths (UK)'],
          ['Mark: 7', 'History (UK)'],
        ],
      ],
      [
        'zoe (no locale)',
        { sub: 'zoe', tenant: school },
        [
          ['Grade: 18', 'Maths'],
          ['Grade: 7', 'History'],
        ],
      ],
      [
        'zoe asking for fr-BE',
        { sub: 'zoe', tenant: school, headers: { 'accept-language': 'de-DE;q=0.5, fr-BE, en;q=0.8' } },
        [
          ['Note : 18', 'Maths'],
          ['Note : 7', 'History'],
        ],
      ],
      [
        'zoe asking for en-US (no template)',
        { sub: 'zoe', tenant: school, headers: { 'accept-language': 'en-US' } },
        [
          ['Grade: 18', 'Maths'],
          ['Grade: 7', 'History'],
        ],
      ],
    ]
    for (const [what, reader, texts] of readers) {
      const r = await resume(reader, after, [school])
      expectReplays(what, r, edited, [`edit first: ${texts[0][0]}`, 'third'])
      const shown = r.mem.events.map((e) => JSON.parse(e.data) as Json).filter((d) => d.title !== 'marker')
      expect
        .soft(
          shown.map((d) => [d.title, d.body]),
          what,
        )
        .toEqual(texts)
      expect.soft(shown[0], what).toMatchObject({ id: edited.mem.first, revision: 1, data: { score: 19 } })
    }
  })

  it('replays an edit or a recall right after the resume point from memory, and several from the database, as it does', async () => {
    const [school] = tenantNames('changes')
    // publish() publishes as `publisher`: the one who may change the events.
    const publisherOf = (t: TestApp) => t.token({ sub: 'publisher', tenant: school, scope: 'events:publish' })
    const to = { users: ['alice'], roles: ['parent'] }
    const ids: Pair<Ids> = await both(async (t) => ({
      first: await publish(t, school, { title: 'First', to }),
      second: await publish(t, school, { title: 'Second', to }),
      toBob: await publish(t, school, { title: 'For bob', to: { users: ['bob'] } }),
    }))
    const change = (kind: 'patch' | 'delete', name: string, body?: Json) =>
      both(async (t) => {
        await call(t, kind, `/v1/events/${ids[sideOf(t)][name]}`, publisherOf(t), body)
        return newestRow(t, school)
      })
    const more = async (name: string, extra: Json = {}) => {
      const made = await both((t) => publish(t, school, { title: name, to, ...extra }))
      ids.mem[name] = made.mem
      ids.db[name] = made.db
    }
    const alice: Reader = { sub: 'alice', tenant: school }
    const parent: Reader = { sub: 'pat', tenant: school, roles: ['parent'] }
    const bob: Reader = { sub: 'bob', tenant: school }
    const pick = (name: string) => named(ids, name)

    // An edit, then an event: the memory holds the edit and what follows it.
    await change('patch', 'first', { title: 'First, edited', body: 'Bring lunch' })
    await more('third', { to: { tenant: true } })
    for (const reader of [alice, parent]) {
      expectReplays(`${reader.sub}: an edit`, await resume(reader, pick('toBob'), [school]), ids, [
        'edit first: First, edited',
        'third',
      ])
    }
    expectReplays('bob: an edit of an event he never had', await resume(bob, pick('toBob'), [school]), ids, ['third'])

    // A recall, then an event.
    await more('fourth')
    await change('delete', 'third')
    await more('fifth')
    expectReplays('alice: a recall', await resume(alice, pick('fourth'), [school]), ids, ['recall third', 'fifth'])
    expectReplays('bob: a recall of a broadcast', await resume(bob, pick('fourth'), [school]), ids, ['recall third'])

    // Two edits of one event: from the first, the second only.
    const edits = [
      await change('patch', 'fifth', { title: 'Fifth, edited' }),
      await change('patch', 'fifth', { title: 'Fifth, edited twice', data: { n: 2 } }),
    ]
    expectReplays('alice: after the first of two edits', await resume(alice, edits[0], [school]), ids, [
      'edit fifth: Fifth, edited twice',
    ])

    // From before all of that: more than the memory holds since its last change, so both read the database. An
    // edit superseded by a later one is left out, and so is a recalled event (its recall comes).
    expectReplays(
      'alice: from before every change',
      await resume(alice, pick('first'), [school]),
      ids,
      ['second', 'edit first: First, edited', 'fourth', 'recall third', 'fifth', 'edit fifth: Fifth, edited twice'],
      'database',
    )
  })

  it('keeps the newest rows in memory (none with REPLAY_MEMORY_EVENTS=0) and replays from them while the database cannot', async () => {
    const [school] = tenantNames('held')
    const { mem, db } = apps
    const to = { users: ['alice'] }
    const older = await both((t) => publish(t, school, { title: 'older', to }))
    const before = await both((t) => publish(t, school, { title: 'before', to }))
    // A change empties the memory: it holds what comes after `before` from now on, and `older` is older than that.
    await both(async (t) => {
      const publisher = t.token({ sub: 'publisher', tenant: school, scope: 'events:publish' })
      await call(t, 'patch', `/v1/events/${before[sideOf(t)]}`, publisher, { body: 'edited' })
    })
    const edit = await both((t) => newestRow(t, school))
    const held = await both(async (t) => [
      await publish(t, school, { title: 'one', to }),
      await publish(t, school, { title: 'two', to }),
    ])
    await Promise.all([mem.app.logTail.sync(), db.app.logTail.sync()])

    const recent = mem.app.logReader.recent!
    expect(recent.size).toBeGreaterThan(0)
    // It begins right before the edit's row.
    expect(recent.from).toBe(Number(edit.mem) - 1)
    expect(recent.between(Number(edit.mem) - 1, mem.app.logTail.cursor)?.map((r) => String(r.row.id))).toEqual([
      edit.mem,
      ...held.mem,
    ])
    expect(recent.between(Number(older.mem), mem.app.logTail.cursor)).toBeUndefined()
    expect(db.app.logReader.recent?.size).toBe(0)

    // The database's replay reads fail from here on: a resume among the held rows does not notice.
    const down = () => Promise.reject(new Error('the database cannot replay'))
    const reads = [
      vi.spyOn(mem.app.logReader, 'replayWindow').mockImplementation(down),
      vi.spyOn(mem.app.logReader, 'firstIdAfter').mockImplementation(down),
    ]
    try {
      const token = mem.token({ sub: 'alice', tenant: school })
      const resumed = await live(await SseClient.open(mem.url, { token, lastEventId: edit.mem }))
      opened.push(resumed)
      const marker = await publish(mem, school, { title: 'marker', to })
      await waitForId(resumed, marker)
      expect(resumed.notificationIds).toEqual([...held.mem, marker])
      for (const spy of reads) expect(spy).not.toHaveBeenCalled()

      // From before them it needs the database: the replay fails and the stream is dropped (maybe before its head
      // reached the client), for the client to come back.
      const fromOlder = await SseClient.open(mem.url, { token, lastEventId: older.mem }).then(
        async (c) => {
          opened.push(c)
          await c.waitForEnd()
          return c.notificationIds
        },
        (err: Error) => err.message,
      )
      expect(fromOlder).toSatisfy((got) => got === 'socket hang up' || (Array.isArray(got) && got.length === 0))
      expect(reads.some((spy) => spy.mock.calls.length > 0)).toBe(true)
    } finally {
      for (const spy of reads) spy.mockRestore()
    }
  })
})

describe('RecentLog', () => {
  const HOUR = 3_600_000
  /** The time of the test: rows are made at it, and `now` is given explicitly from it (appends trim at the clock's). */
  let NOW = Date.now()
  beforeEach(() => {
    NOW = Date.now()
  })

  /** A row of the log as the tail hands it over: an event to `u` of tenant `t`, published now, for an hour. */
  const row = (id: number, over: Partial<EventRow> = {}): EventRow => eventRow(id, over, NOW)
  const rows = (...ids: number[]) => ids.map((id) => row(id))
  /** A log that begins after id 10, with generous limits unless told. */
  const logOf = (limits: Partial<{ rows: number; chars: number; ageMs: number }> = {}) => {
    const log = new RecentLog({ rows: 1_000, chars: 1_000_000, ageMs: HOUR, ...limits })
    log.reset(10)
    return log
  }
  const idsOf = (held: ReturnType<RecentLog['between']>) => held?.map((r) => r.row.id)

  it('holds every row after its start, and drops the oldest past the row limit', () => {
    const log = logOf({ rows: 3 })
    expect([log.from, log.to, log.size]).toEqual([10, 10, 0])
    expect(idsOf(log.between(10, 10, NOW))).toEqual([])
    log.append(rows(11, 12))
    expect(idsOf(log.between(10, 12, NOW))).toEqual([11, 12])
    log.append(rows(13, 14, 15))
    expect([log.from, log.to, log.size]).toEqual([12, 15, 3])
    expect(idsOf(log.between(12, 15, NOW))).toEqual([13, 14, 15])
    expect(idsOf(log.between(13, 14, NOW))).toEqual([14])
  })

  it('drops the oldest rows past the character limit, however few they are', () => {
    const log = logOf({ chars: 5_000 })
    const big = (id: number) => row(id, { body: 'x'.repeat(1_000) })
    log.append([big(11), big(12)])
    expect(log.size).toBe(2)
    log.append([big(13)])
    expect([log.from, log.size]).toEqual([11, 2])
    // A small row fits next to two big ones.
    log.append(rows(14))
    expect([log.from, log.size]).toEqual([11, 3])
    expect(idsOf(log.between(11, 14, NOW))).toEqual([12, 13, 14])
  })

  it('drops rows older than the age limit', () => {
    const log = logOf({ ageMs: 60_000 })
    log.append([row(11, { createdAt: new Date(NOW - 10_000) }), row(12, { createdAt: new Date(NOW - 5_000) }), row(13)])
    expect(log.size).toBe(3)
    // 52 s later, 11 is past the minute and 12 not yet.
    expect(idsOf(log.between(11, 13, NOW + 52_000))).toEqual([12, 13])
    expect([log.from, log.size]).toEqual([11, 2])
    expect(log.between(10, 13, NOW + 52_000)).toBeUndefined()
    // 57 s later, 12 too.
    expect(log.between(11, 13, NOW + 57_000)).toBeUndefined()
    expect(idsOf(log.between(12, 13, NOW + 57_000))).toEqual([13])
    expect([log.from, log.size]).toEqual([12, 1])
  })

  it('answers a range only when it holds all of it: undefined from before its start or past its end', () => {
    const log = logOf()
    log.append(rows(11, 12, 13))
    expect(log.between(9, 13, NOW)).toBeUndefined()
    expect(log.between(10, 14, NOW)).toBeUndefined()
    expect(idsOf(log.between(10, 13, NOW))).toEqual([11, 12, 13])
    expect(idsOf(log.between(13, 13, NOW))).toEqual([])
  })

  it('leaves out expired rows and recalled events, and calls an expired resume point gone', () => {
    const log = logOf()
    log.append([
      row(11),
      row(12, { expiresAt: new Date(NOW + 1_000) }),
      row(13, { recalledAt: new Date(NOW) }),
      row(14),
    ])
    expect(idsOf(log.between(10, 14, NOW))).toEqual([11, 12, 14])
    expect(log.resumePoint(12, NOW)).toBe('kept')
    expect(idsOf(log.between(10, 14, NOW + 1_000))).toEqual([11, 14])
    expect(log.resumePoint(12, NOW + 1_000)).toBe('gone')
    expect(log.resumePoint(11, NOW + 1_000)).toBe('kept')
  })

  it('calls an id it would hold but has no row for (a rolled-back publish) gone, and knows nothing outside (from, to]', () => {
    const log = logOf()
    log.append(rows(11, 13))
    expect(log.resumePoint(12, NOW)).toBe('gone')
    expect(log.resumePoint(13, NOW)).toBe('kept')
    expect(idsOf(log.between(10, 13, NOW))).toEqual([11, 13])
    for (const id of [5, 10, 14, 1_000]) expect(log.resumePoint(id, NOW), `id ${id}`).toBeUndefined()
  })

  it.each(['update', 'delete'] as const)('empties what it held before an %s row: it begins right before it', (kind) => {
    const log = logOf()
    log.append(rows(11, 12))
    log.append([row(13, { kind, refId: 11, revision: kind === 'update' ? 1 : 0 }), row(14)])
    expect([log.from, log.to, log.size]).toEqual([12, 14, 2])
    expect(log.between(11, 14, NOW)).toBeUndefined()
    expect(idsOf(log.between(12, 14, NOW))).toEqual([13, 14])
    expect(log.resumePoint(11, NOW)).toBeUndefined()
    expect(log.resumePoint(13, NOW)).toBe('kept')
    // In the middle of one append too.
    log.append([row(15), row(16, { kind, refId: 14 }), row(17)])
    expect([log.from, log.to, log.size]).toEqual([15, 17, 2])
  })

  it('holds nothing with a row limit of 0, and still knows where the log ends', () => {
    const log = logOf({ rows: 0 })
    log.append(rows(11, 12))
    expect([log.from, log.to, log.size]).toEqual([12, 12, 0])
    expect(log.between(10, 12, NOW)).toBeUndefined()
    expect(log.resumePoint(12, NOW)).toBeUndefined()
  })

  it('builds each row’s frame as logFrame of the row in the reader’s locale', () => {
    const localized: Record<string, LocalizedText> = {
      fr: { title: 'Note : 18', body: null },
      'en-GB': { title: 'Mark: 18', body: 'Maths (UK) "quoted" \u2028' },
    }
    const tricky = 'quote " backslash \\ \u0001 é 成绩 📚'
    const held = [
      row(11, {
        title: 'Grade: 18',
        body: 'Maths',
        dataJson: '{"score": 18,"s":"x"}',
        localizedJson: JSON.stringify(localized),
        toTenant: true,
      }),
      row(12, { title: tricky, body: tricky, url: '/a?b=c', actionsJson: '[{"action":"open","title":"Open"}]' }),
      row(13, {
        kind: 'update',
        refId: 11,
        revision: 1,
        title: 'Grade: 18',
        body: 'Maths',
        localizedJson: JSON.stringify(localized),
      }),
      row(14, { kind: 'delete', refId: 12, title: '' }),
    ]
    // Each in a log of its own (an edit's or a recall's row empties what came before it).
    const replayed = held.map((r) => {
      const log = logOf()
      log.reset(r.id - 1)
      log.append([r])
      return log.between(r.id - 1, r.id, NOW)![0]
    })
    expect(replayed.map((r) => r.row)).toEqual(held)
    for (const locale of [undefined, 'fr', 'fr-CH', 'en-GB', 'en-US', 'en', 'de']) {
      for (const r of replayed) {
        expect(r.frame(locale), `row ${r.row.id} in ${locale}`).toBe(logFrame(localizedRow(r.row, locale)))
        // Built once, then kept: asked again, the same text.
        expect(r.frame(locale)).toBe(logFrame(localizedRow(r.row, locale)))
      }
    }
    expect(replayed[0].frame('fr-CH')).toContain('"title":"Note : 18","body":null')
    expect(replayed[0].frame('en-GB')).toContain('"title":"Mark: 18","body":"Maths (UK) \\"quoted\\" \u2028"')
    expect(replayed[0].frame('de')).toContain('"title":"Grade: 18","body":"Maths"')
    expect(replayed[2].frame('en-GB')).toMatch(/^id: 13\nevent: update\ndata: \{"id":"11",.*"title":"Mark: 18"/)
    expect(replayed[3].frame('fr')).toBe('id: 14\nevent: delete\ndata: {"id":"12"}\n\n')
  })
})
