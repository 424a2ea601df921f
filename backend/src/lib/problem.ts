import { STATUS_CODES } from 'node:http';
import { z } from 'zod';

/** The problem+json body of API.md (RFC 9457 with `code`, `requestId` and `errors`), as the OpenAPI document shows it. */
export const Problem = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string().meta({ description: 'Stable, machine-readable: NOT_FOUND, CSRF_ORIGIN_REJECTED, RATE_LIMITED, ...' }),
    requestId: z.string(),
    errors: z
      .array(
        z.object({
          /** Where the problem is, in the request's own terms: `nodes[2].type`, `pageSize`. */
          path: z.string(),
          message: z.string(),
        }),
      )
      .optional()
      .meta({ description: 'Which fields were refused, and why (400).' }),
  })
  .meta({ id: 'Problem', description: 'RFC 9457 problem details (application/problem+json).' });

export type ProblemBody = z.infer<typeof Problem>;
export type ProblemFieldError = NonNullable<ProblemBody['errors']>[number];

/**
 * An error that is meant for the caller. The error handler turns it into problem+json as it is;
 * any other error becomes a generic 500 whose details stay in the log.
 */
export class ProblemError extends Error {
  override readonly name = 'ProblemError';
  readonly status: number;
  readonly code: string;
  readonly errors: readonly ProblemFieldError[] | undefined;
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    status: number,
    code: string,
    detail: string,
    extra: { errors?: readonly ProblemFieldError[]; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(detail, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.status = status;
    this.code = code;
    this.errors = extra.errors;
    this.headers = extra.headers ?? {};
  }
}

export function statusTitle(status: number): string {
  return STATUS_CODES[status] ?? 'Error';
}

export const badRequest = (detail: string, errors?: readonly ProblemFieldError[]) =>
  new ProblemError(400, 'BAD_REQUEST', detail, errors ? { errors } : {});
/**
 * The 400 a schema violation of the body answers (VALIDATION_FAILED, naming the field), for the
 * checks a schema cannot make: those that need the stored row.
 */
export const invalidBody = (path: string, message: string) => new ProblemError(400, 'VALIDATION_FAILED', 'The body is invalid.', { errors: [{ path, message }] });
export const unauthorized = (detail = 'Sign in, or send an API key as Authorization: Bearer <key> or x-api-key.') =>
  new ProblemError(401, 'UNAUTHORIZED', detail);
export const forbidden = (detail: string, code = 'FORBIDDEN') => new ProblemError(403, code, detail);
export const notFound = (resource: string, id?: string) =>
  new ProblemError(404, 'NOT_FOUND', id === undefined ? `No such ${resource}.` : `No ${resource} with id '${id}'.`);
export const conflict = (detail: string, code = 'CONFLICT') => new ProblemError(409, code, detail);
export const preconditionFailed = (detail = 'The resource has changed since it was read (If-Match does not match its ETag).') =>
  new ProblemError(412, 'PRECONDITION_FAILED', detail);
export const serviceUnavailable = (detail: string, retryAfterSeconds = 5, code = 'SERVICE_UNAVAILABLE') =>
  new ProblemError(503, code, detail, { headers: { 'retry-after': String(retryAfterSeconds) } });
