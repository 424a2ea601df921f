import { createHmac } from 'node:crypto';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { versionEtag } from '../../lib/conditional-update.js';
import { IdempotencyHeaders } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { assertStorageAvailable } from '../../usage/usage.js';
import { versionedItemRoutes } from '../versioned-resource.js';
import * as connections from './repository.js';
import { Connection, ConnectionPage, CreateConnectionBody, ListConnectionsQuery, UpdateConnectionBody, type ConnectionDto, type CreateConnectionInput } from './schemas.js';

const tags = ['connections'];

/**
 * What identifies a creation for its Idempotency-Key: the body with the secret replaced by a keyed
 * digest of it. The same secret gives the same digest (a replay still matches, another secret is
 * still another body), but the hash kept for 24 h cannot confirm a guess of the secret to whoever
 * reads the database without the server's key.
 */
function creationFingerprint(body: CreateConnectionInput, query: unknown, digestKey: string): unknown {
  if (body.auth.type === 'none') return { body, query };
  const secretDigest = createHmac('sha256', digestKey).update('autonode:connection-secret:').update(body.auth.secret).digest('base64url');
  return { body: { ...body, auth: { ...body.auth, secret: { hmacSha256: secretDigest } } }, query };
}

export const connectionRoutes: FastifyPluginAsyncZod = async (app) => {
  const limits = { maxPerUser: app.config.connectionsPerUser };

  app.get(
    '/connections',
    { schema: { tags, summary: 'List connections (search: name, description)', querystring: ListConnectionsQuery, response: { 200: ConnectionPage } } },
    async (request) => connections.list(app.database.db, request.user.id, request.query),
  );

  app.post(
    '/connections',
    {
      schema: {
        tags,
        summary: 'Create a connection (honours Idempotency-Key; 409 NAME_TAKEN, CONNECTION_LIMIT_REACHED beyond CONNECTIONS_PER_USER)',
        headers: IdempotencyHeaders,
        body: CreateConnectionBody,
        response: { 201: Connection },
      },
    },
    async (request, reply) =>
      replyIdempotently<ConnectionDto>(
        app.database.db,
        request,
        reply,
        async () => {
          await assertStorageAvailable(app.database.sql, request.user.id, app.config.storageMaxBytes);
          const row = await connections.create(app.database.db, app.keyring, request.user.id, request.body, limits);
          return { status: 201, body: connections.present(row), location: `/api/v1/connections/${row.id}` };
        },
        // The ETag of the connection as answered: a replay answers the first result, with its version.
        (body) => {
          reply.header('etag', versionEtag(body));
          return body;
        },
        creationFingerprint(request.body, request.query ?? null, app.config.auth.secret),
      ),
  );

  await app.register(
    versionedItemRoutes({
      path: '/connections',
      noun: 'connection',
      tags,
      schema: Connection,
      patchBody: UpdateConnectionBody,
      summaries: {
        get: 'Get a connection (with its ETag; never its secret)',
        patch: 'Change a connection (auth without secret keeps the stored one; 409 CONNECTION_IN_USE on renaming one a workflow uses)',
        delete: 'Delete a connection (409 CONNECTION_IN_USE while a workflow uses it)',
      },
      get: connections.get,
      present: connections.present,
      update: (db, userId, id, patch, ifMatch) => connections.update(db, app.keyring, userId, id, patch, ifMatch),
      remove: connections.remove,
    }),
  );
};
