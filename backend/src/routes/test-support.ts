import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';

/**
 * Routes for fault and shutdown tests only. buildApp registers them when ENABLE_TEST_ROUTES=true,
 * which the config refuses in production.
 */
export const testSupportRoutes: FastifyPluginAsyncZod = async (app) => {
  app.addHook('onRequest', app.admit);
  app.get(
    '/api/test/sleep',
    {
      schema: {
        hide: true,
        querystring: z.object({ ms: z.coerce.number().int().min(0).max(60_000).default(1_000) }).strict(),
        response: { 200: z.object({ sleptMs: z.number() }) },
      },
    },
    async (request) => {
      // pg_sleep holds a pooled connection for the whole time: a slow request that really uses the database.
      await app.database.sql`select pg_sleep(${request.query.ms / 1000})`;
      return { sleptMs: request.query.ms };
    },
  );
};
