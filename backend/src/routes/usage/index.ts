import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { readUsage } from '../../usage/usage.js';

const count = z.number().int().nonnegative();

const Usage = z
  .object({
    workflows: count,
    jobs: count,
    executions: count,
    steps: count,
    connections: count,
    variables: count,
    webhookDeliveries: count,
    eventDeliveries: count.meta({ description: 'Outbound event messages kept (each is one delivery record, with its attempts).' }),
    payloadBytes: count.meta({
      description: 'Bytes of the stored payloads as JSON text: workflow graphs (every version), execution and step inputs, outputs and errors, connections and variables (sealed secrets included), webhook deliveries (their raw bodies).',
    }),
    payloadBytesLimit: count.meta({ description: 'The storage quota: at or past it, runs, retries and workflow saves are refused (409 STORAGE_QUOTA_EXCEEDED) and scheduled runs are skipped.' }),
  })
  .meta({ id: 'Usage' });

/** What the caller stores, against the storage quota: one read of a row the database keeps current. */
export const usageRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get('/usage', { schema: { tags: ['account'], summary: 'What the caller stores, and the storage quota', response: { 200: Usage } } }, async (request) => ({
    ...(await readUsage(app.database.sql, request.user.id)),
    payloadBytesLimit: app.config.storageMaxBytes,
  }));
};
