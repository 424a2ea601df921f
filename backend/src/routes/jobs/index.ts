import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { IdempotencyHeaders, IdParams } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { notFound } from '../../lib/problem.js';
import { versionedItemRoutes } from '../versioned-resource.js';
import * as jobs from './repository.js';
import { CreateJobBody, Job, JobPage, ListJobsQuery, NextRuns, NextRunsQuery, UpdateJobBody, type JobDto } from './schemas.js';

const tags = ['jobs'];

export const jobRoutes: FastifyPluginAsyncZod = async (app) => {
  const limits = app.config.jobs;
  app.get(
    '/jobs',
    { schema: { tags, summary: 'List jobs (filters: status, workflowId)', querystring: ListJobsQuery, response: { 200: JobPage } } },
    async (request) => jobs.list(app.database.db, request.user.id, request.query),
  );

  app.post(
    '/jobs',
    { schema: { tags, summary: 'Create a job (honours Idempotency-Key; 409 JOB_LIMIT_REACHED beyond JOBS_PER_USER_MAX)', headers: IdempotencyHeaders, body: CreateJobBody, response: { 201: Job } } },
    async (request, reply) =>
      replyIdempotently<JobDto>(app.database.db, request, reply, async () => {
        const row = await jobs.create(app.database.db, request.user.id, request.body, limits);
        return { status: 201, body: jobs.present(row), location: `/api/v1/jobs/${row.id}` };
      }),
  );

  await app.register(
    versionedItemRoutes({
      path: '/jobs',
      noun: 'job',
      tags,
      schema: Job,
      patchBody: UpdateJobBody,
      summaries: {
        get: 'Get a job (with its ETag)',
        patch: 'Change, pause (PAUSED), resume (ACTIVE) or archive a job',
        delete: 'Delete a job (its executions stay, without the job link)',
      },
      ...jobs,
      update: (db, userId, id, patch, ifMatch) => jobs.update(db, userId, id, patch, ifMatch, limits),
    }),
  );

  app.get(
    '/jobs/:id/next-runs',
    { schema: { tags, summary: 'The next occurrences of the job’s schedule, in UTC', params: IdParams, querystring: NextRunsQuery, response: { 200: NextRuns } } },
    async (request) => {
      const row = await jobs.get(app.database.db, request.user.id, request.params.id);
      if (!row) throw notFound('job', request.params.id);
      const runs = jobs.scheduleOf(row.cron, row.timezone).nextRuns(request.query.count);
      return { runs: runs.map((run) => run.toISOString()) };
    },
  );
};
