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

/** Median and range of one figure over rounds. */
export interface Spread {
  median: number | null
  min: number | null
  max: number | null
  samples: number[]
}

/** Median (the upper one of an even count), min and max of `samples`, leaving out the missing ones. */
export function spreadOf(samples: Array<number | null | undefined>): Spread {
  const present = samples.filter((v): v is number => typeof v === 'number' && Number.isFinite(v))
  const sorted = [...present].sort((a, b) => a - b)
  if (sorted.length === 0) return { median: null, min: null, max: null, samples: present }
  return {
    median: sorted[Math.floor(sorted.length / 2)],
    min: sorted[0],
    max: sorted[sorted.length - 1],
    samples: present,
  }
}

/** `median (min–max)`, for a table cell. */
export function showSpread(s: Spread, digits = 1): string | null {
  if (s.median === null || s.min === null || s.max === null) return null
  const f = (v: number) => v.toLocaleString('en-US', { maximumFractionDigits: digits })
  return `${f(s.median)} (${f(s.min)}–${f(s.max)})`
}
