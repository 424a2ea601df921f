/**
 * Property-based fuzzing of every /api/v1 operation, driven by the route schemas as the OpenAPI
 * document publishes them: inputs are derived from each operation's documented parameters and
 * request body (valid values, out-of-range and wrong-typed ones, hostile strings, malformed
 * bodies), and every answer must be a deliberate one: never 5xx, problem+json for every error,
 * no internals in any body, and a refused write leaves the caller's data exactly as it was. The
 * webhook endpoint, outside /api/v1 and open to anyone, is fuzzed too (at the end of this file).
 *
 * Reproducible: the seed is fixed (FUZZ_SEED overrides it, FUZZ_RUNS the runs per operation) and
 * fast-check prints the seed, the path and the counterexample of a failure.
 */
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { makeResources } from './fixtures.js';
import { buildTestApp, isEmbeddedDatabase, logsOf, signUp, type SignedInUser } from './helpers.js';
import { bodySchemaOf, danglingRefs, operationsOf, publishedDocument, resolve, type JsonSchema, type OpenApiDocument, type Operation, type Parameter } from './openapi-document.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20_251_122);
/**
 * Cases per operation. The embedded database runs every file one after another on one connection,
 * where 60 per operation took most of the suite's time: it runs 20 (every operation still fuzzed;
 * the real-PostgreSQL suite carries the depth).
 */
const RUNS = Number(process.env.FUZZ_RUNS ?? (isEmbeddedDatabase() ? 20 : 60));
/**
 * FUZZ_KEEP_GOING=1: instead of stopping (and shrinking) at the first failure of an operation,
 * run all its cases and list each distinct kind of failure once, with the server's logged cause
 * of a 5xx. For triage: one run shows every bug an operation has, not only the first.
 */
const KEEP_GOING = process.env.FUZZ_KEEP_GOING === '1';
const SPA_ORIGIN = 'http://localhost:8100';
/** Never streamed here: it answers an endless event stream to a valid caller. */
const SKIPPED = new Set(['GET /api/v1/executions/{id}/events']);

// The operations must be known when the tests are declared, so the document is read at load time.
const documentApp = await buildTestApp();
const document = await publishedDocument(documentApp);
await documentApp.close();
const operations = operationsOf(document).filter((operation) => !SKIPPED.has(`${operation.method} ${operation.path}`));

// ---------------------------------------------------------------------------------------------
// What must never be seen, and the input alphabet (which never contains it, so that any
// occurrence in a response is a leak and not an echo of the caller's own data).

const LEAK_MARKERS = ['    at ', 'select ', 'insert into', 'syntax error at', 'postgres'];
const mentionsLeakMarker = (text: string) => LEAK_MARKERS.some((marker) => text.toLowerCase().includes(marker));

/** Placeholders for the ids of the caller's own resources, replaced when the request is sent (fixtures are remade after a delete). */
type Resource = 'workflows' | 'jobs' | 'executions' | 'api-keys' | 'variables' | 'connections' | 'deliveries' | 'event-subscriptions' | 'event-deliveries';
const RESOURCES: readonly Resource[] = ['workflows', 'jobs', 'executions', 'api-keys', 'variables', 'connections', 'deliveries', 'event-subscriptions', 'event-deliveries'];
const placeholder = (resource: Resource) => `@@${resource}@@`;
const resourceOfPath = (path: string): Resource | undefined => RESOURCES.find((resource) => path.startsWith(`/api/v1/${resource}/`));
/** `workflowId` -> workflows: a documented field or parameter that names one of the caller's resources. */
const FIELD_RESOURCES: Readonly<Record<string, Resource>> = { workflowId: 'workflows', jobId: 'jobs', executionId: 'executions', retryOfId: 'executions', apiKeyId: 'api-keys' };
const resourceOfField = (name: string): Resource | undefined => (Object.hasOwn(FIELD_RESOURCES, name) ? FIELD_RESOURCES[name] : undefined);

const HOSTILE_STRINGS = [
  '', ' ', '%', '_', '%_%', '50%_off', '\\', '\\%', '\\_', "'", "''", '"', '`', "a'b", "'; drop table workflows; --", 'x";drop table workflows;--',
  "' or '1'='1", '" or 1=1 --', "') or ('1'='1", '$1', '$$', '::text', ';', '--', '/*', '*/', 'null', 'undefined', 'true', '0', '-1',
  '1e309', 'NaN', 'Infinity', '\u202e', '\ufeff', '😀', 'é', '\r\n', '\t', '<script>alert(1)</script>',
  '../../etc/passwd', '{{7*7}}', '${7*7}', '__proto__', 'constructor', 'x'.repeat(201), 'x'.repeat(5_001), 'é'.repeat(4_000),
];

/** Characters a PostgreSQL text or jsonb value cannot hold: NUL, and UTF-16 halves (lone surrogates). */
const UNSTORABLE_STRINGS = ['\u0000', 'a\u0000b', '\ud800', 'x\udc00y', '\udbff\u0000'];

const hostileString = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_STRINGS) },
  { weight: 2, arbitrary: fc.constantFrom(...UNSTORABLE_STRINGS) },
  { weight: 2, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.uuid() },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double()).map(String) },
);

/** JSON values whose strings include the hostile ones (NUL, lone surrogates, quotes). */
const hostileJson: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }) },
  { weight: 2, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.dictionary(hostileString, hostileString, { maxKeys: 3 }) },
  { weight: 1, arbitrary: fc.array(hostileString, { maxLength: 3 }) },
);

function nested(depth: number, kind: 'array' | 'object', leaf: unknown): unknown {
  let value = leaf;
  for (let level = 0; level < depth; level++) value = kind === 'array' ? [value] : { a: value };
  return value;
}
/** Around the server's depth limit (64) and well past it. */
const deeplyNested = fc
  .tuple(fc.integer({ min: 30, max: 200 }), fc.constantFrom<'array' | 'object'>('array', 'object'), hostileString)
  .map(([depth, kind, leaf]) => nested(depth, kind, leaf));

/** A JSON value of another type than `type` (for a field that documents `type`). */
function wrongTypedFor(type: string | undefined): fc.Arbitrary<unknown> {
  const all: [string, fc.Arbitrary<unknown>][] = [
    ['integer', fc.integer()],
    ['number', fc.double({ noNaN: true, noDefaultInfinity: true })],
    ['boolean', fc.boolean()],
    ['null', fc.constant(null)],
    ['string', fc.constantFrom('1', 'true', '', 'x')],
    ['array', fc.array(fc.integer(), { maxLength: 2 })],
    ['object', fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 })],
  ];
  const others = all.filter(([name]) => name !== type && !(type === 'number' && name === 'integer')).map(([, arbitrary]) => arbitrary);
  return fc.oneof(...others);
}

const DATE_TIME_EDGES = [
  '0000-01-01T00:00:00Z', '0001-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '2020-01-01T00:00:00+23:59', '2020-01-01T00:00:00-23:59',
  '2020-01-01T00:00:00-16:00', '2020-02-29T00:00:00Z', '2021-02-29T00:00:00Z', '2020-01-01', '2020-01-01T25:00:00Z', 'now', 'infinity',
  '-infinity', 'epoch', '1', '2020', '+275760-09-13T00:00:00.000Z', '2020-01-01T00:00:00.123456789Z',
];

function safeRegExp(pattern: string): RegExp | undefined {
  try {
    return new RegExp(pattern);
  } catch {
    return undefined;
  }
}

/** Whether the documented string constraints (length, pattern) accept `text`. */
function fits(schema: JsonSchema, text: string): boolean {
  const pattern = schema.pattern === undefined ? undefined : safeRegExp(schema.pattern);
  return text.length >= (schema.minLength ?? 0) && text.length <= (schema.maxLength ?? Number.POSITIVE_INFINITY) && (pattern === undefined || pattern.test(text));
}

const typeOf = (schema: JsonSchema) => (Array.isArray(schema.type) ? schema.type[0] : schema.type);

/**
 * Values the documented schema accepts. Every one of them passes validation, so the server must
 * cope with it beyond validation (storage, queries, serialization): the hostile strings that fit
 * the constraints, NUL and lone surrogates included, come first.
 */
function acceptedValue(schema: JsonSchema, fieldName: string, depth: number): fc.Arbitrary<unknown> {
  const resolved = resolve(document, schema);
  const variants = resolved.anyOf ?? resolved.oneOf;
  if (variants && variants.length > 0) return fc.oneof(...variants.map((variant) => acceptedValue(variant, fieldName, depth)));
  if (resolved.allOf && resolved.allOf.length > 0) return acceptedValue(resolved.allOf[0] as JsonSchema, fieldName, depth);
  if (resolved.enum && resolved.enum.length > 0) return fc.constantFrom(...resolved.enum);
  if (resolved.const !== undefined) return fc.constant(resolved.const);
  // Documented examples and defaults are values known to pass the checks beyond the schema (a cron, a timezone).
  const examples = [resolved.example, resolved.default, ...(resolved.examples ?? [])].filter((value) => value !== undefined);
  const type = typeOf(resolved);
  switch (type) {
    case 'string': {
      const resource = resourceOfField(fieldName);
      if (resolved.format === 'uuid') {
        return resource ? fc.oneof({ weight: 3, arbitrary: fc.constant(placeholder(resource)) }, { weight: 1, arbitrary: fc.uuid() }) : fc.uuid();
      }
      const options: fc.WeightedArbitrary<unknown>[] = [];
      const add = (weight: number, values: readonly unknown[]) => {
        if (values.length > 0) options.push({ weight, arbitrary: fc.constantFrom(...values) });
      };
      if (resolved.format === 'date-time') {
        options.push({ weight: 1, arbitrary: fc.integer({ min: 1, max: 3_650 }).map((days) => new Date(Date.now() + days * 86_400_000).toISOString()) });
        options.push({ weight: 1, arbitrary: fc.date({ min: new Date('1970-01-01'), max: new Date(), noInvalidDate: true }).map((date) => date.toISOString()) });
        add(3, DATE_TIME_EDGES.filter((text) => fits(resolved, text)));
        return fc.oneof(...options);
      }
      const pattern = resolved.pattern === undefined ? undefined : safeRegExp(resolved.pattern);
      const maxLength = Math.min(resolved.maxLength ?? 40, 40);
      add(6, examples);
      add(3, HOSTILE_STRINGS.filter((text) => fits(resolved, text)));
      add(2, UNSTORABLE_STRINGS.filter((text) => fits(resolved, text)));
      add(1, resolved.maxLength === undefined ? [] : ['x'.repeat(resolved.maxLength), 'é'.repeat(resolved.maxLength)]);
      options.push({
        weight: 2,
        arbitrary: pattern
          ? fc.stringMatching(pattern, { maxLength: resolved.maxLength ?? 60 })
          : fc.string({ unit: 'binary', minLength: Math.min(resolved.minLength ?? 0, maxLength), maxLength }),
      });
      return fc.oneof(...options);
    }
    case 'integer':
    case 'number': {
      const min = resolved.minimum ?? -1_000_000;
      const max = resolved.maximum ?? 1_000_000;
      const inRange = type === 'integer' ? fc.integer({ min, max }) : fc.double({ min, max, noNaN: true });
      return fc.oneof({ weight: 3, arbitrary: inRange }, { weight: 1, arbitrary: fc.constantFrom(min, max) });
    }
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array': {
      if (depth > 3) return fc.constant([]);
      return fc.array(acceptedValue(resolved.items ?? {}, fieldName, depth + 1), { maxLength: Math.min(resolved.maxItems ?? 3, 3) });
    }
    case 'object': {
      if (depth > 3) return fc.constant({});
      if (resolved.properties) {
        const entries = Object.entries(resolved.properties).map(([name, property]) => [name, acceptedValue(property, name, depth + 1)] as const);
        return fc.record(Object.fromEntries(entries), { requiredKeys: resolved.required ?? [] });
      }
      const additional = typeof resolved.additionalProperties === 'object' ? resolved.additionalProperties : {};
      return fc.dictionary(fc.oneof(fc.constantFrom(...HOSTILE_STRINGS, ...UNSTORABLE_STRINGS), fc.string({ maxLength: 8 })), acceptedValue(additional, fieldName, depth + 1), { maxKeys: 3 });
    }
    default:
      // No type: any JSON is accepted (an execution's input).
      return hostileJson;
  }
}

/** Values the documented schema refuses: out of range, too long, not in the enum, of another type. */
function refusedValue(schema: JsonSchema): fc.Arbitrary<unknown> {
  const resolved = resolve(document, schema);
  const type = typeOf(resolved);
  const options: fc.WeightedArbitrary<unknown>[] = [{ weight: 2, arbitrary: type === undefined ? deeplyNested : wrongTypedFor(type) }];
  const add = (values: readonly unknown[]) => {
    if (values.length > 0) options.push({ weight: 2, arbitrary: fc.constantFrom(...values) });
  };
  if (resolved.enum) add([...resolved.enum.map((member) => `${String(member).toUpperCase()} `), '', 'x']);
  if (type === 'string') {
    add([...HOSTILE_STRINGS, ...UNSTORABLE_STRINGS, ...DATE_TIME_EDGES].filter((text) => !fits(resolved, text)));
    if (resolved.maxLength !== undefined) add(['x'.repeat(resolved.maxLength + 1)]);
  }
  if (type === 'integer' || type === 'number') {
    add([
      ...(resolved.minimum === undefined ? [] : [resolved.minimum - 1]),
      ...(resolved.maximum === undefined ? [] : [resolved.maximum + 1]),
      ...(type === 'integer' ? [0.5] : []),
      1e308,
      -1e308,
    ]);
  }
  if (type === 'array' && resolved.maxItems !== undefined && resolved.maxItems <= 1_000) add([Array.from({ length: resolved.maxItems + 1 }, () => ({}))]);
  return fc.oneof(...options);
}

/** Names a mass-assignment attempt would try, beside random ones; `__proto__` can only be sent as JSON text. */
const EXTRA_FIELD_NAMES = ['userId', 'id', 'version', 'createdAt', 'updatedAt', 'status', 'keyHash', '__proto__', 'constructor', 'prototype', ''];

type Mutation =
  | { readonly kind: 'set'; readonly field: string; readonly value: unknown }
  | { readonly kind: 'drop'; readonly field: string }
  | { readonly kind: 'extra'; readonly field: string; readonly value: unknown };

/**
 * JSON text of a body the schema accepts, then (often) one mutation: a field refused, deeply
 * nested, left out, or an unknown field added. Written as text so `__proto__` and duplicate keys
 * reach the server as sent.
 */
function bodyFromSchema(schema: JsonSchema): fc.Arbitrary<string> {
  const properties = schema.properties ?? {};
  const names = Object.keys(properties);
  const base = acceptedValue(schema, '', 0).map((value) => (value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {}));
  const none = fc.constant<Mutation | undefined>(undefined);
  const mutation: fc.Arbitrary<Mutation | undefined> =
    names.length === 0
      ? none
      : fc.oneof(
          { weight: 4, arbitrary: none },
          { weight: 2, arbitrary: fc.constantFrom(...names).chain((field) => refusedValue(properties[field] ?? {}).map((value): Mutation => ({ kind: 'set', field, value }))) },
          { weight: 1, arbitrary: fc.constantFrom(...names).chain((field) => deeplyNested.map((value): Mutation => ({ kind: 'set', field, value }))) },
          { weight: 1, arbitrary: fc.constantFrom(...names).map((field): Mutation => ({ kind: 'drop', field })) },
          {
            weight: 1,
            arbitrary: fc.tuple(fc.oneof(fc.constantFrom(...EXTRA_FIELD_NAMES), fc.string({ maxLength: 10 })), hostileJson).map(([field, value]): Mutation => ({ kind: 'extra', field, value })),
          },
        );
  return fc.tuple(base, mutation).map(([object, change]) => {
    let entries: [string, unknown][] = Object.entries(object);
    if (change?.kind === 'set') entries = [...entries.filter(([name]) => name !== change.field), [change.field, change.value]];
    if (change?.kind === 'drop') entries = entries.filter(([name]) => name !== change.field);
    if (change?.kind === 'extra') entries = [...entries, [change.field, change.value]];
    return `{${entries.map(([name, value]) => `${JSON.stringify(name)}:${JSON.stringify(value) ?? 'null'}`).join(',')}}`;
  });
}

const NOT_JSON = ['{', '{"name":', 'nul', "{'name':'x'}", '[1,]', '{"a":1}{"b":2}', '\u0000', 'NaN', '{"a":Infinity}', ' ', '\ufeff{}', '{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}', '"\\ud800"', '1e99999'];
const OTHER_CONTENT_TYPES = [
  'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'application/octet-stream', 'application/json-patch+json',
  'application/merge-patch+json', 'application/json; charset=utf-16', 'application/json; charset=latin1', 'APPLICATION/JSON', 'application/json;', '*/*', 'application/jsonx',
];

type Body = { kind: 'none' } | { kind: 'text'; contentType: string; text: string };
const jsonBody = (text: string): Body => ({ kind: 'text', contentType: 'application/json', text });

function bodies(schema: JsonSchema | undefined): fc.Arbitrary<Body> {
  const json = (value: unknown) => jsonBody(JSON.stringify(value) ?? 'null');
  const malformed = fc.oneof(fc.constantFrom(...NOT_JSON), fc.string({ unit: 'binary', maxLength: 20 })).map(jsonBody);
  const otherTypes = fc
    .tuple(fc.constantFrom(...OTHER_CONTENT_TYPES), fc.oneof(fc.jsonValue({ maxDepth: 2 }).map((value) => JSON.stringify(value)), fc.constantFrom('name=x&userId=y', '--x\r\n\r\n--x--', '<a/>')))
    .map(([contentType, text]): Body => ({ kind: 'text', contentType, text }));
  const none = fc.constant<Body>({ kind: 'none' });
  if (schema === undefined) {
    return fc.oneof({ weight: 5, arbitrary: none }, { weight: 1, arbitrary: hostileJson.map(json) }, { weight: 1, arbitrary: malformed }, { weight: 1, arbitrary: otherTypes });
  }
  return fc.oneof(
    { weight: 12, arbitrary: bodyFromSchema(schema).map(jsonBody) },
    { weight: 1, arbitrary: fc.jsonValue().map(json) },
    { weight: 1, arbitrary: fc.jsonValue({ stringUnit: 'binary' }).map(json) },
    { weight: 1, arbitrary: deeplyNested.map(json) },
    { weight: 1, arbitrary: malformed },
    { weight: 1, arbitrary: otherTypes },
    { weight: 1, arbitrary: none },
  );
}

/** Percent-encodes UTF-8 bytes (lone surrogates become U+FFFD, as a client would send them). */
const percentEncode = (text: string) =>
  [...Buffer.from(text, 'utf8')].map((byte) => (/[A-Za-z0-9\-_.~]/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
/** Sent verbatim: broken percent-encoding and bare syntax characters. */
const RAW_QUERY_VALUES = ['%', '%ZZ', '%00', '%E0%A4%A', '%C0%AF', '%FF', '%2', '+', '%2B', '&', '=', '=='];

interface QueryPiece {
  readonly key: string;
  readonly value: string | null;
  readonly raw: boolean;
}

const asQueryValue = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value) ?? '');

/** Values a query parameter's schema refuses, as a client would write them in a URL. */
function refusedParameter(schema: JsonSchema): fc.Arbitrary<string> {
  const type = typeOf(schema);
  if (type === 'integer' || type === 'number') {
    return fc.constantFrom('abc', '', ' 1', '0x10', '1e2', '1.5', 'Infinity', '-0.5', '99999999999999999999', String((schema.minimum ?? 0) - 1), String((schema.maximum ?? 0) + 1));
  }
  return refusedValue(schema).map(asQueryValue);
}

/** Cursor contents a decoder might let through to SQL: dates PostgreSQL reads differently, unstorable text. */
const cursorValues = fc.oneof(
  fc.constantFrom(...DATE_TIME_EDGES, ...UNSTORABLE_STRINGS),
  fc.date({ noInvalidDate: true }).map((date) => date.toISOString()),
  hostileString,
);
const cursorOf = (parts: readonly string[]) => Buffer.from(JSON.stringify(parts)).toString('base64url');

/**
 * A query of the documented parameters: each absent or accepted (a forged cursor agrees with the
 * sortBy/sortDirection it travels with, so it reaches the query), then often one mutation: a
 * refused value, a repeated or bare key, broken percent-encoding, or unknown keys.
 */
function queries(operation: Operation): fc.Arbitrary<QueryPiece[]> {
  const documented = (operation.spec.parameters ?? []).filter((parameter) => parameter.in === 'query');
  const schemaOf = (name: string) => resolve(document, documented.find((parameter) => parameter.name === name)?.schema);
  const plain = documented.filter((parameter) => parameter.name !== 'cursor');
  const hasCursor = documented.length !== plain.length;
  const accepted = fc.tuple(
    ...plain.map((parameter) =>
      fc.oneof(
        { weight: 3, arbitrary: fc.constant<readonly [string, string] | null>(null) },
        { weight: 2, arbitrary: acceptedValue(parameter.schema ?? {}, parameter.name, 0).map((value) => [parameter.name, asQueryValue(value)] as const) },
      ),
    ),
  );
  const cursor = hasCursor
    ? fc.oneof(
        { weight: 2, arbitrary: fc.constant<readonly [string, string] | null>(null) },
        { weight: 1, arbitrary: fc.tuple(cursorValues, fc.oneof({ weight: 4, arbitrary: fc.uuid() }, { weight: 1, arbitrary: hostileString })) },
      )
    : fc.constant(null);
  const names = documented.map((parameter) => parameter.name);
  const none = fc.constant<QueryPiece[] | undefined>(undefined);
  const mutation: fc.Arbitrary<QueryPiece[] | undefined> =
    names.length === 0
      ? fc.oneof({ weight: 3, arbitrary: none }, { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 8 }), hostileString).map(([key, value]) => [{ key, value, raw: false }]) })
      : fc.oneof(
          { weight: 4, arbitrary: none },
          { weight: 3, arbitrary: fc.constantFrom(...names).chain((key) => refusedParameter(schemaOf(key)).map((value) => [{ key, value, raw: false }])) },
          { weight: 1, arbitrary: fc.constantFrom(...names).chain((key) => fc.array(hostileString, { minLength: 2, maxLength: 3 }).map((values) => values.map((value) => ({ key, value, raw: false })))) },
          { weight: 1, arbitrary: fc.constantFrom(...names).chain((key) => fc.constantFrom<QueryPiece[]>([{ key, value: null, raw: false }], [{ key: `${key}[]`, value: 'x', raw: false }], [{ key: `${key}[a]`, value: 'b', raw: false }])) },
          { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...names), fc.constantFrom(...RAW_QUERY_VALUES)).map(([key, value]) => [{ key, value, raw: true }]) },
          {
            weight: 1,
            arbitrary: fc.tuple(fc.oneof(fc.constantFrom('userId', 'id', 'limit', 'offset', 'order', '__proto__', 'constructor'), fc.string({ maxLength: 8 })), hostileString).map(([key, value]) => [{ key, value, raw: false }]),
          },
        );
  return fc.tuple(accepted, cursor, mutation).map(([params, cursorParts, change]) => {
    const chosen = new Map(params.filter((entry) => entry !== null));
    if (cursorParts !== null) {
      // A cursor continues the walk of its own sortBy/sortDirection (and excludes page).
      const sortBy = chosen.get('sortBy') ?? String(schemaOf('sortBy').default ?? 'createdAt');
      const direction = chosen.get('sortDirection') ?? String(schemaOf('sortDirection').default ?? 'desc');
      chosen.delete('page');
      chosen.set('cursor', cursorOf([sortBy, direction, ...cursorParts]));
    }
    let pieces: QueryPiece[] = [...chosen].map(([key, value]) => ({ key, value, raw: false }));
    if (change) {
      const replaced = new Set(change.map((piece) => piece.key.replace(/\[.*$/, '')));
      pieces = [...pieces.filter((piece) => !replaced.has(piece.key)), ...change];
    }
    return pieces;
  });
}

const queryString = (pieces: readonly QueryPiece[]) =>
  pieces.length === 0 ? '' : `?${pieces.map(({ key, value, raw }) => (value === null ? percentEncode(key) : `${percentEncode(key)}=${raw ? value : percentEncode(value)}`)).join('&')}`;

/** Values for a path parameter: the caller's own resource most often, then anything. */
function pathValues(operation: Operation): fc.Arbitrary<string> {
  if (!operation.path.includes('{')) return fc.constant('');
  const resource = resourceOfPath(operation.path);
  return fc.oneof(
    { weight: 8, arbitrary: fc.constant(resource ? placeholder(resource) : '00000000-0000-4000-8000-000000000000') },
    { weight: 1, arbitrary: fc.uuid().map(percentEncode) },
    { weight: 1, arbitrary: fc.constantFrom('00000000-0000-0000-0000-000000000000', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF', `{${'0'.repeat(8)}-0000-4000-8000-${'0'.repeat(12)}}`) },
    { weight: 1, arbitrary: hostileString.filter((text) => text.length > 0).map(percentEncode) },
    { weight: 1, arbitrary: fc.constantFrom('%', '%ZZ', '..', '%2e%2e', '%2F', '%00', 'x'.repeat(101)) },
  );
}

/** Printable ASCII only: header values a real client could send. */
const headerSafe = (text: string) => /^[\x20-\x7e]*$/.test(text);

function headerValues(operation: Operation): fc.Arbitrary<Record<string, string>> {
  const documented = (operation.spec.parameters ?? []).filter((parameter) => parameter.in === 'header');
  const perHeader = documented.map((parameter) => {
    const schema = resolve(document, parameter.schema);
    const pattern = schema.pattern === undefined ? undefined : safeRegExp(schema.pattern);
    const values = fc.oneof(
      // A small set of keys, so replays and key reuse with another body happen.
      { weight: 2, arbitrary: fc.constantFrom('k1', 'k2', '*', '"1"', 'W/"1"', '"0", *', '""') },
      { weight: 2, arbitrary: pattern ? fc.stringMatching(pattern, { maxLength: 40 }) : fc.string({ maxLength: 20 }) },
      { weight: 1, arbitrary: fc.constantFrom('', ' ', 'a b', 'x'.repeat((schema.maxLength ?? 255) + 1)) },
      { weight: 1, arbitrary: hostileString.filter(headerSafe) },
    );
    return fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: values.map((value) => [parameter.name, value] as const) });
  });
  return fc.tuple(...perHeader).map((entries) => Object.fromEntries(entries.filter((entry) => entry !== null)));
}

interface FuzzCase {
  readonly pathValue: string;
  readonly query: QueryPiece[];
  readonly body: Body;
  readonly headers: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------

describe('fuzzing every /api/v1 operation from its documented schemas', () => {
  let app: App;
  let user: SignedInUser;
  let ids: Record<Resource, string>;

  beforeAll(async () => {
    // The test config's rate limits are far above the ~1,300 requests this file sends as one user.
    // Fixtures are remade for every operation and after every delete: room for all of their jobs, connections, variables and subscriptions.
    app = await buildTestApp({ JOBS_PER_USER_MAX: '10000', CONNECTIONS_PER_USER: '10000', VARIABLES_PER_USER: '10000', EVENT_SUBSCRIPTIONS_PER_USER: '10000' });
    user = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const remakeFixtures = async () => {
    const made = await makeResources(app, user);
    ids = {
      workflows: made.workflow.id,
      jobs: made.job.id,
      executions: made.execution.id,
      'api-keys': made.apiKey.id,
      variables: made.variable.id,
      connections: made.connection.id,
      deliveries: made.delivery.id,
      'event-subscriptions': made.eventSubscription.id,
      'event-deliveries': made.eventDelivery.id,
    };
  };

  /**
   * The caller's data as the API could change it, in one statement. Left out: what engines and
   * schedulers (this file's, or the app's own) change on their own — run status
   * other than cancelled, steps, job run bookkeeping, scheduled executions, key lastUsedAt.
   */
  const snapshot = async (): Promise<string> => {
    const userId = user.id;
    const [row] = await app.database.sql<{ snapshot: string }[]>`
      select json_build_object(
        'workflows', (select coalesce(json_agg(w order by w.id), '[]') from (
          select id, name, description, nodes, edges, version, updated_at from workflows where user_id = ${userId}) w),
        'jobs', (select coalesce(json_agg(j order by j.id), '[]') from (
          select id, name, definition_nl, workflow_id, cron, timezone, status from jobs where user_id = ${userId}) j),
        'executions', (select coalesce(json_agg(e order by e.id), '[]') from (
          select id, workflow_id, workflow_version, job_id, trigger, input, retry_of_id, status = 'cancelled' as cancelled
            from executions where user_id = ${userId} and trigger <> 'schedule') e),
        'apiKeys', (select coalesce(json_agg(k order by k.id), '[]') from (
          select id, name, prefix, key_hash, expires_at from api_keys where user_id = ${userId}) k),
        'variables', (select coalesce(json_agg(v order by v.id), '[]') from (
          select id, key, value, secret, secret_ciphertext, version from variables where user_id = ${userId}) v),
        'connections', (select coalesce(json_agg(c order by c.id), '[]') from (
          select id, name, description, base_url, headers, auth_type, auth_username, auth_name, secret_ciphertext, version
            from connections where user_id = ${userId}) c),
        'deliveries', (select coalesce(json_agg(d order by d.id), '[]') from (
          select id, workflow_id, status, execution_id, body_bytes from webhook_deliveries where user_id = ${userId}) d),
        'eventSubscriptions', (select coalesce(json_agg(s order by s.id), '[]') from (
          select id, url, events, workflow_id, enabled, disabled_reason, secret_ciphertext, previous_secret_ciphertext, version
            from event_subscriptions where user_id = ${userId}) s),
        'eventMessages', (select coalesce(json_agg(m order by m.id), '[]') from (
          select id, subscription_id, type, webhook_id from event_messages where user_id = ${userId}) m),
        'idempotencyKeys', (select coalesce(json_agg(i order by i.scope, i.key), '[]') from (
          select scope, key, request_hash, response_status from idempotency_keys where user_id = ${userId}) i)
      )::text as snapshot`;
    if (!row) throw new Error('snapshot query returned no row');
    return row.snapshot;
  };

  it('reads an OpenAPI document whose every $ref resolves', () => {
    // Every $ref of the published document resolves: the fuzzer (and any client generator) relies on it.
    const dangling = danglingRefs(document);
    expect(dangling, `components.schemas lacks what the paths reference: ${dangling.join(', ')}`).toEqual([]);
  });

  it('finds every documented operation', () => {
    expect(operations.length).toBeGreaterThanOrEqual(20);
    expect(operations.filter((operation) => bodySchemaOf(document, operation)?.properties).length).toBeGreaterThanOrEqual(5);
  });

  it.each(operations.map((operation) => [`${operation.method} ${operation.path}`, operation] as const))(
    '%s: never 5xx, always problem+json, never leaks, refused writes change nothing',
    async (_name, operation) => {
      await remakeFixtures();
      let baseline = await snapshot();
      const distinctFailures = new Map<string, string>();
      const isWrite = operation.method !== 'GET';
      const arbitrary = fc.record({
        pathValue: pathValues(operation),
        query: queries(operation),
        body: bodies(bodySchemaOf(document, operation)),
        headers: headerValues(operation),
      });

      const property = fc.asyncProperty(fc.limitShrink(arbitrary, 60), async (input: FuzzCase) => {
        const fill = (text: string) =>
          text.replace(/@@(workflows|jobs|executions|api-keys|variables|connections|deliveries|event-subscriptions|event-deliveries)@@/g, (_match, resource: Resource) => ids[resource]);
        const url = fill(operation.path.replace(/\{[^}]+\}/g, input.pathValue) + queryString(input.query));
        const payload = input.body.kind === 'text' ? fill(input.body.text) : undefined;
        // An input that itself contains a leak marker could be echoed back legitimately: not a case.
        fc.pre(!mentionsLeakMarker(`${decodeURIComponentSafe(url)} ${payload ?? ''} ${Object.values(input.headers).join(' ')}`));

        const headers: Record<string, string> = { cookie: user.cookie, ...input.headers };
        if (isWrite) headers.origin = SPA_ORIGIN;
        if (input.body.kind === 'text') headers['content-type'] = input.body.contentType;
        const logOffset = logsOf(app).length;
        const response = await app.inject({ method: operation.method, url, headers, ...(payload === undefined ? {} : { payload }) });

        const problems = responseProblems(response);
        const refused = response.statusCode >= 400;
        if (refused || !isWrite) {
          const after = await snapshot();
          if (after !== baseline) problems.push(`${refused ? 'a refused write' : 'a read'} changed the caller's data:\n  before ${baseline}\n  after  ${after}`);
        }
        // A 5xx says nothing to the caller; the server's log says what went wrong.
        const cause = response.statusCode >= 500 ? loggedCause(logsOf(app).slice(logOffset)) : '';
        if (problems.length > 0 && KEEP_GOING) {
          const signature = `${response.statusCode} ${problems.map((problem) => problem.split('\n')[0]).join('; ')} ${cause}`;
          if (!distinctFailures.has(signature)) distinctFailures.set(signature, `${operation.method} ${url.slice(0, 300)} ${payload === undefined ? '' : `body ${payload.slice(0, 300)}`} headers ${JSON.stringify(input.headers)}`);
          if (refused || !isWrite) baseline = await snapshot();
          return;
        }
        if (problems.length > 0) {
          throw new Error(
            `${operation.method} ${url}\n  -> ${response.statusCode} ${response.headers['content-type'] ?? ''} ${response.body.slice(0, 500)}\n` +
              `${problems.map((problem) => `  * ${problem}`).join('\n')}${cause ? `\n  logged cause: ${cause}` : ''}`,
          );
        }
        if (!refused && isWrite) {
          // A successful delete may take a fixture (or, through cascades, several): start again from fresh ones.
          if (operation.method === 'DELETE' && /@@/.test(operation.path.replace(/\{[^}]+\}/g, input.pathValue))) await remakeFixtures();
          baseline = await snapshot();
        }
      });
      await fc.assert(property, { seed: SEED, numRuns: RUNS });
      if (distinctFailures.size > 0) {
        throw new Error(`seed ${SEED}: ${distinctFailures.size} kinds of failure\n${[...distinctFailures].map(([signature, example]) => `- ${signature}\n    e.g. ${example}`).join('\n')}`);
      }
    },
    90_000,
  );
});

/** The cause the app logged for a 5xx (from the request's own log lines), uuids masked so alike failures group together. */
function loggedCause(lines: string): string {
  const messages = lines
    .split('\n')
    .filter((line) => line.includes('"err"'))
    .map((line) => {
      try {
        const entry = JSON.parse(line) as { err?: { type?: string; message?: string; stack?: string } };
        // The driver's own error is the last cause; drizzle's message around it quotes the SQL.
        const cause = /caused by: ([^\n]*)/.exec(entry.err?.stack ?? '')?.[1];
        return cause ?? `${entry.err?.type ?? ''}: ${(entry.err?.message ?? '').split('\n')[0] ?? ''}`;
      } catch {
        return '';
      }
    });
  return (messages.at(-1) ?? '').replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '<uuid>').slice(0, 160);
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** What is wrong with a response, whatever the input: empty when it is a deliberate answer. */
function responseProblems(response: LightMyRequestResponse): string[] {
  const problems: string[] = [];
  const status = response.statusCode;
  if (status >= 500) problems.push(`answered ${status}: the database is up and the input is the caller's problem`);
  if (status >= 400) {
    const contentType = String(response.headers['content-type'] ?? '');
    if (!contentType.startsWith('application/problem+json')) problems.push(`error with content-type '${contentType}', not application/problem+json`);
    let body: unknown;
    try {
      body = JSON.parse(response.body);
    } catch {
      problems.push('error body is not JSON');
    }
    if (body !== null && typeof body === 'object') {
      const missing = ['type', 'title', 'status', 'detail', 'code', 'requestId'].filter((field) => !(field in body));
      if (missing.length > 0) problems.push(`problem lacks ${missing.join(', ')}`);
      if ('status' in body && body.status !== status) problems.push('problem status differs from the HTTP status');
    } else if (body !== undefined) {
      problems.push('error body is not a problem object');
    }
  }
  const leaked = LEAK_MARKERS.filter((marker) => response.body.toLowerCase().includes(marker));
  if (leaked.length > 0) problems.push(`body reveals internals (${leaked.map((marker) => JSON.stringify(marker)).join(', ')})`);
  return problems;
}

// ---------------------------------------------------------------------------------------------

/**
 * POST /api/hooks/{hookId} is outside /api/v1 (the document walk above leaves it out) and takes
 * anyone's request: bodies of every kind under every content type, signed right, wrong or not at
 * all, the dedup headers, hostile queries and hook ids. Every answer is deliberate (the checks of
 * responseProblems), and stores what it says: nothing for a refusal before the check, one rejected
 * delivery for a 401, one accepted delivery and execution, or one duplicate, for a 202.
 */
describe('fuzzing POST /api/hooks/{hookId}', () => {
  const SECRET = 'fuzz-hook-secret';
  let app: App;
  let hook: { id: string; hookId: string };

  beforeAll(async () => {
    app = await buildTestApp({ WEBHOOK_RATE_LIMIT_MAX: '1000000' });
    const user = await signUp(app);
    const variable = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key: 'FUZZ_HOOK_SECRET', value: SECRET, secret: true } });
    expect(variable.statusCode, variable.body).toBe(201);
    const created = await app.inject({
      method: 'POST',
      url: '/api/v1/workflows',
      headers: { cookie: user.cookie },
      payload: {
        name: 'fuzzed hook',
        nodes: [{ id: 'hook', type: 'trigger.webhook', params: { verify: { scheme: 'hmac-sha256', header: 'x-signature', secretVariable: 'FUZZ_HOOK_SECRET' } } }],
        edges: [],
      },
    });
    expect(created.statusCode, created.body).toBe(201);
    const workflow = created.json<{ id: string; webhook: { hookId: string } }>();
    hook = { id: workflow.id, hookId: workflow.webhook.hookId };
  });
  afterAll(async () => {
    await app.close();
  });

  const HOOK = '@@hook@@';
  const hookIds = fc.oneof(
    { weight: 10, arbitrary: fc.constant(HOOK) },
    { weight: 1, arbitrary: hostileString.filter((text) => text.length > 0).map(percentEncode) },
    { weight: 1, arbitrary: fc.constantFrom('%', '%ZZ', '..', '%2e%2e', '%2F', '%00', 'x'.repeat(101), 'A'.repeat(22)) },
  );
  const contentTypes = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'application/vnd.fuzz+json', 'application/x-www-form-urlencoded', 'text/plain', 'text/csv; charset=latin1') },
    { weight: 2, arbitrary: fc.constantFrom(...OTHER_CONTENT_TYPES) },
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: hostileString.filter(headerSafe) },
  );
  const bodies = fc.oneof(
    { weight: 4, arbitrary: hostileJson.map((value) => JSON.stringify(value) ?? 'null') },
    { weight: 1, arbitrary: deeplyNested.map((value) => JSON.stringify(value)) },
    { weight: 1, arbitrary: fc.constantFrom(...NOT_JSON) },
    { weight: 2, arbitrary: fc.array(fc.tuple(hostileString, hostileString), { maxLength: 4 }).map((fields) => new URLSearchParams(fields).toString()) },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
  const deliveryKeys = fc.option(fc.oneof({ weight: 3, arbitrary: fc.constantFrom('evt_1', 'evt_2', 'k1') }, { weight: 1, arbitrary: hostileString.filter(headerSafe) }), { nil: undefined });
  const queries = fc.array(
    fc.oneof(
      fc.tuple(hostileString, hostileString).map(([key, value]) => `${percentEncode(key)}=${percentEncode(value)}`),
      fc.tuple(fc.constantFrom('a', '__proto__', 'constructor', 'a[b]', ''), fc.constantFrom(...RAW_QUERY_VALUES)).map(([key, value]) => `${key}=${value}`),
    ),
    { maxLength: 3 },
  );
  const cases = fc.record({
    hookId: hookIds,
    contentType: contentTypes,
    body: bodies,
    signature: fc.constantFrom('valid', 'valid', 'wrong', 'none', 'garbage'),
    webhookId: deliveryKeys,
    idempotencyKey: deliveryKeys,
    query: queries,
  });

  const stored = async () => {
    const [row] = await app.database.sql<{ accepted: number; rejected: number; duplicate: number; executions: number }[]>`
      select count(*) filter (where status = 'accepted')::int as accepted, count(*) filter (where status = 'rejected')::int as rejected,
             count(*) filter (where status = 'duplicate')::int as duplicate,
             (select count(*)::int from executions where workflow_id = ${hook.id}::uuid) as executions
        from webhook_deliveries where workflow_id = ${hook.id}::uuid`;
    if (!row) throw new Error('the count returned no row');
    return row;
  };

  it('never 5xx, always problem+json, never leaks, and stores exactly what each answer says', async () => {
    const property = fc.asyncProperty(fc.limitShrink(cases, 60), async (input) => {
      const body = input.body === undefined ? undefined : Buffer.from(input.body, 'utf8');
      const headers: Record<string, string> = {};
      if (input.contentType !== undefined) headers['content-type'] = input.contentType;
      if (input.webhookId !== undefined) headers['webhook-id'] = input.webhookId;
      if (input.idempotencyKey !== undefined) headers['idempotency-key'] = input.idempotencyKey;
      const digest = createHmac('sha256', input.signature === 'wrong' ? `${SECRET}x` : SECRET).update(body ?? Buffer.alloc(0)).digest('hex');
      if (input.signature === 'valid' || input.signature === 'wrong') headers['x-signature'] = digest;
      if (input.signature === 'garbage') headers['x-signature'] = `${digest}=${digest}`;
      const url = `/api/hooks/${input.hookId === HOOK ? hook.hookId : input.hookId}${input.query.length > 0 ? `?${input.query.join('&')}` : ''}`;
      fc.pre(!mentionsLeakMarker(`${decodeURIComponentSafe(url)} ${input.body ?? ''} ${Object.values(headers).join(' ')}`));

      const before = await stored();
      const response = await app.inject({ method: 'POST', url, headers, ...(body === undefined ? {} : { payload: body }) });
      const after = await stored();
      const problems = responseProblems(response);
      const grew = {
        accepted: after.accepted - before.accepted,
        rejected: after.rejected - before.rejected,
        duplicate: after.duplicate - before.duplicate,
        executions: after.executions - before.executions,
      };
      const allowed =
        response.statusCode === 202
          ? [{ accepted: 1, rejected: 0, duplicate: 0, executions: 1 }, { accepted: 0, rejected: 0, duplicate: 1, executions: 0 }]
          : response.statusCode === 401
            ? [{ accepted: 0, rejected: 1, duplicate: 0, executions: 0 }]
            : [{ accepted: 0, rejected: 0, duplicate: 0, executions: 0 }];
      if (!allowed.some((shape) => JSON.stringify(shape) === JSON.stringify(grew))) problems.push(`answered ${response.statusCode} but stored ${JSON.stringify(grew)}`);
      if (response.statusCode < 400 && response.statusCode !== 202) problems.push(`answered ${response.statusCode}, not 202 (no respond: completed here)`);
      if (problems.length > 0) {
        const cause = response.statusCode >= 500 ? loggedCause(logsOf(app)) : '';
        throw new Error(
          `POST ${url.slice(0, 300)} headers ${JSON.stringify(headers).slice(0, 300)} body ${JSON.stringify(input.body)?.slice(0, 300)}\n` +
            `  -> ${response.statusCode} ${response.body.slice(0, 300)}\n${problems.map((problem) => `  * ${problem}`).join('\n')}${cause ? `\n  logged cause: ${cause}` : ''}`,
        );
      }
    });
    await fc.assert(property, { seed: SEED, numRuns: RUNS * 4 });
  }, 120_000);
});
