/**
 * herald browser client: one ES module, no dependencies. Types in client.d.ts.
 *
 *   import { createHeraldClient } from 'https://notify.example.com/client.js'
 *   const herald = createHeraldClient({ baseUrl: 'https://notify.example.com', getToken: () => myBackend.heraldToken() })
 *   herald.onNotification((n) => showInInbox(n))
 *   herald.onUpdate((n) => replaceInInbox(n))       // an event was edited: its new version (same id)
 *   herald.onDelete(({ id }) => removeFromInbox(id)) // an event was recalled
 *   herald.onNudge((n) => pointOut(n))               // its publisher reminds this user of an unread event
 *   herald.onRollCall(({ ids }) => refreshRollCall(ids)) // to a publisher: a recipient acked or read
 *   herald.onLive('upload.progress', (e) => bar.value = e.data.percent) // live-only updates ('*': all types)
 *   herald.start()
 *
 * It streams with EventSource, remembers the last event id across reloads (so a reload resumes rather than
 * losing what arrived meanwhile), drops duplicates, refetches history on `reset`, falls back to polling
 * when streaming keeps failing (and returns to streaming when it can), and asks for a fresh token when the
 * old one expired. A stream the service closed for being one too many of this user's (MAX_CONNECTIONS_PER_USER,
 * the `evicted` event) is not reopened: the status becomes 'evicted' and onEvicted listeners are told; start()
 * opens it again (and may evict the user's oldest stream in turn).
 *
 * The stream opens with a single-use ticket (POST /v1/stream/tickets), so the JWT stays out of URLs, which
 * proxies and browser history keep. The browser's own EventSource reconnection reuses the URL, and so the used
 * ticket: this client closes a failed stream and reopens it itself, with a new ticket.
 *
 * The tabs of one origin that follow the same user and topics of the same service share one stream: a browser
 * opens at most 6 connections per host over HTTP/1.1, and a stream per tab soon leaves none for the pages. The
 * tab holding a Web Lock (the leader) streams and passes on what it receives over a BroadcastChannel of the
 * same name; when it closes or stops, a waiting tab gets the lock and resumes from the last id it received.
 * Where either API is missing, or with `shareAcrossTabs: false`, each tab streams on its own.
 */

/** Consecutive stream failures (no `open` in between) before switching to polling. */
const FAILURES_BEFORE_POLLING = 3
/** While polling, try the stream again this often. */
const STREAM_RETRY_WHILE_POLLING_MS = 30_000
/** A token this close to expiry is replaced before opening a stream with it. */
const TOKEN_MARGIN_S = 30
/** Frames (events, edits, recalls) each tab keeps, to pass on to a tab that joins what it missed as it joined. */
const RECENT_EVENTS = 100

export function createHeraldClient(options) {
  const baseUrl = (options.baseUrl ?? '').replace(/\/$/, '')
  const getToken = options.getToken
  const topics = options.topics ?? []
  const pollIntervalMs = options.pollIntervalMs ?? 5_000
  const failuresBeforePolling = options.failuresBeforePolling ?? FAILURES_BEFORE_POLLING
  const storage = options.storage ?? globalThis.localStorage
  const streamAuth = options.streamAuth ?? 'ticket'
  /**
   * The tenant REST calls act in (X-Herald-Tenant), one the token's `tenants` claim covers; undefined: the token's
   * `tenant`. The stream carries every tenant the token covers whatever this is.
   */
  let tenant = options.tenant
  const shareAcrossTabs =
    (options.shareAcrossTabs ?? true) && typeof BroadcastChannel === 'function' && !!globalThis.navigator?.locks
  /** This client among the tabs' (a page may have several clients). */
  const tabId = Math.random().toString(36).slice(2)
  const listeners = {
    notification: new Set(),
    update: new Set(),
    delete: new Set(),
    receipt: new Set(),
    status: new Set(),
    reset: new Set(),
    evicted: new Set(),
    nudge: new Set(),
    'roll-call': new Set(),
  }

  let token
  let source
  let status = 'stopped'
  let failures = 0
  let pollTimer
  let streamRetryTimer
  let reopenTimer
  let running = false
  let lastId = 0
  /** True once we know where this user's stream should resume (a remembered id, or the newest of history). */
  let resumeKnown = false
  let storageKey
  /** Counts openStream() calls: one that awaited its credential while a newer one started gives way. */
  let attempts = 0
  /** The last frames delivered, oldest first (RECENT_EVENTS), each `{ kind, id, data }` (see take). */
  let recent = []
  /**
   * While sharing the stream with other tabs: `{ channel, abort, release, leading, joining }`. `leading`: this
   * tab holds the lock and streams. `joining`: events received before the leader's welcome, else null.
   */
  let tabs

  const emit = (kind, value) => {
    for (const fn of listeners[kind]) {
      try {
        fn(value)
      } catch (err) {
        console.error('herald listener failed', err)
      }
    }
  }
  /** The leader passes on what its stream does; the other tabs only listen. */
  const tellTabs = (message) => {
    if (tabs?.leading) tabs.channel.postMessage({ ...message, from: tabId })
  }
  const following = () => tabs !== undefined && !tabs.leading
  const setStatus = (next) => {
    if (next === status) return
    status = next
    tellTabs({ kind: 'status', status: next })
    emit('status', next)
  }
  const on = (kind) => (fn) => {
    listeners[kind].add(fn)
    return () => listeners[kind].delete(fn)
  }
  /** onLive listeners by event type ('*': every type). */
  const liveListeners = new Map()
  const emitLive = (event) => {
    for (const type of [event.type, '*']) {
      for (const fn of liveListeners.get(type) ?? []) {
        try {
          fn(event)
        } catch (err) {
          console.error('herald listener failed', err)
        }
      }
    }
  }

  async function freshToken() {
    if (!token || expiresWithin(token, TOKEN_MARGIN_S)) {
      token = await getToken()
      const claims = decodeClaims(token)
      const key = `herald:lastEventId:${claims.tenant}:${claims.sub}`
      if (key !== storageKey) {
        storageKey = key
        const stored = storage?.getItem(storageKey)
        lastId = Number(stored ?? 0) || 0
        resumeKnown = stored !== null && stored !== undefined
      }
    }
    return token
  }

  /**
   * A REST call, in `init.tenant`, else the chosen tenant (`tenant`), or with `inTokenTenant` in the token's own: what keeps the stream
   * going (its ticket, polling, history after a reset, the device's push subscription) follows the token, whose
   * topics are its tenant's and whose stream resumes by one cursor.
   */
  async function api(path, init = {}) {
    const res = await fetch(`${baseUrl}${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${await freshToken()}`,
        ...(init.body ? { 'content-type': 'application/json' } : {}),
        ...((init.tenant ?? tenant) && !init.inTokenTenant ? { 'x-herald-tenant': init.tenant ?? tenant } : {}),
        ...init.headers,
      },
    })
    if (res.status === 401 && !init.retried) {
      token = undefined // expired or revoked: one retry with a new token
      return api(path, { ...init, retried: true })
    }
    if (!res.ok) {
      const problem = await res.json().catch(() => ({}))
      const retryAfter = retryAfterSeconds(res.headers.get('retry-after'))
      throw Object.assign(new Error(problem.detail ?? `HTTP ${res.status}`), {
        status: res.status,
        problem,
        ...(retryAfter === undefined ? {} : { retryAfter }),
      })
    }
    return res.status === 204 ? undefined : res.json()
  }

  /**
   * Hands one frame of the log to its listeners unless it was seen already, and remembers its id (the stream's
   * `id:` line) for the next reload: `notification` (an event: its id is the event's), `update` (an edited
   * event, with the event's own id) or `delete` (`{ id }` of a recalled event); the last two have ids of their own.
   */
  function take(kind, logId, data) {
    const id = Number(logId)
    if (!(id > lastId)) return
    lastId = id
    resumeKnown = true
    storage?.setItem(storageKey, String(id))
    const frame = { kind, id: String(id), data }
    recent.push(frame)
    if (recent.length > RECENT_EVENTS) recent.shift()
    if (kind === 'notification') tellTabs({ kind: 'notification', event: data })
    else tellTabs({ kind: 'change', frame })
    if (kind === 'delete') void closeShownNotification(data.id)
    emit(kind, data)
  }

  /** Hands one event to onNotification listeners unless it was seen already (history, polling, the stream). */
  const deliver = (event) => take('notification', event.id, event)

  /** A frame another tab passed on (an event, or `{ kind, id, data }`), as if this tab had received it. */
  const takeFrame = (frame) => (frame.kind ? take(frame.kind, frame.id, frame.data) : deliver(frame))

  /**
   * A recalled event's notification, where this page can see it (its service worker registration's): closed.
   * The service worker closes it too when the recall's push arrives (sw.js); this covers a page that is open.
   */
  async function closeShownNotification(id) {
    try {
      const registration = await globalThis.navigator?.serviceWorker?.getRegistration()
      for (const n of (await registration?.getNotifications()) ?? []) if (n.data?.id === id) n.close()
    } catch {
      // No service worker here, or notifications are not allowed: nothing is shown.
    }
  }

  function receipt(value) {
    tellTabs({ kind: 'receipt', receipt: value })
    emit('receipt', value)
  }

  /**
   * A frame about an event that is no new event (no `id:` line, nothing to resume from), told to every tab as it
   * comes: `nudge` (the event, whose publisher reminds this unread user of it) or `roll-call` (to a publisher: a
   * recipient acked or read some of their events).
   */
  function notice(kind, value) {
    tellTabs({ kind: 'notice', notice: kind, value })
    emit(kind, value)
  }

  /**
   * A live-only event (`event: live`, no id): a dashboard's update, not a notification. Told to every tab as it
   * comes; never remembered, so nothing of it comes back after a reconnect (listeners re-read their state then).
   */
  function live(value) {
    tellTabs({ kind: 'live', value })
    emitLive(value)
  }

  /** What the stream may put in its URL: a ticket (default) or the JWT itself. */
  async function streamCredential() {
    if (streamAuth === 'access_token') return ['access_token', await freshToken()]
    const { ticket } = await api('/v1/stream/tickets', { method: 'POST', inTokenTenant: true })
    return ['ticket', ticket]
  }

  async function openStream() {
    clearTimeout(reopenTimer)
    if (!running || following()) return
    source?.close()
    source = undefined
    const attempt = ++attempts
    if (status !== 'polling' && status !== 'reconnecting') setStatus('connecting')
    let credential
    try {
      credential = await streamCredential()
    } catch (err) {
      if (!running || attempt !== attempts) return
      console.warn('herald: no credential for the stream', err)
      return streamFailed()
    }
    if (!running || attempt !== attempts) return
    const url = new URL(`${baseUrl}/v1/stream`, location.href)
    url.searchParams.set(...credential)
    if (resumeKnown) url.searchParams.set('lastEventId', String(lastId))
    if (topics.length) url.searchParams.set('topics', topics.join(','))
    const es = new EventSource(url)
    source = es
    es.addEventListener('open', () => {
      failures = 0
      stopPolling()
      setStatus('live')
    })
    es.addEventListener('notification', (e) => deliver(JSON.parse(e.data)))
    // An edit or a recall of an event: a frame of its own, with an id of its own (the log's).
    es.addEventListener('update', (e) => take('update', e.lastEventId, JSON.parse(e.data)))
    es.addEventListener('delete', (e) => take('delete', e.lastEventId, JSON.parse(e.data)))
    es.addEventListener('receipt', (e) => receipt(JSON.parse(e.data)))
    es.addEventListener('nudge', (e) => notice('nudge', JSON.parse(e.data)))
    es.addEventListener('roll-call', (e) => notice('roll-call', JSON.parse(e.data)))
    es.addEventListener('live', (e) => live(JSON.parse(e.data)))
    es.addEventListener('reset', () => void refetchAfterReset())
    // Its `id: evicted` is EventSource's business (it would come back with it and be told 204): the id this
    // client resumes from stays the last notification's.
    es.addEventListener('evicted', (e) => {
      if (source === es) evicted(JSON.parse(e.data))
    })
    es.addEventListener('error', () => {
      if (source !== es) return
      if (credential[0] === 'ticket') {
        // The browser would reconnect with the same URL, and so the used ticket: reopen with a new one.
        streamFailed()
        return
      }
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (401 after token expiry, 403, a proxy's error page): reopen with a fresh token.
        token = undefined
        streamFailed()
        return
      }
      // CONNECTING: the browser retries by itself, resuming with Last-Event-ID.
      failures++
      if (failures >= failuresBeforePolling) startPolling()
      else setStatus('reconnecting')
    })
  }

  /**
   * Stops for good (until start()): reconnecting would only evict another stream of this user. Every tab that
   * shared the stream stops too (one taking over would evict another stream in turn).
   */
  function evicted(info) {
    tellTabs({ kind: 'evicted', info })
    leaveTabs()
    running = false
    source?.close()
    source = undefined
    stopPolling()
    clearTimeout(reopenTimer)
    setStatus('evicted')
    emit('evicted', info)
  }

  function streamFailed() {
    failures++
    source?.close()
    source = undefined
    if (failures >= failuresBeforePolling) return startPolling()
    setStatus('reconnecting')
    reopenTimer = setTimeout(openStream, Math.min(1000 * 2 ** failures, 30_000))
  }

  /** Events between our last id and the oldest kept one are gone: start over from what the server keeps. */
  function forgetAfterReset() {
    lastId = 0
    resumeKnown = true
    recent = []
    tellTabs({ kind: 'reset' })
    emit('reset', undefined)
  }

  async function refetchAfterReset() {
    forgetAfterReset()
    try {
      const page = await api('/v1/events?limit=50', { inTokenTenant: true })
      for (const e of page.events.reverse()) deliver(e)
    } catch (err) {
      console.warn('herald: history after reset failed', err)
    }
  }

  function startPolling() {
    source?.close()
    source = undefined
    setStatus('polling')
    clearTimeout(pollTimer)
    const poll = async () => {
      if (!running || status !== 'polling' || following()) return
      try {
        const page = await api(`/v1/events?after=${lastId}&limit=500`, { inTokenTenant: true })
        for (const e of page.events) deliver(e)
      } catch (err) {
        console.warn('herald: poll failed', err)
      }
      if (running && status === 'polling') pollTimer = setTimeout(poll, pollIntervalMs)
    }
    void poll()
    clearInterval(streamRetryTimer)
    streamRetryTimer = setInterval(() => {
      // Probe the stream again; its `open` ends polling.
      if (running && status === 'polling') void openStream()
    }, options.streamRetryMs ?? STREAM_RETRY_WHILE_POLLING_MS)
  }

  /**
   * Joins this origin's other tabs of the same service, user and topics (the token's claims name them): waits
   * for their lock, following the leader's channel meanwhile. The lock is held for as long as this tab leads.
   */
  async function joinTabs() {
    clearTimeout(reopenTimer)
    setStatus('connecting')
    try {
      await freshToken()
    } catch (err) {
      console.warn('herald: getToken failed', err)
      if (running) reopenTimer = setTimeout(joinTabs, 5_000)
      return
    }
    if (!running || tabs) return
    const { tenant, sub } = decodeClaims(token)
    const service = new URL(`${baseUrl}/`, location.href).href
    const name = `herald:stream:${JSON.stringify([service, tenant, sub, [...topics].sort()])}`
    const session = { channel: new BroadcastChannel(name), abort: new AbortController(), leading: false, joining: [] }
    tabs = session
    session.channel.onmessage = (e) => fromTab(e.data)
    sayHello()
    navigator.locks
      .request(name, { signal: session.abort.signal }, () => {
        if (tabs !== session) return undefined // stopped meanwhile: let the next tab have it
        return new Promise((resolve) => {
          session.release = resolve
          lead()
        })
      })
      .catch(() => {}) // stop() aborted the wait
  }

  /** Asks the leader for what it passed on just before this tab listened (answered with `welcome`). */
  function sayHello() {
    tabs.channel.postMessage({ kind: 'hello', from: tabId, after: resumeKnown ? lastId : null })
  }

  /** This tab got the lock: it streams for all, resuming from the last id it received. */
  function lead() {
    tabs.leading = true
    catchUp([])
    failures = 0
    if (status === 'polling') return startPolling()
    if (status !== 'connecting') setStatus('reconnecting')
    void openStream()
  }

  /** Delivers, in id order, what arrived while joining and what the leader says came just before. */
  function catchUp(frames) {
    const missed = [...frames, ...(tabs.joining ?? [])].sort((a, b) => Number(a.id) - Number(b.id))
    tabs.joining = null
    for (const f of missed) takeFrame(f)
  }

  /** Tells a tab that joins the status, and the frames it may have missed as it joined (it drops those it has). */
  function welcome(hello) {
    const frames = hello.after === null ? [] : recent.filter((f) => Number(f.id) > hello.after)
    tabs.channel.postMessage({ kind: 'welcome', from: tabId, to: hello.from, status, events: frames })
  }

  /** What the other tabs say: the leader answers newcomers, the others do what the leader's stream did. */
  function fromTab(message) {
    if (message.kind === 'hello') {
      if (tabs.leading) welcome(message)
      return
    }
    // Even in a tab that got the lock before it heard the evicted leader: taking over would evict another stream.
    if (message.kind === 'evicted') return evicted(message.info)
    // Else a leader hears only the one before it, which just left: its stream resumes from what this tab saw.
    if (tabs.leading) return
    switch (message.kind) {
      case 'welcome':
        if (message.to !== tabId || !tabs.joining) return
        catchUp(message.events)
        setStatus(message.status)
        return
      case 'notification':
        if (tabs.joining) tabs.joining.push(message.event)
        else deliver(message.event)
        return
      case 'change':
        if (tabs.joining) tabs.joining.push(message.frame)
        else takeFrame(message.frame)
        return
      case 'status':
        setStatus(message.status)
        // A new leader: the one asked before may have left without answering.
        if (tabs.joining) sayHello()
        return
      case 'receipt':
        return emit('receipt', message.receipt)
      case 'notice':
        if (message.notice === 'nudge' || message.notice === 'roll-call') emit(message.notice, message.value)
        return
      case 'live':
        return emitLive(message.value)
      case 'reset':
        return forgetAfterReset()
    }
  }

  /** Stops leading (the lock goes to a waiting tab) or waiting to. */
  function leaveTabs() {
    if (!tabs) return
    tabs.abort.abort()
    tabs.release?.()
    tabs.channel.close()
    tabs = undefined
  }

  /** Registers the subscription with the service and hands the service worker its renew token. */
  async function registerDevice(registration, subscription) {
    const { id, renewToken } = await api('/v1/push/subscriptions', {
      inTokenTenant: true,
      method: 'POST',
      body: JSON.stringify(subscription.toJSON()),
    })
    registration.active?.postMessage({ type: 'herald:renew-token', token: renewToken })
    storage?.setItem('herald:pushSubscriptionId', id)
    return id
  }

  function stopPolling() {
    clearTimeout(pollTimer)
    clearInterval(streamRetryTimer)
  }

  return {
    /** Opens the stream (resuming from the remembered id), or follows the tab that has it open. */
    start() {
      if (running) return
      running = true
      failures = 0
      void (shareAcrossTabs ? joinTabs() : openStream())
      void this.refreshPush().catch(() => {})
    },
    /** Closes the stream (another tab takes it over) or stops following it, and stops polling. */
    stop() {
      leaveTabs()
      running = false
      source?.close()
      source = undefined
      stopPolling()
      clearTimeout(reopenTimer)
      setStatus('stopped')
    },
    get status() {
      return status
    },
    get lastEventId() {
      return lastId ? String(lastId) : undefined
    },
    /** The tenant REST calls act in (X-Herald-Tenant); undefined: the token's `tenant`. */
    get tenant() {
      return tenant
    },
    /**
     * Makes REST calls (history, unread count, ack, read, publish...) act in `next`, a tenant the token's `tenants`
     * claim covers (a director of several schools); undefined: the token's `tenant`. The stream is not reopened:
     * it carries all of them, each event with its `tenant`.
     */
    setTenant(next) {
      tenant = next || undefined
    },
    onNotification: on('notification'),
    onUpdate: on('update'),
    onDelete: on('delete'),
    onReceipt: on('receipt'),
    onStatus: on('status'),
    onReset: on('reset'),
    onEvicted: on('evicted'),
    /** The publisher of an event this user has not read reminds them of it (the event, as it now stands). */
    onNudge: on('nudge'),
    /** To a publisher: a recipient acked or read some of their events (`{ ids, userId, state }`). */
    onRollCall: on('roll-call'),
    /**
     * Live-only events of `type` ('*': of every type), as they come: dashboard updates that are not stored, not
     * replayed after a reconnect and never in the inbox (`{ type, tenant, title, body, data, priority, ..., at }`).
     * Returns a function that stops listening.
     */
    onLive(type, fn) {
      let fns = liveListeners.get(type)
      if (!fns) liveListeners.set(type, (fns = new Set()))
      fns.add(fn)
      return () => {
        fns.delete(fn)
        if (!fns.size && liveListeners.get(type) === fns) liveListeners.delete(type)
      }
    },
    // Each takes `{ tenant }` for an event of another tenant than setTenant's (an event's own `tenant`).
    ack: (id, { tenant } = {}) => api(`/v1/events/${encodeURIComponent(id)}/ack`, { method: 'POST', tenant }),
    /** Edits an event this user published (an admin: any of the tenant's); resolves to its new version. */
    edit: (id, changes, { tenant } = {}) =>
      api(`/v1/events/${encodeURIComponent(id)}`, { method: 'PATCH', body: JSON.stringify(changes), tenant }),
    /** Recalls an event this user published (an admin: any of the tenant's). */
    recall: (id, { tenant } = {}) => api(`/v1/events/${encodeURIComponent(id)}`, { method: 'DELETE', tenant }),
    read: (id, { tenant } = {}) => api(`/v1/events/${encodeURIComponent(id)}/read`, { method: 'POST', tenant }),
    /**
     * The roll-call of an event this user published (an admin: any of the tenant's): a page of its recipients in
     * user id order, what became of it for each, and the totals: `{ recipients, totals, next }`; pass `next` as
     * `cursor` for the following page.
     */
    recipients: (id, { state = 'all', cursor, limit = 100 } = {}) => {
      const q = new URLSearchParams({ state, limit: String(limit) })
      if (cursor) q.set('cursor', cursor)
      return api(`/v1/events/${encodeURIComponent(id)}/recipients?${q}`)
    },
    /**
     * Reminds the recipients who have not read an event this user published: `{ nudged, pushes }`. Too soon after
     * the last reminder rejects with status 429 and `retryAfter` (seconds).
     */
    nudge: (id) => api(`/v1/events/${encodeURIComponent(id)}/nudge`, { method: 'POST' }),
    /** Marks every event up to `upTo` (default: the newest id seen, of an event, an edit or a recall) read. */
    readAll: (upTo) =>
      api('/v1/events/read', { method: 'POST', body: JSON.stringify({ upTo: String(upTo ?? lastId) }) }),
    unreadCount: async () => (await api('/v1/events/unread-count')).unread,
    /** The topics this user follows; a stream opened without `topics` follows them, live. */
    topics: async () => (await api('/v1/me/topics')).topics,
    follow: (topic) => api(`/v1/me/topics/${encodeURIComponent(topic)}`, { method: 'PUT' }),
    unfollow: (topic) => api(`/v1/me/topics/${encodeURIComponent(topic)}`, { method: 'DELETE' }),
    /** This user's notification preferences (what the tenant's defaults do not decide); see client.d.ts. */
    preferences: () => api('/v1/me/preferences'),
    /** Replaces this user's preferences; resolves with them as stored. A bad field rejects with `problem.errors`. */
    setPreferences: (preferences) =>
      api('/v1/me/preferences', { method: 'PUT', body: JSON.stringify(preferences ?? {}) }),
    /**
     * History, newest first: `{ events, next }`; pass `next` as `before` for the following page. The first
     * page also sets where the stream starts when nothing was remembered: right after what it returned, so
     * an event published between loading history and opening the stream is not lost.
     */
    history: async ({ before, limit = 50, unread = false } = {}) => {
      const q = new URLSearchParams({ limit: String(limit) })
      if (before) q.set('before', before)
      if (unread) q.set('unread', 'true')
      const page = await api(`/v1/events?${q}`)
      // (Only a page of the token's own tenant: another's says nothing of where the stream's other tenants are.)
      if (!before && !unread && !resumeKnown && !tenant) {
        lastId = Math.max(lastId, ...page.events.map((e) => Number(e.id)))
        resumeKnown = true
        storage?.setItem(storageKey, String(lastId))
      }
      return page
    },

    /** Registers the service worker, subscribes this browser and registers it with the service. */
    async enablePush({ serviceWorkerUrl = '/sw.js' } = {}) {
      if (!('serviceWorker' in navigator) || !('PushManager' in window)) throw new Error('Push is not supported here')
      if ((await Notification.requestPermission()) !== 'granted') throw new Error('Notifications are not allowed')
      const swUrl = new URL(serviceWorkerUrl, location.href)
      if (baseUrl && new URL(baseUrl, location.href).origin !== location.origin) swUrl.searchParams.set('api', baseUrl)
      await navigator.serviceWorker.register(swUrl)
      const registration = await navigator.serviceWorker.ready
      const { publicKey } = await (await fetch(`${baseUrl}/v1/push/vapid-public-key`)).json()
      const subscription =
        (await registration.pushManager.getSubscription()) ??
        (await registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: base64urlBytes(publicKey),
        }))
      return { id: await registerDevice(registration, subscription) }
    },

    /**
     * Registers this browser's push subscription again if push was enabled here before: the service worker's
     * renew token (which expires) is replaced, and the device follows the user's current token. A no-op
     * otherwise. start() calls it.
     */
    async refreshPush() {
      if (!storage?.getItem('herald:pushSubscriptionId') || !('serviceWorker' in navigator)) return false
      if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return false
      const registration = await navigator.serviceWorker.getRegistration()
      const subscription = await registration?.pushManager.getSubscription()
      if (!subscription) return false
      await registerDevice(registration, subscription)
      return true
    },

    /** Unsubscribes this browser and forgets it on the service. */
    async disablePush() {
      const registration = await navigator.serviceWorker?.getRegistration()
      const subscription = await registration?.pushManager.getSubscription()
      await subscription?.unsubscribe()
      const id = storage?.getItem('herald:pushSubscriptionId')
      if (id) await api(`/v1/push/subscriptions/${id}`, { method: 'DELETE', inTokenTenant: true }).catch(() => {})
      storage?.removeItem('herald:pushSubscriptionId')
    },
  }
}

/** Retry-After in seconds (it may be a number of seconds or an HTTP date); undefined without a usable one. */
function retryAfterSeconds(value) {
  if (value === null || value.trim() === '') return undefined
  const seconds = Number(value)
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds))
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000))
}

function decodeClaims(jwt) {
  try {
    const part = jwt.split('.')[1]
    return JSON.parse(new TextDecoder().decode(base64urlBytes(part)))
  } catch {
    return {}
  }
}

function expiresWithin(jwt, seconds) {
  const { exp } = decodeClaims(jwt)
  return typeof exp === 'number' && exp - seconds <= Date.now() / 1000
}

function base64urlBytes(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/')
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
  return Uint8Array.from(raw, (c) => c.charCodeAt(0))
}
