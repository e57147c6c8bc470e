import { afterAll, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { bearer, client, service, until, usePushService } from './helpers/push-fixtures.ts'
import { SseClient } from './helpers/sse.ts'

// Localized delivery of event types (issue 20, part 1): a type's templates per locale are rendered once at
// publish; each recipient gets the text of their locale (the directory's, else their request's Accept-Language,
// else the fallback): on live streams, in replays, in the inbox, and in push payloads.

type Json = Record<string, unknown>

usePushService()

let tenants = 0

describeEachBackend('event types per locale', (backend) => {
  let t: TestApp

  beforeAll(async () => {
    t = await startApp(backend, {
      pushAgent: service.agent,
      config: { PUSH_ENDPOINT_ALLOWLIST: '127.0.0.1:*', PUSH_RETRY_BASE_MS: 100 },
    })
  })
  afterAll(async () => {
    await t?.close()
  })

  const opened: SseClient[] = []
  afterAll(() => {
    for (const c of opened) c.close()
  })

  /**
   * A school whose directory has amelie (fr-CH) and oliver (en-GB), and not zoe; and a type with a fallback title
   * and body, and templates for fr (a title of its own, the fallback's body) and en-GB (both of its own).
   */
  async function school() {
    const tenant = `locales-${process.pid}-${++tenants}`
    const admin = t.token({ sub: 'backend', tenant, scope: 'admin' })
    const publisher = t.token({ sub: 'office', tenant, scope: PUBLISHER })
    for (const [id, locale] of [
      ['amelie', 'fr-CH'],
      ['oliver', 'en-GB'],
    ]) {
      const res = await t
        .http()
        .put(`/v1/directory/users/${id}`)
        .set(bearer(admin))
        .send({ roles: [], topics: [], locale })
      expect(res.status, res.text).toBe(201)
    }
    const type = await t
      .http()
      .put('/v1/event-types/grade.updated')
      .set(bearer(admin))
      .send({
        templates: {
          title: 'Grade: {{data.score}}',
          body: '{{data.subject}}',
          locales: {
            fr: { title: 'Note : {{data.score}}' },
            'en-gb': { title: 'Mark: {{data.score}}', body: '{{data.subject}} (UK)' },
          },
        },
      })
    expect(type.status, type.text).toBe(201)
    // The tag is stored as Intl writes it.
    expect(Object.keys(type.body.templates.locales)).toEqual(['fr', 'en-GB'])
    const user = (sub: string) => t.token({ sub, tenant })
    return {
      tenant,
      publisher,
      user,
      publish: async (event: Json) => {
        const res = await t
          .http()
          .post('/v1/events')
          .set(bearer(publisher))
          .send({ type: 'grade.updated', data: { score: 18, subject: 'Maths' }, ...event })
        expect(res.status, res.text).toBe(201)
        return res.body.id as string
      },
      stream: async (sub: string, options: { lastEventId?: string; headers?: Record<string, string> } = {}) => {
        const c = await SseClient.open(t.url, { token: user(sub), ...options })
        opened.push(c)
        expect(c.status, c.body).toBe(200)
        await c.waitFor((s) => s.raw.startsWith('retry:'), 5_000, 'the stream to start')
        return c
      },
    }
  }

  /** The raw `notification` frame text of event `id` in a stream's output. */
  const frameOf = (c: SseClient, id: string) =>
    c.raw.match(new RegExp(`id: ${id}\\nevent: notification\\ndata: .*\\n\\n`))?.[0]

  it('each live stream gets its locale’s title and body, a broadcast and a direct event alike; a replay gets the same bytes', async () => {
    const s = await school()
    const streams = {
      amelie: await s.stream('amelie'),
      oliver: await s.stream('oliver'),
      zoe: await s.stream('zoe'),
      // Not in the directory: the stream request's Accept-Language decides (its best match: fr).
      zoeFr: await s.stream('zoe', { headers: { 'accept-language': 'de-DE;q=0.5, fr-BE, en;q=0.8' } }),
    }
    const broadcast = await s.publish({ to: { tenant: true } })
    const direct = await s.publish({ to: { users: ['amelie', 'oliver', 'zoe'] }, data: { score: 9, subject: 'Art' } })
    for (const c of Object.values(streams)) await c.waitFor((x) => x.notificationIds.includes(direct), 10_000, 'both')
    const texts = (c: SseClient) => c.notifications.map((n) => [n.title, n.body])
    expect(texts(streams.amelie)).toEqual([
      ['Note : 18', 'Maths'],
      ['Note : 9', 'Art'],
    ])
    expect(texts(streams.oliver)).toEqual([
      ['Mark: 18', 'Maths (UK)'],
      ['Mark: 9', 'Art (UK)'],
    ])
    expect(texts(streams.zoe)).toEqual([
      ['Grade: 18', 'Maths'],
      ['Grade: 9', 'Art'],
    ])
    expect(texts(streams.zoeFr)).toEqual(texts(streams.amelie))

    // A reconnect replays from the log (frames built by the database): the same text, byte for byte.
    for (const [sub, live] of Object.entries(streams)) {
      const headers = sub === 'zoeFr' ? { 'accept-language': 'fr-BE' } : undefined
      const again = await s.stream(sub === 'zoeFr' ? 'zoe' : sub, { lastEventId: '0', headers })
      await again.waitFor((x) => x.notificationIds.includes(direct), 10_000, 'the replay')
      for (const id of [broadcast, direct]) {
        expect(frameOf(again, id), `${sub}: replayed ${id}`).toBe(frameOf(live, id))
      }
    }
  })

  it('the inbox and GET of one event are in the reader’s locale: the directory’s, else Accept-Language', async () => {
    const s = await school()
    const id = await s.publish({ to: { users: ['amelie', 'oliver', 'zoe'] } })
    const get = (sub: string, language?: string) => {
      const req = t
        .http()
        .get(`/v1/events/${id}`)
        .set(bearer(s.user(sub)))
      return language ? req.set('accept-language', language) : req
    }
    expect((await get('amelie')).body.title).toBe('Note : 18')
    // The directory comes before the request's language.
    expect((await get('oliver', 'fr')).body.title).toBe('Mark: 18')
    expect((await get('zoe')).body.title).toBe('Grade: 18')
    expect((await get('zoe', 'fr-CA')).body.title).toBe('Note : 18')
    const history = await t
      .http()
      .get('/v1/events')
      .set(bearer(s.user('oliver')))
    expect(history.body.events.map((e: Json) => e.body)).toEqual(['Maths (UK)'])
    const polled = await t
      .http()
      .get('/v1/events')
      .query({ after: '0' })
      .set(bearer(s.user('amelie')))
    expect(polled.body.events.map((e: Json) => e.title)).toEqual(['Note : 18'])

    // A nudge (the publisher's reminder) reaches amelie's stream in her locale too.
    const stream = await s.stream('amelie')
    const nudged = await t.http().post(`/v1/events/${id}/nudge`).set(bearer(s.publisher))
    expect(nudged.status, nudged.text).toBe(200)
    await stream.waitForEvent('nudge')
    expect(JSON.parse(stream.events.find((e) => e.event === 'nudge')?.data ?? '{}')).toMatchObject({
      id,
      title: 'Note : 18',
    })

    // An edit of the title is everyone's: the rendered locales no longer apply.
    const edited = await t.http().patch(`/v1/events/${id}`).set(bearer(s.publisher)).send({ title: 'Corrected' })
    expect(edited.status, edited.text).toBe(200)
    expect((await get('amelie')).body).toMatchObject({ title: 'Corrected', body: 'Maths' })
  })

  it('a push payload is in the recipient’s directory locale', async () => {
    const s = await school()
    const api = client(t.url)
    const amelie = await api.register(s.user('amelie'))
    const oliver = await api.register(s.user('oliver'))
    const zoe = await api.register(s.user('zoe'))
    const id = await s.publish({ to: { users: ['amelie', 'oliver', 'zoe'] } })
    const payload = async (endpoint: string) =>
      (
        await until(
          () => service.messagesFor(endpoint).find((m) => (m.json() as Json).id === id),
          `the push to ${endpoint}`,
        )
      ).json() as Json
    expect(await payload(amelie.endpoint)).toMatchObject({ title: 'Note : 18', body: 'Maths' })
    expect(await payload(oliver.endpoint)).toMatchObject({ title: 'Mark: 18', body: 'Maths (UK)' })
    expect(await payload(zoe.endpoint)).toMatchObject({ title: 'Grade: 18', body: 'Maths' })
  })
})
