import { index, integer, jsonb, pgTable, primaryKey, text } from 'drizzle-orm/pg-core';
import { createdAt, ownerId } from './columns.js';

/**
 * Results of POSTs sent with an Idempotency-Key, kept 24 h per user. A row without a status is
 * a request still being processed.
 */
export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    userId: ownerId(),
    /** The operation the key was used for (`POST /api/v1/jobs`): one key may not answer two operations. */
    scope: text('scope').notNull(),
    key: text('key').notNull(),
    requestHash: text('request_hash').notNull(),
    responseStatus: integer('response_status'),
    responseBody: jsonb('response_body').$type<unknown>(),
    responseLocation: text('response_location'),
    createdAt: createdAt(),
  },
  (table) => [
    primaryKey({ columns: [table.userId, table.scope, table.key] }),
    index('idempotency_keys_created_idx').on(table.createdAt),
  ],
);
