import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { Problem } from '../lib/problem.js';

const problemResponse = (description: string) => ({ description, content: { 'application/problem+json': { schema: Problem } } });
const errorResponses = {
  '4XX': problemResponse('The request was refused: bad input (400), no caller (401), not allowed (403), not found (404), conflict (409), stale If-Match (412), too many requests (429).'),
  '5XX': problemResponse('The service could not answer now (503 with Retry-After: overloaded, shutting down, database unavailable).'),
};

/**
 * Adds the problem+json error responses to a documented route, for the document only: the
 * route's own schema (and so its compiled serializers) is not touched.
 */
const transform: typeof jsonSchemaTransform = (document) => {
  const { schema } = document;
  if (!schema || schema.hide) return jsonSchemaTransform(document);
  const response = (schema.response ?? {}) as Record<string, unknown>;
  return jsonSchemaTransform({ ...document, schema: { ...schema, response: { ...response, ...errorResponses } } });
};

export interface DocsPluginOptions {
  readonly apiBaseUrl: string;
}

/**
 * The OpenAPI 3 document is generated from the route schemas (zod, through the type provider);
 * it must be registered before the routes so it sees them.
 */
async function docsPlugin(app: FastifyInstance, { apiBaseUrl }: DocsPluginOptions) {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Autonode API',
        version: '1.0.0',
        description:
          'Workflow automation API. Errors are application/problem+json. Authenticate with the Better Auth session cookie (POST /api/auth/sign-in/email) or an API key.',
      },
      servers: [{ url: new URL(apiBaseUrl).origin }],
      components: {
        securitySchemes: {
          sessionCookie: { type: 'apiKey', in: 'cookie', name: 'better-auth.session_token' },
          bearerApiKey: { type: 'http', scheme: 'bearer' },
          headerApiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' },
        },
      },
    },
    transform,
    // Puts the named schemas (.meta({ id })) into components.schemas, where the paths' $refs point.
    transformObject: jsonSchemaTransformObject,
  });
  // staticCSP: the UI's own policy (its scripts and styles) replaces the API's default-src 'none' on its pages.
  await app.register(swaggerUi, { routePrefix: '/api/docs', uiConfig: { deepLinking: true }, staticCSP: true });
  app.get('/api/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}

export default fp(docsPlugin, { name: 'autonode-docs', fastify: '5.x' });
