import { bigint, integer, pgTable, text } from 'drizzle-orm/pg-core';
import { user } from './auth.js';

/**
 * What each user stores, kept by database triggers on the tables it counts (migration
 * 0014_usage_triggers.sql), so every path that writes or deletes a row, cascades included, keeps
 * it exact without the code that writes knowing: the rows of workflows, jobs, executions and
 * steps, connections and variables (migration 0017), webhook deliveries (0020), event messages (0023), and the bytes (payload_bytes columns: JSON as text) of every payload: workflow graphs (each version), execution and step inputs, outputs and errors, connections and variables, webhook deliveries (their raw bodies). Read by
 * GET /usage and by the storage quota (USER_STORAGE_MAX_BYTES).
 */
export const userUsage = pgTable('user_usage', {
  userId: text('user_id')
    .primaryKey()
    .references(() => user.id, { onDelete: 'cascade' }),
  workflows: integer('workflows').notNull().default(0),
  jobs: integer('jobs').notNull().default(0),
  executions: integer('executions').notNull().default(0),
  steps: integer('steps').notNull().default(0),
  connections: integer('connections').notNull().default(0),
  variables: integer('variables').notNull().default(0),
  webhookDeliveries: integer('webhook_deliveries').notNull().default(0),
  eventDeliveries: integer('event_deliveries').notNull().default(0),
  payloadBytes: bigint('payload_bytes', { mode: 'number' }).notNull().default(0),
});
