import http from 'node:http'
import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { PUBLISH_LOCK } from '../src/events/log-tail.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend, describePostgres } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

/** Concurrent publishers, each on its own keep-alive connection. */
const PUBLISHERS = 8
/** Single POSTs per publisher, at least. They keep going until the subscriber has dropped often enough. */
const MIN_EVENTS_PER_PUBLISHER = 200
/** Safety cap so a subscriber that cannot make progress does not publish forever. */
const MAX_EVENTS_PER_PUBLISHER = 3_000
/** Drops-and-resumes of the subscriber while the publishers run. */
const MIN_RECONNECTS = 20
/** Of those, drops that happen before the resumed stream caught up with what was already committed. */
const MIN_CATCH_UP_DROPS = 5
/** Of those, drops after part of the replay arrived (the rest was still on its way). */
const MIN_MID_REPLAY_DROPS = 3

const randInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1))

/** A body big enough that a replay of a few hundred events arrives in several socket reads. */
const FILLER = 'x'.repeat(1200)

interface PostResult {
  status: number
  body: string
}

/** One publisher: single POSTs, one at a time, over one keep-alive socket (as a backend's HTTP client would). */
function keepAlivePublisher(baseUrl: string) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  const sockets = new Set<Socket>()
  const url = new URL('/v1/events', baseUrl)
  return {
    sockets,
    post(token: string, body: unknown): Promise<PostResult> {
      const payload = JSON.stringify(body)
      return new Promise((resolve, reject) => {
        const req = http.request(
          url,
          {
            method: 'POST',
            agent,
            headers: {
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(payload),
              authorization: `Bearer ${token}`,
            },
          },
          (res) => {
            let data = ''
            res.setEncoding('utf8')
            res.on('data', (chunk: string) => {
              data += chunk
            })
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }))
            res.on('error', reject)
          },
        )
        req.on('socket', (s) => sockets.add(s))
        req.on('error', reject)
        req.end(payload)
      })
    },
    close: () => agent.destroy(),
  }
}

/** Resolves once the server registered the stream: it writes `retry:` right before adding it to the hub. */
async function registered(stream: SseClient) {
  for (let i = 0; i < 500 && !stream.raw.includes('retry:'); i++) await sleep(5)
  if (!stream.raw.includes('retry:')) throw new Error('the stream never sent its retry: line')
}

type Kind =
  | 'user'
  | 'user-among-others'
  | 'user-and-role'
  | 'role'
  | 'tenant'
  | 'other-user'
  | 'other-role'
  | 'unsubscribed-topic'
  | 'other-tenant'

const KINDS: Array<{ kind: Kind; visible: boolean; weight: number }> = [
  { kind: 'user', visible: true, weight: 3 },
  { kind: 'user-among-others', visible: true, weight: 1 },
  { kind: 'user-and-role', visible: true, weight: 1 },
  { kind: 'role', visible: true, weight: 2 },
  { kind: 'tenant', visible: true, weight: 2 },
  { kind: 'other-user', visible: false, weight: 2 },
  { kind: 'other-role', visible: false, weight: 1 },
  { kind: 'unsubscribed-topic', visible: false, weight: 1 },
  { kind: 'other-tenant', visible: false, weight: 2 },
]
const TOTAL_WEIGHT = KINDS.reduce((s, k) => s + k.weight, 0)

function pickKind() {
  let r = Math.random() * TOTAL_WEIGHT
  for (const k of KINDS) {
    r -= k.weight
    if (r < 0) return k
  }
  return KINDS[0]
}

describeEachBackend('ordering: no gap, no duplicate across drops and resumes', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp(backend)
    // Every fan-out pauses after each stream it writes, and the event loop takes its turn (publishes, resumes,
    // drops): a stream that opens, resumes or leaves while an event is half fanned out still sees it once, in order.
    t.app.hub.fanOutSlice = { ms: 0, writesPerCheck: 1 }
  })
  afterAll(() => t.close())

  it('a subscriber that drops and resumes with Last-Event-ID 20+ times sees each of its events once, in id order; streams beside it too', async () => {
    const me = `ord-${backend}-subscriber`
    const tenant = 't1'
    const otherTenant = `ord-${backend}-elsewhere`
    const subscriberToken = t.token({ sub: me, tenant, roles: ['parent'], topics: ['class:*'] })
    const publisherToken = t.token({ sub: `ord-${backend}-teacher`, tenant, scope: PUBLISHER })
    const foreignToken = t.token({ sub: `ord-${backend}-teacher`, tenant: otherTenant, scope: PUBLISHER })

    const audience = (kind: Kind) => {
      switch (kind) {
        case 'user':
          return { users: [me] }
        case 'user-among-others':
          return { users: [`${me}-sibling`, me, `${me}-cousin`] }
        case 'user-and-role':
          // Named twice: still one delivery.
          return { users: [me], roles: ['parent'] }
        case 'role':
          return { roles: ['parent'] }
        case 'tenant':
          return { tenant: true }
        case 'other-user':
          return { users: [`${me}-neighbour`] }
        case 'other-role':
          return { roles: ['teacher'] }
        case 'unsubscribed-topic':
          return { topics: ['class:7A'] }
        case 'other-tenant':
          // Same user id, same role, whole tenant: but another tenant.
          return { users: [me], roles: ['parent'], tenant: true }
      }
    }

    const t0 = Date.now()
    /** When each publish was answered, and to whom it went. */
    const replies = new Map<string, { kind: Kind; repliedMs: number }>()
    /** Ids (as numbers) of events the subscriber must see, in the order their 201 arrived. */
    const mine: number[] = []
    const notMine = new Set<string>()
    const failures: string[] = []
    /** 201s that arrived after a 201 for a larger id: commits (or at least replies) out of id order. */
    let repliesOutOfIdOrder = 0
    let largestReplied = 0

    // The stream is open before anything is published; a seed event gives it a Last-Event-ID to resume from.
    let stream = await SseClient.open(t.url, { token: subscriberToken })
    expect(stream.status).toBe(200)
    await registered(stream)
    // Others of the same role stay connected throughout: every fan-out to the role or the tenant pauses among them.
    const bystanders = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const token = t.token({ sub: `${me}-bystander-${i}`, tenant, roles: ['parent'] })
        const s = await SseClient.open(t.url, { token })
        expect(s.status).toBe(200)
        await registered(s)
        return s
      }),
    )
    const seed = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${publisherToken}`)
      .send({ type: 'ordering.seed', to: { users: [me] }, title: 'seed', data: { visible: true } })
    expect(seed.status).toBe(201)
    mine.push(Number(seed.body.id))
    largestReplied = Number(seed.body.id)
    await stream.waitForNotifications(1)

    /** Every notification id the subscriber got, all connections concatenated, in arrival order. */
    const received: string[] = []
    const receivedFrames: Array<Record<string, unknown>> = []
    let lastEventId = ''
    let reconnects = 0
    let catchUpDrops = 0
    let partialReplayDrops = 0
    let publishersDone = false

    /** Closes the stream as a network drop would; what was dispatched before the drop is what it received. */
    /** Each connection: the Last-Event-ID it resumed from and what it got, for explaining a failure. */
    const connections = new Map<SseClient, { from: string; openedMs: number; closedMs: number; ids: string[] }>()
    const drop = (s: SseClient) => {
      const ids = s.notificationIds
      const frames = s.notifications
      s.close()
      const record = connections.get(s)
      if (record) Object.assign(record, { closedMs: Date.now() - t0, ids })
      received.push(...ids)
      receivedFrames.push(...frames)
      if (ids.length) lastEventId = ids[ids.length - 1]
      return ids.length
    }
    const resume = async () => {
      const s = await SseClient.open(t.url, { token: subscriberToken, lastEventId })
      if (s.status !== 200) throw new Error(`resume answered ${s.status}: ${s.body}`)
      connections.set(s, { from: lastEventId, openedMs: Date.now() - t0, closedMs: -1, ids: [] })
      return s
    }
    drop(stream)
    reconnects++

    const publisher = async (n: number) => {
      const client = keepAlivePublisher(t.url)
      try {
        let sent = 0
        while (
          sent < MIN_EVENTS_PER_PUBLISHER ||
          ((reconnects < MIN_RECONNECTS ||
            catchUpDrops < MIN_CATCH_UP_DROPS ||
            partialReplayDrops < MIN_MID_REPLAY_DROPS) &&
            sent < MAX_EVENTS_PER_PUBLISHER)
        ) {
          const { kind, visible } = pickKind()
          const res = await client.post(kind === 'other-tenant' ? foreignToken : publisherToken, {
            type: `ordering.${kind}`,
            to: audience(kind),
            title: `${kind} from publisher ${n}, #${sent}`,
            body: FILLER,
            data: { visible, publisher: n, n: sent },
          })
          sent++
          if (res.status !== 201) {
            failures.push(`publisher ${n} #${sent}: ${res.status} ${res.body}`)
            continue
          }
          const id = JSON.parse(res.body).id as string
          replies.set(id, { kind, repliedMs: Date.now() - t0 })
          if (Number(id) < largestReplied) repliesOutOfIdOrder++
          largestReplied = Math.max(largestReplied, Number(id))
          if (visible) mine.push(Number(id))
          else notMine.add(id)
        }
        return { sent, sockets: client.sockets.size }
      } finally {
        client.close()
      }
    }

    const subscriber = async () => {
      while (!publishersDone) {
        // Enough plain drops but too few in the middle of a catch-up: only those from now on, with longer absences.
        const catchUpsOwed =
          reconnects >= MIN_RECONNECTS &&
          (catchUpDrops < MIN_CATCH_UP_DROPS || partialReplayDrops < MIN_MID_REPLAY_DROPS)
        if (catchUpsOwed || Math.random() < 0.35) {
          // Stay away a while so a backlog builds, then drop again before (or while) it is replayed.
          await sleep(catchUpsOwed ? randInt(800, 2_000) : randInt(200, 1_200))
          const backlog = mine.filter((id) => id > Number(lastEventId)).length
          const s = await resume()
          const wanted = randInt(0, 3)
          if (wanted > 0) await s.waitFor((c) => c.notificationIds.length >= wanted, 2_000).catch(() => {})
          const got = drop(s)
          if (got < backlog) {
            catchUpDrops++
            if (got > 0) partialReplayDrops++
          }
        } else {
          const s = await resume()
          await sleep(randInt(20, 150))
          drop(s)
        }
        reconnects++
      }
    }

    const started = Date.now()
    const subscribing = subscriber()
    const results = await Promise.all(Array.from({ length: PUBLISHERS }, (_, n) => publisher(n))).finally(() => {
      publishersDone = true
    })
    await subscribing
    const publishMs = Date.now() - started

    // All publishes answered: resume one last time and wait until the newest event of ours has arrived.
    const expected = [...mine].sort((a, b) => a - b).map(String)
    const newest = expected[expected.length - 1]
    stream = await resume()
    await stream
      .waitFor((c) => Number(c.lastEventId ?? lastEventId) >= Number(newest), 30_000, `event ${newest}`)
      .catch(() => {})
    await sleep(300) // anything that would come twice or late comes now
    drop(stream)

    const forBystanders = [...replies]
      .filter(([, r]) => r.kind === 'role' || r.kind === 'tenant' || r.kind === 'user-and-role')
      .map(([id]) => Number(id))
      .sort((a, b) => a - b)
      .map(String)
    for (const s of bystanders) {
      await s
        .waitFor((c) => c.notificationIds.length >= forBystanders.length, 10_000, 'the role and tenant events')
        .catch(() => {})
      s.close()
      expect(s.notificationIds.join(','), 'a bystander got each role and tenant event once, in id order').toBe(
        forBystanders.join(','),
      )
    }

    const receivedSet = new Set(received)
    const foreign = received.filter((id) => notMine.has(id))
    const duplicates = received.length - receivedSet.size
    const gaps = expected.filter((id) => !receivedSet.has(id))
    const expectedSet = new Set(expected)
    const unexpected = received.filter((id) => !expectedSet.has(id) && !notMine.has(id))
    let outOfOrder = 0
    for (let i = 1; i < received.length; i++) if (Number(received[i]) <= Number(received[i - 1])) outOfOrder++
    for (const gap of gaps.slice(0, 5)) {
      // The connection that stepped over the missing id: it got an id below and one above it.
      const culprit = [...connections.values()].find(
        (c) => Number(c.from) < Number(gap) && c.ids.some((id) => Number(id) > Number(gap)),
      )
      const around = culprit?.ids.filter((id) => Math.abs(Number(id) - Number(gap)) <= 5)
      console.log(
        `[ordering ${backend}] missing ${gap}: ${JSON.stringify(replies.get(gap))}; skipped by the connection ` +
          `${JSON.stringify({ ...culprit, ids: undefined, first: culprit?.ids[0], count: culprit?.ids.length, around })}`,
      )
    }
    const published = results.reduce((s, r) => s + r.sent, 0) + 1

    console.log(
      `[ordering ${backend}] published=${published} (for the subscriber: ${expected.length}, for others: ${notMine.size}) ` +
        `in ${publishMs} ms; 201s out of id order=${repliesOutOfIdOrder}; reconnects=${reconnects} ` +
        `(dropped before catching up: ${catchUpDrops}, of which mid-replay after some events: ${partialReplayDrops}); ` +
        `received=${received.length} duplicates=${duplicates} gaps=${gaps.length} out-of-order=${outOfOrder} ` +
        `foreign=${foreign.length} unexpected=${unexpected.length}; sockets per publisher=${results.map((r) => r.sockets).join(',')}`,
    )

    expect(failures).toEqual([])
    for (const r of results) expect(r.sent).toBeGreaterThanOrEqual(MIN_EVENTS_PER_PUBLISHER)
    // Keep-alive: each publisher reused its connection instead of opening one per event.
    for (const r of results) expect(r.sockets).toBeLessThanOrEqual(2)
    expect(reconnects).toBeGreaterThanOrEqual(MIN_RECONNECTS)
    expect(catchUpDrops).toBeGreaterThanOrEqual(MIN_CATCH_UP_DROPS)

    // What a user would notice: someone else's notification, the same one twice, one missing, or out of order.
    expect({
      foreign: foreign.slice(0, 10),
      duplicates,
      gaps: gaps.slice(0, 10),
      outOfOrder,
      unexpected: unexpected.slice(0, 10),
    }).toEqual({ foreign: [], duplicates: 0, gaps: [], outOfOrder: 0, unexpected: [] })
    expect(received.join(',') === expected.join(','), 'received ids equal the expected ids exactly').toBe(true)
    // The payload matches the id it came with (the audience itself is never shown).
    for (const frame of receivedFrames) {
      expect(frame.data).toMatchObject({ visible: true })
      expect(frame).not.toHaveProperty('to')
    }
  }, 120_000)

  it("an ack made from one stream while the event is still being written to the others reaches the user's other stream after the event, not before", async () => {
    const tenant = `ord-${backend}-receipt`
    const publisherToken = t.token({ sub: 'receipt-teacher', tenant, scope: PUBLISHER })
    const readerToken = t.token({ sub: 'reader', tenant })
    const open = async (token: string) => {
      const s = await SseClient.open(t.url, { token })
      expect(s.status).toBe(200)
      await registered(s)
      return s
    }
    // The reader's first stream is written first, the second last: 150 streams of others lie between them, each
    // a pause of the fan-out, while the ack from the first comes back.
    const first = await open(readerToken)
    const others: SseClient[] = []
    for (let i = 0; i < 150; i += 10)
      others.push(
        ...(await Promise.all(Array.from({ length: 10 }, (_, n) => open(t.token({ sub: `o-${i + n}`, tenant }))))),
      )
    const second = await open(readerToken)
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${publisherToken}`)
      .send({ type: 'ordering.receipt', title: 'Acked at once', to: { tenant: true } })
    expect(res.status, res.text).toBe(201)
    const id = String(res.body.id)
    await first.waitForNotifications(1)
    const ack = await t.http().post(`/v1/events/${id}/ack`).set('authorization', `Bearer ${readerToken}`)
    expect(ack.status, ack.text).toBe(204)
    await second.waitForEvent('receipt')
    const order = second.events.filter((e) => e.id === id || e.event === 'receipt').map((e) => e.event)
    expect(order[0], 'the event before its receipt').not.toBe('receipt')
    expect(order.slice(-1)).toEqual(['receipt'])
    for (const s of [first, second, ...others]) s.close()
  }, 60_000)

  it('a backlog larger than the fan-out queue (5,000 events at once, every fan-out pausing at each stream) reaches every stream whole and in order', async () => {
    const tenant = `ord-${backend}-backlog`
    const publisherToken = t.token({ sub: 'backlog-teacher', tenant, scope: PUBLISHER })
    const streams = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const s = await SseClient.open(t.url, { token: t.token({ sub: `reader-${i}`, tenant, roles: ['parent'] }) })
        expect(s.status).toBe(200)
        await registered(s)
        return s
      }),
    )
    const published: string[] = []
    for (let batch = 0; batch < 5; batch++) {
      const events = Array.from({ length: 1_000 }, (_, n) => ({
        type: 'ordering.backlog',
        title: `#${batch * 1_000 + n}`,
        to: n % 2 ? { roles: ['parent'] } : { tenant: true },
      }))
      const res = await t
        .http()
        .post('/v1/events/batch')
        .set('authorization', `Bearer ${publisherToken}`)
        .send({ events })
      expect(res.status, res.text).toBe(201)
      published.push(...(res.body.ids as string[]))
    }
    for (const s of streams) {
      await s.waitForNotifications(published.length, 60_000)
      s.close()
      expect(s.notificationIds.length).toBe(published.length)
      expect(s.notificationIds.join(',') === published.join(','), 'each stream got every event once, in id order').toBe(
        true,
      )
    }
  }, 120_000)
})

describePostgres('ordering: transactions that commit out of id order [postgres]', () => {
  let t: TestApp
  const publisher = () => t.token({ sub: 'held-teacher', scope: PUBLISHER })

  beforeAll(async () => {
    t = await startApp('postgres')
  })
  afterAll(() => t.close())

  const publishTo = async (user: string, title: string) => {
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${publisher()}`)
      .send({ type: 'ordering.held', to: { users: [user] }, title })
    expect(res.status).toBe(201)
    return res.body.id as string
  }

  /**
   * A raw publishing transaction, as publish.ts writes one: it takes the shared publish lock first (the log
   * tail watches its holders), then event rows. It stays open until `finish`.
   */
  const rawTransaction = async () => {
    const pg = t.database.pg
    if (!pg) throw new Error('no postgres.js client on a PostgreSQL backend')
    const conn = await pg.reserve()
    await conn`begin`
    await conn.unsafe(`select pg_advisory_xact_lock_shared(${PUBLISH_LOCK.classId}, ${PUBLISH_LOCK.objId})`)
    let finished = false
    return {
      insert: async (user: string, title: string) => {
        const [row] = await conn`
          insert into events (tenant, type, title, priority, actor, to_users, expires_at)
          values ('t1', 'ordering.held', ${title}, 'normal', 'raw-writer', array[${user}]::text[], now() + interval '1 hour')
          returning id`
        return String(row.id)
      },
      finish: async (how: 'commit' | 'rollback') => {
        if (finished) return
        finished = true
        try {
          await (how === 'commit' ? conn`commit` : conn`rollback`)
        } finally {
          conn.release()
        }
      },
    }
  }

  /** A raw transaction holding one event row for `user`, uncommitted. */
  const holdInsert = async (user: string) => {
    const tx = await rawTransaction()
    const id = await tx.insert(user, 'held back')
    return { id, finish: tx.finish }
  }

  const idsOf = (res: { body: { events: Array<{ id: string }> } }) => res.body.events.map((e) => e.id)

  it('a larger id committed first is not delivered before the smaller one; after the commit both come in id order', async () => {
    const user = 'held-commit-user'
    const token = t.token({ sub: user })
    const seed = await publishTo(user, 'seed')
    const live = await SseClient.open(t.url, { token })
    await registered(live)
    const held = await holdInsert(user)
    try {
      const larger = await publishTo(user, 'committed first')
      expect(Number(larger)).toBeGreaterThan(Number(held.id))
      // A resuming stream opened now must not skip the held id either.
      const resumed = await SseClient.open(t.url, { token, lastEventId: seed })
      expect(resumed.status).toBe(200)
      await sleep(600)
      expect(live.notificationIds).toEqual([])
      expect(resumed.notificationIds).toEqual([])
      // The polling fallback must not hand out the larger id either: its `next` would step over the held one.
      const poll = await t.http().get(`/v1/events?after=${seed}`).set('authorization', `Bearer ${token}`)
      expect(poll.status).toBe(200)
      expect(idsOf(poll)).not.toContain(larger)

      await held.finish('commit')
      await live.waitForNotifications(2, 5_000)
      await resumed.waitForNotifications(2, 5_000)
      await sleep(100)
      expect(live.notificationIds).toEqual([held.id, larger])
      expect(resumed.notificationIds).toEqual([held.id, larger])
      const after = await t.http().get(`/v1/events?after=${seed}`).set('authorization', `Bearer ${token}`)
      expect(idsOf(after)).toEqual([held.id, larger])
      resumed.close()
    } finally {
      await held.finish('rollback')
      live.close()
    }
  })

  it('a held transaction that rolls back does not block the later event for good', async () => {
    const user = 'held-rollback-user'
    const token = t.token({ sub: user })
    const live = await SseClient.open(t.url, { token })
    await registered(live)
    const held = await holdInsert(user)
    let larger = ''
    try {
      larger = await publishTo(user, 'behind a rollback')
      expect(Number(larger)).toBeGreaterThan(Number(held.id))
      await sleep(400)
      // While the smaller id may still commit, the larger one waits.
      expect(live.notificationIds).toEqual([])
    } finally {
      await held.finish('rollback')
    }
    const rolledBackAt = Date.now()
    await live.waitForNotifications(1, 5_000)
    console.log(`[ordering postgres] delivered ${Date.now() - rolledBackAt} ms after the held transaction rolled back`)
    const next = await publishTo(user, 'after the rollback')
    await live.waitForNotifications(2, 5_000)
    await sleep(100)
    expect(live.notificationIds).toEqual([larger, next])
    const gone = await t.http().get(`/v1/events/${held.id}`).set('authorization', `Bearer ${token}`)
    expect(gone.status).toBe(404)
    live.close()
  })

  it('a smaller id whose transaction took its transaction id after the committed one is not stepped over', async () => {
    // PostgreSQL lists in a snapshot's in-progress set only transactions below its xmax, and xmax is one past
    // the latest *completed* transaction: a transaction that began after the one that just committed is open
    // but not listed. The service must still wait for the smaller id it holds.
    const user = 'held-late-xid-user'
    const token = t.token({ sub: user })
    const seed = await publishTo(user, 'seed')
    const live = await SseClient.open(t.url, { token })
    await registered(live)
    const older = await rawTransaction() // older transaction id, larger event id, commits first
    const newer = await rawTransaction() // newer transaction id, smaller event id, still open
    try {
      const smaller = await newer.insert(user, 'held back by a newer transaction')
      const larger = await older.insert(user, 'committed first by an older transaction')
      expect(Number(larger)).toBeGreaterThan(Number(smaller))
      await older.finish('commit')
      // A poll makes the service read the log now; then wait longer than its 1 s safety poll.
      const polled = await t.http().get(`/v1/events?after=${seed}`).set('authorization', `Bearer ${token}`)
      expect(polled.status).toBe(200)
      await sleep(1_500)
      expect({ live: live.notificationIds, polled: idsOf(polled) }, 'nothing may pass the open smaller id').toEqual({
        live: [],
        polled: [],
      })

      await newer.finish('commit')
      await live.waitFor((c) => c.notificationIds.length >= 2, 5_000).catch(() => {})
      await sleep(100)
      expect(live.notificationIds).toEqual([smaller, larger])
      const after = await t.http().get(`/v1/events?after=${seed}`).set('authorization', `Bearer ${token}`)
      expect(idsOf(after)).toEqual([smaller, larger])
    } finally {
      await newer.finish('rollback')
      await older.finish('rollback')
      live.close()
    }
  })
})
