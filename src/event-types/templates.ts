import Mustache from 'mustache'

/**
 * Title and body templates of event types: Mustache (logic-less), restricted so that a template can only read
 * the event's `data` and never run anything.
 *
 * - Only variable tags (`{{data.x}}`, `{{{data.x}}}`, `{{&data.x}}`), sections (`{{#data.x}}…{{/data.x}}`),
 *   inverted sections (`{{^data.x}}`) and comments are taken, and only names that are `data` or start with
 *   `data.` (and `{{.}}` inside a section: the item at hand): partials (`{{> x}}`) and delimiter changes (`{{=<% %>=}}`) are refused at registration, with any
 *   other name (`{{secret}}`).
 * - No name segment may be a member of a built-in prototype (`constructor`, `toString`, `__proto__`...), and the
 *   view is rebuilt from `data` with objects that have no prototype: the only values a template can reach are the
 *   JSON values of `data`, and there is no function among them for Mustache to call.
 * - Rendering is bounded (RENDER_STEP_BUDGET, RENDER_CHAR_BUDGET): nested sections over a large array stop
 *   rendering rather than multiply; the text is cut to the event's limits anyway.
 * - No HTML escaping: notification text is plain text, and every client shows it as text.
 */

/** A template's problem at registration, or undefined when it is fine. */
export function templateProblem(template: string): string | undefined {
  let tokens: Token[]
  try {
    tokens = Mustache.parse(template) as Token[]
  } catch (err) {
    return `is not a valid template: ${(err as Error).message}`
  }
  return tokensProblem(tokens)
}

/** A parsed token: [kind, value, start, end, children?]. */
type Token = [string, string, number, number, Token[]?]

/** Built-in members a name must not reach: what a prototype chain would give instead of a value of `data`. */
const PROTOTYPE_MEMBERS = new Set(
  [Object.prototype, Array.prototype, String.prototype, Number.prototype, Boolean.prototype, Function.prototype]
    .flatMap((proto) => Object.getOwnPropertyNames(proto))
    .concat(['__proto__', 'prototype', 'constructor']),
)
// A string's or an array's length is a plain number: `{{data.items.length}} items` is fine.
PROTOTYPE_MEMBERS.delete('length')

function tokensProblem(tokens: Token[], inSection = false): string | undefined {
  for (const [kind, value, , , children] of tokens) {
    if (kind === 'text' || kind === '!') continue
    if (kind === '>') return `must not use partials ({{> ${value}}}): a template reads only the event's data`
    if (kind === '=') return 'must not change the delimiters ({{=…=}})'
    if (kind !== 'name' && kind !== '&' && kind !== '#' && kind !== '^') return `must not use the tag "${kind}"`
    // `{{.}}` in a section is the item at hand, an element of data (`{{#data.names}}{{.}} {{/data.names}}`).
    const problem = inSection && value === '.' ? undefined : nameProblem(value)
    if (problem) return problem
    if (children) {
      const inner = tokensProblem(children, true)
      if (inner) return inner
    }
  }
  return undefined
}

function nameProblem(name: string): string | undefined {
  if (name !== 'data' && !name.startsWith('data.')) {
    return `may only read the event's data: {{${name}}} is not "data" or "data.<field>"`
  }
  for (const segment of name.split('.').slice(1)) {
    if (segment === '' || PROTOTYPE_MEMBERS.has(segment)) {
      return `may only read the event's data: {{${name}}} names "${segment}", which is not a field of data`
    }
  }
  return undefined
}

/** Work one rendering may do: this many token visits... */
const RENDER_STEP_BUDGET = 10_000
/** ...and about this many characters of output; past either, the rest renders as nothing. */
const RENDER_CHAR_BUDGET = 20_000

/**
 * A value of `data` as a template sees it: objects without a prototype (a name reaches only their own members),
 * arrays as arrays (sections iterate them), everything else as it is.
 */
function viewOf(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(viewOf)
  if (value !== null && typeof value === 'object') {
    const copy = Object.create(null) as Record<string, unknown>
    for (const [k, v] of Object.entries(value)) copy[k] = viewOf(v)
    return copy
  }
  return value
}

/** Plain text, not HTML: a value is written as it is (an object or array as its JSON). */
const asText = (value: unknown) => (typeof value === 'object' ? JSON.stringify(value) : String(value))

/**
 * Renders a template that passed templateProblem with `data` (the event's parsed `data`), as plain text.
 * Never throws on data: a missing field renders as nothing.
 */
export function renderTemplate(template: string, data: unknown): string {
  const writer = new Mustache.Writer()
  // Parsed per render (templates are short): a writer's cache would keep every template ever rendered.
  ;(writer as unknown as { templateCache: undefined }).templateCache = undefined
  let steps = 0
  let chars = 0
  const renderTokens = writer.renderTokens.bind(writer)
  // Every section's iteration goes through renderTokens: counting there bounds the whole rendering.
  writer.renderTokens = (tokens, ...rest) => {
    steps += tokens.length
    if (steps > RENDER_STEP_BUDGET || chars > RENDER_CHAR_BUDGET) return ''
    const out = renderTokens(tokens, ...rest)
    chars += out.length
    return out
  }
  const view = Object.create(null) as Record<string, unknown>
  view.data = viewOf(data ?? null)
  return writer.render(template, view, undefined, { escape: asText })
}

/** `text` cut to `max` characters (code points), ending in "…" when cut. */
export function cutTo(text: string, max: number): string {
  const chars = [...text]
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`
}
