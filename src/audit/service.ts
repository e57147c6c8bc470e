import { type Caller, requireScope } from '../auth.ts'
import type { Database } from '../db/client.ts'
import { type ConnectionQuery, listConnections } from './connections.ts'
import { checkOrder, instantOf } from './period.ts'
import { type StatsQuery, statsOf, statsPeriod } from './stats.ts'

/** The listing's query as the route takes it: `from` and `to` as given. */
export type ConnectionListing = Omit<ConnectionQuery, 'from' | 'to'> & { from?: string; to?: string }

/** What a tenant's admins read of their tenant: its stream connections (the audit) and its statistics. */
export class AuditService {
  constructor(
    private readonly database: Database,
    private readonly presenceTtlS: number,
  ) {}

  /** The caller's tenant's stream connections, newest first (admin). */
  connections(caller: Caller, query: ConnectionListing) {
    requireScope(caller, 'admin', 'Reading the connection audit')
    const from = query.from === undefined ? undefined : instantOf(query.from, 'from')
    const to = query.to === undefined ? undefined : instantOf(query.to, 'to')
    checkOrder(from, to)
    return listConnections(this.database, caller.tenant, { ...query, from, to })
  }

  /** The caller's tenant's statistics per day and type, and who is online now (admin). */
  stats(caller: Caller, query: StatsQuery) {
    requireScope(caller, 'admin', 'Reading statistics')
    return statsOf(this.database, caller.tenant, statsPeriod(query), query.type, this.presenceTtlS)
  }
}
