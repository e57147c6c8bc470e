import { once } from 'node:events'
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { mintToken } from '../../src/tokens.ts'
import { rssKiBOf, spawnTracked } from '../processes.ts'
import { nowMs, round } from '../stats.ts'
import {
  type BenchContext,
  freshTenant,
  type Row,
  type ScenarioResult,
  type Scope,
  settledRssKiB,
  startService,
} from './common.ts'

const NAME = 'directory'
/** Users in the imported file. */
const USERS = 50_000
/** How often the CLI's and the service's memory are read while the import runs. */
const SAMPLE_MS = 50

/** A line of /proc/<pid>/status in KiB (VmHWM: the peak resident memory so far); NaN once the process is gone. */
function statusKiB(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`${field}:\\s+(\\d+) kB`))
    return m ? Number(m[1]) : Number.NaN
  } catch {
    return Number.NaN
  }
}

/** Writes a CSV of `users` users as a school's roll would be: roles, a class and clubs, a name, a locale, a zone. */
async function writeRoll(path: string, users: number): Promise<number> {
  const out = createWriteStream(path)
  out.write('id,roles,topics,displayName,locale,timeZone\n')
  const zones = ['Europe/Zurich', 'Europe/Paris', 'Europe/London', 'America/New_York', 'Asia/Tokyo']
  for (let i = 0; i < users; i++) {
    const staff = i % 20 === 0
    const line =
      `user-${String(i).padStart(6, '0')},${staff ? 'teacher;staff' : 'student'},` +
      `${staff ? 'class:*' : `class:${7 + (i % 6)}${'ABCD'[i % 4]} club:${['chess', 'choir', 'robotics'][i % 3]}`},` +
      `"Family${i}, Given${i}",${['fr-CH', 'de-CH', 'en-GB', 'it-CH'][i % 4]},${zones[i % zones.length]}\n`
    if (!out.write(line)) await once(out, 'drain')
  }
  out.end()
  await once(out, 'finish')
  return out.bytesWritten
}

/**
 * Scenario 10: `herald directory import` of a 50,000-user CSV, the CLI as a user runs it (`node --import tsx
 * src/cli.ts`, a process of its own) against the service, in batches of 5,000 through the batch route. Total time
 * (process start to exit) and the import's own (first line read to summary), users /s, the CLI's peak RSS (VmHWM,
 * read every 50 ms until it exits), the service's settled RSS before and after the import and its peak during, its
 * CPU per user; the directory is then read back page by page and must hold every user.
 */
export async function directoryImport(ctx: BenchContext, scope: Scope): Promise<ScenarioResult> {
  const users = ctx.quick ? 5_000 : USERS
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-directory-'))
  scope.defer(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'roll.csv')
  const fileBytes = await writeRoll(file, users)
  ctx.log(`${NAME}: ${users} users in a CSV of ${round(fileBytes / 1024 / 1024, 1)} MiB`)

  const service = await startService(ctx, scope)
  const tenant = freshTenant(NAME)
  const admin = mintToken(ctx.secret, { sub: 'bench-backend', tenant, scope: 'admin' })
  const base = `http://${service.host}:${service.port}`
  const serviceRssBeforeKiB = await settledRssKiB(() => service.rssKiB())
  scope.check()

  ctx.log(`${NAME}: importing through the CLI`)
  const cpuBefore = service.cpuMs()
  const started = nowMs()
  const cli = spawnTracked(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'directory', 'import', file], {
    HERALD_URL: base,
    HERALD_TOKEN: admin,
  })
  scope.defer(() => cli.kill('SIGKILL'))
  let stdout = ''
  let stderr = ''
  cli.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  cli.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const pid = cli.pid as number
  let cliPeakKiB = 0
  let servicePeakKiB = 0
  const sample = () => {
    cliPeakKiB = Math.max(cliPeakKiB, statusKiB(pid, 'VmHWM') || 0)
    servicePeakKiB = Math.max(servicePeakKiB, rssKiBOf(service.pid) || 0)
  }
  const sampler = setInterval(sample, SAMPLE_MS)
  const [code] = (await once(cli, 'exit')) as [number | null]
  clearInterval(sampler)
  const totalMs = nowMs() - started
  const serviceCpuMs = service.cpuMs() - cpuBefore
  if (code !== 0) throw new Error(`the import exited ${code}:\n${stdout}\n${stderr}`)
  // "imported 50,000 users from roll.csv in 12.3 s (...)": the import's own time, without starting Node and tsx.
  const reported = /imported ([\d,]+) users from \S+ in ([\d.]+) s/.exec(stdout)
  if (!reported || Number(reported[1].replace(/,/g, '')) !== users) throw new Error(`unexpected summary: ${stdout}`)
  const importSec = Number(reported[2])
  const serviceRssAfterKiB = await settledRssKiB(() => service.rssKiB())

  // Every user is there.
  let listed = 0
  let cursor: string | null = null
  do {
    const url = new URL('/v1/directory/users', base)
    url.searchParams.set('limit', '1000')
    if (cursor) url.searchParams.set('cursor', cursor)
    const res = await fetch(url, { headers: { authorization: `Bearer ${admin}` } })
    if (!res.ok) throw new Error(`listing answered ${res.status}: ${await res.text()}`)
    const page = (await res.json()) as { users: unknown[]; next: string | null }
    listed += page.users.length
    cursor = page.next
  } while (cursor)
  if (listed !== users) throw new Error(`the directory lists ${listed} users, not ${users}`)

  const figures = {
    users,
    fileMiB: round(fileBytes / 1024 / 1024, 1),
    totalSec: round(totalMs / 1000, 2),
    importSec,
    usersPerSec: round(users / importSec),
    usersPerSecTotal: round(users / (totalMs / 1000)),
    cliPeakRssMiB: round(cliPeakKiB / 1024, 1),
    serviceRssMiB: {
      before: round(serviceRssBeforeKiB / 1024, 1),
      peak: round(servicePeakKiB / 1024, 1),
      after: round(serviceRssAfterKiB / 1024, 1),
    },
    serviceCpuUsPerUser: round((serviceCpuMs * 1000) / users, 1),
    listed,
  }
  const rows: Row[] = [
    [NAME, `users imported (CSV, ${figures.fileMiB} MiB)`, users, null, null],
    [NAME, 'total s (CLI process start to exit)', figures.totalSec, null, null],
    [NAME, 'import s (as the CLI reports it)', figures.importSec, null, null],
    [NAME, 'users /s (import; whole process)', `${figures.usersPerSec} (${figures.usersPerSecTotal})`, null, null],
    [NAME, 'CLI peak RSS MiB', figures.cliPeakRssMiB, null, null],
    [
      NAME,
      'service RSS MiB before / peak / after',
      `${figures.serviceRssMiB.before} / ${figures.serviceRssMiB.peak} / ${figures.serviceRssMiB.after}`,
      null,
      null,
    ],
    [NAME, 'service CPU µs / user', figures.serviceCpuUsPerUser, null, null],
  ]
  return { line: { scenario: NAME, backend: ctx.backend, ...figures, reference: null, ratio: null }, rows }
}
