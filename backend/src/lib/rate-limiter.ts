import type { FastifyBaseLogger } from 'fastify';
import type { Sql } from '../db/client.js';

/** One key's standing in the current window, as this process knows it. */
interface KeyWindow {
  windowStart: number;
  /** Requests of every replica as last learned from the database, plus this process's since. */
  counted: number;
  /** This process's requests not yet added to the database. */
  unsynced: number;
  /** When this process last took a request of the key (ms since the epoch). */
  lastTakenAt: number;
}

/**
 * How long after its last request a key of counts recorded per request keeps being read at every
 * sync (and for at least three syncs): the request's record is written after it is taken, so a sync
 * while it was in flight read a total without it, and with nothing new to send the key would
 * otherwise not be read again.
 */
const RECORDED_SETTLE_MS = 5_000;

export interface RateLimiterOptions {
  /** Requests per key (a user, a hook) per window, over all replicas. */
  readonly max: number;
  readonly windowMs: number;
  /** How often counts are exchanged with the database (RATE_LIMIT_SYNC_MS). */
  readonly syncMs: number;
}

/** A fixed window, as ISO timestamps: the same on every replica with the same window size. */
export interface CountWindow {
  readonly start: string;
  readonly end: string;
}

/**
 * Where replicas' counts meet. `add` is given this process's new requests per key in `window` and
 * answers every replica's totals for those keys; `purge` is called once per window with the current
 * window, and deletes what ended before it started.
 */
export interface SharedCounts {
  /**
   * True when the totals come from a record each request writes as it is served, not from the
   * counts `add` is given: requests taken while the totals are read may be in them already, so
   * the limiter keeps the larger of its own count and the total instead of adding the two.
   */
  readonly recordedPerRequest: boolean;
  add(window: CountWindow, counts: ReadonlyMap<string, number>): Promise<readonly { key: string; count: number }[]>;
  purge(current: CountWindow): Promise<void>;
}

/** Per-user counts in `request_counts`, which replicas add to (the /api/v1 limit). */
export function requestCounts(sql: Sql): SharedCounts {
  return {
    recordedPerRequest: false,
    async add(window, counts) {
      // Rows are upserted in user order on every replica (order by): two replicas updating the same
      // users in different orders would deadlock.
      const userIds = [...counts.keys()];
      return sql<{ key: string; count: number }[]>`
        insert into request_counts (user_id, window_start, window_end, count)
        select user_id, ${window.start}::timestamptz, ${window.end}::timestamptz, count
        from unnest(${userIds}::text[], ${userIds.map((userId) => counts.get(userId) ?? 0)}::int[]) as batch(user_id, count)
        where exists (select 1 from "user" where id = batch.user_id)
        order by batch.user_id
        on conflict (user_id, window_start, window_end) do update set count = request_counts.count + excluded.count
        returning user_id as key, count`;
    },
    async purge(current) {
      // By each row's own end, not this replica's window size: a replica configured with a shorter
      // window must not delete the counts of a longer one that is still running.
      await sql`delete from request_counts where window_end <= ${current.start}::timestamptz`;
    },
  };
}

/**
 * A per-key request limit (per user, per hook) that holds across replicas, with PostgreSQL as the
 * shared state (SharedCounts) and nothing on the request path but a Map lookup.
 *
 * Windows are fixed and aligned to the epoch, so every replica agrees which window a request is
 * in. Each process admits against what it knows (the total from its last sync plus its own
 * requests since) and, every `syncMs`, adds its new counts to the shared ones in one statement
 * that returns the totals. So a process alone is exact, and N busy replicas can together overshoot
 * by at most what they admit in one sync interval. A failed sync keeps its counts for the next;
 * a process with nothing new sends nothing (an idle service makes no queries), except that keys
 * whose counts are recorded per request are read for a while after their last request.
 */
export class SharedRateLimiter {
  private readonly keys = new Map<string, KeyWindow>();
  private readonly timer: NodeJS.Timeout;
  private syncing: Promise<void> | undefined;
  private purgedWindow = 0;

  constructor(
    private readonly counts: SharedCounts,
    private readonly options: RateLimiterOptions,
    private readonly logger: FastifyBaseLogger,
  ) {
    this.timer = setInterval(() => void this.sync(), options.syncMs);
    this.timer.unref();
  }

  /** Counts a request of `key`: true when it is within the limit, false when it must be refused. */
  take(key: string, now = Date.now()): boolean {
    const windowStart = now - (now % this.options.windowMs);
    let window = this.keys.get(key);
    if (window === undefined) {
      window = { windowStart, counted: 0, unsynced: 0, lastTakenAt: now };
      this.keys.set(key, window);
    } else if (window.windowStart !== windowStart) {
      // A new window: the old one's unsynced requests no longer limit anyone.
      window.windowStart = windowStart;
      window.counted = 0;
      window.unsynced = 0;
    }
    window.lastTakenAt = now;
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
    for (const [key, window] of this.keys) {
      if (window.windowStart !== currentWindow) {
        // Idle for a whole window: the entry has nothing left to limit.
        this.keys.delete(key);
      } else if (window.unsynced > 0 || (this.counts.recordedPerRequest && now - window.lastTakenAt <= Math.max(RECORDED_SETTLE_MS, 3 * this.options.syncMs))) {
        sending.set(key, window.unsynced);
        window.unsynced = 0;
      }
    }
    if (sending.size === 0) return;
    const window: CountWindow = { start: new Date(currentWindow).toISOString(), end: new Date(currentWindow + this.options.windowMs).toISOString() };
    try {
      const totals = await this.counts.add(window, sending);
      for (const { key, count } of totals) {
        const entry = this.keys.get(key);
        if (entry?.windowStart === currentWindow) entry.counted = Math.max(entry.counted, this.counts.recordedPerRequest ? count : count + entry.unsynced);
      }
    } catch (error) {
      this.logger.warn({ err: error }, 'rate limit counts could not be shared; counting locally until the next sync');
      for (const [key, count] of sending) {
        const entry = this.keys.get(key);
        if (entry?.windowStart === currentWindow) entry.unsynced += count;
      }
      return;
    }
    // Apart from the exchange above: the counts are in, so a failed purge must not send them again.
    if (this.purgedWindow !== currentWindow) {
      try {
        await this.counts.purge(window);
        this.purgedWindow = currentWindow;
      } catch (error) {
        this.logger.warn({ err: error }, 'ended rate limit windows could not be deleted; trying again at the next sync');
      }
    }
  }
}
