import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';

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
    transform: jsonSchemaTransform,
    // Puts the named schemas (.meta({ id })) into components.schemas, where the paths' $refs point.
    transformObject: jsonSchemaTransformObject,
  });
  // staticCSP: the UI's own policy (its scripts and styles) replaces the API's default-src 'none' on its pages.
  await app.register(swaggerUi, { routePrefix: '/api/docs', uiConfig: { deepLinking: true }, staticCSP: true });
  app.get('/api/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}

export default fp(docsPlugin, { name: 'autonode-docs', fastify: '5.x' });
