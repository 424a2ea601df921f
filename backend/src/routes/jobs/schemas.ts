import { z } from 'zod';
import { jobStatuses } from '../../db/schema/index.js';
import { Timestamp } from '../../lib/http.js';
import { pageOf, searchableListQuery } from '../../lib/pagination.js';

export const JobStatus = z.enum(jobStatuses);

export const Job = z
  .object({
    id: z.uuid(),
    name: z.string(),
    definitionNL: z.string(),
    workflowId: z.uuid(),
    cron: z.string(),
    timezone: z.string(),
    status: JobStatus,
    nextRunAt: Timestamp.nullable(),
    lastRunAt: Timestamp.nullable(),
    locked: z.boolean(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: 'Job' });

const name = z.string().trim().min(1).max(200);
const definitionNL = z.string().max(5_000).meta({ description: 'The job described in natural language.' });
const cron = z.string().min(1).max(120).meta({ description: '5 fields: minute hour day-of-month month day-of-week', example: '0 9 * * 1-5' });
const timezone = z.string().min(1).max(64).meta({ description: 'IANA timezone', example: 'Europe/Paris' });

export const CreateJobBody = z
  .object({
    name,
    definitionNL: definitionNL.default(''),
    workflowId: z.uuid(),
    cron,
    timezone: timezone.default('UTC'),
    status: JobStatus.default('PAUSED'),
  })
  .strict()
  .meta({ id: 'CreateJob' });

export const UpdateJobBody = z
  .object({
    name: name.optional(),
    definitionNL: definitionNL.optional(),
    workflowId: z.uuid().optional(),
    cron: cron.optional(),
    timezone: timezone.optional(),
    status: JobStatus.optional(),
  })
  .strict()
  .refine((body) => Object.values(body).some((value) => value !== undefined), { message: 'give at least one field to change' })
  .meta({ id: 'UpdateJob' });

export const jobSortFields = ['createdAt', 'updatedAt', 'name'] as const;
export const ListJobsQuery = searchableListQuery(jobSortFields, {
  status: JobStatus.optional(),
  workflowId: z.uuid().optional(),
});
export const JobPage = pageOf(Job, 'JobPage');

export const NextRunsQuery = z.object({ count: z.coerce.number().int().min(1).max(50).default(5) }).strict();
export const NextRuns = z.object({ runs: z.array(Timestamp) }).meta({ id: 'NextRuns' });

export type JobDto = z.infer<typeof Job>;
export type CreateJobInput = z.infer<typeof CreateJobBody>;
export type UpdateJobInput = z.infer<typeof UpdateJobBody>;
