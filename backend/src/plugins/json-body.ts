import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { exceedsDepth } from '../lib/json-depth.js';
import { ProblemError } from '../lib/problem.js';

/** Deeper JSON bodies are refused (400): no legitimate workflow or input needs more. */
export const MAX_JSON_DEPTH = 64;

/**
 * Fastify's own JSON parser (prototype poisoning refused), plus a depth bound: nothing downstream
 * (hashing for idempotency, jsonb, expressions) should meet a body nested a million levels deep.
 *
 * JSON is the only body type the API reads (API.md): Fastify's built-in `text/plain` parser is
 * removed, so a body of any other type (or none named) is 415 UNSUPPORTED_MEDIA_TYPE on every
 * route, with or without a body schema, Better Auth's included. A scope that takes other types
 * (inbound webhooks) adds its own parsers.
 */
async function jsonBodyPlugin(app: FastifyInstance) {
  app.removeContentTypeParser('text/plain');
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    parseJson(request, body.toString(), (error, value) => {
      if (error) return done(error, undefined);
      if (exceedsDepth(value, MAX_JSON_DEPTH)) {
        return done(new ProblemError(400, 'JSON_TOO_DEEP', `The body is nested deeper than ${MAX_JSON_DEPTH} levels.`), undefined);
      }
      done(null, value);
    });
  });
}

export default fp(jsonBodyPlugin, { name: 'autonode-json-body', fastify: '5.x' });
