import { sql } from 'drizzle-orm';
import { boolean, index, integer, jsonb, pgEnum, pgTable, text, uuid } from 'drizzle-orm/pg-core';
import { createdAt, millisecondTimestamp, ownerId, payloadBytes, updatedAt } from './columns.js';
import { executions } from './executions.js';
import { sealedSecretColumns } from './secrets.js';
import { webhookDeliveries } from './webhooks.js';
import { workflows } from './workflows.js';

export const eventTypes = ['execution.completed', 'execution.failed', 'execution.cancelled', 'step.failed', 'webhook.rejected'] as const;
export type EventType = (typeof eventTypes)[number];

/**
 * Where a user wants to be told what happened (API.md, Event subscriptions): signed POSTs to `url`
 * for the chosen event types, of one workflow or all. The signing secret (`whsec_...`) is sealed to
 * the row and owner; after a rotation the previous one also signs until `previousSecretExpiresAt`.
 */
export const eventSubscriptions = pgTable(
  'event_subscriptions',
  {
    /** Chosen by the service before the insert: the sealed secrets are bound to it. */
    id: uuid('id').primaryKey(),
    userId: ownerId(),
    url: text('url').notNull(),
    events: text('events').array().$type<EventType[]>().notNull(),
    /** Null: every workflow of the user. */
    workflowId: uuid('workflow_id').references(() => workflows.id, { onDelete: 'cascade' }),
    enabled: boolean('enabled').notNull().default(true),
    disabledReason: text('disabled_reason'),
    ...sealedSecretColumns(),
    previousSecretKeyId: text('previous_secret_key_id'),
    previousSecretCiphertext: text('previous_secret_ciphertext'),
    previousSecretExpiresAt: millisecondTimestamp('previous_secret_expires_at'),
    /** Since when every attempt has failed (null after a success): past 5 days it is disabled. */
    failingSince: millisecondTimestamp('failing_since'),
    /** Bumped on every change a caller makes; the ETag. */
    version: integer('version').notNull().default(1),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (table) => [
    index('event_subscriptions_user_created_idx').on(table.userId, table.createdAt, table.id),
    index('event_subscriptions_user_updated_idx').on(table.userId, table.updatedAt, table.id),
    index('event_subscriptions_workflow_idx').on(table.workflowId),
    // The outbox looks up a user's enabled subscriptions in the transaction of every change it announces.
    index('event_subscriptions_user_enabled_idx').on(table.userId).where(sql`${table.enabled}`),
    index('event_subscriptions_secret_key_idx').on(table.secretKeyId),
    index('event_subscriptions_previous_secret_key_idx').on(table.previousSecretKeyId),
  ],
);

export const eventMessageStatuses = ['pending', 'delivered', 'failed'] as const;
export const eventMessageStatus = pgEnum('event_message_status', eventMessageStatuses);

/**
 * The outbox: one message per subscription per change, written in the transaction of the change
 * it announces, then delivered (at least once) by the delivery workers. `webhookId` is the same on
 * every attempt. Goes with its execution or rejected delivery (retention), and with its subscription.
 */
export const eventMessages = pgTable(
  'event_messages',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    subscriptionId: uuid('subscription_id')
      .notNull()
      .references(() => eventSubscriptions.id, { onDelete: 'cascade' }),
    userId: ownerId(),
    type: text('type').$type<EventType>().notNull(),
    webhookId: text('webhook_id').notNull(),
    /** The JSON body sent, exactly: `{ type, timestamp, data }`. */
    payload: jsonb('payload').notNull(),
    status: eventMessageStatus('status').notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: millisecondTimestamp('next_attempt_at').notNull().defaultNow(),
    /** A worker sending it holds it until then; a crashed worker's message is sent again after. */
    lockedUntil: millisecondTimestamp('locked_until'),
    lastStatusCode: integer('last_status_code'),
    lastError: text('last_error'),
    executionId: uuid('execution_id').references(() => executions.id, { onDelete: 'cascade' }),
    webhookDeliveryId: uuid('webhook_delivery_id').references(() => webhookDeliveries.id, { onDelete: 'cascade' }),
    createdAt: createdAt(),
    deliveredAt: millisecondTimestamp('delivered_at'),
    /** Bytes it stores, kept by PostgreSQL: what it adds to its user's usage. */
    payloadBytes: payloadBytes(sql`octet_length(payload::text) + coalesce(octet_length(last_error), 0)`),
  },
  (table) => [
    // The workers' claim: due pending messages, oldest due first.
    index('event_messages_due_idx').on(table.nextAttemptAt).where(sql`${table.status} = 'pending'`),
    index('event_messages_subscription_created_idx').on(table.subscriptionId, table.createdAt, table.id),
    index('event_messages_user_idx').on(table.userId),
    index('event_messages_execution_idx').on(table.executionId),
    index('event_messages_webhook_delivery_idx').on(table.webhookDeliveryId),
    // The retention purge's walk over messages whose workflow was deleted while they were pending (retention/purge.ts).
    index('event_messages_detached_created_idx').on(table.createdAt).where(sql`${table.executionId} is null and ${table.webhookDeliveryId} is null`),
  ],
);

/** Every attempt to send a message: what the receiver answered (the first KiB), or why it failed. */
export const eventAttempts = pgTable(
  'event_attempts',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    messageId: uuid('message_id')
      .notNull()
      .references(() => eventMessages.id, { onDelete: 'cascade' }),
    attemptedAt: millisecondTimestamp('attempted_at').notNull().defaultNow(),
    statusCode: integer('status_code'),
    latencyMs: integer('latency_ms').notNull(),
    error: text('error'),
    responseHead: text('response_head'),
  },
  (table) => [index('event_attempts_message_idx').on(table.messageId, table.attemptedAt)],
);
