import { inArray, sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { events } from '../src/db/schema.ts'
import {
  eventJson,
  eventJsonSql,
  logFrame,
  logFrameSql,
  notificationFrame,
  notificationFrameSql,
} from '../src/wire-format.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'
import { SseClient } from './helpers/sse.ts'
import { withoutPings } from './helpers/stream-fixtures.ts'

// A live event's frame is built in JavaScript (the hub); a replayed one by the database (the log reader). A client
// must not be able to tell them apart: the same event gives the same bytes both ways.

/** Request bodies, as a publisher would send them: `data` is stored as written (raw JSON text). */
const TRICKY = [
  // Unicode beyond the BMP, combining marks, right-to-left text, a BOM, zero-width characters.
  `{"type":"t.unicode","to":{"users":["u1"]},"title":"🎓 Grade für Zoë, ש\u0301לום \ufeff\u200b","body":"e\u0301 ✓ 中文","data":{"emoji":"😀","escaped":"\\u00e9\\ud83d\\ude00"}}`,
  // U+2028 and U+2029 (line separators JSON allows in strings but older JavaScript did not).
  `{"type":"t.separators","to":{"users":["u1"]},"title":"a\u2028b\u2029c","body":"\u2028","data":"\u2028\u2029"}`,
  // Newlines, carriage returns, tabs, quotes, backslashes and other control characters in text.
  `{"type":"t.control","to":{"users":["u1"]},"title":"line 1\\nline 2\\r\\n\\t\\"quoted\\" \\\\ back","body":"\\u0001\\u001f\\u007f end","collapseKey":"k\\n1","url":"/grades/42?x=\\"y\\""}`,
  // Numbers JavaScript cannot hold exactly, as written; nested structures with odd spacing.
  `{"type":"t.numbers","to":{"users":["u1"]},"title":"big","data":{"big":123456789012345678901234567890,"neg":-0.000000000000000000001,"exp":1E+400,"list":[ 1 , 2.50 , {"a" : null} ]}}`,
  // Nothing optional: null body, no data, no url, no collapse key, no actions or pictures.
  `{"type":"t.empty","to":{"users":["u1"]},"title":"x"}`,
  // Actions (one without a url, one with), and every picture; titles and URLs with quotes, escapes, emoji and U+2028.
  `{"type":"t.actions","to":{"users":["u1"]},"title":"a","url":"/e","actions":[{"action":"ack","title":"Got it \\\\ \\"ok\\" \\u2028 😀"},{"url":"/grades/42?q=\\"\\u00e9\\"","title":"Voir\\tla note","action":"open"}],"icon":"/icons/\\u00e9.png","image":"https://cdn.example/i.png?a=1&b=\\"2\\"","badge":"/b\\u2028.png"}`,
  // An empty list of actions is none (null), like no list at all.
  `{"type":"t.no-actions","to":{"users":["u1"]},"title":"a","actions":[],"icon":null}`,
]

/**
 * Edits (PATCH bodies, as sent) of the same events published again to u2: tricky text again, data as the editor
 * wrote it, and null clearing what was there. `index` is the event's in TRICKY.
 */
const TRICKY_EDITS = [
  { index: 0, body: `{"title":"✓ é\u2028 \\"edited\\" \\\\ 😀","data":{"z":[1 , 2.50],"a":"\\u00e9"}}` },
  { index: 2, body: `{"body":null,"url":"https://school.example/x?y=\\"z\\"","data":null}` },
  { index: 3, body: `{"title":"again","body":"\\u0001 and \\u2029"}` },
]
/** Of those events published to u2, these (by index in TRICKY) are then recalled. */
const RECALLED = [1, 6]

describeEachBackend('the wire format: JavaScript and SQL build the same bytes', (backend) => {
  let t: TestApp
  let ids: number[]
  /** TRICKY published again, to u2, whose events are then edited and recalled. */
  let changedIds: number[]
  /** u2's stream, open from before the first of them: every frame as it went out live. */
  let watcher: SseClient

  beforeAll(async () => {
    t = await startApp(backend)
    const token = t.token({ sub: 'publisher', scope: PUBLISHER })
    const publish = async (body: string) => {
      const res = await t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${token}`)
        .set('content-type', 'application/json')
        .send(body)
      expect(res.status, res.text).toBe(201)
      return Number(res.body.id)
    }
    ids = []
    for (const body of TRICKY) ids.push(await publish(body))

    watcher = await SseClient.open(t.url, { token: t.token({ sub: 'u2' }) })
    expect(watcher.status, watcher.body).toBe(200)
    await watcher.waitFor((c) => c.raw.startsWith('retry:'), 5_000, 'the retry line')
    changedIds = []
    for (const body of TRICKY) changedIds.push(await publish(body.replace('"users":["u1"]', '"users":["u2"]')))
    // Live before they change: an event recalled before the log tail read it would never go out live at all.
    await watcher.waitFor((c) => c.events.length >= TRICKY.length, 10_000, 'the events, live')
    for (const edit of TRICKY_EDITS) {
      const res = await t
        .http()
        .patch(`/v1/events/${changedIds[edit.index]}`)
        .set('authorization', `Bearer ${token}`)
        .set('content-type', 'application/json')
        .send(edit.body)
      expect(res.status, res.text).toBe(200)
    }
    for (const index of RECALLED) {
      const res = await t.http().delete(`/v1/events/${changedIds[index]}`).set('authorization', `Bearer ${token}`)
      expect(res.status, res.text).toBe(204)
    }
    const frames = TRICKY.length + TRICKY_EDITS.length + RECALLED.length
    await watcher.waitFor((c) => c.events.length >= frames, 10_000, `${frames} frames`)
  })
  afterAll(async () => {
    watcher?.close()
    await t?.close()
  })

  it('for each tricky event, the event JSON and the notification frame match byte for byte', async () => {
    const rows = await t.database.db.select().from(events).where(inArray(events.id, ids)).orderBy(events.id)
    const built = await t.database.query<{ id: string | number; json: string; frame: string }>(
      sql`select ${events.id} as id, ${eventJsonSql} as json, ${notificationFrameSql} as frame
          from ${events} where ${inArray(events.id, ids)} order by ${events.id}`,
    )
    expect(rows).toHaveLength(TRICKY.length)
    expect(built).toHaveLength(TRICKY.length)
    for (const [i, row] of rows.entries()) {
      const js = eventJson(row)
      expect(Buffer.from(built[i].json).equals(Buffer.from(js)), `${row.type}:\n${built[i].json}\n${js}`).toBe(true)
      const jsFrame = notificationFrame(row.id, js)
      expect(built[i].frame, row.type).toBe(jsFrame)
      // And the text is JSON a client parses back to what was published.
      const parsed = JSON.parse(js)
      expect(parsed.type).toBe(row.type)
      expect(parsed.title).toBe(row.title)
    }
    // `data` went out as the publisher wrote it, digits and all.
    const numbers = rows.find((r) => r.type === 't.numbers')
    expect(numbers && eventJson(numbers)).toContain('"big":123456789012345678901234567890')
    expect(numbers && eventJson(numbers)).toContain('"exp":1E+400')
    // Actions go out as stored: members in the documented order whatever order was sent, `url` null where none.
    const actions = rows.find((r) => r.type === 't.actions')
    expect(JSON.parse(actions ? eventJson(actions) : '{}')).toMatchObject({
      actions: [
        { action: 'ack', title: 'Got it \\ "ok" \u2028 😀', url: null },
        { action: 'open', title: 'Voir\tla note', url: '/grades/42?q="é"' },
      ],
      icon: '/icons/é.png',
      image: 'https://cdn.example/i.png?a=1&b="2"',
      badge: '/b\u2028.png',
    })
    expect(actions && eventJson(actions)).toContain('"actions":[{"action":"ack","title":')
    const none = rows.find((r) => r.type === 't.no-actions')
    expect(JSON.parse(none ? eventJson(none) : '{}')).toMatchObject({
      actions: null,
      icon: null,
      image: null,
      badge: null,
    })
  })

  it('and a stream replaying them sends the very frames a live stream got', async () => {
    const replayed = await t.app.logReader.replayWindow(
      { tenant: 't1', userId: 'u1', roles: [], topicPatterns: [] },
      0,
      ids[ids.length - 1],
      100,
    )
    const rows = await t.database.db.select().from(events).where(inArray(events.id, ids)).orderBy(events.id)
    expect(replayed.map((r) => r.frame)).toEqual(rows.map((row) => notificationFrame(row.id, eventJson(row))))
  })

  it('every row of the log (events, and the rows of edits and recalls) has the same frame built either way', async () => {
    const rows = await t.database.db.select().from(events).orderBy(events.id)
    const built = await t.database.query<{ id: string | number; frame: string }>(
      sql`select ${events.id} as id, ${logFrameSql} as frame from ${events} order by ${events.id}`,
    )
    expect(rows.map((r) => r.kind)).toEqual([
      ...[...TRICKY, ...TRICKY].map(() => 'event'),
      ...TRICKY_EDITS.map(() => 'update'),
      ...RECALLED.map(() => 'delete'),
    ])
    expect(built.map((b) => Number(b.id))).toEqual(rows.map((r) => r.id))
    for (const [i, row] of rows.entries()) {
      const js = logFrame(row)
      expect(
        Buffer.from(built[i].frame).equals(Buffer.from(js)),
        `${row.kind} ${row.id}:\n${built[i].frame}\n${js}`,
      ).toBe(true)
      if (row.kind === 'event') expect(js).toBe(notificationFrame(row.id, eventJson(row)))
    }
    // An edit's frame is the event's JSON as the edit left it: the event's id (not the row's), one revision up.
    const editRows = rows.filter((r) => r.kind === 'update')
    for (const [i, row] of editRows.entries()) {
      const eventId = changedIds[TRICKY_EDITS[i].index]
      expect(
        logFrame(row).startsWith(`id: ${row.id}\nevent: update\ndata: {"id":"${eventId}","tenant":"t1","type":`),
      ).toBe(true)
      expect(JSON.parse(logFrame(row).split('\ndata: ')[1])).toMatchObject({ id: String(eventId), revision: 1 })
    }
    expect(JSON.parse(logFrame(editRows[0]).split('\ndata: ')[1]).title).toBe('✓ é\u2028 "edited" \\ 😀')
    // `data` as the editor wrote it, but for whitespace outside strings.
    expect(logFrame(editRows[0])).toContain('"data":{"z":[1,2.50],"a":"\\u00e9"}')
    expect(JSON.parse(logFrame(editRows[1]).split('\ndata: ')[1])).toMatchObject({ body: null, data: null })
    // A recall's frame names the event only.
    for (const [i, row] of rows.filter((r) => r.kind === 'delete').entries()) {
      expect(logFrame(row)).toBe(`id: ${row.id}\nevent: delete\ndata: {"id":"${changedIds[RECALLED[i]]}"}\n\n`)
    }
  })

  it('a real client resuming before them gets the very frames the live stream got: events, edits, recalls', async () => {
    const replayed = await SseClient.open(t.url, {
      token: t.token({ sub: 'u2' }),
      lastEventId: String(changedIds[0] - 1),
    })
    try {
      expect(replayed.status, replayed.body).toBe(200)
      // Each live frame, but those of the events recalled since: a replay leaves them out (their recalls stay).
      const recalled = RECALLED.map((i) => `id: ${changedIds[i]}\n`)
      const liveFrames = withoutPings(watcher.raw)
        .replace(/^retry: \d+\n\n/, '')
        .split(/(?<=\n\n)/)
        .filter((frame) => !recalled.some((prefix) => frame.startsWith(prefix)))
      // The events edited were live at revision 0 and are replayed as they now stand: those frames differ, by
      // design; every other frame, edits and recalls included, is the same text.
      const editedIds = new Set(TRICKY_EDITS.map((e) => `id: ${changedIds[e.index]}\n`))
      await replayed.waitFor((c) => c.events.length >= liveFrames.length, 10_000, `${liveFrames.length} frames`)
      const replayedFrames = withoutPings(replayed.raw)
        .replace(/^retry: \d+\n\n/, '')
        .split(/(?<=\n\n)/)
      expect(replayedFrames).toHaveLength(liveFrames.length)
      for (const [i, frame] of replayedFrames.entries()) {
        if ([...editedIds].some((prefix) => frame.startsWith(prefix))) {
          expect(frame.split('\n')[0], `frame ${i}`).toBe(liveFrames[i].split('\n')[0])
          expect(frame, `frame ${i}`).toContain('"revision":1}')
        } else expect(frame, `frame ${i}`).toBe(liveFrames[i])
      }
      expect(replayedFrames.filter((f) => f.includes('\nevent: update\n'))).toHaveLength(TRICKY_EDITS.length)
      expect(replayedFrames.filter((f) => f.includes('\nevent: delete\n'))).toHaveLength(RECALLED.length)
    } finally {
      replayed.close()
    }
  })
})
