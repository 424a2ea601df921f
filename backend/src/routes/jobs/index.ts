import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { IdempotencyHeaders, IdParams, IfMatchHeaders } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { notFound } from '../../lib/problem.js';
import * as jobs from './repository.js';
import { CreateJobBody, Job, JobPage, ListJobsQuery, NextRuns, NextRunsQuery, UpdateJobBody, type JobDto } from './schemas.js';

const tags = ['jobs'];

export const jobRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/jobs',
    { schema: { tags, summary: 'List jobs (filters: status, workflowId)', querystring: ListJobsQuery, response: { 200: JobPage } } },
    async (request) => jobs.list(app.db, request.user.id, request.query),
  );

  app.post(
    '/jobs',
    {
      schema: {
        tags,
        summary: 'Create a job (honours Idempotency-Key)',
        headers: IdempotencyHeaders,
        body: CreateJobBody,
        response: { 201: Job },
      },
    },
    async (request, reply) => {
      return replyIdempotently<JobDto>(app.db, request, reply, async () => {
        const row = await jobs.create(app.db, request.user.id, request.body);
        return { status: 201, body: jobs.present(row), location: `/api/v1/jobs/${row.id}` };
      });
    },
  );

  app.get(
    '/jobs/:id',
    { schema: { tags, summary: 'Get a job (with its ETag)', params: IdParams, response: { 200: Job } } },
    async (request, reply) => {
      const row = await jobs.get(app.db, request.user.id, request.params.id);
      if (!row) throw notFound('job', request.params.id);
      reply.header('etag', jobs.jobEtag(row));
      return jobs.present(row);
    },
  );

  app.get(
    '/jobs/:id/next-runs',
    {
      schema: {
        tags,
        summary: 'The next occurrences of the job’s schedule, in UTC',
        params: IdParams,
        querystring: NextRunsQuery,
        response: { 200: NextRuns },
      },
    },
    async (request) => {
      const row = await jobs.get(app.db, request.user.id, request.params.id);
      if (!row) throw notFound('job', request.params.id);
      const runs = jobs.scheduleOf(row.cron, row.timezone).nextRuns(request.query.count);
      return { runs: runs.map((run) => run.toISOString()) };
    },
  );

  app.patch(
    '/jobs/:id',
    {
      schema: {
        tags,
        summary: 'Change, pause (PAUSED), resume (ACTIVE) or archive a job',
        params: IdParams,
        headers: IfMatchHeaders,
        body: UpdateJobBody,
        response: { 200: Job },
      },
    },
    async (request, reply) => {
      const row = await jobs.update(app.db, request.user.id, request.params.id, request.body, request.headers['if-match']);
      if (!row) throw notFound('job', request.params.id);
      reply.header('etag', jobs.jobEtag(row));
      return jobs.present(row);
    },
  );

  app.delete(
    '/jobs/:id',
    {
      schema: {
        tags,
        summary: 'Delete a job (its executions stay, without the job link)',
        params: IdParams,
        headers: IfMatchHeaders,
        response: { 204: z.null().meta({ description: 'Deleted' }) },
      },
    },
    async (request, reply) => {
      const deleted = await jobs.remove(app.db, request.user.id, request.params.id, request.headers['if-match']);
      if (!deleted) throw notFound('job', request.params.id);
      return reply.code(204).send(null);
    },
  );
};
