import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';

export const connectionRoutes: FastifyPluginAsyncZod = async () => {};
