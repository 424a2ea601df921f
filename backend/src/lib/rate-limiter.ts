import type { FastifyBaseLogger } from 'fastify';
import type { Sql } from '../db/client.js';

/** One user's standing in the current window, as this process knows it. */
interface UserWindow {
  windowStart: number;
  /** Requests of every replica as last learned from the database, plus this process's since. */
  counted: number;
  /** This process's requests not yet added to the database. */
  unsynced: number;
}

export interface RateLimiterOptions {
  /** Requests per user per window, over all replicas. */
  readonly max: number;
  readonly windowMs: number;
  /** How often counts are exchanged with the database (RATE_LIMIT_SYNC_MS). */
  readonly syncMs: number;
}

/**
 * A per-user request limit that holds across replicas, with PostgreSQL as the shared state and
 * nothing on the request path but a Map lookup.
 *
 * Windows are fixed and aligned to the epoch, so every replica agrees which window a request is
 * in. Each process admits against what it knows (the total from its last sync plus its own
 * requests since) and, every `syncMs`, adds its new counts to `request_counts` in one statement
 * that returns the totals. So a process alone is exact, and N busy replicas can together overshoot
 * by at most what they admit in one sync interval. A failed sync keeps its counts for the next;
 * a process with nothing new sends nothing (an idle service makes no queries).
 */
export class SharedRateLimiter {
  private readonly users = new Map<string, UserWindow>();
  private readonly timer: NodeJS.Timeout;
  private syncing: Promise<void> | undefined;
  private purgedWindow = 0;

  constructor(
    private readonly sql: Sql,
    private readonly options: RateLimiterOptions,
    private readonly logger: FastifyBaseLogger,
  ) {
    this.timer = setInterval(() => void this.sync(), options.syncMs);
    this.timer.unref();
  }

  /** Counts a request of `userId`: true when it is within the limit, false when it must be refused. */
  take(userId: string, now = Date.now()): boolean {
    const windowStart = now - (now % this.options.windowMs);
    let window = this.users.get(userId);
    if (window === undefined) {
      window = { windowStart, counted: 0, unsynced: 0 };
      this.users.set(userId, window);
    } else if (window.windowStart !== windowStart) {
      // A new window: the old one's unsynced requests no longer limit anyone.
      window.windowStart = windowStart;
      window.counted = 0;
      window.unsynced = 0;
    }
    if (window.counted >= this.options.max) return false;
    window.counted++;
    window.unsynced++;
    return true;
  }

  /** Whole seconds until the current window ends (at least 1): the Retry-After of a refusal. */
  retryAfterSeconds(now = Date.now()): number {
    const { windowMs } = this.options;
    return Math.max(1, Math.ceil((windowMs - (now % windowMs)) / 1000));
  }

  /** Adds this process's new counts to the shared ones and learns the totals. One at a time. */
  sync(): Promise<void> {
    this.syncing ??= this.exchange().finally(() => (this.syncing = undefined));
    return this.syncing;
  }

  /** Stops syncing, after the exchange in flight; counts not yet sent are dropped (at most one interval's worth). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.syncing;
  }

  private async exchange(): Promise<void> {
    const now = Date.now();
    const currentWindow = now - (now % this.options.windowMs);
    const sending = new Map<string, number>();
    for (const [userId, window] of this.users) {
      if (window.windowStart !== currentWindow) {
        // Idle for a whole window: the entry has nothing left to limit.
        this.users.delete(userId);
      } else if (window.unsynced > 0) {
        sending.set(userId, window.unsynced);
        window.unsynced = 0;
      }
    }
    if (sending.size === 0) return;
    const windowStart = new Date(currentWindow).toISOString();
    // Rows are upserted in user order on every replica (order by): two replicas updating the same
    // users in different orders would deadlock.
    const userIds = [...sending.keys()];
    try {
      const totals = await this.sql<{ userId: string; count: number }[]>`
        insert into request_counts (user_id, window_start, count)
        select user_id, ${windowStart}::timestamptz, count
        from unnest(${userIds}::text[], ${userIds.map((userId) => sending.get(userId) ?? 0)}::int[]) as batch(user_id, count)
        where exists (select 1 from "user" where id = batch.user_id)
        order by batch.user_id
        on conflict (user_id, window_start) do update set count = request_counts.count + excluded.count
        returning user_id as "userId", count`;
      for (const { userId, count } of totals) {
        const window = this.users.get(userId);
        if (window?.windowStart === currentWindow) window.counted = Math.max(window.counted, count + window.unsynced);
      }
      if (this.purgedWindow !== currentWindow) {
        this.purgedWindow = currentWindow;
        await this.sql`delete from request_counts where window_start < ${windowStart}::timestamptz`;
      }
    } catch (error) {
      this.logger.warn({ err: error }, 'rate limit counts could not be shared; counting locally until the next sync');
      for (const [userId, count] of sending) {
        const window = this.users.get(userId);
        if (window?.windowStart === currentWindow) window.unsynced += count;
      }
    }
  }
}
