/**
 * Finds members' source text in a JSON document that JSON.parse already accepted, so the publisher's `data`
 * can be stored exactly as sent: key order (JS objects put integer-like keys first), big integers beyond
 * 2^53 and number spellings like 1.0 survive. Whitespace outside strings is dropped (an SSE data line must
 * be one line); everything else is kept byte for byte.
 */

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

function skipSpace(text: string, i: number): number {
  while (i < text.length && isSpace(text.charCodeAt(i))) i++
  return i
}

/** Index just past the JSON value starting at `i` (no leading whitespace). */
function skipValue(text: string, i: number): number {
  const c = text[i]
  if (c === '"') {
    for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++
    return i + 1
  }
  if (c === '{' || c === '[') {
    const close = c === '{' ? '}' : ']'
    i = skipSpace(text, i + 1)
    if (text[i] === close) return i + 1
    for (;;) {
      if (c === '{') i = skipSpace(text, skipSpace(text, skipValue(text, i)) + 1) // key and colon
      i = skipSpace(text, skipValue(text, i))
      if (text[i] === close) return i + 1
      i = skipSpace(text, i + 1) // comma
    }
  }
  while (i < text.length && !',}] \n\r\t'.includes(text[i])) i++ // number, true, false, null
  return i
}

/** The members of the object starting at `i`, as [key, valueStart, valueEnd]; later duplicates win, as in JSON.parse. */
function members(text: string, i: number): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>()
  if (text[i] !== '{') return out
  i = skipSpace(text, i + 1)
  if (text[i] === '}') return out
  for (;;) {
    const keyEnd = skipValue(text, i)
    const key = JSON.parse(text.slice(i, keyEnd)) as string
    const start = skipSpace(text, skipSpace(text, keyEnd) + 1)
    const end = skipValue(text, start)
    out.set(key, [start, end])
    i = skipSpace(text, end)
    if (text[i] === '}') return out
    i = skipSpace(text, i + 1)
  }
}

/** Elements of the array starting at `i`, as [start, end]. */
function elements(text: string, i: number): Array<[number, number]> {
  const out: Array<[number, number]> = []
  if (text[i] !== '[') return out
  i = skipSpace(text, i + 1)
  if (text[i] === ']') return out
  for (;;) {
    const end = skipValue(text, i)
    out.push([i, end])
    i = skipSpace(text, end)
    if (text[i] === ']') return out
    i = skipSpace(text, i + 1)
  }
}

/** JSON text without whitespace outside strings. */
function compact(text: string): string {
  let out = ''
  let from = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22) {
      for (i++; text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++
    } else if (isSpace(c)) {
      out += text.slice(from, i)
      from = i + 1
    }
  }
  return out + text.slice(from)
}

/** `data` of a single publish body, as sent (compacted), or undefined when absent. */
export function rawDataOfEvent(body: string): string | undefined {
  const span = members(body, skipSpace(body, 0)).get('data')
  return span && compact(body.slice(span[0], span[1]))
}

/** `data` of each event of a batch body, in order. */
export function rawDataOfBatch(body: string): Array<string | undefined> {
  const span = members(body, skipSpace(body, 0)).get('events')
  if (!span) return []
  return elements(body, span[0]).map(([start]) => {
    const data = members(body, start).get('data')
    return data && compact(body.slice(data[0], data[1]))
  })
}
