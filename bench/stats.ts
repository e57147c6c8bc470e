/** Milliseconds on the system-wide monotonic clock: comparable between the processes of one machine. */
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6

export interface Percentiles {
  p50: number
  p95: number
  p99: number
  max: number
}

/** Nearest-rank percentiles, rounded to 0.01 ms. Sorts `values` in place. */
export function percentiles(values: Float64Array): Percentiles | null {
  if (values.length === 0) return null
  values.sort()
  const at = (p: number) => round(values[Math.min(values.length - 1, Math.ceil((p / 100) * values.length) - 1)], 2)
  return { p50: at(50), p95: at(95), p99: at(99), max: round(values[values.length - 1], 2) }
}

export const round = (n: number, digits = 0) => {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/** Ours divided by the reference's, 2 significant decimals; null when either is missing. */
export function ratio(ours: number | null | undefined, reference: number | null | undefined): number | null {
  if (ours == null || reference == null || reference === 0) return null
  return round(ours / reference, 2)
}

/** A growable list of numbers, without boxing each one. */
export class Samples {
  private data = new Float64Array(1024)
  length = 0

  push(v: number) {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2)
      bigger.set(this.data)
      this.data = bigger
    }
    this.data[this.length++] = v
  }

  /** A copy holding exactly the samples (sendable over IPC, sortable). */
  values(): Float64Array {
    return this.data.slice(0, this.length)
  }
}
