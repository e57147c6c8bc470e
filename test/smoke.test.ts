import { afterAll, beforeAll, expect, it } from 'vitest'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'

describeEachBackend('smoke', (backend) => {
  let t: TestApp
  beforeAll(async () => {
    t = await startApp(backend)
  })
  afterAll(() => t.close())

  it('a published event reaches an open stream and the history', async () => {
    const alice = t.token({ sub: 'alice' })
    const stream = await SseClient.open(t.url, { token: alice })
    expect(stream.status).toBe(200)
    const res = await t
      .http()
      .post('/v1/events')
      .set('authorization', `Bearer ${t.token({ sub: 'teacher', scope: PUBLISHER })}`)
      .send({ type: 'grade.updated', to: { users: ['alice'] }, title: 'New grade' })
    expect(res.status).toBe(201)
    await stream.waitForNotifications(1)
    expect(stream.notifications[0]).toMatchObject({ id: res.body.id, title: 'New grade', actor: 'teacher' })
    stream.close()
  })
})
