import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { IdempotencyHeaders, IdParams } from '../../lib/http.js';
import { conflict, notFound } from '../../lib/problem.js';
import { acceptExecution } from '../executions/accept.js';
import { Execution } from '../executions/schemas.js';
import * as deliveries from './repository.js';
import { DeliveryDetail, DeliveryPage, ListDeliveriesQuery } from './schemas.js';

const tags = ['deliveries'];

/** The deliveries of a workflow's webhook (API.md, Inbound webhooks): read, and replayed. */
export const deliveryRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/workflows/:id/deliveries',
    {
      schema: {
        tags,
        summary: 'List the requests a workflow’s webhook received, newest first (filter: status list)',
        params: IdParams,
        querystring: ListDeliveriesQuery,
        response: { 200: DeliveryPage },
      },
    },
    async (request) => {
      const page = await deliveries.listForWorkflow(app.database.db, request.user.id, request.params.id, request.query);
      if (!page) throw notFound('workflow', request.params.id);
      return page;
    },
  );

  app.get(
    '/deliveries/:id',
    { schema: { tags, summary: 'Get a delivery with its headers (without credentials) and raw body (null when rejected: not kept)', params: IdParams, response: { 200: DeliveryDetail } } },
    async (request) => {
      const delivery = await deliveries.get(app.database.db, request.user.id, request.params.id);
      if (!delivery) throw notFound('delivery', request.params.id);
      return delivery;
    },
  );

  app.post(
    '/deliveries/:id/replay',
    {
      schema: {
        tags,
        summary: 'Run the workflow again from a stored delivery: 202 with the new execution (honours Idempotency-Key)',
        description:
          'A new execution (trigger `webhook`) of the workflow’s current version, whose input is built from the stored request as the hook ' +
          'built it: for an accepted delivery, exactly the input its run got (a duplicate, verified like any other, replays its own request). ' +
          'It counts against the same limits as a run (storage quota, executions waiting). No delivery is recorded for it, and the ' +
          'execution is not linked to the delivery. 409 DELIVERY_REJECTED for a rejected delivery (it never started a run, and keeps no ' +
          'body to start one from); 409 NO_WEBHOOK_TRIGGER when the workflow no longer has a trigger.webhook node.',
        params: IdParams,
        headers: IdempotencyHeaders,
        response: { 202: Execution },
      },
    },
    async (request, reply) =>
      acceptExecution(request, reply, async () => {
        const created = await app.executions.replay(request.user.id, request.params.id);
        if (created === null) throw notFound('delivery', request.params.id);
        if (created === 'rejected') throw conflict('This delivery was rejected (see its reason): it cannot start a run.', 'DELIVERY_REJECTED');
        if (created === 'no-webhook') throw conflict('The workflow no longer has a trigger.webhook node to take this delivery.', 'NO_WEBHOOK_TRIGGER');
        return created;
      }),
  );
};
