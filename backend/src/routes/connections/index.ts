import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { versionEtag } from '../../lib/conditional-update.js';
import { IdempotencyHeaders } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { secretFingerprint } from '../../secrets/fingerprint.js';
import { assertStorageAvailable } from '../../usage/usage.js';
import { versionedItemRoutes } from '../versioned-resource.js';
import * as connections from './repository.js';
import { Connection, ConnectionPage, CreateConnectionBody, ListConnectionsQuery, UpdateConnectionBody, type ConnectionDto } from './schemas.js';

const tags = ['connections'];

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
        // The secret is digested, never hashed as it is (see secretFingerprint); auth none has none.
        secretFingerprint(app.keyring, request.body, request.query ?? null, ['auth', 'secret']),
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
        patch:
          'Change a connection (auth without secret keeps the stored one; a baseUrl of another origin needs a new auth.secret or auth none; ' +
          '409 CONNECTION_IN_USE on renaming one a workflow uses, or moving it to another origin)',
        delete: 'Delete a connection (409 CONNECTION_IN_USE while a workflow uses it)',
      },
      get: connections.get,
      present: connections.present,
      // A change may store more (longer headers): the storage quota holds, as for a creation.
      update: async (db, userId, id, patch, ifMatch) => {
        // Not the caller's: 404 as for a missing one, whatever the caller's storage.
        if (!(await connections.owns(db, userId, id))) return null;
        await assertStorageAvailable(app.database.sql, userId, app.config.storageMaxBytes);
        return connections.update(db, app.keyring, userId, id, patch, ifMatch);
      },
      remove: connections.remove,
    }),
  );
};
