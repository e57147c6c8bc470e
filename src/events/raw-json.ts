/**
 * Finds members' source text in a JSON document that JSON.parse already accepted, so the publisher's `data`
 * can be stored exactly as sent: key order (JS objects put integer-like keys first), big integers beyond
 * 2^53 and number spellings like 1.0 survive. Whitespace outside strings is dropped (an SSE data line must
 * be one line); everything else is kept byte for byte.
 *
 * Every walk here is a loop over the text, never a recursion: how deeply a body nests cannot exhaust the
 * stack (a recursive walk threw RangeError at a few thousand levels).
 */

/**
 * Deepest nesting of arrays and objects a JSON request body may have; the outermost value is level 1. Far
 * deeper than any notification needs (real payloads nest a handful of levels; 64 is also the default limit
 * of .NET's System.Text.Json), and far below the thousands of levels at which a recursive walk of the parsed
 * body (zod, JSON.stringify, a client's parser) runs out of stack. Enforced once for every JSON body, by the
 * content-type parser in app.ts.
 */
export const MAX_JSON_DEPTH = 64

const QUOTE = 0x22
const BACKSLASH = 0x5c
const opens = (c: number) => c === 0x7b || c === 0x5b // { [
const closes = (c: number) => c === 0x7d || c === 0x5d // } ]
const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09

function skipSpace(text: string, i: number): number {
  while (i < text.length && isSpace(text.charCodeAt(i))) i++
  return i
}

/** Index just past the string whose opening quote is at `i` (the end of the text if it is never closed). */
function stringEnd(text: string, i: number): number {
  for (i++; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === BACKSLASH) i++
    else if (c === QUOTE) return i + 1
  }
  return text.length
}

/** Index just past the array or object starting at `i`: its brackets are counted, strings skipped. */
function containerEnd(text: string, i: number): number {
  let depth = 0
  while (i < text.length) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      i = stringEnd(text, i)
      continue
    }
    if (opens(c)) depth++
    else if (closes(c) && --depth === 0) return i + 1
    i++
  }
  return i
}

/** Index just past the JSON value starting at `i` (no leading whitespace). */
function skipValue(text: string, i: number): number {
  const c = text.charCodeAt(i)
  if (c === QUOTE) return stringEnd(text, i)
  if (opens(c)) return containerEnd(text, i)
  while (i < text.length && !',}] \n\r\t'.includes(text[i])) i++ // number, true, false, null
  return i
}

/**
 * Whether the text nests arrays and objects deeper than `max` levels (the outermost is level 1). One pass
 * over any text, valid JSON or not, so it can run before JSON.parse builds anything.
 */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0
  for (let i = 0; i < text.length; ) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      i = stringEnd(text, i)
      continue
    }
    if (opens(c) && ++depth > max) return true
    if (closes(c)) depth--
    i++
  }
  return false
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
  for (let i = 0; i < text.length; ) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      i = stringEnd(text, i)
      continue
    }
    if (isSpace(c)) {
      out += text.slice(from, i)
      from = i + 1
    }
    i++
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
