import { mkdtempSync, rmSync } from 'node:fs'
import { type AddressInfo, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.ts'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { createPostgresDatabase, dropPostgresDatabase, hasPostgres } from './helpers/backends.ts'
import { runToEnd, runTs } from './helpers/process.ts'
import { SseClient } from './helpers/sse.ts'

const cli = (args: string[], env: Record<string, string> = {}) =>
  runToEnd('src/cli.ts', args, { JWT_SECRET: TEST_JWT_SECRET, ...env })

describe('the CLI, run as a user runs it', () => {
  let t: TestApp
  const dataDir = mkdtempSync(join(tmpdir(), 'herald-cli-'))
  beforeAll(async () => {
    t = await startApp('pglite')
  })
  afterAll(async () => {
    await t.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('lists its commands with --help, and exits 2 with usage when given none or an unknown one', async () => {
    const help = await cli(['--help'])
    expect(help.code).toBe(0)
    for (const c of [
      'token',
      'publish',
      'edit',
      'recall',
      'scheduled',
      'preferences',
      'tail',
      'vapid',
      'migrate',
      'prune',
    ]) {
      expect(help.stdout).toContain(c)
    }
    expect((await cli([])).code).toBe(2)
    const unknown = await cli(['frobnicate'])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/unknown command "frobnicate"/)
  })

  it.each([
    ['edit', 'herald edit 42 --title "New title"'],
    ['recall', 'herald recall 42'],
    ['recipients', 'herald recipients 42 --state unread'],
    ['nudge', 'herald nudge 42'],
  ])('%s without an event id, or with one that is not a number, exits 2 and shows how', async (command, example) => {
    for (const args of [[command], [command, 'latest']]) {
      const { code, stderr } = await cli(args)
      expect(code).toBe(2)
      expect(stderr).toContain(`${command} needs the event id (a number), as in: ${example}`)
    }
  })

  it.each(['token', 'publish', 'edit', 'recall', 'scheduled', 'preferences', 'tail', 'vapid', 'migrate', 'prune'])(
    '%s --help explains its options',
    async (command) => {
      const { code, stdout } = await cli([command, '--help'])
      expect(code).toBe(0)
      expect(stdout).toMatch(new RegExp(`herald ${command}`))
    },
  )

  it('token mints a JWT the server accepts, with the claims asked for', async () => {
    const { code, stdout } = await cli(['token', '--sub', 'carol', '--tenant', 't1', '--roles', 'parent'])
    expect(code).toBe(0)
    const token = stdout.trim()
    await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'school', scope: PUBLISHER })}`)
      .send({ type: 'school.news', to: { roles: ['parent'] }, title: 'For parents' })
      .expect(201)
    const list = await t.http().get('/v1/events').set('authorization', `Bearer ${token}`).expect(200)
    expect(list.body.events.map((e: { title: string }) => e.title)).toEqual(['For parents'])
  })

  it('token refuses missing or unknown options with exit code 2 and says what is missing', async () => {
    const missing = await cli(['token', '--sub', 'x'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/--sub and --tenant are required/)
    const unknown = await cli(['token', '--sub', 'x', '--tenant', 'y', '--colour', 'red'])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/colour/)
    expect((await cli(['token', '--sub', 'x', '--tenant', 'y', '--ttl', '-5'])).code).toBe(2)
  })

  it('publish sends an event that its recipient then lists; exit 0 and the JSON answer', async () => {
    const token = t.token({ sub: 'teacher', scope: PUBLISHER })
    const { code, stdout } = await cli([
      'publish',
      '--server',
      t.url,
      '--token',
      token,
      '--to-user',
      'dave',
      '--title',
      'Exam submitted',
      '--data',
      '{"examId":7}',
    ])
    expect(code).toBe(0)
    const { id } = JSON.parse(stdout)
    const got = await t
      .http()
      .get(`/v1/events/${id}`)
      .set('authorization', `Bearer ${t.token({ sub: 'dave' })}`)
    expect(got.body).toMatchObject({ title: 'Exam submitted', data: { examId: 7 } })
  })

  it('publish --action, --icon, --image and --badge add buttons and pictures; a malformed --action exits 2', async () => {
    const token = t.token({ sub: 'teacher', scope: PUBLISHER })
    const { code, stdout, stderr } = await cli([
      'publish',
      '--server',
      t.url,
      '--token',
      token,
      '--to-user',
      'frank',
      '--title',
      'Trip form',
      '--url',
      '/trips/9',
      '--action',
      'ack:Got it',
      '--action',
      'open:Form: sign it:https://school.example/trips/9/form',
      '--icon',
      '/icons/trip.png',
      '--image',
      'https://cdn.school.example/trip.jpg',
      '--badge',
      '/icons/badge.png',
    ])
    expect(code, stderr).toBe(0)
    const got = await t
      .http()
      .get(`/v1/events/${JSON.parse(stdout).id}`)
      .set('authorization', `Bearer ${t.token({ sub: 'frank' })}`)
    expect(got.body).toMatchObject({
      actions: [
        { action: 'ack', title: 'Got it', url: null },
        { action: 'open', title: 'Form: sign it', url: 'https://school.example/trips/9/form' },
      ],
      icon: '/icons/trip.png',
      image: 'https://cdn.school.example/trip.jpg',
      badge: '/icons/badge.png',
    })

    const malformed = await cli([
      'publish',
      '--server',
      t.url,
      '--token',
      token,
      '--to-user',
      'frank',
      '--title',
      'x',
      '--action',
      'ack',
    ])
    expect(malformed.code).toBe(2)
    expect(malformed.stderr).toMatch(/--action must be <ack\|read\|open>:<title>\[:<url>\]/)
    // What the server refuses (a third button, an unknown kind) is its 400, printed, exit 1.
    const refused = await cli([
      'publish',
      '--server',
      t.url,
      '--token',
      token,
      '--to-user',
      'frank',
      '--title',
      'x',
      '--action',
      'dismiss:No',
    ])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/HTTP 400.*body\.actions\.0\.action/)
  })

  it('edit changes an event and prints it as it now stands; recall takes it back; what the server refuses exits 1', async () => {
    const token = t.token({ sub: 'editor', scope: PUBLISHER })
    const common = ['--server', t.url, '--token', token]
    const reader = t.token({ sub: 'hana' })
    const published = await cli(['publish', ...common, '--to-user', 'hana', '--title', 'Trip Friday', '--url', '/t/1'])
    const { id } = JSON.parse(published.stdout)

    const edited = await cli([
      'edit',
      id,
      ...common,
      '--title',
      'Trip Monday',
      '--data',
      '{"room":12}',
      '--clear',
      'url',
    ])
    expect(edited.code, edited.stderr).toBe(0)
    expect(JSON.parse(edited.stdout)).toMatchObject({
      id,
      title: 'Trip Monday',
      data: { room: 12 },
      url: null,
      revision: 1,
    })
    const got = await t.http().get(`/v1/events/${id}`).set('authorization', `Bearer ${reader}`)
    expect(got.body).toMatchObject({ title: 'Trip Monday', url: null, revision: 1 })

    // Usage errors exit 2 before anything is sent; the server's refusals exit 1 with its answer.
    expect((await cli(['edit', id, ...common])).stderr).toMatch(/give what to change/)
    expect((await cli(['edit', 'x', ...common, '--title', 'y'])).code).toBe(2)
    expect((await cli(['edit', id, ...common, '--clear', 'title'])).code).toBe(2)
    const refused = await cli(['edit', id, ...common, '--url', 'javascript:alert(1)'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/HTTP 400.*body\.url/)
    const notHers = await cli(['recall', id, '--server', t.url, '--token', reader])
    expect(notHers.code).toBe(1)
    expect(notHers.stderr).toMatch(/HTTP 403/)

    const recalled = await cli(['recall', id, ...common])
    expect(recalled.code, recalled.stderr).toBe(0)
    expect(JSON.parse(recalled.stdout)).toEqual({ id, state: 'recalled' })
    expect((await t.http().get(`/v1/events/${id}`).set('authorization', `Bearer ${reader}`)).status).toBe(404)
    const again = await cli(['recall', id, ...common])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/HTTP 404/)
  })

  it('publish exits 2 without a token and 1 when the server refuses, printing why', async () => {
    const noToken = await cli(['publish', '--server', t.url, '--title', 'x', '--to-user', 'u'])
    expect(noToken.code).toBe(2)
    expect(noToken.stderr).toMatch(/--token/)
    const refused = await cli(['publish', '--server', t.url, '--token', 'nonsense', '--title', 'x', '--to-user', 'u'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/HTTP 401/)
    const badJson = await cli(['publish', '--server', t.url, '--token', 'x', '--json', '{nope'])
    expect(badJson.code).toBe(2)
  })

  it('publish --deliver-at schedules (absolute or +2h); scheduled list, show and cancel follow it', async () => {
    const token = t.token({ sub: 'planner', scope: PUBLISHER })
    const common = ['--server', t.url, '--token', token]
    const before = Date.now()
    const later = await cli([
      'publish',
      ...common,
      '--to-user',
      'gina',
      '--title',
      'Trip tomorrow',
      '--deliver-at',
      '+2h',
    ])
    expect(later.code, later.stderr).toBe(0)
    const { scheduledId, deliverAt } = JSON.parse(later.stdout)
    expect(scheduledId).toMatch(/^\d+$/)
    expect(Date.parse(deliverAt) - before).toBeGreaterThanOrEqual(2 * 3_600_000)
    expect(Date.parse(deliverAt) - Date.now()).toBeLessThanOrEqual(2 * 3_600_000)
    const absolute = new Date(Date.now() + 3 * 3_600_000).toISOString().replace('Z', '+00:00')
    const second = await cli([
      'publish',
      ...common,
      '--json',
      '{"type":"a.b","title":"Hi","to":{"users":["gina"]}}',
      '--deliver-at',
      absolute,
    ])
    expect(second.code, second.stderr).toBe(0)
    const secondId = JSON.parse(second.stdout).scheduledId

    const list = await cli(['scheduled', 'list', ...common])
    expect(list.code, list.stderr).toBe(0)
    expect(JSON.parse(list.stdout).scheduled.map((s: { id: string }) => s.id)).toEqual([scheduledId, secondId])
    const page = await cli(['scheduled', 'list', ...common, '--limit', '1', '--after', scheduledId])
    expect(JSON.parse(page.stdout).scheduled.map((s: { id: string }) => s.id)).toEqual([secondId])
    const show = await cli(['scheduled', 'show', scheduledId, ...common])
    expect(show.code, show.stderr).toBe(0)
    expect(JSON.parse(show.stdout)).toMatchObject({
      id: scheduledId,
      state: 'pending',
      events: [{ title: 'Trip tomorrow' }],
    })

    const cancel = await cli(['scheduled', 'cancel', scheduledId, ...common])
    expect(cancel.code, cancel.stderr).toBe(0)
    expect(JSON.parse(cancel.stdout)).toEqual({ id: scheduledId, state: 'cancelled' })
    expect(JSON.parse((await cli(['scheduled', 'show', scheduledId, ...common])).stdout).state).toBe('cancelled')
    // Someone else's: the server's 404, printed, exit 1.
    const other = t.token({ sub: 'someone-else', scope: PUBLISHER })
    const notMine = await cli(['scheduled', 'cancel', secondId, '--server', t.url, '--token', other])
    expect(notMine.code).toBe(1)
    expect(notMine.stderr).toMatch(/HTTP 404/)

    // A bad time is the server's 400 naming the field; a bad command line is exit 2.
    const bad = await cli(['publish', ...common, '--to-user', 'gina', '--title', 'x', '--deliver-at', 'tomorrow'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/HTTP 400.*body\.deliverAt/)
    for (const args of [['scheduled'], ['scheduled', 'frob'], ['scheduled', 'show'], ['scheduled', 'cancel', 'x']]) {
      expect((await cli([...args, ...common])).code, args.join(' ')).toBe(2)
    }
  })

  it('topics follow, list and unfollow for a user; members, add and remove for an admin; refusals exit 1', async () => {
    const pupil = t.token({ sub: 'pia', topics: ['club:*'] })
    const admin = t.token({ sub: 'head', scope: 'admin' })
    const as = (token: string) => ['--server', t.url, '--token', token]
    const followed = await cli(['topics', 'follow', 'club:chess', ...as(pupil)])
    expect(followed.code, followed.stderr).toBe(0)
    expect(JSON.parse(followed.stdout)).toEqual({ topic: 'club:chess', following: true })
    const listed = await cli(['topics', 'list', ...as(pupil)])
    expect(JSON.parse(listed.stdout).topics.map((x: { topic: string }) => x.topic)).toEqual(['club:chess'])
    const refused = await cli(['topics', 'follow', 'class:7A', ...as(pupil)])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/HTTP 403/)

    const added = await cli(['topics', 'add', 'class:7A', '--users', 'pia,quin', ...as(admin)])
    expect(added.code, added.stderr).toBe(0)
    expect(JSON.parse(added.stdout)).toEqual({ changed: 2 })
    expect(JSON.parse((await cli(['topics', 'members', 'class:7A', ...as(admin)])).stdout)).toEqual({
      users: ['pia', 'quin'],
    })
    expect((await cli(['topics', 'add', 'class:7A', '--users', 'x', ...as(pupil)])).code).toBe(1)
    expect(JSON.parse((await cli(['topics', 'remove', 'class:7A', '--users', 'quin', ...as(admin)])).stdout)).toEqual({
      changed: 1,
    })
    const unfollowed = await cli(['topics', 'unfollow', 'class:7A', ...as(pupil)])
    expect(unfollowed.code, unfollowed.stderr).toBe(0)
    expect(JSON.parse((await cli(['topics', 'list', ...as(pupil)])).stdout).topics).toHaveLength(1)
    for (const args of [['topics'], ['topics', 'frob'], ['topics', 'follow'], ['topics', 'add', 'class:7A']]) {
      expect((await cli([...args, ...as(admin)])).code, args.join(' ')).toBe(2)
    }
  })

  it('preferences set, show and reset a user’s own, and with --tenant an admin’s defaults; refusals exit 1', async () => {
    const user = t.token({ sub: 'pref-user' })
    const admin = t.token({ sub: 'pref-head', scope: 'admin' })
    const as = (token: string) => ['--server', t.url, '--token', token]
    const settings = {
      rules: [{ type: 'grades.*', push: false }],
      quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris', days: ['mon'] },
    }
    const set = await cli(['preferences', 'set', '--json', JSON.stringify(settings), ...as(user)])
    expect(set.code, set.stderr).toBe(0)
    expect(JSON.parse(set.stdout)).toMatchObject({ ...settings, updatedAt: expect.any(String) })
    const shown = await cli(['preferences', 'show', ...as(user)])
    expect(JSON.parse(shown.stdout)).toEqual(JSON.parse(set.stdout))
    // What the server refuses: exit 1, the reason (the field) on stderr, nothing changed.
    const bad = await cli([
      'preferences',
      'set',
      '--json',
      JSON.stringify({ quietHours: { ...settings.quietHours, timeZone: 'Mars/Olympus' } }),
      ...as(user),
    ])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/HTTP 400.*body\.quietHours\.timeZone/)
    expect(JSON.parse((await cli(['preferences', 'show', ...as(user)])).stdout).rules).toEqual(settings.rules)
    const reset = await cli(['preferences', 'reset', ...as(user)])
    expect(JSON.parse(reset.stdout)).toEqual({ rules: [], updatedAt: null })

    const tenantSet = await cli(['preferences', 'set', '--tenant', '--json', '{"urgentBypass":false}', ...as(admin)])
    expect(tenantSet.code, tenantSet.stderr).toBe(0)
    expect(JSON.parse(tenantSet.stdout)).toMatchObject({ rules: [], urgentBypass: false })
    expect(JSON.parse((await cli(['preferences', 'show', '--tenant', ...as(admin)])).stdout).urgentBypass).toBe(false)
    const notAdmin = await cli(['preferences', 'show', '--tenant', ...as(user)])
    expect(notAdmin.code).toBe(1)
    expect(notAdmin.stderr).toMatch(/HTTP 403/)
    expect((await cli(['preferences', 'reset', '--tenant', ...as(admin)])).code).toBe(0)
    for (const args of [
      ['preferences'],
      ['preferences', 'frob'],
      ['preferences', 'set'],
      ['preferences', 'set', '--json', '{'],
    ]) {
      expect((await cli([...args, ...as(user)])).code, args.join(' ')).toBe(2)
    }
  })

  it('publish to a server that is down exits 1 naming the URL and the cause, not a bare "fetch failed"', async () => {
    const closed = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo
        server.close(() => resolve(port))
      })
    })
    const down = await cli([
      'publish',
      '--server',
      `http://127.0.0.1:${closed}`,
      '--token',
      'x',
      '--title',
      'x',
      '--to-user',
      'u',
    ])
    expect(down.code).toBe(1)
    expect(down.stderr).toContain(`cannot reach http://127.0.0.1:${closed}`)
    expect(down.stderr).toMatch(/ECONNREFUSED/)
    expect(down.stderr).not.toMatch(/^herald publish: fetch failed$/m)
  })

  it('tail prints each notification as a JSON line', async () => {
    const child = runTs('src/cli.ts', ['tail', '--server', t.url, '--token', t.token({ sub: 'erin' })], {
      JWT_SECRET: TEST_JWT_SECRET,
    })
    try {
      // The stream is open once the server has registered it.
      await expect.poll(() => t.app.hub.countForUser('t1', 'erin'), { timeout: 15_000 }).toBe(1)
      await t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${t.token({ sub: 'school', scope: PUBLISHER })}`)
        .send({ type: 'school.news', to: { users: ['erin'] }, title: 'Tail me' })
        .expect(201)
      const [line] = await child.waitForOutput(/\{"event":"notification".*\n/)
      expect(JSON.parse(line)).toMatchObject({ event: 'notification', data: { title: 'Tail me' } })
    } finally {
      child.proc.kill('SIGTERM')
      await child.exited
    }
  })

  it('tail exits 1 when the server refuses the stream', async () => {
    const { code, stderr } = await cli(['tail', '--server', t.url, '--token', 'nonsense'])
    expect(code).toBe(1)
    expect(stderr).toMatch(/HTTP 401/)
  })

  it('tail stops with exit 1 when its stream is evicted, and when it comes back after an eviction (204)', async () => {
    const capped = await startApp('pglite', { config: { MAX_CONNECTIONS_PER_USER: 1 } })
    try {
      const token = capped.token({ sub: 'tailer', tenant: 'cli-evict' })
      const tail = runTs('src/cli.ts', ['tail', '--server', capped.url, '--token', token], {
        JWT_SECRET: TEST_JWT_SECRET,
      })
      await tail.waitForOutput(/"event":|retry/i, 30_000).catch(() => {})
      await new Promise((r) => setTimeout(r, 500))
      const newer = await SseClient.open(capped.url, { token })
      expect(newer.status).toBe(200)
      const { code } = await tail.exited
      newer.close()
      expect(code).toBe(1)
      expect(tail.stdout).toMatch(/"event":"evicted"/)
      expect(tail.stderr).toMatch(/evicted/)

      const back = await cli(['tail', '--server', capped.url, '--token', token, '--last-event-id', 'evicted'])
      expect(back.code).toBe(1)
      expect(back.stderr).toMatch(/evicted/)
    } finally {
      await capped.close()
    }
  })

  it('token refuses a --ttl longer than the server accepts (JWT_MAX_TTL_S), with exit code 2', async () => {
    const long = await cli(['token', '--sub', 'a', '--tenant', 't', '--ttl', '90000'])
    expect(long.code).toBe(2)
    expect(long.stderr).toMatch(/JWT_MAX_TTL_S/)
  })

  it('vapid prints a usable key pair as environment lines', async () => {
    const { code, stdout } = await cli(['vapid'])
    expect(code).toBe(0)
    const pub = /^VAPID_PUBLIC_KEY=([A-Za-z0-9_-]+)$/m.exec(stdout)?.[1]
    const priv = /^VAPID_PRIVATE_KEY=([A-Za-z0-9_-]+)$/m.exec(stdout)?.[1]
    expect(Buffer.from(pub ?? '', 'base64url')).toHaveLength(65)
    expect(Buffer.from(priv ?? '', 'base64url')).toHaveLength(32)
    // The configuration accepts exactly what it printed.
    expect(loadConfig({ VAPID_PUBLIC_KEY: pub, VAPID_PRIVATE_KEY: priv }).push.vapid.publicKey).toBe(pub)
  })

  it('migrate prepares an empty embedded database', async () => {
    const { code, stdout } = await cli(['migrate'], { DATA_DIR: dataDir, DATABASE_URL: '' })
    expect(code).toBe(0)
    expect(stdout).toMatch(/migrations applied \(pglite\)/)
  })

  it.skipIf(!hasPostgres)(
    'migrate prepares an empty PostgreSQL database, and a second run changes nothing',
    async () => {
      const url = await createPostgresDatabase()
      try {
        expect((await cli(['migrate'], { DATABASE_URL: url })).stdout).toMatch(/migrations applied \(postgres\)/)
        expect((await cli(['migrate'], { DATABASE_URL: url })).code).toBe(0)
      } finally {
        await dropPostgresDatabase(url)
      }
    },
  )

  it('migrate says which setting is wrong and exits 78', async () => {
    const { code, stderr } = await cli(['migrate'], { DATABASE_URL: 'mysql://nope' })
    expect(code).toBe(78)
    expect(stderr).toMatch(/DATABASE_URL/)
  })
})
