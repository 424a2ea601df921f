import { z } from 'zod';
import { executionStatuses, executionTriggers, stepStatuses } from '../../db/schema/index.js';
import { Timestamp, TimestampInput } from '../../lib/http.js';
import { listQuery, pageOf } from '../../lib/pagination.js';

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

/** `status=failed,running`: a comma-separated list of statuses. */
const statusList = <Status extends string>(statuses: readonly [Status, ...Status[]]) =>
  z
    .string()
    .max(200)
    .transform((value) => [...new Set(value.split(',').map((part) => part.trim()).filter(Boolean))])
    .pipe(z.array(z.enum(statuses)).min(1))
    .optional()
    .meta({ description: `Comma-separated: ${statuses.join(', ')}` });

export const ListExecutionsQuery = listQuery(['createdAt'] as const, {
  status: statusList(executionStatuses),
  workflowId: z.uuid().optional(),
  jobId: z.uuid().optional(),
  createdAfter: TimestampInput.optional().meta({ description: 'Only executions created at or after this time.' }),
  createdBefore: TimestampInput.optional().meta({ description: 'Only executions created before this time.' }),
});
export const ExecutionPage = pageOf(Execution, 'ExecutionPage');

export const ListStepsQuery = listQuery(['createdAt'] as const, { status: statusList(stepStatuses) });
export const StepPage = pageOf(Step, 'StepPage');

export type ExecutionDto = z.infer<typeof Execution>;
export type StepDto = z.infer<typeof Step>;
