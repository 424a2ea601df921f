import { relations } from 'drizzle-orm';
import { boolean, index, integer, pgEnum, pgTable, text, uuid } from 'drizzle-orm/pg-core';
import { user } from './auth.js';
import { createdAt, millisecondTimestamp, ownerId, updatedAt } from './columns.js';
import { workflows } from './workflows.js';

export const jobStatuses = ['ACTIVE', 'PAUSED', 'ARCHIVED'] as const;
export const jobStatus = pgEnum('job_status', jobStatuses);

export const jobs = pgTable(
  'jobs',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: ownerId(),
    workflowId: uuid('workflow_id')
      .notNull()
      .references(() => workflows.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    /** The job as its author described it in natural language. */
    definitionNL: text('definition_nl').notNull().default(''),
    cron: text('cron').notNull(),
    timezone: text('timezone').notNull().default('UTC'),
    status: jobStatus('status').notNull().default('PAUSED'),
    /** The next scheduled occurrence; null unless ACTIVE. */
    nextRunAt: millisecondTimestamp('next_run_at'),
    lastRunAt: millisecondTimestamp('last_run_at'),
    /** True while an execution started by this job runs, so a due job is not started twice. */
    locked: boolean('locked').notNull().default(false),
    /** The ETag: bumped by every PATCH, not by the scheduler's nextRunAt/lastRunAt/locked bookkeeping (it guards what a PATCH can change). */
    version: integer('version').notNull().default(1),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (table) => [
    index('jobs_user_created_idx').on(table.userId, table.createdAt, table.id),
    index('jobs_user_updated_idx').on(table.userId, table.updatedAt, table.id),
    index('jobs_user_name_idx').on(table.userId, table.name, table.id),
    index('jobs_user_workflow_created_idx').on(table.userId, table.workflowId, table.createdAt, table.id),
    index('jobs_user_status_created_idx').on(table.userId, table.status, table.createdAt, table.id),
    // The scheduler's claim: due ACTIVE jobs in nextRunAt order.
    index('jobs_status_next_run_idx').on(table.status, table.nextRunAt),
    index('jobs_workflow_idx').on(table.workflowId),
  ],
);

export const jobsRelations = relations(jobs, ({ one }) => ({
  owner: one(user, { fields: [jobs.userId], references: [user.id] }),
  workflow: one(workflows, { fields: [jobs.workflowId], references: [workflows.id] }),
}));
