import type { FastifyInstance } from 'fastify'
import helmet from 'helmet'

/**
 * The Content-Security-Policy of every response. The demo page, the docs' UI (swagger-ui) and the service worker
 * load scripts, styles and connections from this origin only, and run nothing inline, so an injected `<script>`
 * or `onclick=` does nothing. No page of ours may be framed (clickjacking). `data:` images: the demo's empty
 * favicon, the icons in swagger-ui's stylesheet; `https:` images: the pictures events carry (`icon`, `image`,
 * which publishers may host anywhere over https), shown by the demo inbox. Images run nothing, and the
 * Referrer-Policy below keeps our URLs from their hosts.
 */
const CONTENT_SECURITY_POLICY = {
  'default-src': ["'self'"],
  'base-uri': ["'none'"],
  'connect-src': ["'self'"],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
  'img-src': ["'self'", 'data:', 'https:'],
  'object-src': ["'none'"],
  'script-src': ["'self'"],
  'script-src-attr': ["'none'"],
  'style-src': ["'self'"],
  'worker-src': ["'self'"],
}

/**
 * Security headers on every response (helmet): the CSP above, X-Frame-Options for browsers without
 * frame-ancestors, nosniff, no Referer sent from our pages, HSTS (browsers heed it over HTTPS only).
 * Without helmet's default `upgrade-insecure-requests`: a page served over plain HTTP from any host but this
 * machine's loopback (a development server reached over the LAN) would ask HTTPS for its own scripts, and break.
 * helmet's middleware is built once: @fastify/helmet built it (parsing the CSP again) for every request, about a
 * twentieth of the CPU of opening a stream.
 */
export async function registerSecurityHeaders(app: FastifyInstance) {
  const setHeaders = helmet({
    contentSecurityPolicy: { useDefaults: false, directives: CONTENT_SECURITY_POLICY },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
  })
  app.addHook('onRequest', (request, reply, done) =>
    setHeaders(request.raw, reply.raw, (err) => done(err as Error | undefined)),
  )
}
