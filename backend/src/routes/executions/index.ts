import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { IdempotencyHeaders, IdParams } from '../../lib/http.js';
import { conflict, notFound } from '../../lib/problem.js';
import { acceptExecution } from './accept.js';
import { streamExecutionEvents } from './events.js';
import {
  Execution,
  ExecutionPage,
  ListExecutionsQuery,
  ListStepsQuery,
  presentExecution,
  presentExecutionListItem,
  presentStep,
  RetryQuery,
  StepPage,
} from './schemas.js';

const tags = ['executions'];

export const executionRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/executions',
    {
      schema: {
        tags,
        summary: 'List executions (filters: status list, workflowId, jobId, createdAfter, createdBefore)',
        description:
          'Items leave out `input` and `output` unless `includeData=true` (then `pageSize` is at most 20, and a page carries at most API_MAX_PAGE_DATA_BYTES of stored JSON: it may end early, with `hasNext` and a `nextCursor` to the rest; its first item always comes).',
        querystring: ListExecutionsQuery,
        response: { 200: ExecutionPage },
      },
    },
    async (request) => app.executionReads.list(request.user.id, request.query, presentExecutionListItem),
  );

  app.get(
    '/executions/:id',
    { schema: { tags, summary: 'Get an execution', params: IdParams, response: { 200: Execution } } },
    async (request) => {
      const row = await app.executionReads.get(request.user.id, request.params.id);
      if (!row) throw notFound('execution', request.params.id);
      return presentExecution(row);
    },
  );

  app.get(
    '/executions/:id/steps',
    {
      schema: {
        tags,
        summary: 'List the steps of an execution, in the order they ran unless sortDirection=desc (filter: status list)',
        description:
          'A page carries at most API_MAX_PAGE_DATA_BYTES of stored JSON (inputs, outputs, errors): it may end early, with `hasNext` and a `nextCursor` to the rest; its first step always comes.',
        params: IdParams,
        querystring: ListStepsQuery,
        response: { 200: StepPage },
      },
    },
    async (request) => {
      const page = await app.executionReads.listSteps(request.user.id, request.params.id, request.query, presentStep);
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
      const result = await app.executions.cancel(request.user.id, request.params.id);
      if (result === null) throw notFound('execution', request.params.id);
      if (result === 'ended') throw conflict('The execution has already ended.', 'EXECUTION_ENDED');
      return presentExecution(result);
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
    async (request, reply) =>
      acceptExecution(request, reply, async () => {
        const created = await app.executions.retry(request.user.id, request.params.id, request.query.from);
        if (created === null) throw notFound('execution', request.params.id);
        if (created === 'not-retryable') throw conflict('Only a failed or cancelled execution can be retried.', 'EXECUTION_NOT_RETRYABLE');
        return created;
      }),
  );

  app.get(
    '/executions/:id/events',
    {
      schema: {
        tags,
        summary: 'Server-sent events of every step and status change, in order, until the execution ends',
        description:
          'text/event-stream. `event: step` with `{ executionId, nodeId, status, attempt, output?, error? }` and `event: execution` with `{ executionId, status, output?, error? }`; `id` is the execution revision (events come in revision order). The stream opens with the current state: every step, then the execution, whose event alone carries the current revision as its id; a client reconnecting with that `Last-Event-ID` gets no opening state (204 when the execution has ended). It ends after the execution ends. Large outputs may be left out (`truncated: true`): read them from the steps route.',
        params: IdParams,
        response: {
          200: z.string().meta({ description: 'text/event-stream' }),
          204: z.null().meta({ description: 'The execution has ended and Last-Event-ID is its final revision: nothing more will come.' }),
        },
      },
    },
    async (request, reply) => streamExecutionEvents(request, reply, request.params.id),
  );
};
