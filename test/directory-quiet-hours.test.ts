import { sql } from 'drizzle-orm'
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest'
import { WAITING_FOR_QUIET_HOURS } from '../src/push/quiet-hours.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { TestClock } from './helpers/clock.ts'
import {
  bearer,
  client,
  PUSH_CONFIG,
  pushesOf,
  service,
  sleep,
  until,
  usePushService,
  waitForPush,
} from './helpers/push-fixtures.ts'

// Issue 19: quiet hours use the user directory's time zone when the user's preferences name none. A user's own
// quiet hours always name their zone; a tenant's default window follows, for each user the directory gives a zone,
// that user's wall clock (a school's "22:00 to 07:00" is at night where each family lives), and the tenant's zone
// for the others. Over the real service, pushes received by the local push service, the time moved by the test.

usePushService()

let tenants = 0

describeEachBackend('quiet hours and the user directory’s time zone', (backend) => {
  let t: TestApp
  const clock = new TestClock()

  beforeAll(async () => {
    t = await startApp(backend, { config: PUSH_CONFIG, pushAgent: service.agent, clock: clock.now })
  })
  afterAll(() => t?.close())
  afterEach(() => clock.reset())

  it('the tenant’s quiet hours follow the zone the directory gives a user; the tenant’s zone the others’; a user’s own window wins', async () => {
    const tenant = `dir-quiet-${backend}-${process.pid}-${++tenants}`
    const admin = t.token({ sub: 'backend', tenant, scope: `admin ${PUBLISHER}` })
    const user = (sub: string) => t.token({ sub, tenant })
    const api = client(t.url)
    const directory = (id: string, timeZone: string | null) =>
      t
        .http()
        .put(`/v1/directory/users/${id}`)
        .set(bearer(admin))
        .send({ roles: ['parent'], topics: [], timeZone })

    // The school's nights, by Paris time.
    const defaults = await t
      .http()
      .put('/v1/tenant/preferences')
      .set(bearer(admin))
      .send({ quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' } })
    expect(defaults.status, defaults.text).toBe(200)
    // tokyo lives in Tokyo; paris is in the directory without a zone; nowhere is not in the directory at all;
    // own lives in Tokyo too but set quiet hours of her own, by Paris time.
    expect((await directory('tokyo', 'Asia/Tokyo')).status).toBe(201)
    expect((await directory('paris', null)).status).toBe(201)
    expect((await directory('own', 'Asia/Tokyo')).status).toBe(201)
    const own = await t
      .http()
      .put('/v1/me/preferences')
      .set(bearer(user('own')))
      .send({ quietHours: { start: '22:00', end: '07:00', timeZone: 'Europe/Paris' } })
    expect(own.status, own.text).toBe(200)
    const devices = {
      tokyo: await api.register(user('tokyo')),
      paris: await api.register(user('paris')),
      nowhere: await api.register(user('nowhere')),
      own: await api.register(user('own')),
    }

    // Monday 2026-12-07 14:00 UTC: 15:00 in Paris (a school afternoon), 23:00 in Tokyo (night).
    clock.setTo('2026-12-07T14:00:00Z')
    const publish = async (to: string) => api.publish(admin, { title: `For ${to}`, to: { users: [to] } })
    const forTokyo = await publish('tokyo')
    const forParis = await publish('paris')
    const forNowhere = await publish('nowhere')
    const forOwn = await publish('own')

    // Afternoon by Paris time: paris, nowhere and own get theirs at once.
    await waitForPush(devices.paris.endpoint, forParis)
    await waitForPush(devices.nowhere.endpoint, forNowhere)
    await waitForPush(devices.own.endpoint, forOwn)
    // Night in Tokyo: tokyo's waits for the end of her night, 07:00 Tokyo time.
    const waiting = async () => {
      const [row] = await t.database.query<{ last_error: string | null; next_attempt_at: Date | string }>(
        sql`select last_error, next_attempt_at from push_deliveries where event_id = ${forTokyo}`,
      )
      return row?.last_error === WAITING_FOR_QUIET_HOURS ? row : undefined
    }
    const row = await until(waiting, 'tokyo’s push to wait for the end of her night')
    expect(new Date(row.next_attempt_at).toISOString()).toBe('2026-12-07T22:00:00.000Z') // 07:00 in Tokyo
    await sleep(1_500) // a dispatcher poll or more: still nothing
    expect(pushesOf(devices.tokyo.endpoint, forTokyo)).toEqual([])

    // 07:01 in Tokyo: it goes out.
    clock.setTo('2026-12-07T22:01:00Z')
    t.app.pushDispatcher.wake()
    await waitForPush(devices.tokyo.endpoint, forTokyo)

    // Taken out of the directory, tokyo is on Paris time again: 23:30 in Paris is quiet, 08:30 in Tokyo is not.
    expect((await t.http().delete('/v1/directory/users/tokyo').set(bearer(admin))).status).toBe(204)
    clock.setTo('2026-12-07T23:30:00Z')
    const later = await publish('tokyo')
    await until(
      async () =>
        (
          await t.database.query<{ last_error: string | null }>(
            sql`select last_error from push_deliveries where event_id = ${later}`,
          )
        )[0]?.last_error === WAITING_FOR_QUIET_HOURS,
      'the push to wait for the end of the night in Paris',
    )
    expect(pushesOf(devices.tokyo.endpoint, later)).toEqual([])
  })
})
