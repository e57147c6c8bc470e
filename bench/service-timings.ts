import http from 'node:http'

/** Running totals of the service's own timings of single publishes, from its /metrics. */
export interface PublishTimings {
  /** POST /v1/events answered 201: how many, and their summed time from request read to answer sent. */
  requests: number
  requestSec: number
  /** Publish transactions (herald_publish_duration_seconds): how many, and their summed time. */
  statements: number
  statementSec: number
}

/** What a phase added to the totals, as means in ms: the service's share of a publish's answer. */
export interface PublishSplit {
  /** Request read to answer sent, inside the service. */
  serviceMs: number
  /** Of which the publish transaction (the database's round trips and the commit). */
  statementMs: number
}

const sampleOf = (text: string, line: RegExp) => Number(line.exec(text)?.[1] ?? 0)

/** Reads the totals from the service's /metrics (all workers, aggregated by the primary). */
export async function publishTimings(host: string, port: number): Promise<PublishTimings> {
  const text = await new Promise<string>((resolve, reject) => {
    http
      .get({ host, port, path: '/metrics', agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => (body += d))
        res.on('end', () => resolve(body))
        res.on('error', reject)
      })
      .on('error', reject)
  })
  const request = (part: 'sum' | 'count') =>
    sampleOf(
      text,
      new RegExp(
        `^herald_http_request_duration_seconds_${part}\\{(?=[^}]*method="POST")(?=[^}]*route="/v1/events")(?=[^}]*status="201")[^}]*\\} (\\S+)$`,
        'm',
      ),
    )
  return {
    requests: request('count'),
    requestSec: request('sum'),
    statements: sampleOf(text, /^herald_publish_duration_seconds_count(?:\{\})? (\S+)$/m),
    statementSec: sampleOf(text, /^herald_publish_duration_seconds_sum(?:\{\})? (\S+)$/m),
  }
}

/** The means of what happened between two readings; undefined if no publish was answered between them. */
export function splitOf(before: PublishTimings, after: PublishTimings): PublishSplit | undefined {
  const requests = after.requests - before.requests
  const statements = after.statements - before.statements
  if (requests <= 0 || statements <= 0) return undefined
  const ms = (sec: number, n: number) => Math.round((sec / n) * 1000 * 100) / 100
  return {
    serviceMs: ms(after.requestSec - before.requestSec, requests),
    statementMs: ms(after.statementSec - before.statementSec, statements),
  }
}
