import module from 'node:module'

/** Where drizzle-orm's files are, in a file: URL. */
const DRIZZLE_ORM = '/node_modules/drizzle-orm/'

interface ResolveContext {
  parentURL?: string
}
interface ResolveResult {
  url: string
  format?: string | null
  shortCircuit?: boolean
}
type Resolve = (
  specifier: string,
  context: ResolveContext,
  nextResolve: (specifier: string, context: ResolveContext) => ResolveResult,
) => ResolveResult
/** node:module's registerHooks (Node 22.15, 23.5 and later; not in @types/node 20). */
type RegisterHooks = (hooks: { resolve: Resolve }) => unknown

/**
 * Loads drizzle-orm's modules without Node's package.json lookup for each one. To learn whether a `.js` file is
 * an ES module, Node (24.x) finds the package.json above it and copies it whole, `exports` included. drizzle-orm's
 * `exports` names every one of its files (179 KB of JSON) and is parsed again for each of its modules the service
 * loads, hundreds of times: seconds of start-up and a young generation V8 grows to its maximum for it and keeps
 * while idle, on either database (bench scenario 8).
 * drizzle-orm is one package.json, `"type": "module"`, whose files import each other by relative `.js` paths:
 * this hook resolves those itself and says they are ES modules, which is what Node would have concluded.
 * (drizzle-orm has since replaced that list with a pattern, drizzle-team/drizzle-orm#5934: this can go with
 * the upgrade.)
 *
 * Registered before anything imports drizzle-orm, which is why the entry points load the rest of the service
 * with a dynamic import. From source too: tsx's loader then never sees drizzle-orm's own imports, which are
 * plain JavaScript it would pass through. Without registerHooks (Node before 22.15), modules load as before.
 */
export function loadDrizzleWithoutLookups(): void {
  const registerHooks = (module as unknown as { registerHooks?: RegisterHooks }).registerHooks
  if (!registerHooks) return
  registerHooks({
    resolve(specifier, context, nextResolve) {
      const { parentURL } = context
      if (
        parentURL?.includes(DRIZZLE_ORM) &&
        (specifier.startsWith('./') || specifier.startsWith('../')) &&
        specifier.endsWith('.js')
      ) {
        return { url: new URL(specifier, parentURL).href, format: 'module', shortCircuit: true }
      }
      return nextResolve(specifier, context)
    },
  })
}
