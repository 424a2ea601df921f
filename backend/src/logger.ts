import { DrizzleQueryError } from 'drizzle-orm';
import type { FastifyRequest } from 'fastify';
import { createRequire } from 'node:module';
import pino, { type Logger } from 'pino';
import type { Config } from './config.js';
import { copyError, OMIT } from './lib/error-copy.js';
import { HOOK_ROUTE } from './webhooks/schemas.js';

/**
 * Paths whose values never reach a log line. Fastify's request serializer logs method/url/host
 * only, but a handler logging a request object, a body or an upstream error must not leak
 * credentials either.
 */
export const redactedPaths = [
  'req.headers.cookie',
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'res.headers["set-cookie"]',
  'headers.cookie',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers["set-cookie"]',
  '*.password',
  '*.newPassword',
  '*.currentPassword',
  '*.token',
  '*.key',
  '*.apiKey',
  '*.secret',
  'password',
  'token',
  'key',
  'apiKey',
  'secret',
];

/**
 * What a PostgreSQL error (postgres.js's PostgresError) may show in a log: its message and the
 * names it reports, never a value. Its `detail` and `where` can quote the row ("Failing row
 * contains (...)"), and postgres.js keeps the statement's `parameters` and `args` on it (as
 * enumerable fields when its debug hook is on).
 */
const databaseErrorFields: ReadonlySet<PropertyKey> = new Set([
  'name',
  'message',
  'stack',
  'cause',
  'severity',
  'code',
  'query',
  'schema_name',
  'table_name',
  'column_name',
  'data_type_name',
  'constraint_name',
]);

/** Causes of causes deeper than this are left out of a log line: a cycle must end. */
const MAX_LOGGED_CAUSES = 5;

/**
 * The error as a log line may show it, for every error logged anywhere (`err`): the statement's
 * text and the database's code (as the failed query's `code`) and message stay, its parameters
 * go. drizzle's DrizzleQueryError writes every parameter into its message and stack (`params:
 * ...`) and keeps them as `params`, and parameters are whatever was written: sealed secrets,
 * variable values, users' data. A copy of the same class (copyError), so the log's `type` is
 * unchanged; an error with no database error in its cause chain is the error itself.
 */
export function loggableError(error: unknown, depth = 0): unknown {
  if (!(error instanceof Error) || depth > MAX_LOGGED_CAUSES) return error;
  const cause = loggableError(error.cause, depth + 1);
  if (error instanceof DrizzleQueryError) {
    const message = `Failed query: ${error.query}`;
    const copy = copyError(error, (key, value) => {
      if (key === 'params') return OMIT;
      if (key === 'message') return message;
      if (key === 'stack') return typeof value === 'string' ? replaceMessage(value, error.message, message) : OMIT;
      return key === 'cause' ? cause : value;
    });
    // pino prints a cause's message and stack, not its fields: the SQLSTATE is shown beside the statement.
    const code = (error.cause as { code?: unknown } | undefined)?.code;
    if (typeof code === 'string') Object.defineProperty(copy, 'code', { value: code, enumerable: true, writable: true, configurable: true });
    return copy;
  }
  if (isPostgresError(error)) return copyError(error, (key, value) => (!databaseErrorFields.has(key) ? OMIT : key === 'cause' ? cause : value));
  return cause === error.cause ? error : copyError(error, (key, value) => (key === 'cause' ? cause : value));
}

/** An error raised by PostgreSQL, as postgres.js reports it. */
function isPostgresError(error: Error): boolean {
  const fields = error as Error & { severity?: unknown; code?: unknown };
  return error.name === 'PostgresError' || (typeof fields.severity === 'string' && typeof fields.code === 'string');
}

/** A stack whose header (`Error: <message>`) is rewritten; when it cannot be found, the call frames only. */
function replaceMessage(stack: string, message: string, replacement: string): string {
  const at = stack.indexOf(message);
  if (at !== -1) return `${stack.slice(0, at)}${replacement}${stack.slice(at + message.length)}`;
  return [replacement, ...stack.split('\n').filter((line) => /^\s+at /.test(line))].join('\n');
}

/** Rounds of percent-decoding a logged URL gets: a sender may encode the path more than once. */
const URL_DECODE_ROUNDS = 3;
/** A `hooks` path segment and the segment after it (slashes already collapsed). */
const HOOK_SEGMENT = /(^|\/)hooks\/[^/?#]*/gi;

/**
 * A request URL as logged: a webhook URL's hook id is what lets anyone start its workflow (a
 * capability, like a key), so it never reaches a log line. A request routed to the hook route
 * (`route`, its pattern) is logged as that pattern, however its URL was spelled (`/api/hook%73/…`
 * routes there too). Any other URL that names a `hooks` segment (in any case, percent-encoded,
 * behind repeated slashes: `//api/hooks/…`, `/API/hooks/…` reach no route but are logged) is
 * logged decoded and with the segment after `hooks` replaced; every other URL as it came.
 */
export function loggableUrl(url: string, route: string | undefined): string {
  if (route === HOOK_ROUTE) return HOOK_ROUTE;
  if (!url.includes('%') && !/hooks/i.test(url)) return url;
  let decoded = url;
  for (let round = 0; round < URL_DECODE_ROUNDS; round++) {
    const next = decoded.replace(/%[0-9a-f]{2}/gi, (escape) => String.fromCharCode(Number.parseInt(escape.slice(1), 16)));
    if (next === decoded) break;
    decoded = next;
  }
  const collapsed = decoded.replace(/\/{2,}/g, '/');
  const redacted = collapsed.replace(HOOK_SEGMENT, '$1hooks/[hook]');
  return redacted === collapsed ? url : redacted;
}

export function createLogger(config: Pick<Config, 'logLevel'>, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    redact: { paths: redactedPaths, censor: '[redacted]' },
    hooks: {
      // pino takes a line's `msg` from the error itself (one logged alone, or as `err` without a
      // message) before any serializer runs: the error is made loggable first.
      logMethod(args, method) {
        const [first] = args as unknown[];
        if (first instanceof Error) (args as unknown[])[0] = loggableError(first);
        else if (typeof first === 'object' && first !== null && 'err' in first && first.err instanceof Error) (args as unknown[])[0] = { ...first, err: loggableError(first.err) };
        method.apply(this, args);
      },
    },
    serializers: {
      // Every `err`, bindings of child loggers included.
      err: (error: unknown) => pino.stdSerializers.err(loggableError(error) as Error),
      // Fastify's request fields, with the scheme: behind a proxy, remoteAddress and protocol are the
      // client's (X-Forwarded-For/-Proto) only when TRUST_PROXY trusts that proxy.
      req: (request: FastifyRequest) => ({
        method: request.method,
        url: loggableUrl(request.url, request.routeOptions?.url),
        host: request.host,
        protocol: request.protocol,
        remoteAddress: request.ip,
        remotePort: request.socket?.remotePort,
      }),
    },
  };
  if (destination) return pino(options, destination);
  // Pretty output is for people at a terminal; pipes and log collectors get one JSON object a line.
  // pino-pretty is a development dependency: the production image (`docker compose run`, which
  // gives a terminal) has none, and logs JSON there too rather than failing to start.
  if (process.stdout.isTTY && prettyPrinterInstalled()) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino(options);
}

/** Whether pino-pretty can be loaded here (installed in development, pruned from the production image). */
export function prettyPrinterInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}
