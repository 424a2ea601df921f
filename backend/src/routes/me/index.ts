import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';

const Me = z
  .object({
    id: z.string(),
    name: z.string(),
    email: z.email(),
    authenticatedVia: z.enum(['session', 'apiKey']),
  })
  .meta({ id: 'Me' });

/** Who the caller is: lets a script check its API key and an SPA its session in one call. */
export const meRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/me',
    { schema: { tags: ['account'], summary: 'The calling user', response: { 200: Me } } },
    async (request) => ({ ...request.user, authenticatedVia: request.caller.via }),
  );
};
