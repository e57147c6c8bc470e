// The demo inbox: sign in as any user (development servers only), watch notifications arrive live (with their
// buttons and pictures), edited and recalled live, mark them read, enable push, publish to try broadcasts, edit
// or recall what you published, see who read it (live) and remind those who have not. Built on client.js like
// any app would be.
import { createHeraldClient } from '/client.js'

const $ = (id) => document.getElementById(id)
const SESSION_KEY = 'herald-demo:user'
/** The events published from this page, per user (the Sent card), newest first, at most SENT_KEPT. */
const sentKey = () => `herald-demo:sent:${actingIn()}:${user.sub}`
const SENT_KEPT = 20
/** Recipients per page of the roll-call ("More" adds as many). */
const ROLL_CALL_PAGE = 20
/** An open roll-call refetches this often: deliveries are recorded (about once a second) but not told. */
const ROLL_CALL_POLL_MS = 10_000
/** Acks and reads are told (`roll-call` frames); a burst of them refetches once. */
const ROLL_CALL_DEBOUNCE_MS = 300
/** How long a reminder's toast stays. */
const TOAST_MS = 10_000
let client
let user

/** Every tenant the user works in: their own first, then those they direct ("Director of" at sign-in). */
const tenantsOf = (u) => [u.tenant, ...(u.directorOf ?? []).filter((t) => t !== u.tenant)]
/** The token covers several tenants: one stream carries them all, and the switcher picks where to act. */
const severalTenants = () => tenantsOf(user).length > 1
/** The tenant the inbox list, the unread count, publishing and marking read act in (the switcher's). */
const actingIn = () => client?.tenant ?? user.tenant
/** A call about `event` goes to its own tenant, whichever one the switcher shows. */
const inItsTenant = (event) => (severalTenants() && event.tenant ? { tenant: event.tenant } : {})

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
          await client.ack(event.id, inItsTenant(event))
          markAckedInList([event.id])
          return
        }
        await client.read(event.id, inItsTenant(event))
        li.classList.remove('unread')
        await refreshBadge()
      })
    })
    box.append(button)
  }
  return [box]
}

const itemOf = (id) => document.querySelector(`[data-id="${CSS.escape(id)}"]`)

function render(event, { prepend = true } = {}) {
  if (itemOf(event.id)) return
  $('empty').hidden = true
  if (prepend) $('list').prepend(item(event))
  else $('list').append(item(event))
}

/** An edit (onUpdate, or the answer to this page's own): the event's item shows its new version, read as it was. */
function applyUpdate(event) {
  const shown = itemOf(event.id)
  if (!shown || Number(shown.dataset.revision) >= event.revision) return
  const unread = shown.classList.contains('unread')
  shown.replaceWith(item({ ...event, readAt: unread ? null : 'read', ackedAt: shown.classList.contains('acked') }))
}

/** A recall (onDelete, or this page's own): the event's item goes. */
function applyDelete({ id }) {
  itemOf(id)?.remove()
  $('empty').hidden = $('list').children.length > 0
}

/** The buttons of an event this user published: edit its title and body in place, or recall it. */
function ownButtons(event) {
  if (event.actor !== user.sub) return []
  const box = document.createElement('div')
  box.className = 'item-own'
  const edit = document.createElement('button')
  edit.type = 'button'
  edit.textContent = 'Edit'
  edit.dataset.own = 'edit'
  const recall = document.createElement('button')
  recall.type = 'button'
  recall.textContent = 'Recall'
  recall.dataset.own = 'recall'
  const who = whoReadItButton(event)
  edit.addEventListener('click', () =>
    box.replaceChildren(editForm(event, () => box.replaceChildren(edit, recall, who))),
  )
  recall.addEventListener('click', () =>
    safely($('inbox-note'), async () => {
      await client.recall(event.id, inItsTenant(event))
      applyDelete(event)
      forgetSent(event.id)
      await refreshBadge()
    }),
  )
  box.append(edit, recall, who)
  return [box]
}

/** The form that edits an event's title and body; `done` puts the buttons back (Cancel). */
function editForm(event, done) {
  const form = document.createElement('form')
  form.className = 'item-edit'
  const field = (label, control) => {
    const wrap = document.createElement('label')
    wrap.append(label, control)
    return wrap
  }
  const title = document.createElement('input')
  title.name = 'title'
  title.required = true
  title.maxLength = 200
  title.value = event.title
  const body = document.createElement('textarea')
  body.name = 'body'
  body.maxLength = 2000
  body.rows = 2
  body.value = event.body ?? ''
  const save = document.createElement('button')
  save.type = 'submit'
  save.textContent = 'Save'
  const cancel = document.createElement('button')
  cancel.type = 'button'
  cancel.textContent = 'Cancel'
  cancel.addEventListener('click', done)
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    void safely($('inbox-note'), async () => {
      applyUpdate(await client.edit(event.id, { title: title.value, body: body.value || null }, inItsTenant(event)))
    })
  })
  form.append(field('Title ', title), field('Body ', body), save, cancel)
  return form
}

/** An event's item in the inbox list. */
function item(event) {
  const li = document.createElement('li')
  li.className = `item${event.readAt ? '' : ' unread'}${event.ackedAt ? ' acked' : ''}`
  li.dataset.id = event.id
  li.dataset.revision = String(event.revision ?? 0)
  const title = document.createElement('span')
  title.className = 'title'
  title.append(...tenantLabel(event, li), ...picture(event.icon, 'icon'), event.title)
  const read = document.createElement('button')
  read.type = 'button'
  read.textContent = 'Mark read'
  read.addEventListener('click', () =>
    safely($('inbox-note'), async () => {
      await client.read(event.id, inItsTenant(event))
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
  const edited = event.revision > 0 ? ' · edited' : ''
  meta.append(
    `#${event.id} · from ${event.actor} · ${new Date(event.createdAt).toLocaleTimeString()}${edited} · `,
    prio,
  )
  li.append(
    title,
    read,
    body,
    ...picture(event.image, 'image'),
    ...actionButtons(event, li),
    meta,
    ...ownButtons(event),
  )
  return li
}

/** For a user of several tenants, the event's tenant, marked when it is not the one the switcher shows. */
function tenantLabel(event, li) {
  if (!severalTenants() || !event.tenant) return []
  li.dataset.tenant = event.tenant
  li.classList.toggle('elsewhere', event.tenant !== actingIn())
  const label = document.createElement('span')
  label.className = 'tenant-label'
  label.textContent = event.tenant
  return [label]
}

/**
 * The switcher: the inbox list shows the chosen tenant's history (and every tenant's events as they stream in),
 * and the unread count, publishing, marking all read, topics, settings and the Sent card act there.
 */
async function switchTenant(tenant) {
  client.setTenant(tenant === user.tenant ? undefined : tenant)
  closeRollCall({ refocus: false })
  const page = await client.history({ limit: 50 })
  $('list').replaceChildren()
  for (const e of page.events) render(e, { prepend: false })
  $('empty').hidden = page.events.length > 0
  showSent()
  await refreshBadge()
  await showTopics()
  await showSettings()
}

function showTenantSwitch() {
  const tenants = tenantsOf(user)
  $('tenant-switch').hidden = tenants.length < 2
  const select = $('tenant-select')
  select.replaceChildren(
    ...tenants.map((t) => {
      const option = document.createElement('option')
      option.value = t
      option.textContent = t
      return option
    }),
  )
  select.value = actingIn()
}

async function signIn(form) {
  user = {
    sub: form.sub.value,
    tenant: form.tenant.value,
    roles: list(form.roles.value),
    topics: list(form.topics.value),
    directorOf: list(form.directorOf.value),
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
  // Edited or recalled by its publisher, here or anywhere: the list follows at once.
  client.onUpdate((event) => applyUpdate(event))
  client.onDelete(async (deletion) => {
    applyDelete(deletion)
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
  // Someone who published an event this user has not read reminds them of it.
  client.onNudge((event) => remind(event))
  // Live-only updates (not notifications): the latest one on a line of its own; an upload's progress as a bar.
  client.onLive('*', showLive)
  // A recipient acked or read one of this user's events: an open roll-call of it follows.
  client.onRollCall((notice) => {
    if (rollCall && notice.ids.includes(rollCall.id)) refreshRollCallSoon()
  })
  $('signin').hidden = true
  $('inbox').hidden = false
  $('publish').hidden = false
  void showEventTypes().catch(() => {})
  $('sent').hidden = false
  showSent()
  $('topics').hidden = false
  $('settings').hidden = false
  await showTopics()
  await showSettings()
  $('who').textContent = severalTenants() ? user.sub : `${user.sub} @ ${user.tenant}`
  showTenantSwitch()
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

/** The user's preferences as last stored (client.preferences()). */
let preferences = { rules: [] }

const ruleText = (rule) => {
  const what = rule.type ? `type ${rule.type}` : `topic ${rule.topic}`
  const says = []
  if (rule.inApp !== undefined) says.push(rule.inApp ? 'shown' : 'hidden from the inbox')
  if (rule.push !== undefined) says.push(rule.push ? 'pushed' : 'not pushed')
  return `${what}: ${says.join(', ')}`
}

/** The Settings card: the user's rules, each with a Remove button; the push switch and quiet hours. */
async function showSettings(stored) {
  preferences = stored ?? (await client.preferences())
  const items = preferences.rules.map((rule, i) => {
    const li = document.createElement('li')
    const text = document.createElement('span')
    text.textContent = ruleText(rule)
    const remove = document.createElement('button')
    remove.type = 'button'
    remove.textContent = 'Remove'
    remove.addEventListener('click', () =>
      safely($('settings-note'), () =>
        savePreferences({ ...settingsOf(preferences), rules: preferences.rules.filter((_, k) => k !== i) }),
      ),
    )
    li.append(text, remove)
    return li
  })
  $('rule-list').replaceChildren(...items)
  const form = $('settings-form')
  form.enabled.value = String(preferences.push?.enabled ?? true)
  form.minPriority.value = preferences.push?.minPriority ?? 'normal'
  form.quietStart.value = preferences.quietHours?.start ?? ''
  form.quietEnd.value = preferences.quietHours?.end ?? ''
  form.timeZone.value = preferences.quietHours?.timeZone ?? Intl.DateTimeFormat().resolvedOptions().timeZone
}

/** Stored preferences as the service takes them back (without `updatedAt`). */
const settingsOf = ({ updatedAt: _, ...settings }) => settings

/**
 * Stores `next` as the user's preferences, then shows them, and the inbox as they now make it: an event hidden by
 * a rule leaves the list and the unread count (and comes back when the rule goes).
 */
async function savePreferences(next) {
  const stored = await client.setPreferences(next)
  await showSettings(stored)
  $('settings-note').textContent = 'Saved.'
  $('settings-note').classList.remove('error')
  const page = await client.history({ limit: 50 })
  $('list').replaceChildren()
  for (const e of page.events) render(e, { prepend: false })
  $('empty').hidden = page.events.length > 0
  await refreshBadge()
}

async function addRule(form) {
  const rule = {
    [form.match.value]: form.pattern.value.trim(),
    inApp: form.inApp.value === 'true',
    push: form.push.value === 'true',
  }
  await savePreferences({ ...settingsOf(preferences), rules: [...preferences.rules, rule] })
  form.pattern.value = ''
}

async function saveSettings(form) {
  const quiet = form.quietStart.value && form.quietEnd.value
  await savePreferences({
    rules: preferences.rules,
    push: { enabled: form.enabled.value === 'true', minPriority: form.minPriority.value },
    // Both times empty: no quiet hours of the user's own (the tenant's apply, if it has some).
    ...(quiet
      ? { quietHours: { start: form.quietStart.value, end: form.quietEnd.value, timeZone: form.timeZone.value.trim() } }
      : {}),
  })
}

async function follow(form) {
  await client.follow(form.topic.value.trim())
  form.topic.value = ''
  await showTopics()
}

/** The latest live-only event: its title (and body), and for `upload.progress` a bar at `data.percent`. */
function showLive(event) {
  $('live').hidden = false
  $('live-text').textContent = event.body ? `${event.title}: ${event.body}` : event.title
  const percent = event.type === 'upload.progress' ? Number(event.data?.percent) : Number.NaN
  const bar = $('live-progress')
  bar.hidden = !Number.isFinite(percent)
  if (!bar.hidden) bar.value = Math.max(0, Math.min(100, percent))
}

/**
 * The tenant's registered event types, as choices of the publish form: with one chosen, the form sends its data
 * and leaves the title, body and priority to the type (what is typed in still wins).
 */
async function showEventTypes() {
  const res = await fetch('/v1/event-types', {
    headers: {
      authorization: `Bearer ${await mintToken()}`,
      ...(client.tenant ? { 'x-herald-tenant': client.tenant } : {}),
    },
  })
  if (!res.ok) return
  const select = $('publish-form').eventType
  select.replaceChildren(select.options[0])
  for (const t of (await res.json()).eventTypes) {
    const option = document.createElement('option')
    option.value = t.type
    option.textContent = t.description ? `${t.type}: ${t.description}` : t.type
    select.append(option)
  }
}

/** A registered type chosen: the type gives the text and priority; none (demo.message): the form does. */
function eventTypeChosen(form) {
  const typed = form.eventType.value !== ''
  form.title.required = !typed
  $('publish-data').hidden = !typed
  if (typed) {
    form.title.value = ''
    form.body.value = ''
    form.priority.value = ''
  } else if (form.priority.value === '') form.priority.value = 'normal'
}

async function publish(form) {
  const target = form.target.value.trim()
  const audience = form.audience.value
  // "Who" may name several users, roles or topics, comma-separated.
  const to =
    audience === 'me'
      ? { users: [user.sub] }
      : audience === 'user'
        ? { users: list(target) }
        : audience === 'role'
          ? { roles: list(target) }
          : audience === 'topic'
            ? { topics: list(target) }
            : { tenant: true }
  // "Send later": the browser's local date and time, sent as an instant (the service publishes it then).
  const later = form.deliverAt.value ? new Date(form.deliverAt.value) : undefined
  if (later && Number.isNaN(later.getTime())) throw new Error('"Send later" is not a date and time')
  let data
  if (form.eventType.value && form.data.value.trim()) {
    try {
      data = JSON.parse(form.data.value)
    } catch {
      throw new Error('"Data" is not JSON')
    }
  }
  const result = $('publish-result')
  result.classList.remove('error')
  const liveOnly = form.live.checked
  result.textContent = later ? 'Scheduling…' : liveOnly ? 'Sending live…' : 'Publishing…'
  const res = await fetch('/v1/events', {
    method: 'POST',
    headers: {
      authorization: `Bearer ${await mintToken()}`,
      'content-type': 'application/json',
      // In the tenant the switcher shows (one the token covers).
      ...(client.tenant ? { 'x-herald-tenant': client.tenant } : {}),
    },
    body: JSON.stringify({
      type: form.eventType.value || 'demo.message',
      to,
      title: form.title.value || undefined,
      body: form.body.value || undefined,
      data,
      priority: form.priority.value || undefined,
      deliverAt: later?.toISOString(),
      ...(liveOnly && { store: false }),
    }),
  })
  const answer = await res.json()
  if (!res.ok) throw new Error(`refused: ${answer.detail}`)
  if (answer.live) {
    result.textContent = 'Sent live to the open streams (not stored)'
    return
  }
  if (answer.scheduledId) {
    result.textContent = `Scheduled #${answer.scheduledId} for ${new Date(answer.deliverAt).toLocaleString()}`
    return
  }
  const sent = {
    id: answer.id,
    title: form.title.value || form.eventType.value,
    to: audience === 'me' ? 'me' : audience === 'tenant' ? 'the whole tenant' : list(target).join(', '),
  }
  rememberSent(sent)
  // What was just published can be taken back, wherever it went: its recipients' inboxes follow live.
  const recall = document.createElement('button')
  recall.type = 'button'
  recall.className = 'link'
  recall.textContent = 'Recall'
  recall.addEventListener('click', () =>
    safely(result, async () => {
      await client.recall(answer.id)
      forgetSent(answer.id)
      result.textContent = `Recalled #${answer.id}`
    }),
  )
  const who = whoReadItButton(sent)
  who.classList.add('link')
  result.replaceChildren(`Published #${answer.id} `, recall, who)
}

// The Sent card: what this user published from this page, each with its roll-call ("Who read it"): the totals,
// the recipients and what became of the event for each (filtered, a page at a time), and "Remind unread".

/** The events published from this page: `{ id, title, to }`, newest first. */
function sentEvents() {
  try {
    return JSON.parse(sessionStorage.getItem(sentKey()) ?? '[]')
  } catch {
    return []
  }
}

function rememberSent(event) {
  const others = sentEvents().filter((e) => e.id !== event.id)
  sessionStorage.setItem(sentKey(), JSON.stringify([event, ...others].slice(0, SENT_KEPT)))
  showSent()
}

/** A recalled event leaves the Sent card (and its roll-call closes). */
function forgetSent(id) {
  sessionStorage.setItem(sentKey(), JSON.stringify(sentEvents().filter((e) => e.id !== id)))
  if (rollCall?.id === id) closeRollCall({ refocus: false })
  showSent()
}

function showSent() {
  const items = sentEvents().map((event) => {
    const li = document.createElement('li')
    li.dataset.event = event.id
    const text = document.createElement('span')
    const to = document.createElement('span')
    to.className = 'muted'
    to.textContent = ` #${event.id}${event.to ? ` · to ${event.to}` : ''}`
    text.append(event.title, to)
    const who = whoReadItButton(event)
    who.setAttribute('aria-controls', 'roll-call')
    who.setAttribute('aria-expanded', String(rollCall?.id === event.id))
    li.append(text, who)
    return li
  })
  $('sent-list').replaceChildren(...items)
  $('sent-empty').hidden = items.length > 0
}

/** The button that opens an event's roll-call (or, on the Sent card's open one, closes it). */
function whoReadItButton(event) {
  const button = document.createElement('button')
  button.type = 'button'
  button.textContent = 'Who read it'
  button.dataset.own = 'roll-call'
  button.addEventListener('click', () => {
    if (rollCall?.id === event.id && button.hasAttribute('aria-expanded')) return closeRollCall()
    openRollCall({ id: event.id, title: event.title, to: event.to })
  })
  return button
}

/**
 * The roll-call on screen: `{ id, title, state, loaded, next, poll, debounce, asked }`. `loaded`: recipients
 * listed (a refresh fetches as many again); `asked` counts fetches, so that an answer overtaken by a newer one
 * (another event, another filter) is dropped.
 */
let rollCall

function openRollCall(event) {
  closeRollCall({ refocus: false })
  if (!sentEvents().some((e) => e.id === event.id)) rememberSent(event)
  rollCall = { id: event.id, title: event.title, state: 'all', loaded: 0, next: null, asked: 0 }
  rollCall.poll = setInterval(() => {
    if (!document.hidden) void loadRollCall()
  }, ROLL_CALL_POLL_MS)
  $('roll-call-event').textContent = `#${event.id} · ${event.title}`
  $('roll-call-list').replaceChildren()
  for (const key of Object.keys(TOTALS)) totalOf(key).textContent = '…'
  $('nudge-note').textContent = ''
  $('nudge-note').classList.remove('error')
  $('roll-call-note').hidden = true
  setFilter('all')
  $('roll-call').hidden = false
  showSent()
  $('roll-call').scrollIntoView({ block: 'nearest' })
  $('roll-call-title').focus({ preventScroll: true })
  void loadRollCall()
}

/** Closes the roll-call; `refocus`: the focus goes back to its button on the Sent card. */
function closeRollCall({ refocus = true } = {}) {
  if (!rollCall) return
  clearInterval(rollCall.poll)
  clearTimeout(rollCall.debounce)
  const id = rollCall.id
  rollCall = undefined
  $('roll-call').hidden = true
  showSent()
  if (refocus) document.querySelector(`#sent-list [data-event="${CSS.escape(id)}"] button`)?.focus()
}

/** Refetches the roll-call shortly: several notices in a row make one request. */
function refreshRollCallSoon() {
  clearTimeout(rollCall.debounce)
  rollCall.debounce = setTimeout(() => void loadRollCall(), ROLL_CALL_DEBOUNCE_MS)
}

const TOTALS = { recipients: 'Recipients', delivered: 'Delivered', pushed: 'Pushed', read: 'Read', unread: 'Unread' }
const totalOf = (key) => document.querySelector(`#roll-call-totals [data-total="${key}"]`)

/** Sets an element's text only when it changes, so that a live region announces changes, not every refresh. */
function setText(element, text) {
  if (element.textContent !== text) element.textContent = text
}

/**
 * Fetches the roll-call: again from the start, as many recipients as are listed (a refresh), or the next page
 * (`more`). The totals and the list follow.
 */
async function loadRollCall({ more = false } = {}) {
  const shown = rollCall
  if (!shown || (more && !shown.next)) return
  const asked = ++shown.asked
  const limit = more ? ROLL_CALL_PAGE : Math.min(1000, Math.max(ROLL_CALL_PAGE, shown.loaded))
  await safely($('roll-call-note'), async () => {
    const page = await client.recipients(shown.id, {
      state: shown.state,
      limit,
      ...(more ? { cursor: shown.next } : {}),
    })
    if (rollCall !== shown || asked !== shown.asked) return // overtaken: another event, filter or refresh
    $('roll-call-note').hidden = true
    for (const key of Object.keys(TOTALS)) setText(totalOf(key), String(page.totals[key]))
    const rows = page.recipients.map(recipientRow)
    if (more) $('roll-call-list').append(...rows)
    else $('roll-call-list').replaceChildren(...rows)
    shown.loaded = $('roll-call-list').children.length
    shown.next = page.next
    $('roll-call-more').hidden = page.next === null
    $('roll-call-empty').hidden = shown.loaded > 0
  })
}

/** What became of the event for one recipient, the furthest it got: read, acked, delivered, pushed, not yet. */
function recipientState(r) {
  if (r.readAt) return ['read', r.readAt]
  if (r.ackedAt) return ['acked', r.ackedAt]
  if (r.deliveredAt) return ['delivered', r.deliveredAt]
  if (r.pushedAt) return ['pushed', r.pushedAt]
  return ['not yet', null]
}

function recipientRow(r) {
  const li = document.createElement('li')
  li.dataset.user = r.userId
  const [state, at] = recipientState(r)
  li.dataset.state = state
  const who = document.createElement('span')
  who.className = 'who'
  who.textContent = r.displayName ?? r.userId
  if (r.displayName) {
    const id = document.createElement('span')
    id.className = 'muted'
    id.textContent = ` ${r.userId}`
    who.append(id)
  }
  const label = document.createElement('span')
  label.className = `state state-${state.replace(' ', '-')}`
  label.textContent = state
  if (at) {
    const time = document.createElement('time')
    time.dateTime = at
    time.textContent = ` ${new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`
    label.append(time)
  }
  li.append(who, label)
  return li
}

/** The filter's buttons: one pressed. */
function setFilter(state) {
  for (const b of document.querySelectorAll('#roll-call-filter button')) {
    b.setAttribute('aria-pressed', String(b.dataset.state === state))
  }
}

function filterRollCall(state) {
  if (!rollCall || rollCall.state === state) return
  rollCall.state = state
  rollCall.loaded = 0
  rollCall.next = null
  setFilter(state)
  void loadRollCall()
}

/** "Remind unread": the answer ("Reminded 3 people"), or how long until the event may be nudged again. */
async function remindUnread() {
  const shown = rollCall
  if (!shown) return
  const note = $('nudge-note')
  const button = $('nudge')
  note.classList.remove('error')
  button.disabled = true
  try {
    const { nudged } = await client.nudge(shown.id)
    note.textContent =
      nudged === 0
        ? 'Everyone has read it: nobody to remind.'
        : `Reminded ${nudged} ${nudged === 1 ? 'person' : 'people'}`
  } catch (err) {
    if (err.status === 429) note.textContent = `You can remind again in ${waitText(err.retryAfter)}`
    else if (err.status === 409) note.textContent = 'It was recalled: there is nothing to remind anyone of.'
    else {
      note.textContent = `Could not do that: ${err instanceof TypeError ? 'the server cannot be reached; try again' : err.message}`
      note.classList.add('error')
    }
  } finally {
    button.disabled = false
  }
  if (rollCall === shown) refreshRollCallSoon()
}

/** A wait in words: "45 s", "9 min". */
function waitText(seconds) {
  if (seconds === undefined) return 'a few minutes'
  return seconds < 60 ? `${seconds} s` : `${Math.ceil(seconds / 60)} min`
}

/** A reminder of an event this user has not read: its item is highlighted, and a toast says so. */
function remind(event) {
  const li = itemOf(event.id)
  if (li) {
    li.classList.remove('nudged')
    void li.offsetWidth // restarts the highlight's animation on a second reminder
    li.classList.add('nudged')
  }
  const toast = document.createElement('div')
  toast.className = 'toast'
  const text = document.createElement('span')
  text.textContent = `Reminder: ${event.title}`
  toast.append(text)
  if (li) {
    const show = document.createElement('button')
    show.type = 'button'
    show.className = 'link'
    show.textContent = 'Show'
    show.addEventListener('click', () => {
      li.scrollIntoView({ block: 'center' })
      toast.remove()
    })
    toast.append(show)
  }
  const dismiss = document.createElement('button')
  dismiss.type = 'button'
  dismiss.className = 'link'
  dismiss.textContent = '×'
  dismiss.setAttribute('aria-label', 'Dismiss the reminder')
  dismiss.addEventListener('click', () => toast.remove())
  toast.append(dismiss)
  $('toasts').append(toast)
  setTimeout(() => toast.remove(), TOAST_MS)
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
  $('publish-form').eventType.addEventListener('change', (e) => eventTypeChosen(e.target.form))
  $('publish-form').addEventListener('submit', (e) => {
    e.preventDefault()
    void safely($('publish-result'), () => publish(e.target))
  })
  $('follow-form').addEventListener('submit', (e) => {
    e.preventDefault()
    void safely($('topics-note'), () => follow(e.target))
  })
  $('rule-form').addEventListener('submit', (e) => {
    e.preventDefault()
    void safely($('settings-note'), () => addRule(e.target))
  })
  $('settings-form').addEventListener('submit', (e) => {
    e.preventDefault()
    void safely($('settings-note'), () => saveSettings(e.target))
  })
  $('read-all').addEventListener('click', () =>
    safely($('inbox-note'), async () => {
      await client.readAll()
      // In the tenant acted in: another's items stay as they are.
      for (const li of document.querySelectorAll('.item.unread:not(.elsewhere)')) li.classList.remove('unread')
      await refreshBadge()
    }),
  )
  $('push').addEventListener('click', () => void togglePush())
  $('tenant-select').addEventListener('change', (e) => void safely($('inbox-note'), () => switchTenant(e.target.value)))
  $('roll-call-close').addEventListener('click', () => closeRollCall())
  $('roll-call-more').addEventListener('click', () => void loadRollCall({ more: true }))
  $('nudge').addEventListener('click', () => void remindUnread())
  for (const b of document.querySelectorAll('#roll-call-filter button')) {
    b.addEventListener('click', () => filterRollCall(b.dataset.state))
  }
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
