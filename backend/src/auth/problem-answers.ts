import { BASE_ERROR_CODES } from 'better-auth';
import type { FastifyRequest } from 'fastify';
import type { ProblemBody, ProblemFieldError } from '../lib/problem.js';
import { statusTitle } from '../lib/problem.js';
import { problem } from '../plugins/errors.js';
import { INVALID_USER_FIELD } from './auth.js';

/** What Better Auth (better-call) puts in an error answer: `{ code?, message? }` as JSON. */
interface BetterAuthErrorBody {
  readonly code?: unknown;
  readonly message?: unknown;
}

const STABLE_CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

/** Better Auth's own codes and their fixed messages: text it wrote, never a caller's input. */
const knownMessages: ReadonlyMap<string, string> = new Map(
  Object.values(BASE_ERROR_CODES).map((entry): [string, string] => [entry.code, entry.message]),
);

function parseBody(text: string): BetterAuthErrorBody {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as BetterAuthErrorBody) : {};
  } catch {
    return {};
  }
}

/** `UNAUTHORIZED`, `TOO_MANY_REQUESTS`: the stable code of an answer that named none. */
function codeOfStatus(status: number): string {
  if (status === 429) return 'RATE_LIMITED';
  if (status >= 500) return 'INTERNAL_ERROR';
  return statusTitle(status).toUpperCase().replace(/[^A-Z0-9]+/g, '_').replace(/^_|_$/g, '') || 'ERROR';
}

/**
 * better-call's validation message, `[body.email] Invalid email address; [body.password] ...`, as
 * field errors in the request's own terms (`email`). Its messages come from Better Auth's schemas.
 */
function validationErrors(message: unknown): ProblemFieldError[] {
  if (typeof message !== 'string') return [];
  const errors: ProblemFieldError[] = [];
  for (const part of message.slice(0, 2_000).split('; ')) {
    const match = /^\[(?:body|query)\.?([^\]]*)\] (.+)$/.exec(part);
    if (match) errors.push({ path: match[1] ?? '', message: (match[2] ?? 'is invalid').slice(0, 200) });
  }
  return errors;
}

/** Our own user-field check (auth.ts) writes `<field>: <rule>`: text of ours, never the value sent. */
function userFieldErrors(message: unknown): ProblemFieldError[] {
  const match = typeof message === 'string' ? /^(name|email|image): (.{1,200})$/.exec(message) : null;
  return match ? [{ path: match[1] ?? '', message: match[2] ?? '' }] : [];
}

function detailOf(status: number, code: string): string {
  const known = knownMessages.get(code);
  if (known !== undefined) return known;
  if (code === 'VALIDATION_ERROR') return 'The request body is invalid.';
  if (code === INVALID_USER_FIELD) return 'A user field is out of its bounds.';
  if (status === 429) return 'Too many attempts; try again later.';
  if (status >= 500) return 'Something went wrong on our side. Quote the requestId if you report it.';
  return `${statusTitle(status)}.`;
}

/**
 * API.md: every error is problem+json, Better Auth's included. An error answer of Better Auth keeps
 * its status; `code` is Better Auth's own (INVALID_EMAIL_OR_PASSWORD, INVALID_ORIGIN, ...) when it
 * names one, else one derived from the status; `detail` is Better Auth's fixed message for a code it
 * defines, or a generic sentence, so no input (an email, a password) ever comes back in it. Its
 * `X-Retry-After` (seconds) is also sent as the standard Retry-After.
 */
export function problemFromAuthAnswer(
  request: FastifyRequest,
  status: number,
  text: string,
  headers: Headers,
): { body: ProblemBody; headers: Record<string, string> } {
  const answer = parseBody(text);
  const code = typeof answer.code === 'string' && STABLE_CODE.test(answer.code) ? answer.code : codeOfStatus(status);
  const errors = code === 'VALIDATION_ERROR' ? validationErrors(answer.message) : code === INVALID_USER_FIELD ? userFieldErrors(answer.message) : [];
  const retryAfter = headers.get('x-retry-after');
  if (status >= 500) request.log.warn({ status, code }, 'Better Auth answered with a server error');
  return {
    body: problem(request, status, code, detailOf(status, code), errors),
    headers: retryAfter !== null && /^\d+$/.test(retryAfter) ? { 'retry-after': retryAfter } : {},
  };
}
