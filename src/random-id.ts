import { randomUUID } from 'node:crypto'

/**
 * A random UUID as one flat string. Node builds randomUUID() by joining 20 pieces, and V8 keeps the result as a
 * tree of about ten links (some 300 bytes, against 56 flat) until something flattens it, which for an id that
 * only rides along (a request's, a stream's audit record) is never: each open stream held two such trees.
 */
export const randomId = (): string => Buffer.from(randomUUID(), 'latin1').toString('latin1')
