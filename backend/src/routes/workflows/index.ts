import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { IdempotencyHeaders, IdParams } from '../../lib/http.js';
import { versionEtag } from '../../lib/conditional-update.js';
import { conflict, notFound } from '../../lib/problem.js';
import { acceptExecution } from '../executions/accept.js';
import { Execution, RunWorkflowBody } from '../executions/schemas.js';
import { versionedItemRoutes } from '../versioned-resource.js';
import * as workflows from './repository.js';
import {
  CreateWorkflowBody,
  ListWorkflowsQuery,
  ListWorkflowVersionsQuery,
  UpdateWorkflowBody,
  Workflow,
  WorkflowPage,
  WorkflowVersion,
  WorkflowVersionPage,
  WorkflowVersionParams,
} from './schemas.js';
import { assertStorageAvailable } from '../../usage/usage.js';

const tags = ['workflows'];

export const workflowRoutes: FastifyPluginAsyncZod = async (app) => {
  const { apiBaseUrl } = app.config.auth;
  app.get(
    '/workflows',
    { schema: { tags, summary: 'List workflows', querystring: ListWorkflowsQuery, response: { 200: WorkflowPage } } },
    async (request) => workflows.list(app.database.db, request.user.id, request.query, apiBaseUrl),
  );

  app.post(
    '/workflows',
    { schema: { tags, summary: 'Create a workflow', body: CreateWorkflowBody, response: { 201: Workflow } } },
    async (request, reply) => {
      await assertStorageAvailable(app.database.sql, request.user.id, app.config.storageMaxBytes);
      const row = await workflows.create(app.database.db, request.user.id, request.body);
      reply.code(201).header('location', `/api/v1/workflows/${row.id}`).header('etag', versionEtag(row));
      return workflows.present(row, apiBaseUrl);
    },
  );

  await app.register(
    versionedItemRoutes({
      path: '/workflows',
      noun: 'workflow',
      tags,
      schema: Workflow,
      patchBody: UpdateWorkflowBody,
      summaries: { get: 'Get a workflow (with its ETag)', patch: 'Change a workflow (bumps its version)', delete: 'Delete a workflow with its jobs and executions' },
      ...workflows,
      present: (row) => workflows.present(row, apiBaseUrl),
      // Every save keeps its graph as a new version: it stores more.
      update: async (db, userId, id, patch, ifMatch) => {
        // Not the caller's: 404 as for a missing one, whatever the caller's storage.
        if (!(await workflows.owns(db, userId, id))) return null;
        await assertStorageAvailable(app.database.sql, userId, app.config.storageMaxBytes);
        return workflows.update(db, userId, id, patch, ifMatch);
      },
    }),
  );

  app.get(
    '/workflows/:id/versions',
    {
      schema: {
        tags,
        summary: 'The saved versions of a workflow (newest first): each run ran one of them',
        params: IdParams,
        querystring: ListWorkflowVersionsQuery,
        response: { 200: WorkflowVersionPage },
      },
    },
    async (request) => {
      const page = await workflows.listVersions(app.database.db, request.user.id, request.params.id, request.query);
      if (!page) throw notFound('workflow', request.params.id);
      return page;
    },
  );

  app.get(
    '/workflows/:id/versions/:version',
    { schema: { tags, summary: 'One saved version of a workflow: its graph as it was', params: WorkflowVersionParams, response: { 200: WorkflowVersion } } },
    async (request) => {
      const version = await workflows.getVersion(app.database.db, request.user.id, request.params.id, request.params.version);
      if (!version) throw notFound('version of this workflow', String(request.params.version));
      return version;
    },
  );

  app.post(
    '/workflows/:id/webhook/rotate',
    {
      schema: {
        tags,
        summary: 'Give the workflow a new webhook URL: the old one answers 404 at once (409 NO_WEBHOOK_TRIGGER without a trigger.webhook node)',
        params: IdParams,
        response: { 200: Workflow },
      },
    },
    async (request) => {
      const row = await workflows.rotateHook(app.database.db, request.user.id, request.params.id);
      if (row === null) throw notFound('workflow', request.params.id);
      if (row === 'no-webhook') throw conflict('This workflow has no trigger.webhook node, so it has no webhook URL to replace.', 'NO_WEBHOOK_TRIGGER');
      return workflows.present(row, apiBaseUrl);
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
    async (request, reply) =>
      acceptExecution(request, reply, async () => {
        const execution = await app.executions.create(request.user.id, request.params.id, 'manual', request.body.input ?? null);
        if (!execution) throw notFound('workflow', request.params.id);
        return execution;
      }),
  );
};
