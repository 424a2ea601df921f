import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { IdempotencyHeaders, IdParams, IfMatchHeaders } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import * as executions from '../executions/repository.js';
import { Execution, RunWorkflowBody, type ExecutionDto } from '../executions/schemas.js';
import { badRequest, notFound } from '../../lib/problem.js';
import * as workflows from './repository.js';
import { CreateWorkflowBody, ListWorkflowsQuery, UpdateWorkflowBody, Workflow, WorkflowPage } from './schemas.js';

const tags = ['workflows'];

export const workflowRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/workflows',
    { schema: { tags, summary: 'List workflows', querystring: ListWorkflowsQuery, response: { 200: WorkflowPage } } },
    async (request) => workflows.list(app.db, request.user.id, request.query),
  );

  app.post(
    '/workflows',
    { schema: { tags, summary: 'Create a workflow', body: CreateWorkflowBody, response: { 201: Workflow } } },
    async (request, reply) => {
      const row = await workflows.create(app.db, request.user.id, request.body);
      reply.code(201).header('location', `/api/v1/workflows/${row.id}`).header('etag', workflows.workflowEtag(row));
      return workflows.present(row);
    },
  );

  app.get(
    '/workflows/:id',
    { schema: { tags, summary: 'Get a workflow (with its ETag)', params: IdParams, response: { 200: Workflow } } },
    async (request, reply) => {
      const row = await workflows.get(app.db, request.user.id, request.params.id);
      if (!row) throw notFound('workflow', request.params.id);
      reply.header('etag', workflows.workflowEtag(row));
      return workflows.present(row);
    },
  );

  app.patch(
    '/workflows/:id',
    {
      schema: {
        tags,
        summary: 'Change a workflow (bumps its version)',
        params: IdParams,
        headers: IfMatchHeaders,
        body: UpdateWorkflowBody,
        response: { 200: Workflow },
      },
    },
    async (request, reply) => {
      const row = await workflows.update(app.db, request.user.id, request.params.id, request.body, request.headers['if-match']);
      if (!row) throw notFound('workflow', request.params.id);
      reply.header('etag', workflows.workflowEtag(row));
      return workflows.present(row);
    },
  );

  app.post(
    '/workflows/:id/run',
    {
      schema: {
        tags,
        summary: 'Run the workflow now: 202 with the new pending execution (honours Idempotency-Key)',
        params: IdParams,
        headers: IdempotencyHeaders,
        body: RunWorkflowBody,
        response: { 202: Execution },
      },
    },
    async (request, reply) => {
      return replyIdempotently<ExecutionDto>(app.db, request, reply, async () => {
        const workflow = await workflows.get(app.db, request.user.id, request.params.id);
        if (!workflow) throw notFound('workflow', request.params.id);
        const inputBytes = Buffer.byteLength(JSON.stringify(request.body.input ?? null), 'utf8');
        if (inputBytes > app.config.engine.maxPayloadBytes) {
          throw badRequest(`The input is ${inputBytes} bytes of JSON; executions accept at most ${app.config.engine.maxPayloadBytes}.`, [
            { path: 'input', message: `is larger than ${app.config.engine.maxPayloadBytes} bytes` },
          ]);
        }
        const execution = await executions.create(app.db, request.user.id, {
          workflowId: workflow.id,
          workflowVersion: workflow.version,
          workflowSnapshot: { nodes: workflow.nodes, edges: workflow.edges },
          trigger: 'manual',
          input: request.body.input ?? null,
        });
        await app.bus.publish({ kind: 'work' });
        return { status: 202, body: executions.present(execution), location: `/api/v1/executions/${execution.id}` };
      });
    },
  );

  app.delete(
    '/workflows/:id',
    {
      schema: {
        tags,
        summary: 'Delete a workflow with its jobs and executions',
        params: IdParams,
        headers: IfMatchHeaders,
        response: { 204: z.null().meta({ description: 'Deleted' }) },
      },
    },
    async (request, reply) => {
      const deleted = await workflows.remove(app.db, request.user.id, request.params.id, request.headers['if-match']);
      if (!deleted) throw notFound('workflow', request.params.id);
      return reply.code(204).send(null);
    },
  );
};
