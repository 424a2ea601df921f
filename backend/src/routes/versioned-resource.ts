import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Db } from '../db/client.js';
import { versionEtag } from '../lib/conditional-update.js';
import { IdParams, IfMatchHeaders } from '../lib/http.js';
import { notFound } from '../lib/problem.js';

/** A user-owned resource whose version is its ETag (workflows, jobs): what its item routes need. */
export interface VersionedResource<Row extends { version: number }, Dto, Patch> {
  /** The collection's path, e.g. `/workflows`; the item routes are under `/:id`. */
  readonly path: string;
  /** What a 404 calls it. */
  readonly noun: string;
  readonly tags: string[];
  readonly schema: z.ZodType<Dto>;
  readonly patchBody: z.ZodType<Patch>;
  readonly summaries: { readonly get: string; readonly patch: string; readonly delete: string };
  get(db: Db, userId: string, id: string): Promise<Row | null>;
  update(db: Db, userId: string, id: string, patch: Patch, ifMatch: string | undefined): Promise<Row | null>;
  remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean>;
  present(row: Row): Dto;
}

/** What the schemas below have validated (the type provider cannot see through this factory's generics). */
type ItemRequest<Patch = never> = FastifyRequest<{ Params: z.infer<typeof IdParams>; Headers: z.infer<typeof IfMatchHeaders>; Body: Patch }>;

/**
 * GET, PATCH and DELETE of one item of a versioned resource: the GET and the PATCH send its ETag,
 * the PATCH and the DELETE honour If-Match (412 when stale), another user's id is a 404.
 */
export function versionedItemRoutes<Row extends { version: number }, Dto, Patch>(resource: VersionedResource<Row, Dto, Patch>): FastifyPluginAsync {
  const { path, noun, tags, schema, summaries } = resource;
  return async (app) => {
    app.get(`${path}/:id`, { schema: { tags, summary: summaries.get, params: IdParams, response: { 200: schema } } }, async (request: ItemRequest, reply) => {
      const row = await resource.get(app.database.db, request.user.id, request.params.id);
      if (!row) throw notFound(noun, request.params.id);
      reply.header('etag', versionEtag(row));
      return resource.present(row);
    });

    app.patch(
      `${path}/:id`,
      { schema: { tags, summary: summaries.patch, params: IdParams, headers: IfMatchHeaders, body: resource.patchBody, response: { 200: schema } } },
      async (request: ItemRequest<Patch>, reply) => {
        const row = await resource.update(app.database.db, request.user.id, request.params.id, request.body as Patch, request.headers['if-match']);
        if (!row) throw notFound(noun, request.params.id);
        reply.header('etag', versionEtag(row));
        return resource.present(row);
      },
    );

    app.delete(
      `${path}/:id`,
      { schema: { tags, summary: summaries.delete, params: IdParams, headers: IfMatchHeaders, response: { 204: z.null().meta({ description: 'Deleted' }) } } },
      async (request: ItemRequest, reply) => {
        const deleted = await resource.remove(app.database.db, request.user.id, request.params.id, request.headers['if-match']);
        if (!deleted) throw notFound(noun, request.params.id);
        return reply.code(204).send(null);
      },
    );
  };
}
