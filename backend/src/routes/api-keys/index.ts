import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { IdempotencyHeaders, IdParams } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { notFound } from '../../lib/problem.js';
import * as apiKeys from './repository.js';
import { ApiKeyPage, CreateApiKeyBody, CreatedApiKey, ListApiKeysQuery, type CreatedApiKeyDto } from './schemas.js';

const tags = ['api-keys'];

export const apiKeyRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/api-keys',
    { schema: { tags, summary: 'List API keys (never their secrets)', querystring: ListApiKeysQuery, response: { 200: ApiKeyPage } } },
    async (request) => apiKeys.list(app.database.db, request.user.id, request.query),
  );

  app.post(
    '/api-keys',
    {
      schema: {
        tags,
        summary: 'Create an API key; the secret is in this response only (honours Idempotency-Key; 409 API_KEY_LIMIT_REACHED beyond API_KEYS_PER_USER)',
        headers: IdempotencyHeaders,
        body: CreateApiKeyBody,
        response: { 201: CreatedApiKey },
      },
    },
    async (request, reply) => {
      let secret: string | undefined;
      reply.header('cache-control', 'no-store');
      return replyIdempotently<CreatedApiKeyDto>(
        app.database.db,
        request,
        reply,
        async () => {
          const { created, stored } = await apiKeys.create(app.database.db, request.caller, request.body, app.config.apiKeysPerUser);
          secret = created.key;
          // What is kept for a replay has no secret in it.
          return { status: 201, body: stored, location: `/api/v1/api-keys/${stored.id}` };
        },
        (body) => (secret === undefined ? body : { ...body, key: secret }),
      );
    },
  );

  app.delete(
    '/api-keys/:id',
    { schema: { tags, summary: 'Revoke an API key', params: IdParams, response: { 204: z.null().meta({ description: 'Revoked' }) } } },
    async (request, reply) => {
      const deleted = await apiKeys.remove(app.database.db, request.user.id, request.params.id);
      if (!deleted) throw notFound('API key', request.params.id);
      // Replicas may hold the key as a verified caller for a few seconds: they are told now.
      await app.forgetCallers(request.user.id);
      return reply.code(204).send(null);
    },
  );
};
