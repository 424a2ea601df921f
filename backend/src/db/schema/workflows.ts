import { relations, sql } from 'drizzle-orm';
import { check, index, integer, jsonb, pgTable, primaryKey, text, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import type { WorkflowEdge, WorkflowNode } from '../../engine/graph.js';
import { user } from './auth.js';
import { createdAt, ownerId, payloadBytes, updatedAt } from './columns.js';

export const workflows = pgTable(
  'workflows',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: ownerId(),
    name: text('name').notNull(),
    description: text('description').notNull().default(''),
    nodes: jsonb('nodes').$type<WorkflowNode[]>().notNull(),
    edges: jsonb('edges').$type<WorkflowEdge[]>().notNull(),
    /** Bumped on every change; the ETag, and what an execution records as the version it ran. */
    version: integer('version').notNull().default(1),
    /**
     * The secret part of its webhook URL (128 random bits), while its graph has a trigger.webhook
     * node; replaced by POST /workflows/:id/webhook/rotate. Not the workflow id: knowing a URL is
     * what lets anyone start the workflow.
     */
    hookId: text('hook_id').unique('workflows_hook_id_unique'),
    /**
     * Days its ended executions are kept after they finish (1..3650); null: the server's default
     * (EXECUTION_RETENTION_DAYS). Read by the retention purge (src/retention/purge.ts).
     */
    retentionDays: integer('retention_days'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  // Ascending (user, sort key, id): read forwards or backwards, each serves both sort directions
  // of a keyset page with no Sort node (drizzle's .desc() would be DESC NULLS LAST, a different order).
  (table) => [
    index('workflows_user_created_idx').on(table.userId, table.createdAt, table.id),
    index('workflows_user_updated_idx').on(table.userId, table.updatedAt, table.id),
    index('workflows_user_name_idx').on(table.userId, table.name, table.id),
    check('workflows_retention_days_range', sql`${table.retentionDays} between 1 and 3650`),
    // The workflows with a retention of their own, which the purge walks one by one (few, next to all).
    index('workflows_own_retention_idx').on(table.id).where(sql`${table.retentionDays} is not null`),
  ],
);

/**
 * Every version of every workflow's graph, written once when the version is saved and never
 * changed: an execution refers to the version it runs, so a run stores no copy of its graph, and
 * the history of a workflow is its rows here.
 */
export const workflowVersions = pgTable(
  'workflow_versions',
  {
    /** For keyset paging of a workflow's history (the key is workflow and version). */
    id: uuid('id').notNull().defaultRandom(),
    workflowId: uuid('workflow_id')
      .notNull()
      .references(() => workflows.id, { onDelete: 'cascade' }),
    version: integer('version').notNull(),
    userId: ownerId(),
    nodes: jsonb('nodes').$type<WorkflowNode[]>().notNull(),
    edges: jsonb('edges').$type<WorkflowEdge[]>().notNull(),
    /** Bytes of its graph as JSON, kept by PostgreSQL: what it adds to its user's usage. */
    payloadBytes: payloadBytes(sql`octet_length(nodes::text) + octet_length(edges::text)`),
    createdAt: createdAt(),
  },
  (table) => [
    primaryKey({ columns: [table.workflowId, table.version] }),
    index('workflow_versions_user_idx').on(table.userId),
    // A workflow's history, by time then id, in both directions (GET /workflows/:id/versions).
    uniqueIndex('workflow_versions_workflow_created_idx').on(table.workflowId, table.createdAt, table.id),
  ],
);

export const workflowsRelations = relations(workflows, ({ one, many }) => ({
  owner: one(user, { fields: [workflows.userId], references: [user.id] }),
  versions: many(workflowVersions),
}));

export const workflowVersionsRelations = relations(workflowVersions, ({ one }) => ({
  workflow: one(workflows, { fields: [workflowVersions.workflowId], references: [workflows.id] }),
}));
