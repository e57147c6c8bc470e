import { canonicalLocale } from '../directory/model.ts'

/** Tags of an Accept-Language header looked at: a browser sends a handful. */
const MAX_ACCEPTED = 20

/**
 * The locale a request prefers by its `Accept-Language` (`fr-CH, fr;q=0.9, en;q=0.8` gives `fr-CH`), as Intl writes
 * it; undefined without a usable one. The one the directory has for the user comes first: this is for users it
 * does not know.
 */
export function preferredLocale(header: string | string[] | undefined): string | undefined {
  const text = Array.isArray(header) ? header.join(',') : header
  if (!text) return undefined
  let best: { tag: string; q: number } | undefined
  for (const part of text.split(',').slice(0, MAX_ACCEPTED)) {
    const [range, ...params] = part.trim().split(';')
    const qParam = params.map((p) => p.trim()).find((p) => p.startsWith('q='))
    const q = qParam === undefined ? 1 : Number(qParam.slice(2))
    const tag = range.trim() === '*' ? undefined : canonicalLocale(range.trim())
    // The first of the highest weight wins (a header lists them in order of preference).
    if (tag && Number.isFinite(q) && q > 0 && (!best || q > best.q)) best = { tag, q }
  }
  return best?.tag
}
