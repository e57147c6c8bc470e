import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import type { SseClient } from './helpers/sse.ts'
import { live, publish, streams, unique, waitForId } from './helpers/stream-fixtures.ts'

// Who gets what on a stream: users, roles, the tenant, topics (and which a token may ask for), receipts.

describeEachBackend('stream', (backend) => {
  describe('with default settings', () => {
    let t: TestApp
    beforeAll(async () => {
      t = await startApp(backend)
    })
    afterAll(() => t.close())
    const open = streams(() => t)

    describe('audience', () => {
      it('delivers a user-addressed event to that user only', async () => {
        const tenant = unique('aud')
        const alice = await live(await open({ sub: 'aud-alice', tenant }))
        const bob = await live(await open({ sub: 'aud-bob', tenant }))
        const forAlice = await publish(t, tenant, { to: { users: ['aud-alice'] } })
        const marker = await publish(t, tenant, { to: { users: ['aud-alice', 'aud-bob'] } })
        await waitForId(bob, marker)
        await waitForId(alice, marker)
        expect(alice.notificationIds).toEqual([forAlice, marker])
        expect(bob.notificationIds).toEqual([marker])
      })

      it('delivers a role broadcast to exactly the holders of that role', async () => {
        const tenant = unique('aud')
        const p1 = await live(await open({ sub: 'role-p1', tenant, roles: ['parent'] }))
        const p2 = await live(await open({ sub: 'role-p2', tenant, roles: ['teacher', 'parent'] }))
        const other = await live(await open({ sub: 'role-x', tenant, roles: ['teacher'] }))
        const forParents = await publish(t, tenant, { to: { roles: ['parent'] } })
        const marker = await publish(t, tenant, { to: { users: ['role-p1', 'role-p2', 'role-x'] } })
        await waitForId(p1, marker)
        await waitForId(p2, marker)
        await waitForId(other, marker)
        expect(p1.notificationIds).toEqual([forParents, marker])
        // Named by two of its roles or by role and user, a stream still gets the event once.
        expect(p2.notificationIds).toEqual([forParents, marker])
        expect(other.notificationIds).toEqual([marker])
      })

      it('delivers an event named twice (by user and by role) once', async () => {
        const tenant = unique('aud')
        const s = await live(await open({ sub: 'twice', tenant, roles: ['parent', 'teacher'] }))
        const id = await publish(t, tenant, { to: { users: ['twice', 'twice'], roles: ['parent', 'teacher'] } })
        const marker = await publish(t, tenant, { to: { users: ['twice'] } })
        await waitForId(s, marker)
        expect(s.notificationIds).toEqual([id, marker])
      })

      it('delivers tenant: true to everyone in the tenant and nobody in another tenant', async () => {
        const tenant = unique('aud')
        const elsewhere = unique('aud-other')
        const a = await live(await open({ sub: 'ten-a', tenant }))
        const b = await live(await open({ sub: 'ten-b', tenant, roles: ['teacher'], topics: ['class:*'] }))
        const outsider = await live(await open({ sub: 'ten-c', tenant: elsewhere }))
        const everyone = await publish(t, tenant, { to: { tenant: true } })
        const marker = await publish(t, elsewhere, { to: { tenant: true } })
        const markerHere = await publish(t, tenant, { to: { users: ['ten-a', 'ten-b'] } })
        await waitForId(outsider, marker)
        await waitForId(a, markerHere)
        await waitForId(b, markerHere)
        expect(a.notificationIds).toEqual([everyone, markerHere])
        expect(b.notificationIds).toEqual([everyone, markerHere])
        expect(outsider.notificationIds).toEqual([marker])
      })

      it('delivers topic events to streams that subscribed (exact or prefix), not to the others', async () => {
        const tenant = unique('aud')
        const exact = await live(
          await open({ sub: 'top-exact', tenant, topics: ['class:7A'] }, { topics: ['class:7A'] }),
        )
        const prefix = await live(
          await open({ sub: 'top-prefix', tenant, topics: ['class:*'] }, { topics: ['class:*'] }),
        )
        // Allowed every class topic by its token, but subscribed to none.
        const notSubscribed = await live(await open({ sub: 'top-none', tenant, topics: ['class:*'] }))
        const otherClass = await live(
          await open({ sub: 'top-7b', tenant, topics: ['class:*', 'batch:9'] }, { topics: ['class:7B', 'batch:9'] }),
        )
        const to7A = await publish(t, tenant, { to: { topics: ['class:7A'] } })
        const toClasses = await publish(t, tenant, { to: { topics: ['classes:1', 'batch:9'] } })
        const to7B = await publish(t, tenant, { to: { topics: ['class:7B'] } })
        const marker = await publish(t, tenant, { to: { users: ['top-exact', 'top-prefix', 'top-none', 'top-7b'] } })
        for (const s of [exact, prefix, notSubscribed, otherClass]) await waitForId(s, marker)
        expect(exact.notificationIds).toEqual([to7A, marker])
        // `class:*` is the prefix `class:`: it matches class:7B but not classes:1.
        expect(prefix.notificationIds).toEqual([to7A, to7B, marker])
        expect(notSubscribed.notificationIds).toEqual([marker])
        expect(otherClass.notificationIds).toEqual([toClasses, to7B, marker])
      })

      it('never delivers to a user of another tenant with the same user id', async () => {
        const tenantA = unique('aud-a')
        const tenantB = unique('aud-b')
        const inA = await live(await open({ sub: 'same-id', tenant: tenantA, roles: ['parent'], topics: ['class:*'] }))
        const inB = await live(
          await open(
            { sub: 'same-id', tenant: tenantB, roles: ['parent'], topics: ['class:*'] },
            { topics: ['class:*'] },
          ),
        )
        const ids = [
          await publish(t, tenantA, { to: { users: ['same-id'] } }),
          await publish(t, tenantA, { to: { roles: ['parent'] } }),
          await publish(t, tenantA, { to: { topics: ['class:7A'] } }),
        ]
        const markerB = await publish(t, tenantB, { to: { users: ['same-id'] } })
        const markerA = await publish(t, tenantA, { to: { users: ['same-id'] } })
        await waitForId(inB, markerB)
        await waitForId(inA, markerA)
        expect(inB.notificationIds).toEqual([markerB])
        expect(inA.notificationIds).toEqual([ids[0], ids[1], markerA])
      })
    })

    describe('topic authorization', () => {
      it.each([
        { claim: ['class:7A'], ask: ['class:7B'] },
        { claim: ['class:7A'], ask: ['class:7A', 'class:7B'] },
        { claim: ['class:7A'], ask: ['class:*'] },
        { claim: ['class:7*'], ask: ['class:*'] },
        { claim: [], ask: ['class:7A'] },
      ])(
        'refuses topics $ask under a token allowing $claim with 403 before the stream opens',
        async ({ claim, ask }) => {
          const tenant = unique('topic-auth')
          const s = await open({ sub: 'topic-refused', tenant, topics: claim }, { topics: ask })
          expect(s.status).toBe(403)
          expect(s.headers['content-type']).toMatch(/^application\/problem\+json/)
          expect(s.raw).toBe('')
          expect(s.problem).toMatchObject({ status: 403 })
        },
      )

      it('accepts topics within the claim (exact and narrower prefix)', async () => {
        const tenant = unique('topic-auth')
        const s = await live(
          await open({ sub: 'topic-ok', tenant, topics: ['class:*', 'batch:9'] }, { topics: ['class:7*', 'batch:9'] }),
        )
        const id = await publish(t, tenant, { to: { topics: ['class:7C'] } })
        const batch = await publish(t, tenant, { to: { topics: ['batch:9'] } })
        await waitForId(s, batch)
        expect(s.notificationIds).toEqual([id, batch])
      })
    })

    describe('receipts', () => {
      it('tells every stream of the same user about read, ack and read-up-to, and nobody else', async () => {
        const tenant = unique('receipt')
        const me = unique('tabs')
        const other = unique('neighbour')
        const tab1 = await live(await open({ sub: me, tenant }))
        const tab2 = await live(await open({ sub: me, tenant }))
        const theirs = await live(await open({ sub: other, tenant }))
        const first = await publish(t, tenant, { to: { users: [me, other] } })
        const second = await publish(t, tenant, { to: { users: [me, other] } })
        for (const s of [tab1, tab2, theirs]) await waitForId(s, second)

        const as = (sub: string) => `Bearer ${t.token({ sub, tenant })}`
        expect((await t.http().post(`/v1/events/${first}/read`).set('authorization', as(me))).status).toBe(204)
        expect((await t.http().post(`/v1/events/${second}/ack`).set('authorization', as(me))).status).toBe(204)
        const bulk = await t.http().post('/v1/events/read').set('authorization', as(me)).send({ upTo: second })
        expect(bulk.status).toBe(204)

        const receipts = (s: SseClient) => s.events.filter((e) => e.event === 'receipt').map((e) => JSON.parse(e.data))
        for (const s of [tab1, tab2]) {
          await s.waitFor((c) => receipts(c).length >= 3, 5_000, 'three receipts')
          expect(receipts(s)).toEqual([
            { ids: [first], state: 'read' },
            { ids: [second], state: 'acked' },
            { upTo: second, state: 'read' },
          ])
        }
        // The neighbour's own receipt comes after anything of mine would have been written to its stream.
        expect((await t.http().post(`/v1/events/${first}/ack`).set('authorization', as(other))).status).toBe(204)
        await theirs.waitFor((c) => receipts(c).length >= 1, 5_000, 'the neighbour receipt')
        expect(receipts(theirs)).toEqual([{ ids: [first], state: 'acked' }])
        expect(receipts(tab1)).toHaveLength(3)
      })
    })
  })
})
