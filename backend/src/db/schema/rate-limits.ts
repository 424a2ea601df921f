import { index, integer, pgTable, primaryKey } from 'drizzle-orm/pg-core';
import { millisecondTimestamp, ownerId } from './columns.js';

/**
 * Requests per user per fixed rate-limit window, summed over every replica (lib/rate-limiter.ts).
 * Replicas add their counts in batches; a row whose window has ended is deleted by whichever
 * replica syncs next. Each row carries its own end, so replicas configured with different windows
 * (a rolling change of RATE_LIMIT_WINDOW_MS) never delete counts of a window still running.
 */
export const requestCounts = pgTable(
  'request_counts',
  {
    userId: ownerId(),
    /** The window's start: a multiple of RATE_LIMIT_WINDOW_MS since the epoch, the same on every replica. */
    windowStart: millisecondTimestamp('window_start').notNull(),
    /** The window's end (start + RATE_LIMIT_WINDOW_MS): the row is deleted once a sync finds it past. */
    windowEnd: millisecondTimestamp('window_end').notNull(),
    count: integer('count').notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.userId, table.windowStart, table.windowEnd] }),
    index('request_counts_window_end_idx').on(table.windowEnd),
  ],
);
