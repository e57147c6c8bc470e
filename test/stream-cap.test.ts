import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

// MAX_CONNECTIONS_PER_USER on one instance: the oldest stream is evicted with a frame that says why, and an
// EventSource coming back from it is told 204, so the user's streams settle at the limit instead of evicting
// each other forever (the operator's report: 11 streams, limit 10, an eviction every 3 s). Across instances:
// cluster.test.ts; in a real browser: browser-eviction.test.ts.

const MAX = 3
/** The evicted stream's last frame, byte for byte. */
const EVICTED_FRAME = `id: evicted\nevent: evicted\ndata: {"reason":"too-many-streams","max":${MAX}}\n\n`
/** The stream's `retry:`: how long an EventSource waits before it reconnects. */
const RETRY_MS = 3_000

let counter = 0
/** A name no other test (or backend run) uses. */
const unique = (prefix: string) => `${prefix}-${process.pid}-${++counter}`

/** The raw text with heartbeat comments taken out (they may arrive at any time). */
const withoutPings = (raw: string) => raw.replace(/^: ?ping\n\n/gm, '')

describeEachBackend(`per-user stream limit (MAX_CONNECTIONS_PER_USER ${MAX})`, (backend) => {
  let t: TestApp
  const opened: SseClient[] = []
  beforeAll(async () => {
    t = await startApp(backend, { config: { MAX_CONNECTIONS_PER_USER: MAX } })
  })
  afterEach(() => {
    for (const c of opened.splice(0)) c.close()
  })
  afterAll(() => t.close())

  /** Opens a stream and waits until it is live (the server wrote its first line). */
  async function open(tenant: string, sub: string, lastEventId?: string): Promise<SseClient> {
    const client = await SseClient.open(t.url, { token: t.token({ sub, tenant }), lastEventId })
    opened.push(client)
    if (client.status === 200) await client.waitFor((c) => c.raw.startsWith('retry: 3000'), 5_000, 'the retry line')
    return client
  }

  async function publish(tenant: string, to: object): Promise<string> {
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'publisher', tenant, scope: PUBLISHER })}`)
      .send({ type: 'test.event', title: 'Test', to })
    expect(res.status, JSON.stringify(res.body)).toBe(201)
    return res.body.id as string
  }

  const evictions = async () =>
    (await t.app.metrics.streamsClosed.get()).values.find((v) => v.labels.reason === 'evicted')?.value ?? 0

  it('a 4th stream evicts the oldest, which is told why and ended; coming back with Last-Event-ID: evicted is a 204', async () => {
    const tenant = unique('cap')
    const bystander = await open(tenant, 'other')
    const oldest = await open(tenant, 'tabs')
    const kept = [await open(tenant, 'tabs'), await open(tenant, 'tabs')]
    const before = await evictions()
    kept.push(await open(tenant, 'tabs'))

    await oldest.waitForEnd(5_000)
    expect(withoutPings(oldest.raw)).toBe(`retry: 3000\n\n${EVICTED_FRAME}`)
    expect(oldest.events.at(-1)).toEqual({
      id: 'evicted',
      event: 'evicted',
      data: `{"reason":"too-many-streams","max":${MAX}}`,
    })
    // What an EventSource sends when it reconnects on its own after `retry:`.
    expect(oldest.lastEventId).toBe('evicted')
    const back = await open(tenant, 'tabs', oldest.lastEventId)
    expect(back.status, back.body).toBe(204)
    expect(back.body).toBe('')
    // Other junk is still a bad request; only the exact marker is a 204.
    for (const junk of ['Evicted', 'evicted-1', 'abc']) expect((await open(tenant, 'tabs', junk)).status).toBe(400)

    expect(t.app.hub.countForUser(tenant, 'tabs')).toBe(MAX)
    expect(await evictions()).toBe(before + 1)
    const id = await publish(tenant, { tenant: true })
    for (const s of [...kept, bystander]) {
      await s.waitFor((c) => c.notificationIds.includes(id), 5_000, `notification ${id}`)
      expect(s.ended).toBe(false)
      expect(s.events.some((e) => e.event === 'evicted')).toBe(false)
    }
    expect(oldest.notificationIds).toEqual([])
  })

  it('streams evicted as they arrive together each get the frame, and the user settles at the limit', async () => {
    const tenant = unique('cap-burst')
    const token = t.token({ sub: 'burst', tenant })
    const clients = await Promise.all(Array.from({ length: 8 }, () => SseClient.open(t.url, { token })))
    opened.push(...clients)
    expect(clients.map((c) => c.status)).toEqual(Array(8).fill(200))
    await expect.poll(() => clients.filter((c) => c.ended).length).toBe(8 - MAX)
    // Evicted before or after their response started (the opener or the stream ends it): the frame either way.
    for (const c of clients.filter((x) => x.ended)) expect(c.lastEventId).toBe('evicted')
    // Each comes back as an EventSource would, and stops there: nothing more is evicted.
    const back = await Promise.all(clients.filter((c) => c.ended).map((c) => open(tenant, 'burst', c.lastEventId)))
    expect(back.map((c) => c.status)).toEqual(Array(8 - MAX).fill(204))
    await sleep(200)
    expect(t.app.hub.countForUser(tenant, 'burst')).toBe(MAX)
    expect(clients.filter((c) => c.ended)).toHaveLength(8 - MAX)
  })

  it('one stream over the limit, reconnecting as an EventSource does, settles: exactly one eviction and none after', async () => {
    // The report: one stream too many, and each evicted stream came back after `retry:` to evict the next.
    const tenant = unique('cap-settle')
    const before = await evictions()
    const streams = Array.from({ length: MAX + 1 }, () => new EventSourceLike(t.url, t.token({ sub: 'tabs', tenant })))
    for (const s of streams) await s.start()
    await sleep(RETRY_MS * 2 + 500)
    expect(streams.map((s) => s.state).sort()).toEqual(['closed', ...Array(MAX).fill('open')])
    expect(await evictions()).toBe(before + 1)
    expect(t.app.hub.countForUser(tenant, 'tabs')).toBe(MAX)
    for (const s of streams) s.stop()
  }, 20_000)

  /**
   * What an EventSource does (HTML standard, "reestablish the connection"): when its stream ends it waits
   * `retry:` ms and reconnects with Last-Event-ID set to the last `id:` it saw; a non-200 reply closes it.
   */
  class EventSourceLike {
    state: 'connecting' | 'open' | 'closed' = 'connecting'
    private current: SseClient | undefined
    private stopped = false

    constructor(
      private readonly url: string,
      private readonly token: string,
    ) {}

    async start(lastEventId?: string) {
      const client = await SseClient.open(this.url, { token: this.token, lastEventId })
      opened.push(client)
      this.current = client
      if (client.status !== 200) {
        this.state = 'closed'
        return
      }
      this.state = 'open'
      void client.done.then(async () => {
        if (this.stopped) return
        this.state = 'connecting'
        await sleep(client.retry ?? RETRY_MS)
        if (!this.stopped) await this.start(client.lastEventId ?? lastEventId)
      })
    }

    stop() {
      this.stopped = true
      this.current?.close()
    }
  }
})
