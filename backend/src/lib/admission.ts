/**
 * A bound on waiting for the database. postgres.js queues queries without limit when its pool is
 * busy, so under overload every request would wait and time out together. Requests that use the
 * database first take one of `permits` (a few per pooled connection, see QUERIES_PER_CONNECTION)
 * and wait at most `timeoutMs` for it; the rest are refused with 503 and Retry-After, and the
 * service stays responsive.
 */
export class Admission {
  private inUse = 0;
  private readonly waiting: { grant: () => void; timer: NodeJS.Timeout }[] = [];

  constructor(
    private readonly permits: number,
    private readonly timeoutMs: number,
  ) {}

  /** A release function when a permit is free right now (the common case, with no promise), else null. */
  tryAcquire(): (() => void) | null {
    if (this.inUse >= this.permits) return null;
    this.inUse++;
    return this.releaser();
  }

  /** Resolves with a release function, or with null when no permit came within the timeout. */
  acquire(): Promise<(() => void) | null> {
    const free = this.tryAcquire();
    if (free) return Promise.resolve(free);
    return new Promise((resolve) => {
      const entry = {
        grant: () => {
          clearTimeout(entry.timer);
          resolve(this.releaser());
        },
        timer: setTimeout(() => {
          const index = this.waiting.indexOf(entry);
          if (index !== -1) this.waiting.splice(index, 1);
          resolve(null);
        }, this.timeoutMs),
      };
      this.waiting.push(entry);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      // The permit passes straight to the next waiter; otherwise it is returned.
      if (next) next.grant();
      else this.inUse--;
    };
  }
}
