/**
 * Hostile input that passes for data: fields a client may not set (mass assignment), SQL and LIKE
 * metacharacters in searches, sort fields outside the allowlist. Routes and body schemas come
 * from the OpenAPI document, so new routes are covered without editing this file. The webhook
 * endpoint (outside /api/v1, with bodies of its own kinds) is covered explicitly at the end.
 */
import { createHmac, randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { makeResources } from './fixtures.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';
import { bodySchemaOf, operationsOf, publishedDocument, resolve, type JsonSchema, type OpenApiDocument, type Operation } from './openapi-document.js';

const SPA_ORIGIN = 'http://localhost:8100';

type Resource = 'workflows' | 'jobs' | 'executions' | 'api-keys' | 'variables' | 'connections' | 'event-subscriptions' | 'event-deliveries';
const FIELD_RESOURCES: Readonly<Record<string, Resource>> = { workflowId: 'workflows', jobId: 'jobs', executionId: 'executions' };

describe('hostile input', () => {
  let app: App;
  let document: OpenApiDocument;
  let operations: Operation[];
  let user: SignedInUser;
  let ids: Record<Resource, string>;

  beforeAll(async () => {
    app = await buildTestApp();
    document = await publishedDocument(app);
    operations = operationsOf(document);
    user = await signUp(app);
    const made = await makeResources(app, user);
    ids = {
      workflows: made.workflow.id,
      jobs: made.job.id,
      executions: made.execution.id,
      'api-keys': made.apiKey.id,
      variables: made.variable.id,
      connections: made.connection.id,
      'event-subscriptions': made.eventSubscription.id,
      'event-deliveries': made.eventDelivery.id,
    };
  });
  afterAll(async () => {
    await app.close();
  });

  const headers = () => ({ cookie: user.cookie, origin: SPA_ORIGIN });
  const urlOf = (path: string) => path.replace(/\{[^}]+\}/g, () => ids[path.split('/')[3] as Resource] ?? randomUUID());

  /** Everything of the caller's that a write could change, in one statement (what engines change on their own is left out). */
  const snapshot = async (): Promise<string> => {
    const [row] = await app.database.sql<{ snapshot: string }[]>`
      select json_build_object(
        'workflows', (select coalesce(json_agg(w order by w.id), '[]') from (
          select id, name, description, nodes, edges, version, created_at, updated_at from workflows where user_id = ${user.id}) w),
        'jobs', (select coalesce(json_agg(j order by j.id), '[]') from (
          select id, name, definition_nl, workflow_id, cron, timezone, status, created_at from jobs where user_id = ${user.id}) j),
        'executions', (select coalesce(json_agg(e order by e.id), '[]') from (
          select id, workflow_id, job_id, trigger, input, retry_of_id, created_at, status = 'cancelled' as cancelled
            from executions where user_id = ${user.id} and trigger <> 'schedule') e),
        'apiKeys', (select coalesce(json_agg(k order by k.id), '[]') from (
          select id, name, prefix, key_hash, expires_at, created_at from api_keys where user_id = ${user.id}) k),
        'variables', (select coalesce(json_agg(v order by v.id), '[]') from (
          select id, key, value, secret, secret_ciphertext, version from variables where user_id = ${user.id}) v),
        'connections', (select coalesce(json_agg(c order by c.id), '[]') from (
          select id, name, description, base_url, headers, auth_type, auth_username, auth_name, secret_ciphertext, version from connections where user_id = ${user.id}) c),
        'eventSubscriptions', (select coalesce(json_agg(s order by s.id), '[]') from (
          select id, url, events, workflow_id, enabled, disabled_reason, secret_ciphertext, previous_secret_ciphertext, version
            from event_subscriptions where user_id = ${user.id}) s),
        'idempotencyKeys', (select count(*) from idempotency_keys where user_id = ${user.id})
      )::text as snapshot`;
    if (!row) throw new Error('snapshot query returned no row');
    return row.snapshot;
  };

  let distinctValues = 0;
  /** A value the schema accepts, from its default, example or type; undefined when none can be told. */
  const acceptedValue = (schema: JsonSchema, name: string): unknown => {
    const resolved = resolve(document, schema);
    if (resolved.default !== undefined) return resolved.default;
    if (typeof resolved.example === 'string' && resolved.pattern) {
      // A patterned example is usually a name that must be unique per user (a connection's, a
      // variable's key): each body gets its own, so one write cannot take another's name.
      const distinct = `${resolved.example}_${(distinctValues += 1)}`;
      if (new RegExp(resolved.pattern).test(distinct)) return distinct;
    }
    if (resolved.example !== undefined) return resolved.example;
    if (resolved.enum && resolved.enum.length > 0) return resolved.enum[0];
    const type = Array.isArray(resolved.type) ? resolved.type[0] : resolved.type;
    if (type === 'string') {
      if (resolved.format === 'uuid') {
        const resource = FIELD_RESOURCES[name];
        return resource ? ids[resource] : undefined;
      }
      if (resolved.format === 'date-time') return new Date(Date.now() + 86_400_000).toISOString();
      return `hostile-input ${name}`;
    }
    if (type === 'integer' || type === 'number') return resolved.minimum ?? 1;
    if (type === 'boolean') return false;
    if (type === 'array') return [];
    if (type === 'object') return minimalBody(resolved);
    return undefined;
  };

  /** The required fields (or, when none is required, the first field a value can be told for): a body the route accepts. */
  const minimalBody = (schema: JsonSchema): Record<string, unknown> => {
    const properties = Object.entries(schema.properties ?? {});
    const required = new Set(schema.required ?? []);
    const body: Record<string, unknown> = {};
    for (const [name, property] of properties) {
      if (!required.has(name)) continue;
      const value = acceptedValue(property, name);
      if (value !== undefined) body[name] = value;
    }
    if (required.size === 0) {
      for (const [name, property] of properties) {
        const value = acceptedValue(property, name);
        if (value === undefined) continue;
        body[name] = value;
        break;
      }
    }
    return body;
  };

  describe('mass assignment', () => {
    const FORBIDDEN: Record<string, () => unknown> = {
      userId: () => randomUUID(),
      id: () => randomUUID(),
      version: () => 999,
      createdAt: () => '2000-01-01T00:00:00.000Z',
      status: () => 'completed',
    };

    it('refuses owner, id, version, timestamps and status on every POST/PATCH body that does not document them (400 naming the field), changing nothing', async () => {
      const writes = operations.filter((operation) => (operation.method === 'POST' || operation.method === 'PATCH') && bodySchemaOf(document, operation)?.properties);
      expect(writes.length, 'POST/PATCH operations with a documented body').toBeGreaterThanOrEqual(5);

      const failures: string[] = [];
      for (const operation of writes) {
        const schema = bodySchemaOf(document, operation) as JsonSchema;
        const base = minimalBody(schema);
        const url = urlOf(operation.path);
        const name = `${operation.method} ${operation.path}`;
        // The body without the extra field is accepted: only the extra field can explain a refusal.
        const accepted = await app.inject({ method: operation.method, url, headers: headers(), payload: base });
        if (accepted.statusCode >= 300) failures.push(`${name}: the derived body ${JSON.stringify(base)} is refused (${accepted.statusCode} ${accepted.body.slice(0, 200)})`);

        for (const [field, value] of Object.entries(FORBIDDEN)) {
          if (field in (schema.properties ?? {})) continue;
          const before = await snapshot();
          const payload = { ...base, [field]: value() };
          const response = await app.inject({ method: operation.method, url, headers: headers(), payload });
          const after = await snapshot();
          const errors = parseErrors(response);
          if (response.statusCode !== 400) failures.push(`${name} with '${field}': answered ${response.statusCode} ${response.body.slice(0, 200)}`);
          else if (!errors.some((error) => error.path === field)) failures.push(`${name} with '${field}': errors do not name it: ${JSON.stringify(errors)}`);
          if (after !== before) failures.push(`${name} with '${field}': the data changed`);
        }
      }
      expect(failures).toEqual([]);
    });
  });

  describe('searchQuery', () => {
    const INTENDED = ['50%_off', "a'b", 'x";drop table workflows;--'];
    // What a wildcard or unescaped-quote reading of the intended names would also match.
    const DECOYS = ['50% off', '50x_off', '50 percent off', '500_off', 'ab', "a''b", 'a"b', 'x', 'drop table workflows', 'x"'];

    const searchNames = async (searchQuery: string): Promise<string[]> => {
      const response = await app.inject({ url: `/api/v1/workflows?pageSize=100&searchQuery=${encodeURIComponent(searchQuery)}`, headers: { cookie: user.cookie } });
      expect(response.statusCode, `searchQuery ${JSON.stringify(searchQuery)}: ${response.body.slice(0, 300)}`).toBe(200);
      return response.json<{ items: { name: string }[] }>().items.map((item) => item.name).sort();
    };

    it('treats %, _, quotes and SQL as data: exactly the names containing the text match, and the table survives', async () => {
      for (const name of [...INTENDED, ...DECOYS]) {
        const created = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: headers(), payload: { name, nodes: [] } });
        expect(created.statusCode, created.body).toBe(201);
      }
      const countBefore = await workflowCount();

      // The intended names, each found alone.
      for (const name of INTENDED) expect(await searchNames(name), `searchQuery ${JSON.stringify(name)}`).toEqual([name]);

      // Any other text: exactly the caller's workflows whose name or description contains it, case-insensitively.
      const rows = await app.database.sql<{ name: string; description: string }[]>`select name, description from workflows where user_id = ${user.id}`;
      const oracle = (text: string) =>
        rows.filter((row) => `${row.name}\n${row.description}`.toLowerCase().includes(text.toLowerCase())).map((row) => row.name).sort();
      for (const text of ['%', '_', '%_', '_%', "'", "''", '"', '";', ';--', '--', '\\', '\\%', '50%', '_off', 'OFF', 'DROP TABLE', "' or '1'='1", '%%', '[a-z]', '.*']) {
        expect(await searchNames(text), `searchQuery ${JSON.stringify(text)}`).toEqual(oracle(text));
      }

      const [table] = await app.database.sql<{ exists: boolean }[]>`select to_regclass('public.workflows') is not null as exists`;
      expect(table?.exists).toBe(true);
      expect(await workflowCount()).toBe(countBefore);
    });

    it('refuses a NUL character in searchQuery on every list that has one (400), instead of failing in the database', async () => {
      const searchable = operations.filter((operation) => operation.method === 'GET' && operation.spec.parameters?.some((parameter) => parameter.in === 'query' && parameter.name === 'searchQuery'));
      expect(searchable.length).toBeGreaterThanOrEqual(3);
      const failures: string[] = [];
      for (const operation of searchable) {
        const response = await app.inject({ url: `${urlOf(operation.path)}?searchQuery=a%00b`, headers: { cookie: user.cookie } });
        if (response.statusCode !== 400) failures.push(`${operation.path}?searchQuery=a%00b answered ${response.statusCode}`);
      }
      expect(failures).toEqual([]);
    });

    const workflowCount = async () => {
      const [row] = await app.database.sql<{ count: number }[]>`select count(*)::int as count from workflows where user_id = ${user.id}`;
      return row?.count;
    };
  });

  describe('sortBy', () => {
    const OUTSIDE = [
      'password', 'user_id', 'userId', 'keyHash', 'key_hash', 'id', 'id; drop table workflows', 'createdAt desc', 'createdAt,name', 'name asc',
      '', ' ', 'CREATEDAT', 'createdat', ' createdAt', '__proto__', 'constructor', 'toString', 'hasOwnProperty', '1', '(select 1)', 'random()',
    ];

    it('refuses a sort field outside the allowlist (400 naming sortBy) on every list, and accepts each documented one', async () => {
      const lists = operations.filter((operation) => {
        const page = resolve(document, operation.spec.responses?.['200']?.content?.['application/json']?.schema);
        return operation.method === 'GET' && page.properties?.items !== undefined;
      });
      expect(lists.map((operation) => operation.path)).toEqual(expect.arrayContaining(['/api/v1/workflows', '/api/v1/jobs', '/api/v1/executions', '/api/v1/api-keys']));

      const failures: string[] = [];
      for (const operation of lists) {
        const sortBy = operation.spec.parameters?.find((parameter) => parameter.in === 'query' && parameter.name === 'sortBy');
        if (!sortBy) {
          failures.push(`${operation.path}: a list without a documented sortBy`);
          continue;
        }
        const allowed = (resolve(document, sortBy.schema).enum ?? []).map(String);
        const base = urlOf(operation.path);
        for (const field of allowed) {
          const response = await app.inject({ url: `${base}?sortBy=${encodeURIComponent(field)}`, headers: { cookie: user.cookie } });
          if (response.statusCode !== 200) failures.push(`${operation.path}?sortBy=${field} (documented) answered ${response.statusCode}`);
        }
        const attempts = [
          ...OUTSIDE.filter((field) => !allowed.includes(field)).map((field) => `sortBy=${encodeURIComponent(field)}`),
          // Two values, or an array-looking key: not one allowed field either.
          ...(allowed.length >= 1 ? [`sortBy=${allowed[0]}&sortBy=${allowed.at(-1) ?? ''}`, `sortBy[]=${allowed[0]}`, `sortBy[0]=${allowed[0]}`] : []),
        ];
        for (const query of attempts) {
          const response = await app.inject({ url: `${base}?${query}`, headers: { cookie: user.cookie } });
          try {
            expectProblem(response, 400);
          } catch (error) {
            failures.push(`${operation.path}?${query}: ${(error as Error).message.slice(0, 200)}`);
            continue;
          }
          const errors = parseErrors(response);
          if (!errors.some((error) => error.path === 'sortBy' || error.path.startsWith('sortBy'))) {
            // An array-looking key is an unknown parameter: naming that key is right too.
            if (!query.startsWith('sortBy[') || !errors.some((error) => error.path.startsWith('sortBy['))) {
              failures.push(`${operation.path}?${query}: errors do not name sortBy: ${JSON.stringify(errors)}`);
            }
          }
        }
      }
      expect(failures).toEqual([]);
    });
  });
});

function parseErrors(response: LightMyRequestResponse): { path: string; message: string }[] {
  try {
    const body = JSON.parse(response.body) as { errors?: unknown };
    return Array.isArray(body.errors) ? (body.errors as { path: string; message: string }[]) : [];
  } catch {
    return [];
  }
}

/**
 * POST /api/hooks/:hookId takes anyone's request: bodies, headers and queries a sender could make
 * up. Each is answered deliberately (never 5xx; errors in problem+json), and stores exactly what
 * its answer says: a refusal before the check nothing, a failed check one rejected delivery, a
 * 202 one accepted or duplicate delivery.
 */
describe('hostile input to the webhook endpoint', () => {
  const SECRET = 'hostile-hook-secret';
  let app: App;
  let user: SignedInUser;
  let open: { id: string; hookId: string };
  let signed: { id: string; hookId: string };

  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
    const variable = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key: 'HOOK_SECRET', value: SECRET, secret: true } });
    expect(variable.statusCode, variable.body).toBe(201);
    const hook = async (params: Record<string, unknown>) => {
      const response = await app.inject({
        method: 'POST',
        url: '/api/v1/workflows',
        headers: { cookie: user.cookie },
        payload: { name: `hostile hook ${randomUUID()}`, nodes: [{ id: 'hook', type: 'trigger.webhook', params }], edges: [] },
      });
      expect(response.statusCode, response.body).toBe(201);
      const workflow = response.json<{ id: string; webhook: { hookId: string } }>();
      return { id: workflow.id, hookId: workflow.webhook.hookId };
    };
    open = await hook({});
    signed = await hook({ verify: { scheme: 'hmac-sha256', header: 'x-hub-signature-256', prefix: 'sha256=', secretVariable: 'HOOK_SECRET' } });
  });
  afterAll(async () => {
    await app.close();
  });

  const counts = async (workflowId: string) => {
    const rows = await app.database.sql<{ status: string; count: number }[]>`
      select status, count(*)::int as count from webhook_deliveries where workflow_id = ${workflowId}::uuid group by status`;
    const executions = await app.database.sql<{ count: number }[]>`select count(*)::int as count from executions where workflow_id = ${workflowId}::uuid`;
    return { ...Object.fromEntries(rows.map((row) => [row.status, row.count])), executions: executions[0]?.count ?? 0 } as Record<string, number>;
  };

  /** Sends one request and checks its answer against what it stored; returns a failure, if any. */
  async function probe(target: { id: string; hookId: string }, name: string, body: string | Buffer | undefined, headers: Record<string, string>, path = ''): Promise<string | undefined> {
    const before = await counts(target.id);
    const response = await app.inject({ method: 'POST', url: `/api/hooks/${target.hookId}${path}`, headers, ...(body === undefined ? {} : { payload: body }) });
    const after = await counts(target.id);
    const grew = (status: string) => (after[status] ?? 0) - (before[status] ?? 0);
    const stored = { accepted: grew('accepted'), rejected: grew('rejected'), duplicate: grew('duplicate'), executions: grew('executions') };
    const status = response.statusCode;
    if (status >= 500) return `${name}: answered ${status} ${response.body.slice(0, 200)}`;
    if (status >= 400 && !String(response.headers['content-type']).startsWith('application/problem+json')) return `${name}: ${status} is not problem+json`;
    const expected =
      status === 202 ? [{ accepted: 1, rejected: 0, duplicate: 0, executions: 1 }, { accepted: 0, rejected: 0, duplicate: 1, executions: 0 }]
      : status === 401 ? [{ accepted: 0, rejected: 1, duplicate: 0, executions: 0 }]
      : [{ accepted: 0, rejected: 0, duplicate: 0, executions: 0 }];
    if (!expected.some((shape) => JSON.stringify(shape) === JSON.stringify(stored))) return `${name}: answered ${status} but stored ${JSON.stringify(stored)}`;
    return undefined;
  }

  const nested = (depth: number) => `${'['.repeat(depth)}1${']'.repeat(depth)}`;
  const BODIES: [string, string | Buffer | undefined, string | undefined][] = [
    ['NUL in JSON', '{"a":"\\u0000"}', 'application/json'],
    ['lone surrogate in JSON', '{"a":"\\ud800"}', 'application/json'],
    ['__proto__ in JSON', '{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}', 'application/json'],
    ['duplicate keys', '{"a":1,"a":2}', 'application/json'],
    ['depth 64', nested(63), 'application/json'],
    ['depth 65', nested(65), 'application/json'],
    ['depth 100000', nested(100_000), 'application/json'],
    ['huge exponent', '1e99999', 'application/json'],
    ['BOM', '\ufeff{}', 'application/json'],
    ['JSON in UTF-16', '{"a":1}', 'application/json; charset=utf-16'],
    ['upper-case type', '{"a":1}', 'APPLICATION/JSON'],
    ['+json type', '{"a":1}', 'application/problem+json'],
    ['bare +json', '{"a":1}', 'application/+json'],
    ['NUL in text', 'a\u0000b', 'text/plain'],
    ['invalid UTF-8 text', Buffer.from([0xff, 0xfe, 0x00, 0xc3]), 'text/plain'],
    ['NUL in a form', 'a=%00&b=\u0000', 'application/x-www-form-urlencoded'],
    ['broken form', '%ZZ=1&=&&&a[b]=1&__proto__=x&constructor=y', 'application/x-www-form-urlencoded'],
    ['form with JSON type parameters', 'a=1', 'application/x-www-form-urlencoded; charset=binary; boundary=x'],
    ['1 MiB + 1 of text', 'x'.repeat(1024 * 1024 + 1), 'text/plain'],
    ['multipart', '--x\r\n\r\n--x--', 'multipart/form-data; boundary=x'],
    ['octet-stream', Buffer.from([0, 1, 2]), 'application/octet-stream'],
    ['malformed type', '{}', 'application/'],
    ['no type, with body', '{}', undefined],
    ['no type, no body', undefined, undefined],
  ];

  it('answers every hostile body deliberately and stores what the answer says, on an open hook and a signed one', async () => {
    const failures: string[] = [];
    for (const [name, body, contentType] of BODIES) {
      const headers: Record<string, string> = contentType === undefined ? {} : { 'content-type': contentType };
      const failure = await probe(open, name, body, headers);
      if (failure) failures.push(failure);
      const signature = `sha256=${createHmac('sha256', SECRET).update(body ?? '').digest('hex')}`;
      const signedFailure = await probe(signed, `${name} (signed)`, body, { ...headers, 'x-hub-signature-256': signature });
      if (signedFailure) failures.push(signedFailure);
    }
    expect(failures).toEqual([]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  }, 120_000);

  it('answers hostile headers, keys and queries deliberately', async () => {
    const json = { 'content-type': 'application/json' };
    const cases: [string, Record<string, string>, string][] = [
      ['webhook-id with spaces', { ...json, 'webhook-id': 'a b' }, ''],
      ['webhook-id of 256 characters', { ...json, 'webhook-id': 'x'.repeat(256) }, ''],
      ['webhook-id of 255 characters', { ...json, 'webhook-id': 'y'.repeat(255) }, ''],
      ['webhook-id, SQL', { ...json, 'webhook-id': "';drop_table_webhook_deliveries;--" }, ''],
      ['empty Idempotency-Key', { ...json, 'idempotency-key': '' }, ''],
      ['latin-1 header value', { ...json, 'x-note': 'caf\u00e9' }, ''],
      ['signature of another length', { ...json, 'x-hub-signature-256': `sha256=${'0'.repeat(10_000)}` }, ''],
      ['signature not hex', { ...json, 'x-hub-signature-256': `sha256=${'z'.repeat(64)}` }, ''],
      ['standard webhooks headers on an hmac hook', { ...json, 'webhook-timestamp': '1e99', 'webhook-signature': 'v1,===' }, ''],
      ['test crash header without ENABLE_TEST_ROUTES', { ...json, 'x-autonode-test-crash-after-commit': '1' }, ''],
      ['NUL in the query', json, '?a=%00'],
      ['broken query', json, '?%ZZ&a[b]=1&__proto__=1&constructor=2&=&a=1&a=2'],
      ['long query', json, `?q=${'x'.repeat(20_000)}`],
    ];
    const failures: string[] = [];
    for (const [name, headers, query] of cases) {
      for (const target of [open, signed]) {
        const failure = await probe(target, `${name}${target === signed ? ' (signed hook)' : ''}`, '{}', headers, query);
        if (failure) failures.push(failure);
      }
    }
    // Hook ids that are not one: 404 without a query, whatever they hold.
    for (const hookId of ['%00', '..', '%2e%2e%2fapi', "'or'1'='1", 'x'.repeat(100), encodeURIComponent(open.hookId.toUpperCase())]) {
      const response = await app.inject({ method: 'POST', url: `/api/hooks/${hookId}`, headers: json, payload: '{}' });
      if (response.statusCode >= 500 || response.statusCode === 202) failures.push(`hook id ${hookId}: answered ${response.statusCode}`);
    }
    expect(failures).toEqual([]);
  }, 60_000);
});
