// The admin page: a tenant admin's live overview. It signs in like the demo page (development servers), or takes
// a token with the `admin` scope, then follows the service's own `herald:admin` topic: every 2 s the service sends
// a `herald.overview` live event (streams and users online, the last minute's activity, the latest events with
// their roll-call totals). The per-day table comes from GET /v1/stats; a roll-call from GET /v1/events/:id/recipients.

const $ = (id) => document.getElementById(id)
const SESSION_KEY = 'herald-admin:session'
const ADMIN_TOPIC = 'herald:admin'
/** The per-day table is read again this often (the overview itself is live). */
const DAYS_REFRESH_MS = 60_000
/** A dropped stream is opened again (with a new ticket) after this long. */
const REOPEN_MS = 3_000
/** Recipients shown in a roll-call. */
const ROLL_CALL_LIMIT = 50

let session // { sub, tenant } to sign in as (demo), or { token } given
let token
let source
let reopenTimer
let daysTimer

function setStatus(status, label = status) {
  $('status').textContent = label
  $('status').dataset.status = status
}

function showError(message) {
  $('signin-note').textContent = message
  $('signin-note').hidden = !message
}

async function mintToken() {
  if (session.token) return session.token
  const res = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sub: session.sub, tenant: session.tenant, admin: true }),
  })
  if (!res.ok) throw new Error(`sign-in failed: HTTP ${res.status}`)
  return (await res.json()).token
}

/** A call to the API with the token; a token that expired is minted again once (demo sign-in). */
async function api(path, init = {}, retried = false) {
  const res = await fetch(path, { ...init, headers: { authorization: `Bearer ${token}`, ...init.headers } })
  if (res.status === 401 && !retried && !session.token) {
    token = await mintToken()
    return api(path, init, true)
  }
  if (!res.ok) {
    const problem = await res.json().catch(() => ({}))
    const err = new Error(problem.detail ?? `HTTP ${res.status}`)
    err.status = res.status
    throw err
  }
  return res.json()
}

const number = (n) => new Intl.NumberFormat().format(n)
const timeOf = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })

function duration(seconds) {
  if (seconds === null) return '–'
  if (seconds < 60) return `${Math.round(seconds)} s`
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`
  return `${(seconds / 3600).toFixed(1)} h`
}

function element(tag, className, text) {
  const el = document.createElement(tag)
  if (className) el.className = className
  if (text !== undefined) el.textContent = text
  return el
}

/** One overview (the `data` of a `herald.overview` live event) on the page. */
function renderOverview(o) {
  const values = { ...o.online, ...o.lastMinute, pushFailuresLastHour: o.pushFailuresLastHour }
  for (const dd of document.querySelectorAll('[data-value]')) {
    const value = values[dd.dataset.value]
    dd.textContent = value === undefined ? '…' : number(value)
    dd.parentElement.dataset.nonzero = String(Boolean(value))
  }
  $('updated').textContent = timeOf(o.at)
  $('updated').dateTime = o.at
  $('overview').hidden = false
  $('latest').hidden = false
  renderLatest(o.latest)
}

function renderLatest(events) {
  $('latest-empty').hidden = events.length > 0
  const list = $('latest-list')
  list.replaceChildren(
    ...events.map((e) => {
      const li = element('li', 'event')
      li.dataset.id = e.id
      if (e.recalled) li.classList.add('recalled')
      const button = element('button', 'event-open')
      button.type = 'button'
      button.setAttribute('aria-label', `Roll-call of ${e.title}`)
      const head = element('span', 'event-head')
      head.append(
        element('strong', 'event-title', e.title),
        element('span', 'muted', `${e.type} · ${timeOf(e.createdAt)}`),
      )
      const bar = element('span', 'bar-track')
      const fill = element('span', 'bar-fill')
      const share = e.recipients ? Math.round((e.read / e.recipients) * 100) : 0
      fill.dataset.share = String(Math.round(share / 5) * 5) // the width comes from the stylesheet (no inline styles)
      bar.append(fill)
      const totals = element('span', 'event-totals')
      totals.append(
        element('span', '', `${number(e.read)}/${number(e.recipients)} read`),
        element('span', 'muted', `${number(e.delivered)} streamed`),
        element('span', 'muted', `${number(e.pushed)} pushed`),
        element('span', 'muted', `${number(e.acked)} acked`),
      )
      button.append(head, bar, totals)
      button.addEventListener('click', () => void showRollCall(e))
      li.append(button)
      return li
    }),
  )
}

async function showRollCall(e) {
  const who = $('who')
  who.hidden = false
  $('who-title').textContent = `Roll-call: ${e.title}`
  const list = $('who-list')
  list.replaceChildren(element('li', 'muted', 'Loading…'))
  try {
    const page = await api(`/v1/events/${encodeURIComponent(e.id)}/recipients?limit=${ROLL_CALL_LIMIT}`)
    list.replaceChildren(
      ...page.recipients.map((r) => {
        const li = element('li', 'recipient')
        const state = r.readAt
          ? 'read'
          : r.ackedAt
            ? 'acked'
            : r.deliveredAt
              ? 'delivered'
              : r.pushedAt
                ? 'pushed'
                : 'waiting'
        li.dataset.state = state
        li.append(element('span', '', r.displayName ?? r.userId), element('span', 'pill', state))
        return li
      }),
    )
    if (!page.recipients.length) list.replaceChildren(element('li', 'muted', 'No recipients.'))
    if (page.next) list.append(element('li', 'muted', `First ${ROLL_CALL_LIMIT} shown.`))
  } catch (err) {
    list.replaceChildren(element('li', 'error', err.message))
  }
  $('who-title').focus()
}

async function refreshDays() {
  const stats = await api('/v1/stats')
  const rows = [...stats.days].reverse() // newest day first
  $('days-body').replaceChildren(
    ...rows.map((d) => {
      const tr = document.createElement('tr')
      const cells = [
        d.day,
        d.type,
        number(d.published),
        number(d.deliveredOnStreams),
        number(d.pushed),
        number(d.pushFailures),
        number(d.read),
        duration(d.medianTimeToReadS),
      ]
      tr.append(...cells.map((text) => element('td', '', text)))
      return tr
    }),
  )
  $('days-empty').hidden = rows.length > 0
  $('days').hidden = false
  return stats
}

/** Follows the admin topic: a single-use ticket keeps the token out of the URL. */
async function openStream() {
  clearTimeout(reopenTimer)
  source?.close()
  setStatus('connecting', 'connecting…')
  const { ticket } = await api('/v1/stream/tickets', { method: 'POST' })
  const url = new URL('/v1/stream', location.href)
  url.searchParams.set('topics', ADMIN_TOPIC)
  url.searchParams.set('ticket', ticket)
  source = new EventSource(url)
  source.addEventListener('open', () => setStatus('live'))
  source.addEventListener('live', (m) => {
    const event = JSON.parse(m.data)
    if (event.type === 'herald.overview') renderOverview(event.data)
  })
  source.addEventListener('error', () => {
    // The ticket was used: reopen with a new one rather than let the browser retry the same URL.
    source.close()
    setStatus('reconnecting', 'reconnecting…')
    reopenTimer = setTimeout(() => void openStream().catch(failed), REOPEN_MS)
  })
}

function failed(err) {
  setStatus('stopped', 'offline')
  showError(err.status === 403 ? 'This token lacks the admin scope.' : err.message)
  if (err.status === 403) signOut(false)
}

async function start() {
  showError('')
  token = await mintToken()
  const stats = await refreshDays() // also checks the token may read the tenant's statistics
  const claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')))
  $('tenant').textContent = `· ${claims.tenant}`
  $('signin').hidden = true
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session))
  renderOverview({
    at: new Date().toISOString(),
    online: stats.now,
    lastMinute: {},
    latest: [],
  })
  await openStream()
  clearInterval(daysTimer)
  daysTimer = setInterval(() => void refreshDays().catch(() => {}), DAYS_REFRESH_MS)
}

function signOut(forget = true) {
  source?.close()
  clearInterval(daysTimer)
  if (forget) sessionStorage.removeItem(SESSION_KEY)
  for (const id of ['overview', 'latest', 'days']) $(id).hidden = true
  $('signin').hidden = false
}

async function main() {
  const { signIn } = await (await fetch('/demo/config')).json()
  $('signin-form').hidden = !signIn
  $('token-form').hidden = signIn
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault()
    const form = new FormData(e.target)
    session = { sub: String(form.get('sub')).trim(), tenant: String(form.get('tenant')).trim() }
    void start().catch(failed)
  })
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault()
    session = { token: String(new FormData(e.target).get('token')).trim() }
    void start().catch(failed)
  })
  $('who-close').addEventListener('click', () => {
    $('who').hidden = true
  })
  const saved = sessionStorage.getItem(SESSION_KEY)
  if (saved) {
    session = JSON.parse(saved)
    await start().catch(failed)
  }
}

void main()
