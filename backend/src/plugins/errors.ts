import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifySchemaValidationError } from 'fastify';
import fp from 'fastify-plugin';
import { isResponseSerializationError } from 'fastify-type-provider-zod';
import { ProblemError, statusTitle, type ProblemBody, type ProblemFieldError } from '../lib/problem.js';
import { isDatabaseUnavailable, isDataException, isTransientConflict } from '../db/errors.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

/** `/nodes/2/type` -> `nodes[2].type`: the notation API.md uses for paths in `errors`. */
export function toFieldPath(segments: readonly (string | number)[]): string {
  let path = '';
  for (const segment of segments) {
    if (typeof segment === 'number' || /^\d+$/.test(String(segment))) path += `[${segment}]`;
    else path += path ? `.${segment}` : String(segment);
  }
  return path;
}

function validationErrors(validation: readonly FastifySchemaValidationError[]): ProblemFieldError[] {
  const errors: ProblemFieldError[] = [];
  for (const item of validation) {
    const base = item.instancePath.split('/').filter(Boolean);
    const unknownKeys = (item.params as { keys?: unknown } | undefined)?.keys;
    // A strict object names each unknown key separately, so the caller sees `userId`, not the object.
    if (item.keyword === 'unrecognized_keys' && Array.isArray(unknownKeys)) {
      for (const key of unknownKeys as string[]) errors.push({ path: toFieldPath([...base, key]), message: 'is not a field of this resource (unknown fields are refused)' });
      continue;
    }
    errors.push({ path: toFieldPath(base), message: item.message ?? 'is invalid' });
  }
  return errors;
}

export function problem(request: FastifyRequest, status: number, code: string, detail: string, errors?: readonly ProblemFieldError[]): ProblemBody {
  return {
    type: 'about:blank',
    title: statusTitle(status),
    status,
    detail,
    code,
    requestId: String(request.id),
    ...(errors && errors.length > 0 ? { errors: [...errors] } : {}),
  };
}

export function sendProblem(reply: FastifyReply, body: ProblemBody, headers: Record<string, string> = {}): FastifyReply {
  return reply.code(body.status).headers(headers).type(PROBLEM_CONTENT_TYPE).send(body);
}

/** Fastify's own client errors: their messages are written for callers and carry no internals. */
const fastifyClientErrors: Record<string, { status: number; code: string; detail?: string }> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', detail: 'Send the body as application/json.' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'BAD_REQUEST' },
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'PAYLOAD_TOO_LARGE', detail: 'The request body is larger than the server accepts.' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'MALFORMED_JSON', detail: 'The body is empty but the content type says JSON.' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'MALFORMED_JSON', detail: 'The body is not valid JSON.' },
};

/**
 * Fastify's `frameworkErrors` option: errors raised before routing (a malformed URL, an over-long
 * parameter) get the same problem+json shape as all others.
 */
export function answerFrameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const status = error.statusCode ?? 400;
  reply.header('x-request-id', request.id);
  return sendProblem(reply, problem(request, status, error.code === 'FST_ERR_BAD_URL' ? 'BAD_URL' : (error.code ?? 'BAD_REQUEST'), error.message));
}

/**
 * One error handler and one error shape for the whole API. Caller errors are answered as they
 * are; database outages become 503 with Retry-After; anything else is a 500 whose details go
 * to the log only.
 */
async function errorsPlugin(app: FastifyInstance) {
  app.setErrorHandler((error: FastifyError | ProblemError | Error, request, reply) => {
    if (error instanceof ProblemError) {
      if (error.status >= 500) request.log.warn({ err: error }, 'request failed');
      return sendProblem(reply, problem(request, error.status, error.code, error.message, error.errors), error.headers);
    }

    const fastifyError = error as FastifyError;
    if (fastifyError.validation) {
      const errors = validationErrors(fastifyError.validation);
      const where = fastifyError.validationContext ?? 'request';
      return sendProblem(reply, problem(request, 400, 'VALIDATION_FAILED', `The ${where} is invalid.`, errors));
    }

    const known = fastifyError.code ? fastifyClientErrors[fastifyError.code] : undefined;
    if (known) {
      return sendProblem(reply, problem(request, known.status, known.code, known.detail ?? fastifyError.message));
    }
    if (error instanceof SyntaxError && fastifyError.statusCode === 400) {
      return sendProblem(reply, problem(request, 400, 'MALFORMED_JSON', 'The body is not valid JSON.'));
    }

    // SQLSTATE class 22 (data exception): a value PostgreSQL cannot store or read, such as a NUL
    // character or a lone surrogate in text or JSON. The caller's data, not our fault: 400, nothing stored.
    if (isDataException(error)) {
      request.log.info({ err: error }, 'value refused by the database');
      return sendProblem(
        reply,
        problem(request, 400, 'UNSTORABLE_VALUE', 'The request contains a value that cannot be stored (for example a NUL character or an unpaired surrogate).'),
      );
    }

    if (isDatabaseUnavailable(error)) {
      request.log.warn({ err: error }, 'database unavailable');
      return sendProblem(
        reply,
        problem(request, 503, 'DATABASE_UNAVAILABLE', 'The database is unavailable; try again shortly.'),
        { 'retry-after': '5' },
      );
    }

    if (isTransientConflict(error)) {
      // Nothing was stored (db/transaction.ts already ran it again where that is safe): a clear
      // "try again", not a 500.
      request.log.warn({ err: error }, 'write aborted by a deadlock or serialization failure');
      return sendProblem(
        reply,
        problem(request, 503, 'CONCURRENT_WRITE', 'The write collided with concurrent work on the same data and nothing was changed; try again.'),
        { 'retry-after': '1' },
      );
    }

    if (isResponseSerializationError(error)) {
      request.log.error({ err: error, issues: error.cause.issues }, 'response did not match its schema');
    } else if (
      typeof fastifyError.statusCode === 'number' &&
      fastifyError.statusCode >= 400 &&
      fastifyError.statusCode < 500
    ) {
      // Other 4xx raised by Fastify or a plugin: their messages are meant for the caller.
      const status = fastifyError.statusCode;
      const code = status === 429 ? 'RATE_LIMITED' : (fastifyError.code ?? 'BAD_REQUEST');
      return sendProblem(reply, problem(request, status, code, fastifyError.message));
    } else if (fastifyError.statusCode === 503) {
      return sendProblem(reply, problem(request, 503, 'SERVICE_UNAVAILABLE', 'The server is shutting down; try again.'), { 'retry-after': '5' });
    } else {
      request.log.error({ err: error }, 'unhandled error');
    }
    return sendProblem(reply, problem(request, 500, 'INTERNAL_ERROR', 'Something went wrong on our side. Quote the requestId if you report it.'));
  });

  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, problem(request, 404, 'ROUTE_NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0]}.`)),
  );
}

export default fp(errorsPlugin, { name: 'autonode-errors', fastify: '5.x' });
