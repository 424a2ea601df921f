import { customType, index, integer, jsonb, pgEnum, pgTable, text, uuid } from 'drizzle-orm/pg-core';
import { sql } from 'drizzle-orm';
import { millisecondTimestamp, ownerId, payloadBytes } from './columns.js';
import { executions } from './executions.js';
import { workflows } from './workflows.js';

/** Raw bytes (a delivery's body exactly as received: signatures are over these bytes). */
const bytea = customType<{ data: Buffer; driverData: Buffer }>({ dataType: () => 'bytea' });

export const webhookDeliveryStatuses = ['accepted', 'rejected', 'duplicate'] as const;
export const webhookDeliveryStatus = pgEnum('webhook_delivery_status', webhookDeliveryStatuses);

/**
 * Every request to a workflow's webhook URL (API.md, Inbound webhooks), stored in the transaction
 * that creates its execution: `accepted` (ran), `rejected` (its signature did not verify: no
 * execution), `duplicate` (a repeated webhook-id or Idempotency-Key within 24 h: it points at the
 * first delivery's execution and started nothing). Goes with its execution (retention) or workflow.
 */
export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: ownerId(),
    workflowId: uuid('workflow_id')
      .notNull()
      .references(() => workflows.id, { onDelete: 'cascade' }),
    status: webhookDeliveryStatus('status').notNull(),
    executionId: uuid('execution_id').references(() => executions.id, { onDelete: 'cascade' }),
    /** The sender's webhook-id or Idempotency-Key: a repeat within 24 h starts nothing. */
    dedupKey: text('dedup_key'),
    method: text('method').notNull(),
    /** The request's headers without credentials, cookies or signatures. */
    headers: jsonb('headers').$type<Record<string, string>>().notNull(),
    query: jsonb('query').$type<Record<string, unknown>>().notNull(),
    contentType: text('content_type'),
    body: bytea('body').notNull(),
    bodyBytes: integer('body_bytes').notNull(),
    /** Why it was rejected (for the owner: the sender's answer says nothing that helps guess). */
    reason: text('reason'),
    receivedAt: millisecondTimestamp('received_at').notNull().defaultNow(),
    /** Bytes it stores, kept by PostgreSQL: what it adds to its user's usage. */
    payloadBytes: payloadBytes(sql`octet_length(body) + octet_length(headers::text) + octet_length(query::text)`),
  },
  (table) => [
    index('webhook_deliveries_workflow_received_idx').on(table.workflowId, table.receivedAt, table.id),
    index('webhook_deliveries_user_idx').on(table.userId),
    index('webhook_deliveries_execution_idx').on(table.executionId),
    // Deliveries without an execution (rejected ones) are not deleted with one: the retention purge
    // reads them oldest first.
    index('webhook_deliveries_unexecuted_received_idx').on(table.receivedAt).where(sql`${table.executionId} is null`),
    // Deduplication: the first accepted delivery of a key, within its window.
    index('webhook_deliveries_dedup_idx').on(table.workflowId, table.dedupKey, table.receivedAt).where(sql`${table.dedupKey} is not null and ${table.status} = 'accepted'`),
  ],
);
