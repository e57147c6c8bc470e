// The demo inbox: sign in as any user (development servers only), watch notifications arrive live (with their
// buttons and pictures), mark them read, enable push, and publish to try broadcasts. Built on client.js like any
// app would be.
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

/** Acknowledged (here, on another tab or device, or by the service worker): its ack buttons have done their job. */
function markAckedInList(ids) {
  for (const id of ids) {
    const li = document.querySelector(`[data-id="${CSS.escape(id)}"]`)
    li?.classList.add('acked')
    for (const b of li?.querySelectorAll('[data-action="ack"]') ?? []) b.disabled = true
  }
}

/**
 * A URL the page may open or show: resolved against this page, when it stays on this origin or is https; null
 * otherwise. The service accepts only such URLs; the page holds to it whatever it is given.
 */
function safeUrl(url) {
  if (typeof url !== 'string' || url === '') return null
  try {
    const target = new URL(url, location.href)
    return target.origin === location.origin || target.protocol === 'https:' ? target.href : null
  } catch {
    return null
  }
}

/** An <img> of one of the event's pictures, or nothing when it has none (or one the page may not show). */
function picture(url, className) {
  const src = safeUrl(url)
  if (!src) return []
  const img = document.createElement('img')
  img.className = className
  img.src = src
  img.alt = ''
  img.referrerPolicy = 'no-referrer'
  img.loading = 'lazy'
  return [img]
}

/**
 * The event's buttons, doing what the service worker does with a notification's: `ack` acknowledges, `read`
 * marks read, `open` opens the button's URL (else the event's) in a new tab and marks read.
 */
function actionButtons(event, li) {
  if (!event.actions?.length) return []
  const box = document.createElement('div')
  box.className = 'item-actions'
  for (const action of event.actions) {
    const button = document.createElement('button')
    button.type = 'button'
    button.textContent = action.title
    button.dataset.action = action.action
    button.disabled = action.action === 'ack' && Boolean(event.ackedAt)
    button.addEventListener('click', () => {
      // Opened at once, while the click still allows a new tab; the read follows.
      if (action.action === 'open') {
        const target = safeUrl(action.url ?? event.url)
        if (target) window.open(target, '_blank', 'noopener')
      }
      void safely($('inbox-note'), async () => {
        if (action.action === 'ack') {
          await client.ack(event.id)
          markAckedInList([event.id])
          return
        }
        await client.read(event.id)
        li.classList.remove('unread')
        await refreshBadge()
      })
    })
    box.append(button)
  }
  return [box]
}

function render(event, { prepend = true } = {}) {
  if (document.querySelector(`[data-id="${CSS.escape(event.id)}"]`)) return
  $('empty').hidden = true
  const li = document.createElement('li')
  li.className = `item${event.readAt ? '' : ' unread'}${event.ackedAt ? ' acked' : ''}`
  li.dataset.id = event.id
  const title = document.createElement('span')
  title.className = 'title'
  title.append(...picture(event.icon, 'icon'), event.title)
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
  li.append(title, read, body, ...picture(event.image, 'image'), ...actionButtons(event, li), meta)
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
  // No `topics`: the stream follows the user's topic subscriptions (the Topics card), and their changes, live.
  client = createHeraldClient({ getToken: mintToken })
  client.onStatus(setStatus)
  client.onNotification(async (event) => {
    render(event)
    await refreshBadge()
  })
  client.onReceipt(async (receipt) => {
    if (receipt.ids) markReadInList(receipt.state === 'read' ? receipt.ids : [])
    if (receipt.ids) markAckedInList(receipt.ids) // read implies acked
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
  $('topics').hidden = false
  await showTopics()
  $('who').textContent = `${user.sub} @ ${user.tenant}`
  const page = await client.history({ limit: 50 })
  for (const e of page.events) render(e, { prepend: false })
  client.start()
  await refreshBadge()
}

/** The Topics card: what the user follows, each with an Unfollow button. */
async function showTopics() {
  const items = (await client.topics()).map(({ topic, addedBy }) => {
    const li = document.createElement('li')
    const name = document.createElement('span')
    name.textContent = addedBy === 'admin' ? `${topic} (added by an admin)` : topic
    const unfollow = document.createElement('button')
    unfollow.type = 'button'
    unfollow.textContent = 'Unfollow'
    unfollow.addEventListener('click', () =>
      safely($('topics-note'), async () => {
        await client.unfollow(topic)
        await showTopics()
      }),
    )
    li.append(name, unfollow)
    return li
  })
  $('topic-list').replaceChildren(...items)
  $('topics-note').textContent = items.length ? '' : 'You follow no topics yet.'
  $('topics-note').classList.remove('error')
}

async function follow(form) {
  await client.follow(form.topic.value.trim())
  form.topic.value = ''
  await showTopics()
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
  // "Send later": the browser's local date and time, sent as an instant (the service publishes it then).
  const later = form.deliverAt.value ? new Date(form.deliverAt.value) : undefined
  if (later && Number.isNaN(later.getTime())) throw new Error('"Send later" is not a date and time')
  const result = $('publish-result')
  result.classList.remove('error')
  result.textContent = later ? 'Scheduling…' : 'Publishing…'
  const res = await fetch('/v1/events', {
    method: 'POST',
    headers: { authorization: `Bearer ${await mintToken()}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      type: 'demo.message',
      to,
      title: form.title.value,
      body: form.body.value || undefined,
      priority: form.priority.value,
      deliverAt: later?.toISOString(),
    }),
  })
  const answer = await res.json()
  if (!res.ok) throw new Error(`refused: ${answer.detail}`)
  result.textContent = answer.scheduledId
    ? `Scheduled #${answer.scheduledId} for ${new Date(answer.deliverAt).toLocaleString()}`
    : `Published #${answer.id}`
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
  $('follow-form').addEventListener('submit', (e) => {
    e.preventDefault()
    void safely($('topics-note'), () => follow(e.target))
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
