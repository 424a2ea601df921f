import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { serviceUnavailable } from '../lib/problem.js';

const READY_TIMEOUT_MS = 2_000;

const HealthStatus = z.object({ status: z.literal('ok') }).meta({ id: 'HealthStatus' });

/** Liveness and readiness, outside the authenticated scope (load balancers call them). */
export const healthRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/api/health',
    { schema: { tags: ['operations'], summary: 'Liveness: 200 while the process runs', response: { 200: HealthStatus } } },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/api/ready',
    {
      schema: {
        tags: ['operations'],
        summary: 'Readiness: 200 when the database answers, 503 problem+json otherwise',
        response: { 200: HealthStatus },
      },
    },
    async () => {
      // postgres.js would wait up to DB_CONNECT_TIMEOUT for a dead server; readiness must answer fast.
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), READY_TIMEOUT_MS);
      });
      const ping = app.database.sql`select 1`.then(() => 'ok' as const, () => 'failed' as const);
      const outcome = await Promise.race([ping, timedOut]).finally(() => clearTimeout(timer));
      if (outcome !== 'ok') throw serviceUnavailable('The database does not answer.', 5, 'DATABASE_UNAVAILABLE');
      return { status: 'ok' as const };
    },
  );
};
