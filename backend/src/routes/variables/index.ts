import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';

export const variableRoutes: FastifyPluginAsyncZod = async () => {};
