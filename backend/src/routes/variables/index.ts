import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { versionEtag } from '../../lib/conditional-update.js';
import { IdempotencyHeaders } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { secretFingerprint } from '../../secrets/fingerprint.js';
import { assertStorageAvailable } from '../../usage/usage.js';
import { versionedItemRoutes } from '../versioned-resource.js';
import * as variables from './repository.js';
import { CreateVariableBody, ListVariablesQuery, UpdateVariableBody, Variable, VariablePage, type VariableDto } from './schemas.js';

const tags = ['variables'];

export const variableRoutes: FastifyPluginAsyncZod = async (app) => {
  const limits = { maxPerUser: app.config.variablesPerUser };

  app.get(
    '/variables',
    { schema: { tags, summary: 'List variables (search: key; a secret’s value is never listed)', querystring: ListVariablesQuery, response: { 200: VariablePage } } },
    async (request) => variables.list(app.database.db, request.user.id, request.query),
  );

  app.post(
    '/variables',
    {
      schema: {
        tags,
        summary: 'Create a variable or a secret (honours Idempotency-Key; 409 NAME_TAKEN, VARIABLE_LIMIT_REACHED beyond VARIABLES_PER_USER)',
        description:
          '`value` is required: null is a legal value of a plain variable. A secret (`secret: true`) takes a string; it is sealed at rest and no response, replays included, carries it.',
        headers: IdempotencyHeaders,
        body: CreateVariableBody,
        response: { 201: Variable },
      },
    },
    async (request, reply) =>
      replyIdempotently<VariableDto>(
        app.database.db,
        request,
        reply,
        async () => {
          await assertStorageAvailable(app.database.sql, request.user.id, app.config.storageMaxBytes);
          const row = await variables.create(app.database.db, app.keyring, request.user.id, request.body, limits);
          return { status: 201, body: variables.present(row), location: `/api/v1/variables/${row.id}` };
        },
        // Fresh or replayed, the answer is the variable as created, so its ETag is that of the first version.
        (body) => {
          reply.header('etag', versionEtag({ version: variables.CREATED_VERSION }));
          return body;
        },
        // A secret's value is digested, never hashed as it is (see secretFingerprint).
        secretFingerprint(app.keyring, request.body, request.query ?? null, request.body.secret ? ['value'] : undefined),
      ),
  );

  await app.register(
    versionedItemRoutes({
      path: '/variables',
      noun: 'variable',
      tags,
      schema: Variable,
      patchBody: UpdateVariableBody,
      summaries: {
        get: 'Get a variable (with its ETag; a secret’s value is left out)',
        patch: 'Change a variable’s key or value (a value sent for a secret is sealed); `secret` changes only together with a new value',
        delete: 'Delete a variable (a workflow step that still refers to a deleted secret fails with SECRET_NOT_FOUND)',
      },
      get: variables.get,
      present: variables.present,
      // A change may store more (a longer value): the storage quota holds, as for a creation.
      update: async (db, userId, id, patch, ifMatch) => {
        // Not the caller's: 404 as for a missing one, whatever the caller's storage.
        if (!(await variables.owns(db, userId, id))) return null;
        await assertStorageAvailable(app.database.sql, userId, app.config.storageMaxBytes);
        return variables.update(db, app.keyring, userId, id, patch, ifMatch);
      },
      remove: variables.remove,
    }),
  );
};
