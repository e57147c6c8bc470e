/**
 * A clock a test moves by hand, for the scheduler and the push dispatcher (`clock` of buildApp): real time until
 * moved, then real time shifted so that it reads the time it was moved to and goes on from there. The scheduler
 * publishes what is due by it; the dispatcher judges quiet hours by it and claims pushes due by it (or by the
 * database's clock, whichever is later). A `deliverAt` is still checked against real time when a publish is accepted.
 */
export class TestClock {
  private offsetMs = 0

  /** The scheduler's and the dispatcher's `now`. */
  readonly now = (): Date => new Date(Date.now() + this.offsetMs)

  /** From now on the clock reads `at` (and runs on from it). */
  setTo(at: Date | string | number): void {
    this.offsetMs = new Date(at).getTime() - Date.now()
  }

  /** Back to real time. */
  reset(): void {
    this.offsetMs = 0
  }
}
