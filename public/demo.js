// The demo inbox: sign in as any user (development servers only), watch notifications arrive live,
// mark them read, enable push, and publish to try broadcasts. Built on client.js like any app would be.
import { createHeraldClient } from '/client.js'

const $ = (id) => document.getElementById(id)
const SESSION_KEY = 'herald-demo:user'
let client
let user

const list = (value) =>
  value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)

async function mintToken() {
  const res = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(user),
  })
  if (!res.ok) throw new Error(`sign-in failed: HTTP ${res.status}`)
  return (await res.json()).token
}

function setStatus(status) {
  const labels = {
    live: 'live',
    connecting: 'connecting…',
    reconnecting: 'reconnecting…',
    polling: 'polling',
    stopped: 'offline',
  }
  $('status').textContent = labels[status] ?? status
  $('status').dataset.status = status
}

async function refreshBadge() {
  $('inbox-note').hidden = true // whatever went wrong before, the service answers again
  const n = await client.unreadCount()
  $('badge').textContent = String(n)
  $('badge').dataset.count = String(n)
}

function markReadInList(ids) {
  for (const id of ids) document.querySelector(`[data-id="${CSS.escape(id)}"]`)?.classList.remove('unread')
}

function render(event, { prepend = true } = {}) {
  if (document.querySelector(`[data-id="${CSS.escape(event.id)}"]`)) return
  $('empty').hidden = true
  const li = document.createElement('li')
  li.className = `item${event.readAt ? '' : ' unread'}`
  li.dataset.id = event.id
  const title = document.createElement('span')
  title.className = 'title'
  title.textContent = event.title
  const read = document.createElement('button')
  read.type = 'button'
  read.textContent = 'Mark read'
  read.addEventListener('click', () =>
    safely($('inbox-note'), async () => {
      await client.read(event.id)
      li.classList.remove('unread')
      await refreshBadge()
    }),
  )
  const body = document.createElement('span')
  body.textContent = event.body ?? ''
  const meta = document.createElement('span')
  meta.className = 'meta'
  const prio = document.createElement('span')
  prio.className = `prio-${event.priority}`
  prio.textContent = event.priority
  meta.append(`#${event.id} · from ${event.actor} · ${new Date(event.createdAt).toLocaleTimeString()} · `, prio)
  li.append(title, read, body, meta)
  if (prepend) $('list').prepend(li)
  else $('list').append(li)
}

async function signIn(form) {
  user = {
    sub: form.sub.value,
    tenant: form.tenant.value,
    roles: list(form.roles.value),
    topics: list(form.topics.value),
  }
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(user))
  await start()
}

async function start() {
  client = createHeraldClient({ getToken: mintToken, topics: user.topics })
  client.onStatus(setStatus)
  client.onNotification(async (event) => {
    render(event)
    await refreshBadge()
  })
  client.onReceipt(async (receipt) => {
    if (receipt.ids) markReadInList(receipt.state === 'read' ? receipt.ids : [])
    if (receipt.upTo) {
      for (const li of document.querySelectorAll('.item.unread'))
        if (Number(li.dataset.id) <= Number(receipt.upTo)) li.classList.remove('unread')
    }
    await refreshBadge()
  })
  client.onReset(() => {
    $('list').replaceChildren()
  })
  $('signin').hidden = true
  $('inbox').hidden = false
  $('publish').hidden = false
  $('who').textContent = `${user.sub} @ ${user.tenant}`
  const page = await client.history({ limit: 50 })
  for (const e of page.events) render(e, { prepend: false })
  client.start()
  await refreshBadge()
}

async function publish(form) {
  const target = form.target.value.trim()
  const audience = form.audience.value
  const to =
    audience === 'me'
      ? { users: [user.sub] }
      : audience === 'user'
        ? { users: [target] }
        : audience === 'role'
          ? { roles: [target] }
          : audience === 'topic'
            ? { topics: [target] }
            : { tenant: true }
  const result = $('publish-result')
  result.classList.remove('error')
  result.textContent = 'Publishing…'
  const res = await fetch('/v1/events', {
    method: 'POST',
    headers: { authorization: `Bearer ${await mintToken()}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      type: 'demo.message',
      to,
      title: form.title.value,
      body: form.body.value || undefined,
      priority: form.priority.value,
    }),
  })
  const answer = await res.json()
  if (!res.ok) throw new Error(`refused: ${answer.detail}`)
  result.textContent = `Published #${answer.id}`
}

/**
 * Runs a button's action; a failure (the server is down, a refusal) is shown in `where` instead of being thrown
 * into the console, and a stale success message there is replaced.
 */
async function safely(where, action) {
  try {
    await action()
  } catch (err) {
    const message = err instanceof TypeError ? 'the server cannot be reached; try again' : err.message
    where.textContent = `Could not do that: ${message}`
    where.classList.add('error')
    where.hidden = false
  }
}

async function togglePush() {
  const note = $('push-note')
  note.hidden = false
  try {
    if ($('push').dataset.on) {
      await client.disablePush()
      delete $('push').dataset.on
      $('push').textContent = 'Enable push'
      note.textContent = 'Push is off for this browser.'
    } else {
      note.textContent = 'Asking the browser…'
      await client.enablePush()
      $('push').dataset.on = '1'
      $('push').textContent = 'Disable push'
      note.textContent = 'Push is on: notifications arrive even when this tab is closed.'
    }
  } catch (err) {
    note.textContent = `Push unavailable: ${err.message}`
  }
}

async function main() {
  const { signIn: allowed } = await (await fetch('/demo/config')).json()
  if (!allowed) {
    $('signin-form').hidden = true
    $('signin-disabled').hidden = false
    return
  }
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault()
    void signIn(e.target)
  })
  $('publish-form').addEventListener('submit', (e) => {
    e.preventDefault()
    void safely($('publish-result'), () => publish(e.target))
  })
  $('read-all').addEventListener('click', () =>
    safely($('inbox-note'), async () => {
      await client.readAll()
      for (const li of document.querySelectorAll('.item.unread')) li.classList.remove('unread')
      await refreshBadge()
    }),
  )
  $('push').addEventListener('click', () => void togglePush())
  $('signout').addEventListener('click', () => {
    client?.stop()
    sessionStorage.removeItem(SESSION_KEY)
    location.reload()
  })
  const saved = sessionStorage.getItem(SESSION_KEY)
  if (saved) {
    user = JSON.parse(saved)
    await start()
  }
}

void main()
