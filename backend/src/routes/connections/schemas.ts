import { z } from 'zod';
import { connectionAuthTypes, type ConnectionAuthType } from '../../db/schema/index.js';
// Workflows refer to a connection by name (`http.request` params `connection`): one pattern for both.
import { CONNECTION_NAME } from '../../engine/nodes/http.js';
import { Timestamp } from '../../lib/http.js';
import { httpUrl } from '../../lib/http-url.js';
import { pageOf, searchableListQuery } from '../../lib/pagination.js';
import { wellFormed } from '../../lib/well-formed-text.js';
import { SecretText } from '../../secrets/secret-text.js';

const MAX_PLAIN_HEADERS = 50;
const MAX_HEADER_NAME_LENGTH = 256;
const MAX_HEADER_VALUE_LENGTH = 8192;

/** RFC 9110 token: the characters a header field name may have. */
const HEADER_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/**
 * What Node's HTTP client sends as a header value: tab, visible ASCII, space and Latin-1. So no CR,
 * LF or NUL (a value that could split the request), and no character Node would refuse at send time.
 */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const NO_LINE_BREAK = /^[^\r\n]*$/;

/**
 * Header names a connection may not set: they frame the message or the connection (the HTTP client
 * owns them, and a stale one corrupts the exchange), or they are meant for a proxy.
 */
const FORBIDDEN_HEADER_NAMES: ReadonlySet<string> = new Set([
  'connection',
  'content-length',
  'expect',
  'host',
  'http2-settings',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
/** Plain headers are stored and shown as they are: a credential belongs in `auth`, where it is sealed. */
const CREDENTIAL_HEADER_NAMES: ReadonlySet<string> = new Set(['authorization']);

/** Why a header name is refused, or undefined when it is one a connection may send. */
function headerNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > MAX_HEADER_NAME_LENGTH || !HEADER_TOKEN.test(name)) {
    return `must be an HTTP header name (letters, digits and !#$%&'*+.^_\`|~-, at most ${MAX_HEADER_NAME_LENGTH})`;
  }
  if (FORBIDDEN_HEADER_NAMES.has(name.toLowerCase())) return 'is set by the HTTP client itself and cannot be sent by a connection';
  return undefined;
}

const AuthHeaderName = z
  .string()
  .superRefine((name, ctx) => {
    const problem = headerNameProblem(name);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .transform((name) => name.toLowerCase())
  .meta({ description: 'The header that carries the secret (stored lower-case).', example: 'x-api-key' });

/**
 * Plain headers sent with every request: at most 50, names stored lower-case (so two spellings of
 * one name are refused), values that can go on the wire as they are.
 */
const PlainHeaders = z
  // A value is refused for a lone surrogate first, with the message that says so (HEADER_VALUE refuses it too).
  .record(z.string(), wellFormed(z.string()))
  .superRefine((headers, ctx) => {
    const names = Object.keys(headers);
    if (names.length > MAX_PLAIN_HEADERS) ctx.addIssue({ code: 'custom', message: `at most ${MAX_PLAIN_HEADERS} headers` });
    const seen = new Set<string>();
    for (const [name, value] of Object.entries(headers)) {
      const lowerName = name.toLowerCase();
      const problem =
        headerNameProblem(name) ??
        (CREDENTIAL_HEADER_NAMES.has(lowerName) ? 'carries a credential: set it in auth, where it is stored encrypted' : undefined) ??
        (seen.has(lowerName) ? 'is given twice (header names are case-insensitive)' : undefined);
      if (problem) ctx.addIssue({ code: 'custom', path: [name], message: problem });
      if (value.length > MAX_HEADER_VALUE_LENGTH || !HEADER_VALUE.test(value)) {
        ctx.addIssue({ code: 'custom', path: [name], message: `must be at most ${MAX_HEADER_VALUE_LENGTH} characters of text without line breaks or control characters` });
      }
      seen.add(lowerName);
    }
  })
  .transform((headers) => Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value])))
  .meta({ description: `Plain (not secret) headers sent with every request, at most ${MAX_PLAIN_HEADERS}; names are stored lower-case.` });

/**
 * The base URL. Credentials belong in `auth`; a query or fragment would be lost or duplicated when
 * request URLs are resolved against it.
 */
const BaseUrl = httpUrl({ withQuery: false, credentialsHint: 'set them in auth' })
  .meta({ description: 'Absolute http(s) URL without credentials, query or fragment; stored normalised.', example: 'https://api.example.com/v1/' });

const name = z
  .string()
  .regex(CONNECTION_NAME, 'must start with a lower-case letter, then up to 62 lower-case letters, digits, _ or -')
  .meta({ description: 'Unique per user; workflows refer to the connection by it.', example: 'github' });
// PostgreSQL text cannot hold NUL: refused here, the insert never fails on it (its error would log the row).
const description = z.string().max(2_000).regex(/^[^\x00]*$/, 'must not contain NUL characters');

/** A secret sent as (part of) a header value as it is: bearer token, header value. */
const headerValueSecret = SecretText.regex(HEADER_VALUE, 'must be text without line breaks or control characters (it is sent in a header)');
/** A basic password is base64-encoded on the wire, but a line break in it is never what was meant. */
const basicPassword = SecretText.regex(NO_LINE_BREAK, 'must not contain line breaks');
/** A query value is percent-encoded on the wire: any text. */
const querySecret = SecretText;

/** The rule a secret must meet to be used by an auth type (none holds no secret). */
export const secretRules: Readonly<Record<Exclude<ConnectionAuthType, 'none'>, z.ZodType<string>>> = {
  bearer: headerValueSecret,
  basic: basicPassword,
  header: headerValueSecret,
  query: querySecret,
};

// Both are stored as text and sent as UTF-8 (base64 of `username:secret`, a percent-encoded name).
const username = wellFormed(
  z
    .string()
    .min(1)
    .max(256)
    .regex(/^[^\x00-\x1f\x7f:]*$/, 'must not contain a colon or control characters'),
);
const queryParameterName = wellFormed(z.string().min(1).max(128).regex(/^[^\x00-\x1f\x7f]*$/, 'must not contain control characters'));

/** The write-only secret of each auth type: what it is, documented. */
const writeOnly = (what: string) => ({ description: `${what}. Write-only: never returned (auth.secretSet says whether one is stored).` });
const NoAuth = z.object({ type: z.literal('none') }).strict();
const BearerAuth = z.object({ type: z.literal('bearer'), secret: headerValueSecret.meta(writeOnly('The token')) }).strict();
const BasicAuth = z.object({ type: z.literal('basic'), username, secret: basicPassword.meta(writeOnly('The password')) }).strict();
const HeaderAuth = z.object({ type: z.literal('header'), name: AuthHeaderName, secret: headerValueSecret.meta(writeOnly('The header value')) }).strict();
const QueryAuth = z.object({ type: z.literal('query'), name: queryParameterName, secret: querySecret.meta(writeOnly('The query parameter value')) }).strict();

/** How requests authenticate, as created: every type but `none` needs its secret. */
const CreateAuth = z.discriminatedUnion('type', [NoAuth, BearerAuth, BasicAuth, HeaderAuth, QueryAuth]).meta({ id: 'CreateConnectionAuth' });
/**
 * How requests authenticate, as changed: replaces the stored auth, except that a secret left out
 * keeps the stored one (400 when there is none to keep); `none` clears it.
 */
const UpdateAuth = z
  .discriminatedUnion('type', [
    NoAuth,
    BearerAuth.partial({ secret: true }),
    BasicAuth.partial({ secret: true }),
    HeaderAuth.partial({ secret: true }),
    QueryAuth.partial({ secret: true }),
  ])
  .meta({ id: 'UpdateConnectionAuth' });

const ConnectionAuth = z
  .object({
    type: z.enum(connectionAuthTypes),
    username: z.string().optional().meta({ description: 'basic only' }),
    name: z.string().optional().meta({ description: 'header and query only: the header or query parameter that carries the secret' }),
    secretSet: z.boolean().meta({ description: 'Whether a secret is stored (it is never returned).' }),
  })
  .meta({ id: 'ConnectionAuth' });

export const Connection = z
  .object({
    id: z.uuid(),
    name: z.string(),
    description: z.string(),
    baseUrl: z.string(),
    headers: z.record(z.string(), z.string()),
    auth: ConnectionAuth,
    version: z.number().int(),
    lastUsedAt: Timestamp.nullable().meta({ description: 'When a run last used it (to the minute), or null.' }),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: 'Connection' });

export const CreateConnectionBody = z
  .object({ name, description: description.default(''), baseUrl: BaseUrl, headers: PlainHeaders.default({}), auth: CreateAuth.default({ type: 'none' }) })
  .strict()
  .meta({ id: 'CreateConnection' });

export const UpdateConnectionBody = z
  .object({
    name: name.optional(),
    description: description.optional(),
    baseUrl: BaseUrl.optional(),
    headers: PlainHeaders.optional().meta({ description: 'Replaces every plain header.' }),
    auth: UpdateAuth.optional(),
  })
  .strict()
  .refine((body) => Object.values(body).some((value) => value !== undefined), { message: 'give at least one field to change' })
  .meta({ id: 'UpdateConnection' });

export const connectionSortFields = ['createdAt', 'updatedAt', 'name'] as const;
export const ListConnectionsQuery = searchableListQuery(connectionSortFields, {});
export const ConnectionPage = pageOf(Connection, 'ConnectionPage');

export type ConnectionDto = z.infer<typeof Connection>;
export type ConnectionAuthDto = z.infer<typeof ConnectionAuth>;
export type CreateConnectionInput = z.infer<typeof CreateConnectionBody>;
export type UpdateConnectionInput = z.infer<typeof UpdateConnectionBody>;
export type CreateAuthInput = z.infer<typeof CreateAuth>;
export type UpdateAuthInput = z.infer<typeof UpdateAuth>;
