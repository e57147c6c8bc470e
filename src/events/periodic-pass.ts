/**
 * A pass that runs every `intervalMs` and whenever asked (`runNow`), never two at once: a pass asked for while one
 * runs follows it. `stop` ends the polling and waits for a pass in flight to finish (its transaction committed or
 * rolled back). The scheduler and the escalator run on it.
 */
export class PeriodicPass<T> {
  private timer: NodeJS.Timeout | undefined
  /** The latest pass, which the next one waits for. */
  private pass: Promise<T | undefined> = Promise.resolve(undefined)
  private polling = false
  stopped = false

  constructor(
    private readonly run: () => Promise<T>,
    private readonly intervalMs: number,
    /** A polled pass failed (a pass asked for with runNow rejects instead). */
    private readonly onError: (err: unknown) => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.poll(), this.intervalMs)
    this.timer.unref()
    void this.poll()
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    await this.pass.catch(() => {})
  }

  /** One pass, once the one in flight (if any) has finished. */
  runNow(): Promise<T> {
    const next = this.pass.catch(() => undefined).then(() => this.run())
    this.pass = next
    return next
  }

  private async poll() {
    if (this.polling || this.stopped) return
    this.polling = true
    try {
      await this.runNow()
    } catch (err) {
      this.onError(err)
    } finally {
      this.polling = false
    }
  }
}
