import { z } from 'zod';
import { executionStatuses, executionTriggers, stepStatuses } from '../../db/schema/index.js';
import type { ExecutionRecord, StepRecord } from '../../executions/reads.js';
import { Timestamp, TimestampInput } from '../../lib/http.js';
import { commaSeparatedList, listQuery, pageOf } from '../../lib/pagination.js';

export const ExecutionStatus = z.enum(executionStatuses);
export const StepStatus = z.enum(stepStatuses);

export const Execution = z
  .object({
    id: z.uuid(),
    workflowId: z.uuid(),
    workflowVersion: z.number().int(),
    jobId: z.uuid().nullable(),
    trigger: z.enum(executionTriggers),
    status: ExecutionStatus,
    input: z.unknown(),
    output: z.unknown(),
    error: z.unknown(),
    startedAt: Timestamp.nullable(),
    finishedAt: Timestamp.nullable(),
    createdAt: Timestamp,
    retryOfId: z.uuid().nullable().meta({ description: 'The execution this one retries (trigger retry).' }),
  })
  .meta({ id: 'Execution' });

export const RunWorkflowBody = z
  .object({ input: z.unknown().optional().meta({ description: 'The execution input: what trigger.manual outputs and expressions see as `input`.' }) })
  .strict()
  .meta({ id: 'RunWorkflow' });

export const RetryQuery = z
  .object({ from: z.enum(['failed', 'start']).default('failed').meta({ description: 'failed: reuse completed steps; start: run everything again.' }) })
  .strict();

export const Step = z
  .object({
    id: z.uuid(),
    nodeId: z.string(),
    status: StepStatus,
    attempt: z.number().int(),
    input: z.unknown(),
    output: z.unknown(),
    error: z.unknown(),
    startedAt: Timestamp.nullable(),
    finishedAt: Timestamp.nullable(),
  })
  .meta({ id: 'Step' });

/** Most list items with their input and output that one page may hold. */
export const MAX_PAGE_SIZE_WITH_DATA = 20;

export const ListExecutionsQuery = listQuery(['createdAt'] as const, {
  status: commaSeparatedList(executionStatuses),
  workflowId: z.uuid().optional(),
  jobId: z.uuid().optional(),
  createdAfter: TimestampInput.optional().meta({ description: 'Only executions created at or after this time.' }),
  createdBefore: TimestampInput.optional().meta({ description: 'Only executions created before this time.' }),
  includeData: z
    .enum(['true', 'false'])
    .transform((value) => value === 'true')
    .optional()
    .meta({ description: `Include each execution's input and output (pageSize at most ${MAX_PAGE_SIZE_WITH_DATA}).` }),
}).refine((query) => !query.includeData || query.pageSize <= MAX_PAGE_SIZE_WITH_DATA, {
  message: `is at most ${MAX_PAGE_SIZE_WITH_DATA} with includeData=true`,
  path: ['pageSize'],
});

/** A list item: the execution, with `input` and `output` only when asked for (includeData). */
export const ExecutionListItem = Execution.extend({ input: z.unknown().optional(), output: z.unknown().optional() }).meta({ id: 'ExecutionListItem' });
export const ExecutionPage = pageOf(ExecutionListItem, 'ExecutionPage');

/** Steps are listed in the order they ran unless sortDirection=desc. */
export const ListStepsQuery = listQuery(['createdAt'] as const, { status: commaSeparatedList(stepStatuses) }, 'asc');
export const StepPage = pageOf(Step, 'StepPage');

export type ExecutionDto = z.infer<typeof Execution>;
export type ExecutionListItemDto = z.infer<typeof ExecutionListItem>;
export type StepDto = z.infer<typeof Step>;

/**
 * A list item is the row as read: reads.ts selects the API's fields under the API's names (with
 * `input` and `output` only for includeData), and the response serializer writes only the
 * declared properties (never `revision`). The hot list is spared a second copy of every row.
 */
export const presentExecutionListItem = (row: ExecutionRecord): ExecutionListItemDto => row;

export function presentExecution(row: ExecutionRecord): ExecutionDto {
  return {
    id: row.id,
    workflowId: row.workflowId,
    workflowVersion: row.workflowVersion,
    jobId: row.jobId,
    trigger: row.trigger,
    status: row.status,
    input: row.input ?? null,
    output: row.output ?? null,
    error: row.error ?? null,
    startedAt: row.startedAt,
    finishedAt: row.finishedAt,
    createdAt: row.createdAt,
    retryOfId: row.retryOfId,
  };
}

export function presentStep(row: StepRecord): StepDto {
  return {
    id: row.id,
    nodeId: row.nodeId,
    status: row.status,
    attempt: row.attempt,
    input: row.input ?? null,
    output: row.output ?? null,
    error: row.error ?? null,
    startedAt: row.startedAt,
    finishedAt: row.finishedAt,
  };
}
