/**
 * The inbound webhook endpoint, POST /api/hooks/:hookId (API.md, Inbound webhooks), on the real app
 * and database: every verification scheme with good and bad signatures, the stored rows (accepted,
 * rejected, duplicate) and executions, deduplication under concurrency, the execution input, the
 * refused bodies, the synchronous answer, and the per-hook rate limit across two replicas.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import type { LightMyRequestResponse } from 'fastify';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { SharedRateLimiter } from '../src/lib/rate-limiter.js';
import { hookDeliveryCounts } from '../src/webhooks/rate-limit.js';
import { startEngine, waitForStatus } from './engine-helpers.js';
import { buildTestApp, expectProblem, lacksConcurrentConnections, logsOf, signUp, type SignedInUser } from './helpers.js';

interface HookWorkflow {
  id: string;
  version: number;
  webhook: { url: string; hookId: string };
}
interface DeliveryRow {
  id: string;
  status: 'accepted' | 'rejected' | 'duplicate';
  executionId: string | null;
  dedupKey: string | null;
  method: string;
  headers: Record<string, string>;
  query: Record<string, unknown>;
  contentType: string | null;
  body: Buffer;
  bodyBytes: number;
  reason: string | null;
  receivedAt: string;
}
interface ExecutionRow {
  id: string;
  trigger: string;
  status: string;
  workflowVersion: number;
  input: unknown;
}

const HMAC_SECRET = 'a-shared-hmac-secret';
const HEADER_SECRET = 'a-shared-header-token';
/** Standard Webhooks secrets are whsec_ + base64 of the key. */
const SW_SECRET = `whsec_${Buffer.from('a standard webhooks key of 32 b!').toString('base64')}`;

const node = (params: Record<string, unknown>) => ({ id: 'hook', type: 'trigger.webhook', params });
/** A trigger.webhook node feeding a transform that returns what the run got. */
const hookGraph = (params: Record<string, unknown> = {}, expression = '{ "body": input.body }') => ({
  nodes: [node(params), { id: 'echo', type: 'transform', params: { expression } }],
  edges: [{ source: 'hook', target: 'echo' }],
});

const githubSignature = (body: string | Buffer, secret = HMAC_SECRET) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
function standardHeaders(body: string, { id = `msg_${randomUUID()}`, at = new Date(), secret = SW_SECRET } = {}): Record<string, string> {
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, body),
  };
}

describe('POST /api/hooks/:hookId', () => {
  let app: App;
  let user: SignedInUser;

  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
    for (const [key, value] of [
      ['HMAC_SECRET', HMAC_SECRET],
      ['HEADER_SECRET', HEADER_SECRET],
      ['SW_SECRET', SW_SECRET],
    ] as const) {
      const created = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key, value, secret: true } });
      expect(created.statusCode, created.body).toBe(201);
    }
  });
  afterAll(async () => {
    await app.close();
  });

  async function createHook(graph: { nodes: unknown[]; edges: unknown[] } = hookGraph(), owner = user): Promise<HookWorkflow> {
    const response = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: owner.cookie }, payload: { name: `hook ${randomUUID()}`, ...graph } });
    expect(response.statusCode, response.body).toBe(201);
    return response.json<HookWorkflow>();
  }

  const deliver = (hookId: string, body: string | Buffer | undefined, headers: Record<string, string> = { 'content-type': 'application/json' }, query = '', target = app) =>
    target.inject({ method: 'POST', url: `/api/hooks/${hookId}${query}`, headers, ...(body === undefined ? {} : { payload: body }) });

  function accepted(response: LightMyRequestResponse): { executionId: string; deliveryId: string } {
    expect(response.statusCode, response.body).toBe(202);
    const body = response.json<{ executionId: string; deliveryId: string }>();
    expect(Object.keys(body).sort()).toEqual(['deliveryId', 'executionId']);
    return body;
  }

  const deliveries = (workflowId: string) =>
    app.database.sql<DeliveryRow[]>`
      select id, status, execution_id as "executionId", dedup_key as "dedupKey", method, headers, query, content_type as "contentType",
             body, body_bytes as "bodyBytes", reason, received_at as "receivedAt"
        from webhook_deliveries where workflow_id = ${workflowId}::uuid order by received_at, id`;
  const executions = (workflowId: string) =>
    app.database.sql<ExecutionRow[]>`
      select id, trigger, status, workflow_version as "workflowVersion", input from executions where workflow_id = ${workflowId}::uuid order by created_at, id`;

  /** The 401 problem without its requestId (the one field that differs between requests). */
  function signatureRefusal(response: LightMyRequestResponse): Record<string, unknown> {
    const { requestId: _requestId, ...rest } = expectProblem(response, 401);
    expect(rest.code).toBe('WEBHOOK_SIGNATURE_INVALID');
    return rest;
  }

  it('is in the OpenAPI document, under the webhooks tag, with its answers', async () => {
    const document = (await app.inject('/api/openapi.json')).json<{ paths: Record<string, Record<string, { tags?: string[]; responses?: Record<string, unknown>; requestBody?: { content?: Record<string, unknown> } }>> }>();
    const operation = document.paths['/api/hooks/{hookId}']?.post;
    expect(operation?.tags).toEqual(['webhooks']);
    expect(Object.keys(operation?.responses ?? {})).toEqual(expect.arrayContaining(['200', '202', '4XX']));
    expect(Object.keys(operation?.requestBody?.content ?? {})).toEqual(expect.arrayContaining(['application/json', 'application/x-www-form-urlencoded', 'text/plain']));
  });

  it('never writes a hook id to the log: the URL is what lets anyone start the workflow, however it is spelled', async () => {
    const workflow = await createHook();
    const { hookId } = workflow.webhook;
    const post = (url: string) => app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: '{}' });
    accepted(await deliver(hookId, '{}'));
    expectProblem(await deliver(`${hookId}x`, '{}'), 404);
    // Routed to the hook (Fastify decodes the path first): logged as the route's pattern.
    accepted(await post(`/api/hook%73/${hookId}`));
    accepted(await post(`/api/hooks/${hookId.replace(/^(.)/, (first: string) => `%${first.charCodeAt(0).toString(16)}`)}`));
    // Routed nowhere, but logged all the same: redacted wherever a hooks segment shows, decoded, in any case.
    for (const url of [`//api/hooks/${hookId}`, `/API/hooks/${hookId}`, `/api/HOOKS//${hookId}?x=1`, `/api/hooks%2F${hookId}`, `/api/hook%2573/${hookId}`]) {
      expect((await post(url)).statusCode, url).toBe(404);
    }
    const logs = logsOf(app);
    expect(logs).toContain('"url":"/api/hooks/:hookId"');
    expect(logs).toContain('"url":"/api/hooks/[hook]"');
    expect(logs).not.toContain(hookId);
  });

  describe('verification', () => {
    it('hmac-sha256 (GitHub style, x-hub-signature-256: sha256=<hex>): accepts the signed body, rejects a wrong, missing or unprefixed signature and a body changed by one byte', async () => {
      const workflow = await createHook(hookGraph({ verify: { scheme: 'hmac-sha256', header: 'X-Hub-Signature-256', prefix: 'sha256=', secretVariable: 'HMAC_SECRET' } }));
      const body = '{"action":"opened","number":1}';
      const good = accepted(await deliver(workflow.webhook.hookId, body, { 'content-type': 'application/json', 'x-hub-signature-256': githubSignature(body) }));
      // The digest is hex: an upper-case one is the same digest.
      const upperHex = `sha256=${createHmac('sha256', HMAC_SECRET).update(body).digest('hex').toUpperCase()}`;
      accepted(await deliver(workflow.webhook.hookId, body, { 'content-type': 'application/json', 'x-hub-signature-256': upperHex }));

      const changed = `${body.slice(0, -2)}2}`;
      const refusals = [
        await deliver(workflow.webhook.hookId, body, { 'content-type': 'application/json', 'x-hub-signature-256': githubSignature(body, 'another-secret') }),
        await deliver(workflow.webhook.hookId, changed, { 'content-type': 'application/json', 'x-hub-signature-256': githubSignature(body) }),
        await deliver(workflow.webhook.hookId, body, { 'content-type': 'application/json' }),
        await deliver(workflow.webhook.hookId, body, { 'content-type': 'application/json', 'x-hub-signature-256': githubSignature(body).slice('sha256='.length) }),
      ].map(signatureRefusal);

      // Sent twice, even twice the right value: Node would join the two into one string, which is no signature.
      const twice = await app.inject({
        method: 'POST',
        url: `/api/hooks/${workflow.webhook.hookId}`,
        headers: { 'content-type': 'application/json', 'x-hub-signature-256': [githubSignature(body), githubSignature(body)] },
        payload: body,
      });
      refusals.push(signatureRefusal(twice));
      expect(new Set(refusals.map((refusal) => JSON.stringify(refusal))).size).toBe(1);

      const rows = await deliveries(workflow.id);
      expect(rows.map((row) => row.status)).toEqual(['accepted', 'accepted', 'rejected', 'rejected', 'rejected', 'rejected', 'rejected']);
      expect(rows.filter((row) => row.status === 'rejected').every((row) => row.executionId === null && typeof row.reason === 'string' && row.reason.length > 0)).toBe(true);
      expect(rows[4]?.reason).toContain('missing');
      expect(rows[6]?.reason).toMatch(/^the x-hub-signature-256 header was sent 2 times$/i);
      // The signature is a credential of the sender's: never stored.
      expect(rows.every((row) => !('x-hub-signature-256' in row.headers))).toBe(true);
      const runs = await executions(workflow.id);
      expect(runs.map((run) => run.id)).toEqual([good.executionId, rows[1]?.executionId]);
      expect(rows[0]?.id).toBe(good.deliveryId);
    });

    it('standard-webhooks: accepts a signed delivery (and one of several signatures), rejects a wrong signature, a stale or future timestamp, a changed body and missing headers', async () => {
      const workflow = await createHook(hookGraph({ verify: { scheme: 'standard-webhooks', secretVariable: 'SW_SECRET' } }));
      const body = '{"type":"invoice.paid","amount":42}';
      accepted(await deliver(workflow.webhook.hookId, body, standardHeaders(body)));
      const several = standardHeaders(body);
      several['webhook-signature'] = `v1,${Buffer.alloc(32, 7).toString('base64')} ${several['webhook-signature']} v1a,whatever`;
      accepted(await deliver(workflow.webhook.hookId, body, several));

      const withoutSignature = standardHeaders(body);
      delete withoutSignature['webhook-signature'];
      const withoutTimestamp = standardHeaders(body);
      delete withoutTimestamp['webhook-timestamp'];
      const refusals = [
        await deliver(workflow.webhook.hookId, body, standardHeaders(body, { secret: `whsec_${Buffer.from('another key, also thirty-two b!!').toString('base64')}` })),
        await deliver(workflow.webhook.hookId, body, standardHeaders(body, { at: new Date(Date.now() - 6 * 60_000) })),
        await deliver(workflow.webhook.hookId, body, standardHeaders(body, { at: new Date(Date.now() + 6 * 60_000) })),
        await deliver(workflow.webhook.hookId, `${body} `, standardHeaders(body)),
        await deliver(workflow.webhook.hookId, body, withoutSignature),
        await deliver(workflow.webhook.hookId, body, withoutTimestamp),
      ].map(signatureRefusal);
      expect(new Set(refusals.map((refusal) => JSON.stringify(refusal))).size).toBe(1);

      const rows = await deliveries(workflow.id);
      expect(rows.map((row) => row.status)).toEqual(['accepted', 'accepted', 'rejected', 'rejected', 'rejected', 'rejected', 'rejected', 'rejected']);
      expect(rows[3]?.reason).toMatch(/too old/);
      expect(rows[4]?.reason).toMatch(/too new/);
      expect(rows[6]?.reason).toMatch(/missing/i);
      expect(rows.every((row) => !('webhook-signature' in row.headers))).toBe(true);
      expect(await executions(workflow.id)).toHaveLength(2);
    });

    it('header: accepts the exact secret in the named header, rejects another value or none, and hides the header from the run and the stored delivery', async () => {
      const workflow = await createHook(hookGraph({ verify: { scheme: 'header', header: 'X-Hook-Token', secretVariable: 'HEADER_SECRET' } }));
      const { executionId } = accepted(await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', 'x-hook-token': HEADER_SECRET }));
      const refusals = [
        await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', 'x-hook-token': `${HEADER_SECRET}x` }),
        await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', 'x-hook-token': HEADER_SECRET.slice(0, -1) }),
        await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json' }),
      ].map(signatureRefusal);
      expect(new Set(refusals.map((refusal) => JSON.stringify(refusal))).size).toBe(1);
      const rows = await deliveries(workflow.id);
      expect(rows.map((row) => row.status)).toEqual(['accepted', 'rejected', 'rejected', 'rejected']);
      expect(rows.every((row) => !('x-hook-token' in row.headers))).toBe(true);
      const [run] = await executions(workflow.id);
      expect(run?.id).toBe(executionId);
      expect(JSON.stringify(run?.input)).not.toContain(HEADER_SECRET);
    });

    it('answers the same 401 when the secret variable is gone, and tells the owner why in the rejected delivery', async () => {
      const owner = await signUp(app);
      const made = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: owner.cookie }, payload: { key: 'GONE_SECRET', value: HMAC_SECRET, secret: true } });
      expect(made.statusCode, made.body).toBe(201);
      const workflow = await createHook(hookGraph({ verify: { scheme: 'hmac-sha256', header: 'x-signature-256', secretVariable: 'GONE_SECRET' } }), owner);
      const body = '{"n":1}';
      const signature = createHmac('sha256', HMAC_SECRET).update(body).digest('hex');
      accepted(await deliver(workflow.webhook.hookId, body, { 'content-type': 'application/json', 'x-signature-256': signature }));
      const wrong = signatureRefusal(await deliver(workflow.webhook.hookId, body, { 'content-type': 'application/json', 'x-signature-256': signature.replace(/^./, (c) => (c === '0' ? '1' : '0')) }));

      expect((await app.inject({ method: 'DELETE', url: `/api/v1/variables/${made.json<{ id: string }>().id}`, headers: { cookie: owner.cookie } })).statusCode).toBe(204);
      const missing = signatureRefusal(await deliver(workflow.webhook.hookId, body, { 'content-type': 'application/json', 'x-signature-256': signature }));
      expect(missing).toEqual(wrong);
      const rows = await deliveries(workflow.id);
      expect(rows.map((row) => row.status)).toEqual(['accepted', 'rejected', 'rejected']);
      expect(rows[2]?.reason).toContain("secret variable 'GONE_SECRET' does not exist");
      expect(await executions(workflow.id)).toHaveLength(1);
    });

    it('answers the same 401 when the secret cannot be decrypted (altered at rest), and says so to the owner only', async () => {
      const owner = await signUp(app);
      const made = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: owner.cookie }, payload: { key: 'ALTERED_SECRET', value: HEADER_SECRET, secret: true } });
      expect(made.statusCode, made.body).toBe(201);
      const workflow = await createHook(hookGraph({ verify: { scheme: 'header', header: 'x-token', secretVariable: 'ALTERED_SECRET' } }), owner);
      accepted(await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', 'x-token': HEADER_SECRET }));
      const wrong = signatureRefusal(await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', 'x-token': 'wrong' }));
      // Another row's sealed secret, moved onto this one: it does not open here.
      await app.database.sql`
        update variables set secret_ciphertext = (select secret_ciphertext from variables where user_id = ${user.id} and key = 'HEADER_SECRET'),
                             secret_key_id = (select secret_key_id from variables where user_id = ${user.id} and key = 'HEADER_SECRET')
         where user_id = ${owner.id} and key = 'ALTERED_SECRET'`;
      const unreadable = signatureRefusal(await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', 'x-token': HEADER_SECRET }));
      expect(unreadable).toEqual(wrong);
      const rows = await deliveries(workflow.id);
      expect(rows.map((row) => row.status)).toEqual(['accepted', 'rejected', 'rejected']);
      expect(rows[2]?.reason).toContain("secret variable 'ALTERED_SECRET' cannot be decrypted");
    });

    it('refuses at save a verify.secretVariable that is not one of the caller’s secret variables (400 naming the path)', async () => {
      const plain = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key: 'PLAIN_NOT_SECRET', value: 'x' } });
      expect(plain.statusCode, plain.body).toBe(201);
      for (const secretVariable of ['NO_SUCH_SECRET', 'PLAIN_NOT_SECRET']) {
        const graph = { nodes: [{ id: 'start', type: 'transform', params: { expression: '1' } }, node({ verify: { scheme: 'header', header: 'x-token', secretVariable } })], edges: [] };
        const response = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: user.cookie }, payload: { name: 'bad secret', ...graph } });
        const problem = expectProblem(response, 400);
        expect(problem.errors).toEqual([{ path: 'nodes[1].params.verify.secretVariable', message: expect.stringContaining(secretVariable) }]);
      }
      // Another user's secret of that name is not the caller's.
      const other = await signUp(app);
      const response = await app.inject({
        method: 'POST',
        url: '/api/v1/workflows',
        headers: { cookie: other.cookie },
        payload: { name: 'not mine', ...hookGraph({ verify: { scheme: 'standard-webhooks', secretVariable: 'SW_SECRET' } }) },
      });
      expect(expectProblem(response, 400).errors).toEqual([{ path: 'nodes[0].params.verify.secretVariable', message: expect.stringContaining('SW_SECRET') }]);
    });
  });

  describe('the execution input', () => {
    it('is { method, headers, query, body, receivedAt } for JSON, with credentials and signatures left out of headers', async () => {
      const workflow = await createHook();
      const before = Date.now();
      const { executionId, deliveryId } = accepted(
        await deliver(
          workflow.webhook.hookId,
          '{"order":{"id":7,"items":["a","b"]}}',
          {
            'content-type': 'application/vnd.example+json; charset=utf-8',
            authorization: 'Bearer sender-token',
            cookie: 'session=abc',
            'x-api-key': 'key-material',
            'stripe-signature': 't=1,v1=abc',
            'x-custom-signature': 'sig',
            'x-request-source': 'billing',
          },
          '?tag=a&tag=b&single=1',
        ),
      );
      const [run] = await executions(workflow.id);
      expect(run).toMatchObject({ id: executionId, trigger: 'webhook', status: expect.any(String), workflowVersion: workflow.version });
      const input = run?.input as { method: string; headers: Record<string, string>; query: unknown; body: unknown; receivedAt: string };
      expect(Object.keys(input).sort()).toEqual(['body', 'headers', 'method', 'query', 'receivedAt']);
      expect(input.method).toBe('POST');
      expect(input.body).toEqual({ order: { id: 7, items: ['a', 'b'] } });
      expect(input.query).toEqual({ tag: ['a', 'b'], single: '1' });
      expect(input.headers).toMatchObject({ 'content-type': 'application/vnd.example+json; charset=utf-8', 'x-request-source': 'billing' });
      for (const hidden of ['authorization', 'cookie', 'x-api-key', 'stripe-signature', 'x-custom-signature']) expect(input.headers).not.toHaveProperty(hidden);
      expect(Date.parse(input.receivedAt)).toBeGreaterThanOrEqual(before - 1);
      expect(Date.parse(input.receivedAt)).toBeLessThanOrEqual(Date.now());

      // The stored delivery is the request as received: the raw bytes, and the same visible headers and query.
      const [row] = await deliveries(workflow.id);
      expect(row).toMatchObject({ id: deliveryId, status: 'accepted', executionId, method: 'POST', contentType: 'application/vnd.example+json; charset=utf-8', reason: null, dedupKey: null });
      expect(row?.body.toString('utf8')).toBe('{"order":{"id":7,"items":["a","b"]}}');
      expect(row?.bodyBytes).toBe(row?.body.length);
      expect(row?.headers).toEqual(input.headers);
      expect(row?.query).toEqual(input.query);
      expect(new Date(row?.receivedAt ?? 0).toISOString()).toBe(input.receivedAt);
    });

    it('is the fields of a form (a repeated field is an array, in order), text as a string, and an empty body as null or ""', async () => {
      const workflow = await createHook();
      const cases: [string | undefined, Record<string, string>, unknown][] = [
        ['name=Ada&tag=x&tag=y&tag=z&empty=&sp=a+b%26c', { 'content-type': 'application/x-www-form-urlencoded' }, { name: 'Ada', tag: ['x', 'y', 'z'], empty: '', sp: 'a b&c' }],
        ['plain text,\nwith lines – and é', { 'content-type': 'text/plain; charset=utf-8' }, 'plain text,\nwith lines – and é'],
        ['<xml>as text</xml>', { 'content-type': 'text/xml' }, '<xml>as text</xml>'],
        ['', { 'content-type': 'application/json' }, null],
        // A UTF-8 byte-order mark before JSON is no part of the JSON text.
        ['\ufeff{"bom":true}', { 'content-type': 'application/json; charset=utf-8' }, { bom: true }],
        [undefined, {}, ''],
      ];
      for (const [body, headers, expected] of cases) {
        const { executionId } = accepted(await deliver(workflow.webhook.hookId, body, headers));
        const [row] = await app.database.sql<{ input: { body: unknown } }[]>`select input from executions where id = ${executionId}::uuid`;
        expect(row?.input.body, JSON.stringify(body)).toEqual(expected);
      }
    });

    // Parsed before any signature is checked: anyone with the URL can send one. Copying the array
    // at each repeat took about 12 s for 40,000 repeats (quadratic); this is 150,000.
    it('parses a form of one field repeated 150,000 times at once (an array of them), within the test`s time', { timeout: 20_000 }, async () => {
      const workflow = await createHook();
      const repeats = 150_000;
      const { executionId } = accepted(await deliver(workflow.webhook.hookId, 'a=&'.repeat(repeats), { 'content-type': 'application/x-www-form-urlencoded' }));
      const [row] = await app.database.sql<{ count: number }[]>`select jsonb_array_length(input->'body'->'a') as count from executions where id = ${executionId}::uuid`;
      expect(row?.count).toBe(repeats);
    });

    it('runs the workflow with it: the trigger’s output is the input', async () => {
      const workflow = await createHook(hookGraph({}, '{ "sum": $sum(input.body.numbers), "from": input.headers."x-from" }'));
      const { executionId } = accepted(await deliver(workflow.webhook.hookId, '{"numbers":[1,2,3]}', { 'content-type': 'application/json', 'x-from': 'tests' }));
      const engine = startEngine(app);
      try {
        const run = await waitForStatus(app, user, executionId, ['completed', 'failed']);
        expect(run.status).toBe('completed');
        expect(run.output).toEqual({ echo: { sum: 6, from: 'tests' } });
        const steps = (await app.inject({ url: `/api/v1/executions/${executionId}/steps`, headers: { cookie: user.cookie } })).json<{ items: { nodeId: string; output: unknown }[] }>();
        expect(steps.items.find((step) => step.nodeId === 'hook')?.output).toMatchObject({ method: 'POST', body: { numbers: [1, 2, 3] }, query: {} });
      } finally {
        await engine.stop(2_000);
      }
    });
  });

  describe('refusals', () => {
    it('413 over 1 MiB, 415 for another type, 400 for malformed JSON or headers, 404 for an unknown hook; nothing stored', async () => {
      const workflow = await createHook();
      const hookId = workflow.webhook.hookId;
      const oneMiB = 'x'.repeat(1024 * 1024);
      expectProblem(await deliver(hookId, `${oneMiB}x`, { 'content-type': 'text/plain' }), 413);

      for (const contentType of ['application/octet-stream', 'multipart/form-data; boundary=x', 'application/xml', 'image/png', 'application/jsonx', 'not a type']) {
        const problem = expectProblem(await deliver(hookId, 'data', { 'content-type': contentType }), 415);
        expect(problem.detail, contentType).toMatch(/form/);
      }
      // A body with no type named is refused too; no body at all is a delivery.
      expectProblem(await deliver(hookId, 'data', {}), 415);

      for (const malformed of ['{', '{"a":1', "{'a':1}", '[1,]', 'NaN', '{"a":1}{"b":2}']) {
        expect(expectProblem(await deliver(hookId, malformed), 400).code, malformed).toBe('MALFORMED_JSON');
      }
      expect(expectProblem(await deliver(hookId, JSON.stringify(nest(100))), 400).code).toBe('JSON_TOO_DEEP');

      for (const unknown of [randomUUID(), 'A'.repeat(22), hookId.slice(0, -1), `${hookId}x`, '%00']) {
        expect(expectProblem(await deliver(unknown, '{}'), 404).code, unknown).toBe('NOT_FOUND');
        // The hook is looked up before the headers are checked: an unknown one is 404 whatever they hold.
        expect(expectProblem(await deliver(unknown, '{}', { 'content-type': 'application/json', 'webhook-id': 'not a key' }), 404).code, unknown).toBe('NOT_FOUND');
      }
      expect(expectProblem(await deliver(hookId, '{}', { 'content-type': 'application/json', 'webhook-id': 'not a key' }), 400).code).toBe('VALIDATION_FAILED');
      expect(await deliveries(workflow.id)).toEqual([]);
      expect(await executions(workflow.id)).toEqual([]);
    });

    it('takes a run input up to ENGINE_MAX_PAYLOAD_BYTES (default 2 MiB): over it, 413 before any check, and a rejected delivery without its body', async () => {
      const owner = await signUp(app);
      const made = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: owner.cookie }, payload: { key: 'SIZE_SECRET', value: HMAC_SECRET, secret: true } });
      expect(made.statusCode, made.body).toBe(201);
      const workflow = await createHook(hookGraph({ verify: { scheme: 'hmac-sha256', header: 'x-signature', secretVariable: 'SIZE_SECRET' } }), owner);
      const hookId = workflow.webhook.hookId;
      const signed = (body: string) => ({ 'content-type': 'text/plain', 'x-signature': createHmac('sha256', HMAC_SECRET).update(body).digest('hex') });
      // Within the raw limit (1 MiB) but not the run input's: escaping counts, a megabyte of quotes
      // or backslashes is two megabytes of JSON, and more with the method, headers and query.
      const quotes = '"'.repeat(1024 * 1024 - 16);
      const backslashes = '\\'.repeat(1024 * 1024 - 16);
      for (const body of [quotes, backslashes]) {
        const refused = expectProblem(await deliver(hookId, body, signed(body)), 413);
        expect(refused.code).toBe('PAYLOAD_TOO_LARGE');
        expect(refused.detail).toMatch(/at most 2097152/);
      }
      // A forgery as large is refused the same way: the check is not worth making.
      expectProblem(await deliver(hookId, quotes, { 'content-type': 'text/plain', 'x-signature': 'forged' }), 413);
      // A whole mebibyte of plain text fits at the defaults.
      const fits = 'y'.repeat(1024 * 1024);
      accepted(await deliver(hookId, fits, signed(fits)));

      const rows = await deliveries(workflow.id);
      expect(rows.map((row) => row.status)).toEqual(['rejected', 'rejected', 'rejected', 'accepted']);
      for (const row of rows.slice(0, 3)) {
        expect(row.reason).toMatch(/run input .* is \d+ bytes, more than ENGINE_MAX_PAYLOAD_BYTES \(2097152\)/);
        expect(row.body).toHaveLength(0);
      }
      expect(rows.slice(0, 3).map((row) => row.bodyBytes)).toEqual([quotes.length, backslashes.length, quotes.length]);
      expect(rows[3]?.body.length).toBe(fits.length);
      expect(await executions(workflow.id)).toHaveLength(1);
    });

    it('gives each hook 128 random bits, URL-safe, that tell nothing of its workflow; its url ends with it', async () => {
      const hooks = [await createHook(), await createHook()];
      for (const workflow of hooks) {
        const { hookId, url } = workflow.webhook;
        // 16 bytes in base64url: 22 characters, no padding.
        expect(hookId).toMatch(/^[A-Za-z0-9_-]{22}$/);
        expect(Buffer.from(hookId, 'base64url')).toHaveLength(16);
        expect(hookId).not.toContain(workflow.id.replaceAll('-', '').slice(0, 8));
        expect(url.endsWith(`/hooks/${hookId}`)).toBe(true);
      }
      expect(hooks[0]?.webhook.hookId).not.toBe(hooks[1]?.webhook.hookId);
    });

    it('answers 404 at the old URL once the hook is rotated, and at any once the trigger.webhook node is removed', async () => {
      const workflow = await createHook();
      const oldId = workflow.webhook.hookId;
      accepted(await deliver(oldId, '{}'));
      const rotated = await app.inject({ method: 'POST', url: `/api/v1/workflows/${workflow.id}/webhook/rotate`, headers: { cookie: user.cookie } });
      expect(rotated.statusCode, rotated.body).toBe(200);
      const newId = rotated.json<HookWorkflow>().webhook.hookId;
      expect(newId).not.toBe(oldId);
      expectProblem(await deliver(oldId, '{}'), 404);
      accepted(await deliver(newId, '{}'));

      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/v1/workflows/${workflow.id}`,
        headers: { cookie: user.cookie },
        payload: { nodes: [{ id: 'start', type: 'trigger.manual', params: {} }], edges: [] },
      });
      expect(patched.statusCode, patched.body).toBe(200);
      expectProblem(await deliver(newId, '{}'), 404);
      expectProblem(await deliver(oldId, '{}'), 404);
      expect((await deliveries(workflow.id)).map((row) => row.status)).toEqual(['accepted', 'accepted']);
    });

    it('is outside /api/v1: no caller and no Origin check; a bad credential sent along changes nothing', async () => {
      const workflow = await createHook();
      accepted(await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', origin: 'https://evil.example', authorization: 'Bearer nonsense', 'x-api-key': 'nonsense' }));
    });
  });

  describe('deduplication', () => {
    it('answers a repeated webhook-id or Idempotency-Key as the first did, records a duplicate, and starts nothing; keys are per workflow', async () => {
      const workflow = await createHook();
      const first = accepted(await deliver(workflow.webhook.hookId, '{"n":1}', { 'content-type': 'application/json', 'webhook-id': 'evt_1' }));
      const again = await deliver(workflow.webhook.hookId, '{"n":1}', { 'content-type': 'application/json', 'webhook-id': 'evt_1' });
      expect(accepted(again)).toEqual(first);
      // The key decides, not the body.
      expect(accepted(await deliver(workflow.webhook.hookId, '{"n":2}', { 'content-type': 'application/json', 'webhook-id': 'evt_1' }))).toEqual(first);
      const keyed = accepted(await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', 'idempotency-key': 'order-9' }));
      expect(accepted(await deliver(workflow.webhook.hookId, '{}', { 'content-type': 'application/json', 'idempotency-key': 'order-9' }))).toEqual(keyed);
      const other = await createHook();
      expect(accepted(await deliver(other.webhook.hookId, '{"n":1}', { 'content-type': 'application/json', 'webhook-id': 'evt_1' })).executionId).not.toBe(first.executionId);

      const rows = await deliveries(workflow.id);
      expect(rows.map((row) => [row.status, row.executionId, row.dedupKey])).toEqual([
        ['accepted', first.executionId, 'evt_1'],
        ['duplicate', first.executionId, 'evt_1'],
        ['duplicate', first.executionId, 'evt_1'],
        ['accepted', keyed.executionId, 'order-9'],
        ['duplicate', keyed.executionId, 'order-9'],
      ]);
      // A repeat keeps no body (only its size): it starts nothing, and repeats of one request must not store a megabyte each.
      expect(rows.map((row) => row.body.length)).toEqual([7, 0, 0, 2, 0]);
      expect(rows.map((row) => row.bodyBytes)).toEqual([7, 7, 7, 2, 2]);
      expect((await executions(workflow.id)).map((run) => run.id)).toEqual([first.executionId, keyed.executionId]);

      // A first delivery older than 24 h no longer counts.
      await app.database.sql`update webhook_deliveries set received_at = received_at - interval '25 hours' where id = ${first.deliveryId}::uuid`;
      expect(accepted(await deliver(workflow.webhook.hookId, '{"n":1}', { 'content-type': 'application/json', 'webhook-id': 'evt_1' })).executionId).not.toBe(first.executionId);
    });

    it('verifies a repeat of a rejected delivery again: only an accepted one is answered for', async () => {
      const workflow = await createHook(hookGraph({ verify: { scheme: 'standard-webhooks', secretVariable: 'SW_SECRET' } }));
      const body = '{"n":1}';
      const headers = standardHeaders(body, { id: 'msg_retry' });
      signatureRefusal(await deliver(workflow.webhook.hookId, body, { ...headers, 'webhook-signature': `v1,${Buffer.alloc(32).toString('base64')}` }));
      const first = accepted(await deliver(workflow.webhook.hookId, body, headers));
      expect(accepted(await deliver(workflow.webhook.hookId, body, headers))).toEqual(first);
      // A forged repeat of an accepted id learns nothing of the first: it is verified first.
      signatureRefusal(await deliver(workflow.webhook.hookId, body, { ...headers, 'webhook-signature': `v1,${Buffer.alloc(32).toString('base64')}` }));
      expect((await deliveries(workflow.id)).map((row) => row.status)).toEqual(['rejected', 'accepted', 'duplicate', 'rejected']);
      expect(await executions(workflow.id)).toHaveLength(1);
    });

    it('starts exactly one run for 50 concurrent repeats of one webhook-id, all answered alike, with 49 duplicates', async () => {
      const workflow = await createHook(hookGraph({ verify: { scheme: 'standard-webhooks', secretVariable: 'SW_SECRET' } }));
      const body = '{"burst":true}';
      const headers = standardHeaders(body, { id: 'msg_burst' });
      const responses = await Promise.all(Array.from({ length: 50 }, () => deliver(workflow.webhook.hookId, body, headers)));
      const answers = new Set(responses.map((response) => `${response.statusCode} ${response.body}`));
      expect([...answers]).toHaveLength(1);
      const answer = accepted(responses[0] as LightMyRequestResponse);
      const rows = await deliveries(workflow.id);
      expect(rows.filter((row) => row.status === 'accepted').map((row) => row.id)).toEqual([answer.deliveryId]);
      expect(rows.filter((row) => row.status === 'duplicate')).toHaveLength(49);
      expect(rows.every((row) => row.executionId === answer.executionId)).toBe(true);
      expect((await executions(workflow.id)).map((run) => run.id)).toEqual([answer.executionId]);
    });
  });

  it('stores 200 concurrent deliveries to one hook: 200 executions and 200 accepted deliveries', async () => {
    const workflow = await createHook();
    const responses = await Promise.all(Array.from({ length: 200 }, (_, n) => deliver(workflow.webhook.hookId, JSON.stringify({ n }))));
    const answers = responses.map(accepted);
    expect(new Set(answers.map((answer) => answer.executionId)).size).toBe(200);
    const rows = await deliveries(workflow.id);
    expect(rows).toHaveLength(200);
    expect(rows.every((row) => row.status === 'accepted')).toBe(true);
    const runs = await executions(workflow.id);
    expect(runs).toHaveLength(200);
    expect(new Set(runs.map((run) => (run.input as { body: { n: number } }).body.n)).size).toBe(200);
  }, 60_000);

  describe('respond: "completed"', () => {
    it('answers 200 with the run’s status and output when it ends in time, and never its error (the owner’s to read) when it fails', async () => {
      const engine = startEngine(app);
      try {
        const workflow = await createHook(hookGraph({ respond: 'completed', timeoutMs: 15_000 }, '{ "doubled": input.body.n * 2 }'));
        const response = await deliver(workflow.webhook.hookId, '{"n":21}');
        expect(response.statusCode, response.body).toBe(200);
        const body = response.json<{ executionId: string; status: string; output: unknown }>();
        expect(body).toEqual({ executionId: expect.any(String), status: 'completed', output: { echo: { doubled: 42 } } });
        expect((await executions(workflow.id)).map((run) => run.id)).toEqual([body.executionId]);

        // A large output travels without it in the event: it is read from the row.
        const big = await createHook(hookGraph({ respond: 'completed', timeoutMs: 15_000 }, '$pad("", 20000, "x")'));
        const bigResponse = await deliver(big.webhook.hookId, '{}');
        expect(bigResponse.statusCode, bigResponse.body.slice(0, 200)).toBe(200);
        expect(bigResponse.json<{ output: { echo: string } }>().output.echo).toHaveLength(20_000);

        const failing = await createHook({
          nodes: [node({ respond: 'completed', timeoutMs: 15_000 }), { id: 'boom', type: 'http.request', params: { method: 'GET', url: 'http://127.0.0.1:9/refused' } }],
          edges: [{ source: 'hook', target: 'boom' }],
        });
        const failed = await deliver(failing.webhook.hookId, '{}');
        expect(failed.statusCode, failed.body).toBe(200);
        expect(failed.json()).toEqual({ executionId: expect.any(String), status: 'failed', output: null });
        const failedRun = await waitForStatus(app, user, failed.json<{ executionId: string }>().executionId, ['failed']);
        expect(failedRun).toMatchObject({ error: expect.objectContaining({ nodeId: 'boom' }) });
      } finally {
        await engine.stop(2_000);
      }
    });

    it('answers 202 when the run does not end within timeoutMs, holding no database permit while it waits', async () => {
      const engine = startEngine(app);
      try {
        const workflow = await createHook({
          nodes: [node({ respond: 'completed', timeoutMs: 400 }), { id: 'wait', type: 'delay', params: { ms: 3_000 } }],
          edges: [{ source: 'hook', target: 'wait' }],
        });
        const started = Date.now();
        const response = await deliver(workflow.webhook.hookId, '{}');
        const tookMs = Date.now() - started;
        const answer = accepted(response);
        expect(tookMs).toBeGreaterThanOrEqual(350);
        expect(tookMs).toBeLessThan(3_000);
        expect(await waitForStatus(app, user, answer.executionId, ['completed'])).toMatchObject({ status: 'completed' });

        // More waiting at once than the app has database permits (DB_POOL_SIZE x 4): holding one each,
        // they would keep a request that needs the database waiting until their wait ends.
        const permits = app.database.poolSize * 4;
        const slow = await createHook({
          nodes: [node({ respond: 'completed', timeoutMs: 3_000 }), { id: 'wait', type: 'delay', params: { ms: 10_000 } }],
          edges: [{ source: 'hook', target: 'wait' }],
        });
        const waiting = Promise.all(Array.from({ length: permits + 4 }, () => deliver(slow.webhook.hookId, '{}')));
        await new Promise((resolve) => setTimeout(resolve, 500));
        const asked = Date.now();
        const meanwhile = await app.inject({ url: '/api/v1/me', headers: { cookie: user.cookie } });
        expect(meanwhile.statusCode, meanwhile.body).toBe(200);
        expect(Date.now() - asked).toBeLessThan(1_500);
        const answers = await waiting;
        expect(answers.map((reply) => reply.statusCode)).toEqual(Array.from({ length: permits + 4 }, () => 202));
      } finally {
        await engine.stop(2_000);
      }
    }, 30_000);
  });

  describe('rate limit', () => {
    it('learns a total that its own request was not yet part of when it synced, with nothing new to send', async () => {
      // A replica's view, synced by hand: its request was taken, then the sync ran before the
      // request's delivery row was written, so the total it read left that row out.
      // A window of 30 days: the test cannot straddle two.
      const limiter = new SharedRateLimiter(hookDeliveryCounts(app.database.sql, 5), { max: 5, windowMs: 30 * 86_400_000, syncMs: 3_600_000 }, app.log);
      try {
        const workflow = await createHook();
        for (let n = 0; n < 4; n++) accepted(await deliver(workflow.webhook.hookId, '{}'));
        expect(limiter.take(workflow.id)).toBe(true);
        await limiter.sync();
        // Its request's row, written after that sync.
        accepted(await deliver(workflow.webhook.hookId, '{}'));
        await limiter.sync();
        expect(limiter.take(workflow.id)).toBe(false);
      } finally {
        await limiter.stop();
      }
    });

    // Replicas are apps of their own, each with its own connections: the embedded database serves one.
    it.skipIf(lacksConcurrentConnections())('answers 429 with Retry-After past WEBHOOK_RATE_LIMIT_MAX per hook, counted across replicas, other hooks unaffected', async () => {
      const config = { WEBHOOK_RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '3600000', RATE_LIMIT_SYNC_MS: '50' };
      const first = await buildTestApp(config);
      const second = await buildTestApp(config);
      try {
        const workflow = await createHook();
        const other = await createHook();
        for (let n = 0; n < 4; n++) accepted(await deliver(workflow.webhook.hookId, '{}', undefined, '', first));
        // The second replica has seen none of them yet: it lets one through, then learns the total at its next sync.
        accepted(await deliver(workflow.webhook.hookId, '{}', undefined, '', second));
        // Twenty sync intervals: one is enough on an idle machine, a loaded one can delay the timer.
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        const refused = await deliver(workflow.webhook.hookId, '{}', undefined, '', second);
        const problem = expectProblem(refused, 429);
        expect(problem.code).toBe('RATE_LIMITED');
        expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        expect(await deliveries(workflow.id)).toHaveLength(5);
        accepted(await deliver(other.webhook.hookId, '{}', undefined, '', second));
        // Alone, a replica is exact: past its own count of 5 it refuses without a sync.
        const third = await buildTestApp(config);
        try {
          const fresh = await createHook();
          for (let n = 0; n < 5; n++) accepted(await deliver(fresh.webhook.hookId, '{}', undefined, '', third));
          expectProblem(await deliver(fresh.webhook.hookId, '{}', undefined, '', third), 429);
        } finally {
          await third.close();
        }
      } finally {
        await Promise.all([first.close(), second.close()]);
      }
    });
  });
});

/**
 * The owner's limits hold for deliveries as for runs. An anonymous sender is told only to send it
 * again later (nothing of the owner's usage or runs); the owner finds a rejected delivery saying
 * why, which answers for no repeat: the sender's next try runs once there is room.
 */
describe('POST /api/hooks/:hookId within its owner’s limits', () => {
  /** Problem fields that would tell the sender about the owner. */
  const expectSaysNothingOfTheOwner = (problem: Record<string, unknown>) => {
    expect(String(problem.detail)).not.toMatch(/\d|stored|payload|waiting|quota/i);
  };
  const rows = (app: App, workflowId: string) =>
    app.database.sql<{ status: string; reason: string | null; bodyBytes: number; kept: number; dedupKey: string | null }[]>`
      select status, reason, body_bytes as "bodyBytes", octet_length(body) as kept, dedup_key as "dedupKey"
        from webhook_deliveries where workflow_id = ${workflowId}::uuid order by received_at, id`;

  it('answers a generic 429 with Retry-After past ENGINE_USER_WAITING_MAX, tells the owner why, still answers a repeat, and runs the resend once there is room', async () => {
    const app = await buildTestApp({ ENGINE_USER_WAITING_MAX: '2' });
    try {
      const owner = await signUp(app);
      // Its runs wait an hour: they stay waiting (paused) until cancelled.
      const graph = { nodes: [node({}), { id: 'wait', type: 'delay', params: { ms: 3_600_000 } }], edges: [{ source: 'hook', target: 'wait' }] };
      const created = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: owner.cookie }, payload: { name: 'crowded', ...graph } });
      const { id, webhook } = created.json<HookWorkflow>();
      const send = (key: string) => app.inject({ method: 'POST', url: `/api/hooks/${webhook.hookId}`, headers: { 'content-type': 'application/json', 'idempotency-key': key }, payload: '{"n":1}' });
      const first = await send('one');
      expect(first.statusCode, first.body).toBe(202);
      const second = await send('two');
      expect(second.statusCode).toBe(202);
      // Both must be waiting when the third arrives. A run an engine is moving from pending to
      // paused is briefly running, which would leave room for one more, and another test file's
      // engine may take it at any time: this file's own engine takes both, and they settle paused.
      const engine = startEngine(app);
      try {
        for (const response of [first, second]) {
          await waitForStatus(app, owner, response.json<{ executionId: string }>().executionId, ['paused']);
        }
      } finally {
        await engine.stop(2_000);
      }
      const refused = await send('three');
      const problem = expectProblem(refused, 429);
      expect(problem.code).toBe('RATE_LIMITED');
      expectSaysNothingOfTheOwner(problem);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // A repeat starts nothing: it is answered as the first was.
      const again = await send('one');
      expect(again.statusCode).toBe(202);
      expect(again.json()).toEqual(first.json());
      const stored = await rows(app, id);
      expect(stored.map((row) => row.status)).toEqual(['accepted', 'accepted', 'rejected', 'duplicate']);
      expect(stored[2]).toMatchObject({ dedupKey: 'three', bodyBytes: 7, kept: 0, reason: expect.stringMatching(/2 executions waiting.*answered 429/) });

      // Room again (one of the waiting runs cancelled): the resend runs; the rejected row does not answer for it.
      await app.inject({ method: 'POST', url: `/api/v1/executions/${first.json<{ executionId: string }>().executionId}/cancel`, headers: { cookie: owner.cookie } });
      const resent = await send('three');
      expect(resent.statusCode, resent.body).toBe(202);
      expect(resent.json<{ executionId: string }>().executionId).not.toBe(first.json<{ executionId: string }>().executionId);
    } finally {
      await app.close();
    }
  });

  it('answers a generic 503 with Retry-After once its owner’s storage is full, tells the owner why, and runs the resend once space is freed', async () => {
    const app = await buildTestApp({ USER_STORAGE_MAX_BYTES: '4096' });
    try {
      const owner = await signUp(app);
      const create = async (name: string) => {
        const created = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: owner.cookie }, payload: { name, ...hookGraph() } });
        expect(created.statusCode, created.body).toBe(201);
        return created.json<HookWorkflow>();
      };
      const filler = await create('filler');
      const target = await create('target');
      const send = (workflow: HookWorkflow, key: string) =>
        app.inject({ method: 'POST', url: `/api/hooks/${workflow.webhook.hookId}`, headers: { 'content-type': 'text/plain', 'webhook-id': key }, payload: 'x'.repeat(3000) });
      expect((await send(filler, 'fill')).statusCode).toBe(202);
      const refused = await send(target, 'evt_full');
      const problem = expectProblem(refused, 503);
      expect(problem.code).toBe('SERVICE_UNAVAILABLE');
      expectSaysNothingOfTheOwner(problem);
      expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      const [rejected] = await rows(app, target.id);
      expect(rejected).toMatchObject({ status: 'rejected', dedupKey: 'evt_full', bodyBytes: 3000, kept: 0, reason: expect.stringMatching(/stored payloads take \d+ bytes of the 4096.*answered 503/) });

      // The owner frees space (the filler goes, with its run): the sender's resend of the same id runs.
      expect((await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${filler.id}`, headers: { cookie: owner.cookie } })).statusCode).toBe(204);
      const resent = await send(target, 'evt_full');
      expect(resent.statusCode, resent.body).toBe(202);
      expect((await rows(app, target.id)).map((row) => row.status)).toEqual(['rejected', 'accepted']);
    } finally {
      await app.close();
    }
  });

  it('takes exactly 1 MiB of JSON body at the defaults, and answers 413 past it', async () => {
    const app = await buildTestApp();
    try {
      const owner = await signUp(app);
      const created = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: owner.cookie }, payload: { name: 'large', ...hookGraph() } });
      const { webhook } = created.json<HookWorkflow>();
      const oneMiB = `"${'x'.repeat(1024 * 1024 - 2)}"`;
      expect(Buffer.byteLength(oneMiB)).toBe(1024 * 1024);
      const send = (body: string) => app.inject({ method: 'POST', url: `/api/hooks/${webhook.hookId}`, headers: { 'content-type': 'text/plain' }, payload: body });
      expect((await send(oneMiB)).statusCode).toBe(202);
      expect(expectProblem(await send(`${oneMiB}x`), 413).code).toBe('PAYLOAD_TOO_LARGE');
    } finally {
      await app.close();
    }
  });
});

describe('POST /api/hooks/:hookId and the database', () => {
  it('holds no database permit while a body uploads: slow senders do not starve signed-in callers', async () => {
    // One connection: 4 permits, each waited for at most a second before 503.
    const app = await buildTestApp({ DB_POOL_SIZE: '1', DB_ACQUIRE_TIMEOUT_MS: '1000' });
    const uploads: PassThrough[] = [];
    try {
      const owner = await signUp(app);
      const created = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: owner.cookie }, payload: { name: 'slow', ...hookGraph() } });
      const { webhook } = created.json<HookWorkflow>();
      const body = '{"slow":true}';
      const answers = Array.from({ length: 12 }, () => {
        const upload = new PassThrough();
        uploads.push(upload);
        upload.write(body.slice(0, 3));
        return app.inject({
          method: 'POST',
          url: `/api/hooks/${webhook.hookId}`,
          headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
          payload: upload,
        });
      });
      await new Promise((resolve) => setTimeout(resolve, 200));
      const meanwhile = await app.inject({ url: '/api/v1/workflows', headers: { cookie: owner.cookie } });
      expect(meanwhile.statusCode, meanwhile.body).toBe(200);
      for (const upload of uploads) upload.end(body.slice(3));
      expect((await Promise.all(answers)).map((answer) => answer.statusCode)).toEqual(Array.from({ length: 12 }, () => 202));
    } finally {
      for (const upload of uploads) upload.destroy();
      await app.close();
    }
  });

  // The test holds the dedup lock on a connection of its own: the embedded database serves one.
  it.skipIf(lacksConcurrentConnections())('stores a delivery only at the version that checked it: saved over meanwhile, 503 Retry-After: 1, and the resend is checked against the new graph', async () => {
    const app = await buildTestApp();
    const holder = await app.database.sql.reserve();
    try {
      const owner = await signUp(app);
      const made = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: owner.cookie }, payload: { key: 'LATE_SECRET', value: HEADER_SECRET, secret: true } });
      expect(made.statusCode, made.body).toBe(201);
      const created = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: owner.cookie }, payload: { name: 'open, then verified', ...hookGraph() } });
      const workflow = created.json<HookWorkflow>();
      const send = () =>
        app.inject({ method: 'POST', url: `/api/hooks/${workflow.webhook.hookId}`, headers: { 'content-type': 'application/json', 'webhook-id': 'evt_race' }, payload: '{}' });

      // The delivery passes its (absent) check, then waits on its key's lock, held here...
      await holder`select pg_advisory_lock(hashtextextended(${`webhook-dedup:${workflow.id}:evt_race`}, 0))`;
      const racing = send();
      // A bigint advisory key shows in pg_locks as its two halves (classid, objid) with objsubid 1.
      for (let waited = 0; ; waited += 20) {
        const [row] = await app.database.sql<{ waiting: number }[]>`
          select count(*)::int as waiting
            from pg_locks l, (select hashtextextended(${`webhook-dedup:${workflow.id}:evt_race`}, 0) as k) h
           where l.locktype = 'advisory' and not l.granted and l.objsubid = 1
             and l.classid::bigint = (h.k >> 32) & 4294967295 and l.objid::bigint = h.k & 4294967295`;
        if ((row?.waiting ?? 0) > 0) break;
        if (waited > 5_000) throw new Error('the delivery never waited on its lock');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      // ...while the owner turns verification on.
      const patched = await app.inject({
        method: 'PATCH',
        url: `/api/v1/workflows/${workflow.id}`,
        headers: { cookie: owner.cookie },
        payload: hookGraph({ verify: { scheme: 'header', header: 'x-token', secretVariable: 'LATE_SECRET' } }),
      });
      expect(patched.statusCode, patched.body).toBe(200);
      await holder`select pg_advisory_unlock(hashtextextended(${`webhook-dedup:${workflow.id}:evt_race`}, 0))`;

      const raced = await racing;
      expect(expectProblem(raced, 503).code).toBe('SERVICE_UNAVAILABLE');
      expect(raced.headers['retry-after']).toBe('1');
      // Sent again, it meets the new graph's check.
      expect(expectProblem(await send(), 401).code).toBe('WEBHOOK_SIGNATURE_INVALID');
      const stored = await app.database.sql<{ status: string }[]>`select status from webhook_deliveries where workflow_id = ${workflow.id}::uuid`;
      expect(stored.map((row) => row.status)).toEqual(['rejected']);
      const [runs] = await app.database.sql<{ count: number }[]>`select count(*)::int as count from executions where workflow_id = ${workflow.id}::uuid`;
      expect(runs?.count).toBe(0);
    } finally {
      holder.release();
      await app.close();
    }
  });
});

function nest(depth: number): unknown {
  let value: unknown = 1;
  for (let level = 0; level < depth; level++) value = { a: value };
  return value;
}
