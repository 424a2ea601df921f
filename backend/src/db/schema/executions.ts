import { relations, sql } from 'drizzle-orm';
import { bigint, foreignKey, index, integer, jsonb, pgEnum, pgTable, text, uniqueIndex, uuid, type AnyPgColumn } from 'drizzle-orm/pg-core';
import type { WorkflowEdge, WorkflowNode } from '../../engine/graph.js';
import { user } from './auth.js';
import { createdAt, millisecondTimestamp, ownerId, payloadBytes } from './columns.js';
import { jobs } from './jobs.js';
import { workflows, workflowVersions } from './workflows.js';

export const executionStatuses = ['pending', 'running', 'paused', 'completed', 'failed', 'cancelled'] as const;
export const executionStatus = pgEnum('execution_status', executionStatuses);
export const executionTriggers = ['manual', 'schedule', 'retry', 'webhook'] as const;
export const executionTrigger = pgEnum('execution_trigger', executionTriggers);
export const stepStatuses = ['pending', 'running', 'completed', 'failed', 'skipped'] as const;
export const stepStatus = pgEnum('step_status', stepStatuses);

/** The graph an execution runs: its workflow version's (workflow_versions). */
export interface WorkflowSnapshot {
  nodes: WorkflowNode[];
  edges: WorkflowEdge[];
}

export const executions = pgTable(
  'executions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: ownerId(),
    workflowId: uuid('workflow_id')
      .notNull()
      .references(() => workflows.id, { onDelete: 'cascade' }),
    /** The version it runs (workflow_versions), frozen at its creation: later edits do not change it. */
    workflowVersion: integer('workflow_version').notNull(),
    // A job's history outlives the job: deleting a job keeps its executions.
    jobId: uuid('job_id').references(() => jobs.id, { onDelete: 'set null' }),
    trigger: executionTrigger('trigger').notNull(),
    status: executionStatus('status').notNull().default('pending'),
    input: jsonb('input').$type<unknown>(),
    output: jsonb('output').$type<unknown>(),
    error: jsonb('error').$type<unknown>(),
    /** Bytes of its input, output and error as JSON, kept by PostgreSQL: what it adds to its user's usage. */
    payloadBytes: payloadBytes(sql`coalesce(octet_length(input::text), 0) + coalesce(octet_length(output::text), 0) + coalesce(octet_length(error::text), 0)`),
    /** Its steps and their payload bytes, kept by the usage triggers (0013): what its deletion takes away. */
    stepCount: integer('step_count').notNull().default(0),
    stepPayloadBytes: bigint('step_payload_bytes', { mode: 'number' }).notNull().default(0),
    startedAt: millisecondTimestamp('started_at'),
    finishedAt: millisecondTimestamp('finished_at'),
    createdAt: createdAt(),
    /** The execution this one retries (trigger `retry`). */
    retryOfId: uuid('retry_of_id').references((): AnyPgColumn => executions.id, { onDelete: 'set null' }),
    /** The worker holding the execution while it runs, and until when; an expired lease is claimed again. */
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: millisecondTimestamp('lease_expires_at'),
    /** A pending or paused execution is not runnable before this time (a delay, a retry backoff). */
    wakeAt: millisecondTimestamp('wake_at'),
    /** Bumped by every change to the execution or its steps: orders the live events. */
    revision: integer('revision').notNull().default(0),
    /**
     * Times the engine took the execution over after its lease expired (its worker crashed, was
     * killed, or failed at the same place): a run handed back at shutdown is not counted. Past
     * MAX_TAKEOVERS, a step found interrupted fails (engine/runner.ts).
     */
    takeovers: integer('takeovers').notNull().default(0),
  },
  (table) => [
    // The engine's claim, in the order executions became runnable (a delay or backoff: when it ends;
    // otherwise: when created), and running ones whose worker stopped renewing its lease. Each is
    // read from the front, so a claim costs the same with ten or a million executions waiting.
    index('executions_ready_idx').on(sql`coalesce(${table.wakeAt}, ${table.createdAt})`).where(sql`${table.status} in ('pending', 'paused')`),
    index('executions_lease_idx').on(table.leaseExpiresAt).where(sql`${table.status} = 'running'`),
    index('executions_user_created_idx').on(table.userId, table.createdAt, table.id),
    index('executions_user_workflow_created_idx').on(table.userId, table.workflowId, table.createdAt, table.id),
    index('executions_user_status_created_idx').on(table.userId, table.status, table.createdAt, table.id),
    index('executions_user_job_created_idx').on(table.userId, table.jobId, table.createdAt, table.id),
    index('executions_workflow_idx').on(table.workflowId),
    foreignKey({ name: 'executions_workflow_version_fk', columns: [table.workflowId, table.workflowVersion], foreignColumns: [workflowVersions.workflowId, workflowVersions.version] }).onDelete('cascade'),
    index('executions_job_idx').on(table.jobId),
    // Deleting an execution sets retry_of_id to null on its retries (the foreign key's ON DELETE
    // SET NULL): without this index, every execution deleted (retention, a workflow's deletion)
    // would scan the table for retries pointing at it.
    index('executions_retry_of_idx').on(table.retryOfId).where(sql`${table.retryOfId} is not null`),
    // The retention purge (src/retention/purge.ts) reads ended executions oldest first: over all
    // workflows, by the keyset (finished_at, workflow_id, id), so each batch resumes after the last
    // row it took rather than passing again over rows a longer retention keeps; and within one
    // workflow that has a retention of its own, up to its cutoff.
    index('executions_ended_finished_idx').on(table.finishedAt, table.workflowId, table.id).where(sql`${table.status} in ('completed', 'failed', 'cancelled')`),
    index('executions_workflow_ended_finished_idx').on(table.workflowId, table.finishedAt).where(sql`${table.status} in ('completed', 'failed', 'cancelled')`),
  ],
);

export const executionSteps = pgTable(
  'execution_steps',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    executionId: uuid('execution_id')
      .notNull()
      .references(() => executions.id, { onDelete: 'cascade' }),
    nodeId: text('node_id').notNull(),
    status: stepStatus('status').notNull().default('pending'),
    /** Attempts made so far (retries included). */
    attempt: integer('attempt').notNull().default(0),
    input: jsonb('input').$type<unknown>(),
    output: jsonb('output').$type<unknown>(),
    error: jsonb('error').$type<unknown>(),
    /** Bytes of its input, output and error as JSON, kept by PostgreSQL: what it adds to its user's usage. */
    payloadBytes: payloadBytes(sql`coalesce(octet_length(input::text), 0) + coalesce(octet_length(output::text), 0) + coalesce(octet_length(error::text), 0)`),
    startedAt: millisecondTimestamp('started_at'),
    finishedAt: millisecondTimestamp('finished_at'),
    createdAt: createdAt(),
  },
  (table) => [
    // One row per node of an execution; its attempts are counted in the row.
    uniqueIndex('execution_steps_execution_node_idx').on(table.executionId, table.nodeId),
    index('execution_steps_execution_created_idx').on(table.executionId, table.createdAt, table.id),
  ],
);

export const executionsRelations = relations(executions, ({ one, many }) => ({
  owner: one(user, { fields: [executions.userId], references: [user.id] }),
  workflow: one(workflows, { fields: [executions.workflowId], references: [workflows.id] }),
  job: one(jobs, { fields: [executions.jobId], references: [jobs.id] }),
  steps: many(executionSteps),
}));

export const executionStepsRelations = relations(executionSteps, ({ one }) => ({
  execution: one(executions, { fields: [executionSteps.executionId], references: [executions.id] }),
}));
