/**
 * The pause of a polling loop between turns, which a wake-up (new work announced) ends early.
 * A wake-up that arrives while the loop is busy is kept, so the next pause returns at once: work
 * announced during a turn that could not see it never waits for the timer.
 */
export class WakeablePause {
  private woken = false;
  private endPause: (() => void) | undefined;

  /** Called as a turn begins: the turn sees everything announced before it, so older wake-ups are spent. */
  beginTurn(): void {
    this.woken = false;
  }

  /**
   * Drops the wake-ups that came during a failed turn, so the pause that follows keeps its backoff
   * (work announced while the database refuses would otherwise retry, and log, at its rate).
   */
  forgetWakeUps(): void {
    this.woken = false;
  }

  wake(): void {
    this.woken = true;
    this.endPause?.();
  }

  /** Resolves after `ms`, or at once on a wake-up (one already kept, or one that comes meanwhile). */
  pause(ms: number): Promise<void> {
    if (this.woken) return Promise.resolve();
    return new Promise((resolve) => {
      const end = () => {
        clearTimeout(timer);
        this.endPause = undefined;
        resolve();
      };
      const timer = setTimeout(end, ms);
      this.endPause = end;
    });
  }
}
