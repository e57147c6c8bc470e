import { inArray, sql } from 'drizzle-orm'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { events } from '../src/db/schema.ts'
import { eventJson, eventJsonSql, notificationFrame, notificationFrameSql } from '../src/wire-format.ts'
import { PUBLISHER, startApp, type TestApp } from './helpers/app.ts'
import { describeEachBackend } from './helpers/backends.ts'

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

describeEachBackend('the wire format: JavaScript and SQL build the same bytes', (backend) => {
  let t: TestApp
  let ids: number[]

  beforeAll(async () => {
    t = await startApp(backend)
    const token = t.token({ sub: 'publisher', scope: PUBLISHER })
    ids = []
    for (const body of TRICKY) {
      const res = await t
        .http()
        .post('/v1/events')
        .set('authorization', `Bearer ${token}`)
        .set('content-type', 'application/json')
        .send(body)
      expect(res.status, res.text).toBe(201)
      ids.push(Number(res.body.id))
    }
  })
  afterAll(async () => {
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
})
