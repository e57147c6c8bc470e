/* herald service worker: shows pushed notifications (with their buttons and pictures), acks them, opens them on
 * click and does what a clicked button names; replaces one whose event was edited, closes one whose event
 * was recalled, and shows one again, alerting, when its publisher reminds an unread recipient (a nudge).
 *
 * Register it from your page (same origin as the page):
 *   navigator.serviceWorker.register('/sw.js')                                  // API on this origin
 *   navigator.serviceWorker.register('/sw.js?api=https://notify.example.com')   // API elsewhere
 * The page's client library (client.js) hands it the renew token from registration, so that after
 * `pushsubscriptionchange` it can re-register without the user's JWT.
 */

const API = new URL(self.location.href).searchParams.get('api') || self.location.origin
const STORE = 'herald'

self.addEventListener('install', () => self.skipWaiting())
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()))

self.addEventListener('push', (event) => {
  event.waitUntil(handlePush(event))
})

async function handlePush(event) {
  let n
  try {
    n = event.data ? event.data.json() : {}
  } catch {
    n = { title: event.data ? event.data.text() : '' }
  }
  if (n.change === 'delete') return recalled(n)
  // An edit: the event's new version replaces its notification (same tag), without alerting again.
  const edited = n.change === 'update'
  // A reminder of an unread event (`nudge: true`, no new event): shown again in place of its notification (same
  // tag), alerting again.
  const nudged = n.nudge === true && !edited
  const title = n.title || 'New notification'
  const actions = Array.isArray(n.actions) ? n.actions.slice(0, maxActions()) : []
  await self.registration.showNotification(title, {
    body: n.body || '',
    tag: tagOf(n),
    // A replaced notification (same tag) should still alert when it is news: another event with that collapseKey,
    // or a reminder.
    renotify: (Boolean(n.collapseKey) || nudged) && !edited,
    silent: edited,
    requireInteraction: n.priority === 'urgent',
    timestamp: Date.parse(n.createdAt) || Date.now(),
    // Pictures on this origin or over https only, like the pages a click opens; browsers that do not show
    // one (Firefox and Safari ignore `image`, desktops `badge`) simply leave it out.
    icon: openableUrl(n.icon) ?? undefined,
    image: openableUrl(n.image) ?? undefined,
    badge: openableUrl(n.badge) ?? undefined,
    // Each button's id is its position and what it does ("0:ack", "1:open"): two `open` buttons stay apart.
    actions: actions.map((a, i) => ({ action: `${i}:${a.action}`, title: String(a.title ?? '') })),
    data: {
      id: n.id,
      url: n.url || '/',
      ackToken: n.ackToken,
      ...(actions.length && { actions: actions.map((a) => ({ action: a.action, url: a.url ?? null })) }),
    },
  })
  // Delivered: tell the service (ack) so `high` events are not pushed again and the publisher sees it.
  if (n.id && n.ackToken && !edited) await report(n.id, 'ack', n.ackToken)
  await tellPages({ type: 'herald:push', id: n.id ?? null, change: n.change ?? null })
}

/** The tag of an event's notification: its collapseKey, else its id. */
const tagOf = (n) => n.collapseKey || (n.id ? `herald-${n.id}` : undefined)

/** The tag of the notification shown in place of a recalled one where one must be shown (see `recalled`). */
const WITHDRAWN_TAG = 'herald-withdrawn'

/**
 * A recall: the event's notification is closed (only if it is that event's: under a collapseKey the tag may show
 * a later event by now). Browsers expect each push to show a notification: Chrome and Edge accept one that shows
 * none while a page of the site is visible, and otherwise may show their own ("This site has been updated in the
 * background"); Firefox and Safari count such pushes against a quota (Safari then ends the subscription). So when
 * no page of the site is visible, a silent "Notification withdrawn" is shown in its place, one at most.
 */
async function recalled(n) {
  for (const shown of await self.registration.getNotifications(n.id ? { tag: tagOf(n) } : undefined)) {
    if (shown.data?.id === n.id) shown.close()
  }
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true })
  if (!windows.some((w) => w.visibilityState === 'visible')) {
    await self.registration.showNotification('Notification withdrawn', {
      body: 'The sender recalled it.',
      tag: WITHDRAWN_TAG,
      silent: true,
      data: { recalled: n.id ?? null },
    })
  }
  await tellPages({ type: 'herald:push', id: n.id ?? null, change: 'delete' })
}

/** How many buttons this browser shows on a notification (2 where it says nothing). */
const maxActions = () => (typeof Notification !== 'undefined' && Notification.maxActions) || 2

/** What each kind of button records about the event: `open` marks it read, as a click on the notification does. */
const RECEIPT_OF = new Map([
  ['ack', 'ack'],
  ['read', 'read'],
  ['open', 'read'],
])

/**
 * A click on the notification opens the event's `url` (focusing a window already showing it) and marks the
 * event read. A click on a button does what the button names, with the event's ackToken: `ack` acknowledges
 * and `read` marks read, neither opening a window; `open` opens the button's `url` (else the event's) and marks
 * read, as a click on the notification does.
 */
self.addEventListener('notificationclick', (event) => {
  event.notification.close()
  // A withdrawn notification's placeholder does nothing.
  if (event.notification.tag === WITHDRAWN_TAG) return
  const { id, url, ackToken, actions } = event.notification.data || {}
  const button = event.action ? actions?.[Number.parseInt(event.action, 10)] : undefined
  event.waitUntil(
    (async () => {
      const what = event.action ? button?.action : 'open'
      // What each does to the event; a button this worker did not make (or a kind it does not know) does nothing.
      const receipt = RECEIPT_OF.get(what)
      if (!receipt) return
      if (what === 'open') await openPage(openableUrl(button?.url || url || '/'))
      if (id && ackToken) await report(id, receipt, ackToken)
    })(),
  )
})

/** Focuses a window already showing `target`, or opens one; nothing when there is no target. */
async function openPage(target) {
  if (!target) return
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true })
  const open = windows.find((w) => w.url === target)
  if (open) await open.focus()
  else await self.clients.openWindow(target)
}

/**
 * The page a click may open, or a picture a notification may show: `url` resolved against this origin, when it
 * stays on it or is https; null otherwise (and for no URL). The service accepts only such URLs; this holds
 * even for a payload that did not come from it.
 */
function openableUrl(url) {
  if (typeof url !== 'string' || url === '') return null
  let target
  try {
    target = new URL(url, self.location.origin)
  } catch {
    return null
  }
  return target.origin === self.location.origin || target.protocol === 'https:' ? target.href : null
}

self.addEventListener('pushsubscriptionchange', (event) => {
  event.waitUntil(
    (async () => {
      const renewToken = await kv('get', 'renewToken')
      if (!renewToken) return
      let subscription = event.newSubscription
      if (!subscription) {
        const key = event.oldSubscription?.options?.applicationServerKey ?? (await vapidKey())
        subscription = await self.registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: key,
        })
      }
      const res = await fetch(`${API}/v1/push/subscriptions/renew`, {
        method: 'POST',
        headers: { authorization: `Bearer ${renewToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(subscription.toJSON()),
      })
      if (res.ok) await kv('set', 'renewToken', (await res.json()).renewToken)
    })(),
  )
})

// The page hands over the renew token it got when it registered this browser's subscription.
self.addEventListener('message', (event) => {
  const m = event.data
  if (m && m.type === 'herald:renew-token') event.waitUntil(kv('set', 'renewToken', m.token))
})

async function report(id, what, ackToken) {
  try {
    await fetch(`${API}/v1/events/${encodeURIComponent(id)}/${what}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ackToken}` },
    })
  } catch {
    // Offline: the page acks when it next syncs; a missed ack only means a possible repeat push.
  }
}

async function tellPages(message) {
  for (const c of await self.clients.matchAll({ type: 'window', includeUncontrolled: true })) c.postMessage(message)
}

async function vapidKey() {
  const res = await fetch(`${API}/v1/push/vapid-public-key`)
  const { publicKey } = await res.json()
  const raw = atob(publicKey.replace(/-/g, '+').replace(/_/g, '/'))
  return Uint8Array.from(raw, (c) => c.charCodeAt(0))
}

/** A tiny key-value store in IndexedDB (the only storage a service worker has). */
function kv(op, key, value) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(STORE, 1)
    open.onupgradeneeded = () => open.result.createObjectStore('kv')
    open.onerror = () => reject(open.error)
    open.onsuccess = () => {
      const tx = open.result.transaction('kv', op === 'get' ? 'readonly' : 'readwrite')
      const req = op === 'get' ? tx.objectStore('kv').get(key) : tx.objectStore('kv').put(value, key)
      req.onsuccess = () => resolve(req.result)
      req.onerror = () => reject(req.error)
    }
  })
}
