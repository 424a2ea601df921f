import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { IdempotencyHeaders, IdParams } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { conflict, notFound } from '../../lib/problem.js';
import { streamExecutionEvents } from './events.js';
import * as executions from './repository.js';
import { Execution, ExecutionPage, ListExecutionsQuery, ListStepsQuery, RetryQuery, StepPage, type ExecutionDto } from './schemas.js';

const tags = ['executions'];

export const executionRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/executions',
    {
      schema: {
        tags,
        summary: 'List executions (filters: status list, workflowId, jobId, createdAfter, createdBefore)',
        querystring: ListExecutionsQuery,
        response: { 200: ExecutionPage },
      },
    },
    async (request) => executions.list(app.db, request.user.id, request.query),
  );

  app.get(
    '/executions/:id',
    { schema: { tags, summary: 'Get an execution', params: IdParams, response: { 200: Execution } } },
    async (request) => {
      const row = await executions.get(app.db, request.user.id, request.params.id);
      if (!row) throw notFound('execution', request.params.id);
      return executions.present(row);
    },
  );

  app.get(
    '/executions/:id/steps',
    {
      schema: {
        tags,
        summary: 'List the steps of an execution (filter: status list)',
        params: IdParams,
        querystring: ListStepsQuery,
        response: { 200: StepPage },
      },
    },
    async (request) => {
      const page = await executions.listSteps(app.db, request.user.id, request.params.id, request.query);
      if (!page) throw notFound('execution', request.params.id);
      return page;
    },
  );

  app.post(
    '/executions/:id/cancel',
    {
      schema: {
        tags,
        summary: 'Cancel an execution: a running step is aborted and nothing after it runs; 409 when it has already ended',
        params: IdParams,
        response: { 200: Execution },
      },
    },
    async (request) => {
      const result = await executions.cancel(app.db, request.user.id, request.params.id);
      if (result === null) throw notFound('execution', request.params.id);
      if (result === 'ended') throw conflict('The execution has already ended.', 'EXECUTION_ENDED');
      await app.bus.publish({ kind: 'execution', executionId: result.execution.id, userId: request.user.id, revision: result.revision, status: 'cancelled' });
      return executions.present(result.execution);
    },
  );

  app.post(
    '/executions/:id/retry',
    {
      schema: {
        tags,
        summary: 'Retry a failed or cancelled execution as a new one (from the failed step, or ?from=start); honours Idempotency-Key',
        params: IdParams,
        querystring: RetryQuery,
        headers: IdempotencyHeaders,
        response: { 202: Execution },
      },
    },
    async (request, reply) => {
      return replyIdempotently<ExecutionDto>(app.db, request, reply, async () => {
        const created = await executions.retry(app.db, request.user.id, request.params.id, request.query.from);
        if (created === null) throw notFound('execution', request.params.id);
        if (created === 'not-retryable') throw conflict('Only a failed or cancelled execution can be retried.', 'EXECUTION_NOT_RETRYABLE');
        await app.bus.publish({ kind: 'work' });
        return { status: 202, body: executions.present(created), location: `/api/v1/executions/${created.id}` };
      });
    },
  );

  app.get(
    '/executions/:id/events',
    {
      schema: {
        tags,
        summary: 'Server-sent events of every step and status change, in order, until the execution ends',
        description:
          'text/event-stream. `event: step` with `{ executionId, nodeId, status, attempt, output?, error? }` and `event: execution` with `{ executionId, status, output?, error? }`; `id` is the execution revision (events come in revision order). The stream opens with the current state and ends after the execution ends. Large outputs may be left out (`truncated: true`): read them from the steps route.',
        params: IdParams,
        response: { 200: z.string().meta({ description: 'text/event-stream' }) },
      },
    },
    async (request, reply) => {
      const execution = await executions.get(app.db, request.user.id, request.params.id);
      if (!execution) throw notFound('execution', request.params.id);
      await streamExecutionEvents(request, reply, app.db, app.bus, app.eventStreams, execution);
    },
  );
};
