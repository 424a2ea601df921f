import { index, integer, pgTable, primaryKey } from 'drizzle-orm/pg-core';
import { millisecondTimestamp, ownerId } from './columns.js';

/**
 * Requests per user per fixed rate-limit window, summed over every replica (lib/rate-limiter.ts).
 * Replicas add their counts in batches; rows of past windows are deleted by whichever replica
 * syncs next.
 */
export const requestCounts = pgTable(
  'request_counts',
  {
    userId: ownerId(),
    /** The window's start: a multiple of RATE_LIMIT_WINDOW_MS since the epoch, the same on every replica. */
    windowStart: millisecondTimestamp('window_start').notNull(),
    count: integer('count').notNull(),
  },
  (table) => [primaryKey({ columns: [table.userId, table.windowStart] }), index('request_counts_window_start_idx').on(table.windowStart)],
);
