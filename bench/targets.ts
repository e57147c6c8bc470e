// The servers a scenario measures in the same way: the service, the raw-Node reference, nginx + Nchan, and the
// stack's floor (bench/stack-floor-server.ts: the service's libraries with one stream route and one publish route).
// Each says how a stream subscribes to a tenant's broadcasts and how a broadcast is published to it.
import { type NchanWorkers, nchanWorkersLabel, startNchan } from './nchan.ts'
import type { RunningServer } from './processes.ts'
import { type BenchContext, type Scope, startReference, startService, startStackFloor } from './scenarios/common.ts'

export type TargetKind = 'herald' | 'rawNode' | 'nchan' | 'stackFloor'

/** What a broadcast says: the same for every target. */
export interface BroadcastEvent {
  type: string
  title: string
  body: string
  data: unknown
}

export interface Target {
  kind: TargetKind
  server: RunningServer
  /** Stream path and whether streams send a JWT, for a subscriber of `tenant`'s broadcasts. */
  streamsOf(tenant: string): { path?: string; anonymous?: boolean }
  /** The request that broadcasts `event` to every stream of `tenant`. */
  broadcast(tenant: string, event: BroadcastEvent): { path: string; body: string }
  /** The publish answer that means "accepted". */
  accepted(status: number): boolean
}

const DAY_MS = 24 * 3600 * 1000

/** The service's and the raw-Node reference's publish route: the body users send. */
function restTarget(kind: 'herald' | 'rawNode' | 'stackFloor', server: RunningServer): Target {
  return {
    kind,
    server,
    streamsOf: () => ({}),
    broadcast: (_tenant, e) => ({ path: '/v1/events', body: JSON.stringify({ ...e, to: { tenant: true } }) }),
    accepted: (status) => status === 201,
  }
}

/**
 * Nchan: a channel per tenant; the published body is the event as clients see it (SPEC 3), so the frames
 * carry the same JSON, of the same size, as the service's. Nchan answers 201 with subscribers, 202 without.
 */
function nchanTarget(server: RunningServer): Target {
  let n = 0
  return {
    kind: 'nchan',
    server,
    streamsOf: (tenant) => ({ path: `/sub/${encodeURIComponent(tenant)}`, anonymous: true }),
    broadcast: (tenant, e) => {
      const now = new Date()
      const body = JSON.stringify({
        id: String(++n),
        type: e.type,
        title: e.title,
        body: e.body,
        data: e.data,
        priority: 'normal',
        url: null,
        collapseKey: null,
        actions: null,
        icon: null,
        image: null,
        badge: null,
        actor: 'bench-publisher',
        createdAt: now.toISOString(),
        expiresAt: new Date(now.getTime() + 7 * DAY_MS).toISOString(),
      })
      return { path: `/pub/${encodeURIComponent(tenant)}`, body }
    },
    accepted: (status) => status === 201 || status === 202,
  }
}

export async function startTarget(kind: TargetKind, ctx: BenchContext, scope: Scope): Promise<Target> {
  switch (kind) {
    case 'herald':
      return restTarget(kind, await startService(ctx, scope))
    case 'rawNode':
      return restTarget(kind, await startReference(ctx, scope))
    case 'nchan':
      return nchanTarget(await startNchan(ctx.nchanWorkers, scope))
    case 'stackFloor':
      return restTarget(kind, await startStackFloor(ctx, scope))
  }
}

/** Column titles of the references. */
export const referenceLabel = (kind: TargetKind, nchanWorkers: NchanWorkers) =>
  kind === 'rawNode'
    ? 'raw node'
    : kind === 'nchan'
      ? `nchan (${nchanWorkersLabel(nchanWorkers)})`
      : kind === 'stackFloor'
        ? 'stack floor'
        : 'herald'
