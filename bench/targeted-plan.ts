// Who is who in the targeted scenario (7), shared by the scenario (which publishes and counts what it expects)
// and the load-generator processes (which mint each stream's token, pick its topic and know which events are
// addressed to it). Pure functions of the stream's global number: nothing to send but the plan.

/** An event's audience, by number: user g is `${userPrefix}${g}`, role r is `role-${r}`, topic k is `class:${k}`. */
export interface PlannedAudience {
  users?: number[]
  roles?: number[]
  topics?: number[]
  tenant?: boolean
}

export interface TargetedPlan {
  /** Streams (users) in all: stream g is user g. */
  streams: number
  /** Each user has one role: g mod roles. */
  roles: number
  /** Each stream follows one topic: floor(g / roles) mod topics (independent of the role). */
  topics: number
  /** Measured events by number n: each one's audience. */
  events: PlannedAudience[]
}

export const roleName = (r: number) => `role-${r}`
export const topicName = (k: number) => `class:${k}`
export const roleOf = (plan: TargetedPlan, g: number) => g % plan.roles
export const topicOf = (plan: TargetedPlan, g: number) => Math.floor(g / plan.roles) % plan.topics

/** Whether event `n` is addressed to stream `g` (by user, role, topic or tenant). */
export function addressed(plan: TargetedPlan, g: number, n: number): boolean {
  const a = plan.events[n]
  return (
    a.tenant === true ||
    (a.users?.includes(g) ?? false) ||
    (a.roles?.includes(roleOf(plan, g)) ?? false) ||
    (a.topics?.includes(topicOf(plan, g)) ?? false)
  )
}

/** Event n's bitmap row for stream g: 1 where addressed. */
export function addressedTo(plan: TargetedPlan, g: number): Uint8Array {
  const row = new Uint8Array(plan.events.length)
  for (let n = 0; n < plan.events.length; n++) if (addressed(plan, g, n)) row[n] = 1
  return row
}

/** Streams event `n` is addressed to (each stream counted once, however many of its audiences name it). */
export function recipients(plan: TargetedPlan, n: number): number {
  const a = plan.events[n]
  if (a.tenant) return plan.streams
  let count = 0
  for (let g = 0; g < plan.streams; g++) if (addressed(plan, g, n)) count++
  return count
}
