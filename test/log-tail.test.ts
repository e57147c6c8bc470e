import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import type { EventRow } from '../src/db/schema.ts'
import { eventRowOf, LogTail, type TailRow } from '../src/events/log-tail.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'

/**
 * LogTail.offer: a publish hands the tail the rows it committed, and an idle tail delivers them without reading
 * them back. Each test runs a tail of its own on the service's database (the service's tail is busy with the same
 * events) and offers it a copy of a committed row with another title: which title comes out tells whether the tail
 * delivered the offer or read the log.
 */
describeEachBackend('the log tail, offered what a publish committed', (backend) => {
  let t: TestApp
  const tails: LogTail[] = []

  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterEach(() => {
    for (const tail of tails.splice(0)) tail.stop()
  })
  afterAll(async () => {
    await t?.close()
  })

  /** A tail from the end of the log that delivers into `delivered`; it reads only when woken (its poll: 1 h). */
  async function startTail(deliver?: (rows: EventRow[]) => void | Promise<void>) {
    const delivered: EventRow[] = []
    const tail = new LogTail(
      t.database,
      (rows) => {
        delivered.push(...rows)
        return deliver?.(rows)
      },
      t.app.log,
      3_600_000,
    )
    tails.push(tail)
    await tail.start()
    return { tail, delivered }
  }

  const publish = async (title: string) => {
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'writer', scope: PUBLISHER })}`)
      .send({ type: 'tail.offer', to: { users: ['reader'] }, title })
    expect(res.status).toBe(201)
    return Number(res.body.id)
  }

  /** The committed row of event `id`, as the tail reads it, under another title. */
  const offeredCopy = async (id: number, title: string): Promise<EventRow> => {
    const [raw] = await t.database.query<TailRow>(sql`select * from events where id = ${id}`)
    return { ...eventRowOf(raw), title }
  }

  /** Polls the delivered rows until `check` holds (5 s at most). */
  const delivering = (delivered: EventRow[], check: (count: number) => boolean) =>
    expect.poll(() => check(delivered.length), { timeout: 5_000 }).toBe(true)

  it('delivers rows that follow its cursor as offered, without reading the log, and only once', async () => {
    const { tail, delivered } = await startTail()
    const id = await publish('as stored')
    tail.offer([await offeredCopy(id, 'as offered')])
    await delivering(delivered, (n) => n > 0)
    expect(delivered.map((r) => [r.id, r.title])).toEqual([[id, 'as offered']])
    // A read after it finds the row behind the cursor: not delivered again.
    await tail.sync()
    expect(delivered.map((r) => r.id)).toEqual([id])
  })

  it('reads the log instead when an id before the offered rows has not reached it (another publish)', async () => {
    const { tail, delivered } = await startTail()
    const first = await publish('first, stored')
    const second = await publish('second, stored')
    tail.offer([await offeredCopy(second, 'second, offered')])
    await delivering(delivered, (n) => n >= 2)
    expect(delivered.map((r) => [r.id, r.title])).toEqual([
      [first, 'first, stored'],
      [second, 'second, stored'],
    ])
  })

  it('ignores an offer of rows it has read already', async () => {
    const { tail, delivered } = await startTail()
    const id = await publish('read first')
    await tail.sync()
    expect(delivered.map((r) => r.id)).toEqual([id])
    tail.offer([await offeredCopy(id, 'offered late')])
    await sleep(100)
    expect(delivered.map((r) => [r.id, r.title])).toEqual([[id, 'read first']])
  })

  it('while it delivers, turns an offer into one more read, which joins what committed meanwhile', async () => {
    let release: () => void = () => {}
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    let calls = 0
    const { tail, delivered } = await startTail(() => (++calls === 1 ? held : undefined))
    const first = await publish('first')
    tail.wake()
    await delivering(delivered, (n) => n === 1)
    // The tail is still delivering the first row: these commit meanwhile, and are offered.
    const second = await publish('second, stored')
    const third = await publish('third, stored')
    tail.offer([await offeredCopy(second, 'second, offered'), await offeredCopy(third, 'third, offered')])
    await sleep(50)
    expect(delivered.map((r) => r.id)).toEqual([first])
    release()
    await delivering(delivered, (n) => n >= 3)
    expect(delivered.map((r) => [r.id, r.title])).toEqual([
      [first, 'first'],
      [second, 'second, stored'],
      [third, 'third, stored'],
    ])
    // The two went out in one delivery: read together.
    expect(calls).toBe(2)
  })
})
