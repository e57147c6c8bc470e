import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, TEST_JWT_SECRET, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { ROOT, runToEnd } from './helpers/process.ts'

// `herald directory import FILE.csv|FILE.jsonl` (and list, get, remove), run as a user runs it: a child process
// against a running service. The file goes through the batch route 5,000 users a request; a bad line stops the
// import, naming the line, with nothing of its request imported.

const dir = mkdtempSync(join(tmpdir(), 'herald-directory-import-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let files = 0
/** Writes a file for the import and returns its path. */
const file = (extension: string, text: string) => {
  const path = join(dir, `users-${++files}.${extension}`)
  writeFileSync(path, text)
  return path
}

/** `n` CSV lines of users `s00000`... (line numbers: the header is 1, user i is on line i + 2). */
const csvRows = (n: number, row = (i: number) => `s${String(i).padStart(5, '0')},student,class:${i % 10},,,`) =>
  Array.from({ length: n }, (_, i) => row(i))

let tenants = 0

describeEachBackend('herald directory', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(() => t?.close())

  /** A tenant with its admin token, and the CLI run against the service with it. */
  const school = () => {
    const tenant = `import-${backend}-${process.pid}-${++tenants}`
    const admin = t.token({ sub: 'backend', tenant, scope: 'admin' })
    const cli = (args: string[], token = admin) =>
      runToEnd('src/cli.ts', ['directory', ...args], {
        JWT_SECRET: TEST_JWT_SECRET,
        HERALD_URL: t.url,
        HERALD_TOKEN: token,
      })
    const users = async (): Promise<Array<Record<string, unknown>>> => {
      const all: Array<Record<string, unknown>> = []
      let cursor: string | undefined
      do {
        const res = await t
          .http()
          .get('/v1/directory/users')
          .query({ limit: 1_000, ...(cursor ? { cursor } : {}) })
          .set('authorization', `Bearer ${admin}`)
        expect(res.status, res.text).toBe(200)
        all.push(...res.body.users)
        cursor = res.body.next ?? undefined
      } while (cursor)
      return all
    }
    return { tenant, admin, cli, users }
  }

  it('imports a CSV file: several requests of 5,000, quoted cells, lists split on ";" or spaces; no progress when stderr is no terminal', async () => {
    const s = school()
    const path = file(
      'csv',
      [
        '\uFEFFid,roles,topics,displayName,locale,timeZone',
        'kim,student;prefect,class:7A club:*,"Muller, Kim",fr-ch,Europe/Zurich',
        '"lee","teacher","",,,',
        ...csvRows(11_998),
      ].join('\r\n'),
    )
    const run = await s.cli(['import', path])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toMatch(
      /^imported 12,000 users from users-\d+\.csv in \d+\.\d s \(12,000 created or replaced, 0 removed\)\n$/,
    )
    // Not a terminal: no progress at all, and nothing else either.
    expect(run.stderr).toBe('')

    const users = await s.users()
    expect(users).toHaveLength(12_000)
    expect(users.find((u) => u.id === 'kim')).toEqual({
      id: 'kim',
      roles: ['student', 'prefect'],
      topics: ['class:7A', 'club:*'],
      displayName: 'Muller, Kim',
      locale: 'fr-CH',
      timeZone: 'Europe/Zurich',
      updatedAt: expect.any(String),
    })
    expect(users.find((u) => u.id === 'lee')).toMatchObject({ roles: ['teacher'], topics: [], displayName: null })
    expect(users.find((u) => u.id === 's11997')).toMatchObject({ roles: ['student'], topics: ['class:7'] })

    // Imported again with changes: replaced, nobody added.
    const again = await s.cli(['import', file('csv', 'timeZone,id,roles\nAsia/Tokyo,kim,parent\n')])
    expect(again.stdout).toMatch(/^imported 1 users from .* \(1 created or replaced, 0 removed\)\n$/)
    expect((await s.users()).find((u) => u.id === 'kim')).toMatchObject({
      roles: ['parent'],
      topics: [],
      displayName: null,
      timeZone: 'Asia/Tokyo',
    })
  })

  it('imports a JSONL file, one user a line; blank lines are skipped and a line may remove a user', async () => {
    const s = school()
    const first = await s.cli([
      'import',
      file(
        'jsonl',
        [
          '{"id":"kim","roles":["student"],"topics":["class:7A"],"displayName":"Kim","locale":"en-gb","timeZone":"Europe/London"}',
          '',
          '{"id":"lee","roles":["teacher","head of year"],"topics":["class:*"]}',
          '{"id":"old","roles":[],"topics":[]}',
        ].join('\n'),
      ),
    ])
    expect(first.code, first.stderr).toBe(0)
    expect(first.stdout).toMatch(
      /^imported 3 users from users-\d+\.jsonl in .* \(3 created or replaced, 0 removed\)\n$/,
    )
    const removal = await s.cli(['import', file('jsonl', '{"op":"delete","id":"old"}\n')])
    expect(removal.stdout).toMatch(/\(0 created or replaced, 1 removed\)/)
    expect(await s.users()).toEqual([
      {
        id: 'kim',
        roles: ['student'],
        topics: ['class:7A'],
        displayName: 'Kim',
        locale: 'en-GB',
        timeZone: 'Europe/London',
        updatedAt: expect.any(String),
      },
      expect.objectContaining({ id: 'lee', roles: ['teacher', 'head of year'], topics: ['class:*'] }),
    ])
  })

  it('a bad line stops the import, naming the file line and the field; what came before its request is in, nothing of its request', async () => {
    const s = school()
    // 7,000 users: the first request holds lines 2 to 5,001; line 6,502 (in the second) has a zone that is not one.
    const rows = csvRows(7_000)
    rows[6_500] = 's06500,student,class:0,,,Europe/Atlantis'
    const run = await s.cli([
      'import',
      file('csv', ['id,roles,topics,displayName,locale,timeZone', ...rows].join('\n')),
    ])
    expect(run.code).toBe(1)
    expect(run.stderr).toBe(
      'herald directory import: line 6502: timeZone: must be an IANA time zone, like "Europe/Paris" or "UTC"\n',
    )
    expect(run.stdout).toMatch(/^imported 5,000 users from users-\d+\.csv before stopping\n$/)
    const users = await s.users()
    expect(users).toHaveLength(5_000)
    expect(users.at(-1)?.id).toBe('s04999')
  })

  it.each([
    [
      'JSONL',
      'a line that is not JSON',
      '{"id":"a","roles":[],"topics":[]}\n{"id":"b","roles":[],"topics":[]}\n{"id": "c",\n',
      /^line 3: not JSON \(/,
    ],
    [
      'JSONL',
      'a line that is not an object',
      '{"id":"a","roles":[],"topics":[]}\n["b"]\n',
      /^line 2: not a JSON object; each line is one user/,
    ],
    [
      'JSONL',
      'a topic with a space',
      '{"id":"a","roles":[],"topics":[]}\n{"id":"b","roles":["x"],"topics":["a b"]}\n',
      /^line 2: topics\.0: must be a topic/,
    ],
    [
      'JSONL',
      'an unknown field',
      '{"id":"a","roles":[],"topics":[],"email":"a@example.com"}\n',
      /^line 1: Unrecognized key: "email"/,
    ],
    [
      'CSV',
      'an unknown column',
      'id,roles,email\na,b,c\n',
      /^line 1: unknown column "email" \(columns: id, roles, topics, displayName, locale, timeZone\)/,
    ],
    ['CSV', 'no id column', 'roles,topics\nstudent,class:7A\n', /^line 1: no "id" column/],
    [
      'CSV',
      'a line with a cell missing',
      'id,roles,topics\na,b,c\nd,e\n',
      /^line 3: Invalid Record Length: columns length is 3, got 2 on line 3/,
    ],
    ['CSV', 'a quote not closed', 'id,roles,topics\na,b,c\nd,"e,c\n', /^line 3: Quote Not Closed/],
    [
      'CSV',
      'a locale that is no BCP 47 tag',
      'id,roles,locale\na,b,fr\nd,e,english please\n',
      /^line 3: locale: must be a BCP 47 language tag/,
    ],
  ])('a %s file with %s: exit 1, the line named, nothing imported', async (format, _what, text, message) => {
    const s = school()
    const run = await s.cli(['import', file(format.toLowerCase(), text)])
    expect(run.code).toBe(1)
    expect(run.stderr.replace(/^herald directory import: /, '')).toMatch(message)
    expect(run.stdout).toMatch(/^imported 0 users from .* before stopping\n$/)
    expect(await s.users()).toEqual([])
  })

  it('usage: a file that is neither .csv nor .jsonl, no file, no token are exit 2; a token without admin, exit 1 with the server’s answer', async () => {
    const s = school()
    const txt = await s.cli(['import', file('txt', 'id\nkim\n')])
    expect(txt.code).toBe(2)
    expect(txt.stderr).toMatch(/import takes a \.csv or a \.jsonl file, not "users-\d+\.txt"/)
    expect((await s.cli(['import'])).code).toBe(2)
    expect((await s.cli([])).code).toBe(2)
    expect((await s.cli(['frobnicate'])).stderr).toMatch(/unknown action "frobnicate": import, list, get, remove/)
    const noToken = await runToEnd('src/cli.ts', ['directory', 'list'], { HERALD_URL: t.url, HERALD_TOKEN: '' })
    expect(noToken.code).toBe(2)
    expect(noToken.stderr).toMatch(/--token \(or HERALD_TOKEN\) is required/)
    const missing = await s.cli(['import', join(dir, 'nowhere.csv')])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/cannot read .*nowhere\.csv \(ENOENT\)/)

    const publisher = t.token({ sub: 'office', tenant: s.tenant, scope: PUBLISHER })
    const refused = await s.cli(['import', file('csv', 'id\nkim\n')], publisher)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/the server refused a batch: HTTP 403 The user directory needs the "admin" scope\./)
  })

  it('list (JSON lines, by role or topic), get and remove', async () => {
    const s = school()
    const imported = await s.cli([
      'import',
      file('csv', 'id,roles,topics\nann,student,class:7A\nben,teacher,class:*\ncat,student,class:7B\n'),
    ])
    expect(imported.code, imported.stderr).toBe(0)
    const all = await s.cli(['list'])
    expect(all.code, all.stderr).toBe(0)
    const lines = all.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
    expect(lines.map((u) => u.id)).toEqual(['ann', 'ben', 'cat'])
    expect(
      (await s.cli(['list', '--role', 'student'])).stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).id),
    ).toEqual(['ann', 'cat'])
    expect(
      (await s.cli(['list', '--topic', 'class:7A'])).stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).id),
    ).toEqual(['ann', 'ben'])
    const one = await s.cli(['get', 'ben'])
    expect(JSON.parse(one.stdout)).toMatchObject({ id: 'ben', roles: ['teacher'], topics: ['class:*'] })
    expect(JSON.parse((await s.cli(['remove', 'ben'])).stdout)).toEqual({ id: 'ben', removed: true })
    const again = await s.cli(['remove', 'ben'])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/remove failed: HTTP 404 .*No user \\"ben\\" in the directory/)
    // What list prints is an import file, as it is: into another tenant, the same users.
    const other = school()
    const reimport = await other.cli(['import', file('jsonl', all.stdout)])
    expect(reimport.code, reimport.stderr).toBe(0)
    expect(reimport.stdout).toMatch(/^imported 3 users /)
    expect((await other.users()).map(({ updatedAt: _, ...u }) => u)).toEqual(lines.map(({ updatedAt: _, ...u }) => u))
  })

  it.skipIf(spawnSync('sh', ['-c', 'command -v script']).status !== 0)(
    'on a terminal, progress is one line on stderr, rewritten after each request: "imported 5,000 / ~12,000 users"',
    async () => {
      const s = school()
      const path = file('csv', ['id,roles,topics', ...csvRows(12_000, (i) => `p${i},student,class:1`)].join('\n'))
      // `script` runs the CLI on a pseudo-terminal, as a user at a terminal would (its output is the terminal's).
      const command = [process.execPath, '--import', 'tsx', 'src/cli.ts', 'directory', 'import', path]
        .map((a) => `'${a}'`)
        .join(' ')
      const child = spawn('script', ['-qec', command, '/dev/null'], {
        cwd: ROOT,
        env: { ...process.env, HERALD_URL: t.url, HERALD_TOKEN: s.admin },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stdout = ''
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        stdout += d
      })
      const status = await new Promise<number | null>((resolve) => child.on('exit', resolve))
      const run = { status, stdout }
      expect(run.status, run.stdout).toBe(0)
      expect(run.stdout).toContain('\rimported 5,000 / ~12,000 users')
      expect(run.stdout).toContain('\rimported 10,000 / ~12,000 users')
      expect(run.stdout).toContain('\rimported 12,000 / ~12,000 users\r\n')
      expect(run.stdout).toMatch(/imported 12,000 users from users-\d+\.csv in \d+\.\d s/)
    },
  )
})
