/**
 * The deliveries API (API.md, Inbound webhooks): every delivery is made through the real endpoint
 * (POST /api/hooks/:hookId), then listed, read and replayed through /api/v1 as its owner and as
 * another user, on the real app and database.
 */
import { createHmac, randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { startEngine, waitForStatus } from './engine-helpers.js';
import { buildTestApp, expectProblem, lacksConcurrentConnections, signUp, type SignedInUser } from './helpers.js';

interface HookWorkflow {
  id: string;
  version: number;
  webhook: { url: string; hookId: string };
}
interface Delivery {
  id: string;
  workflowId: string;
  status: 'accepted' | 'rejected' | 'duplicate';
  executionId: string | null;
  receivedAt: string;
  contentType: string | null;
  bodyBytes: number;
  reason: string | null;
}
interface DeliveryDetail extends Delivery {
  headers: Record<string, string>;
  body: string | { base64: string; contentType: string } | null;
}
interface Page<Item> {
  items: Item[];
  hasNext: boolean;
  nextCursor: string | null;
}
interface Execution {
  id: string;
  workflowId: string;
  workflowVersion: number;
  trigger: string;
  status: string;
  input: unknown;
  output: unknown;
  retryOfId: string | null;
}

const SECRET_KEY = 'HOOK_SECRET';
const SECRET = 'a-shared-webhook-secret';
/** GitHub's scheme: the hex HMAC-SHA256 of the raw body in X-Hub-Signature-256, after `sha256=`. */
const githubVerify = { scheme: 'hmac-sha256', header: 'x-hub-signature-256', prefix: 'sha256=', secretVariable: SECRET_KEY };
const sign = (body: string | Buffer, secret = SECRET) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

/** A trigger.webhook node feeding a transform that returns the body the run got. */
const hookGraph = (params: Record<string, unknown> = {}, after: { id: string; type: string; params: Record<string, unknown> } = { id: 'echo', type: 'transform', params: { expression: 'input.body' } }) => ({
  nodes: [{ id: 'hook', type: 'trigger.webhook', params }, after],
  edges: [{ source: 'hook', target: after.id }],
});

describe('webhook deliveries', () => {
  let app: App;
  let alice: SignedInUser;
  let bob: SignedInUser;

  beforeAll(async () => {
    app = await buildTestApp();
    alice = await signUp(app);
    bob = await signUp(app);
    for (const user of [alice, bob]) {
      const created = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key: SECRET_KEY, value: SECRET, secret: true } });
      expect(created.statusCode, created.body).toBe(201);
    }
  });
  afterAll(async () => {
    await app.close();
  });

  const as = (user: SignedInUser) => ({ cookie: user.cookie });

  async function createHookWorkflow(user: SignedInUser, graph = hookGraph()): Promise<HookWorkflow> {
    const response = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: as(user), payload: { name: `hook ${randomUUID()}`, ...graph } });
    expect(response.statusCode, response.body).toBe(201);
    const workflow = response.json<HookWorkflow>();
    expect(workflow.webhook?.url).toBe(`http://localhost:3000/api/hooks/${workflow.webhook.hookId}`);
    return workflow;
  }

  /** A request to the workflow's webhook URL, as a sender makes it (no caller). */
  const deliver = (workflow: HookWorkflow, body: string | Buffer, headers: Record<string, string> = { 'content-type': 'application/json' }, query = '') =>
    app.inject({ method: 'POST', url: `${new URL(workflow.webhook.url).pathname}${query}`, headers, payload: body });

  async function accepted(response: LightMyRequestResponse): Promise<{ executionId: string; deliveryId: string }> {
    expect(response.statusCode, response.body).toBe(202);
    return response.json<{ executionId: string; deliveryId: string }>();
  }

  const list = async (user: SignedInUser, workflowId: string, query = '') => {
    const response = await app.inject({ url: `/api/v1/workflows/${workflowId}/deliveries${query}`, headers: as(user) });
    expect(response.statusCode, response.body).toBe(200);
    return response.json<Page<Delivery>>();
  };
  const detail = async (user: SignedInUser, id: string) => {
    const response = await app.inject({ url: `/api/v1/deliveries/${id}`, headers: as(user) });
    expect(response.statusCode, response.body).toBe(200);
    return response.json<DeliveryDetail>();
  };
  const replay = (user: SignedInUser, id: string, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: `/api/v1/deliveries/${id}/replay`, headers: { ...as(user), ...headers } });
  const execution = async (user: SignedInUser, id: string) => (await app.inject({ url: `/api/v1/executions/${id}`, headers: as(user) })).json<Execution>();
  const executionCount = async (user: SignedInUser) => {
    const [row] = await app.database.sql<{ count: number }[]>`select count(*)::int as count from executions where user_id = ${user.id}`;
    return row?.count ?? 0;
  };
  const usageBytes = async (user: SignedInUser) => (await app.inject({ url: '/api/v1/usage', headers: as(user) })).json<{ payloadBytes: number }>().payloadBytes;
  const usage = async (user: SignedInUser) => (await app.inject({ url: '/api/v1/usage', headers: as(user) })).json<{ webhookDeliveries: number; executions: number }>();

  it('lists a workflow’s deliveries newest first with the documented fields, by cursor and by page', async () => {
    const workflow = await createHookWorkflow(alice);
    const bodies = ['{"n":1}', '{ "n" : 2 }', '{"n":3,"text":"é"}'];
    const made: { executionId: string; deliveryId: string }[] = [];
    for (const body of bodies) made.push(await accepted(await deliver(workflow, body)));

    const all = await list(alice, workflow.id);
    expect(all.hasNext).toBe(false);
    expect(all.items.map((item) => item.id)).toEqual(made.map((delivery) => delivery.deliveryId).reverse());
    const newest = all.items[0];
    expect(newest).toEqual({
      id: made[2]?.deliveryId,
      workflowId: workflow.id,
      status: 'accepted',
      executionId: made[2]?.executionId,
      receivedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      contentType: 'application/json',
      // Bytes, not characters: é is two.
      bodyBytes: Buffer.byteLength(bodies[2] ?? ''),
      reason: null,
    });
    const times = all.items.map((item) => Date.parse(item.receivedAt));
    expect([...times].sort((a, b) => b - a)).toEqual(times);

    // By cursor, two then one, with no gap or repeat; ascending is the reverse; page 2 is the rest.
    const first = await list(alice, workflow.id, '?pageSize=2');
    expect(first.hasNext).toBe(true);
    const second = await list(alice, workflow.id, `?pageSize=2&cursor=${encodeURIComponent(first.nextCursor ?? '')}`);
    expect(second).toMatchObject({ hasNext: false, nextCursor: null });
    expect([...first.items, ...second.items].map((item) => item.id)).toEqual(all.items.map((item) => item.id));
    const ascending = await list(alice, workflow.id, '?sortBy=receivedAt&sortDirection=asc');
    expect(ascending.items.map((item) => item.id)).toEqual(made.map((delivery) => delivery.deliveryId));
    expect((await list(alice, workflow.id, '?pageSize=2&page=2')).items.map((item) => item.id)).toEqual([made[0]?.deliveryId]);

    // A workflow without a webhook has none; the list query is the contract's.
    const manual = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: as(alice), payload: { name: 'no hook', nodes: [{ id: 'start', type: 'trigger.manual', params: {} }], edges: [] } });
    expect(manual.json<{ webhook: unknown }>().webhook).toBeNull();
    expect(await list(alice, manual.json<{ id: string }>().id)).toEqual({ items: [], hasNext: false, nextCursor: null });
    for (const query of ['?sortBy=createdAt', '?pageSize=0', '?pageSize=101', '?page=1&cursor=abc', '?cursor=not-a-cursor', '?workflowId=x']) {
      expectProblem(await app.inject({ url: `/api/v1/workflows/${workflow.id}/deliveries${query}`, headers: as(alice) }), 400);
    }
    expectProblem(await app.inject({ url: `/api/v1/workflows/${randomUUID()}/deliveries`, headers: as(alice) }), 404);
    expectProblem(await app.inject({ url: `/api/v1/deliveries/${randomUUID()}`, headers: as(alice) }), 404);
  });

  it('filters by a list of statuses: accepted, rejected (no execution, with a reason) and duplicate (the first one’s execution)', async () => {
    const workflow = await createHookWorkflow(alice, hookGraph({ verify: githubVerify }));
    const body = '{"action":"opened"}';
    const first = await accepted(await deliver(workflow, body, { 'content-type': 'application/json', 'x-hub-signature-256': sign(body), 'idempotency-key': 'delivery-1' }));
    const forged = await deliver(workflow, body, { 'content-type': 'application/json', 'x-hub-signature-256': sign(body, 'a guess') });
    expectProblem(forged, 401);
    expect(forged.json<{ code: string }>().code).toBe('WEBHOOK_SIGNATURE_INVALID');
    const again = await deliver(workflow, body, { 'content-type': 'application/json', 'x-hub-signature-256': sign(body), 'idempotency-key': 'delivery-1' });
    expect(again.json<{ executionId: string }>().executionId).toBe(first.executionId);

    const all = await list(alice, workflow.id);
    expect(all.items.map((item) => item.status).sort()).toEqual(['accepted', 'duplicate', 'rejected']);
    const rejected = (await list(alice, workflow.id, '?status=rejected')).items;
    expect(rejected).toHaveLength(1);
    expect(rejected[0]).toMatchObject({ status: 'rejected', executionId: null, reason: expect.any(String) });
    const duplicates = (await list(alice, workflow.id, '?status=duplicate')).items;
    expect(duplicates).toEqual([expect.objectContaining({ status: 'duplicate', executionId: first.executionId })]);
    // A duplicate keeps no body (it started nothing): it replays as the delivery it repeated.
    expect(await detail(alice, duplicates[0]?.id ?? '')).toMatchObject({ status: 'duplicate', bodyBytes: Buffer.byteLength(body), body: null });
    const replayed = await replay(alice, duplicates[0]?.id ?? '');
    expect(replayed.statusCode, replayed.body).toBe(202);
    const firstInput = (await execution(alice, first.executionId)).input as Record<string, unknown>;
    expect(replayed.json<Execution>().input).toEqual(firstInput);
    expect(duplicates[0]?.receivedAt).not.toBe(firstInput.receivedAt);
    const started = await list(alice, workflow.id, '?status=accepted,duplicate');
    expect(started.items.map((item) => item.status).sort()).toEqual(['accepted', 'duplicate']);
    expect((await list(alice, workflow.id, '?status=accepted, accepted')).items.map((item) => item.id)).toEqual([first.deliveryId]);
    for (const status of ['bogus', 'accepted,bogus', 'ACCEPTED', ',', '']) {
      expectProblem(await app.inject({ url: `/api/v1/workflows/${workflow.id}/deliveries?status=${encodeURIComponent(status)}`, headers: as(alice) }), 400);
    }
  });

  it('shows a delivery’s headers without credentials, and its raw body: as text when UTF-8, else as base64', async () => {
    const workflow = await createHookWorkflow(alice, hookGraph({ verify: githubVerify }));
    // Spacing and key order as sent: the body shown is the raw text, not JSON re-serialized.
    const body = '{ "zeta" : 1,\n  "alpha": "ü" }';
    const sent = await accepted(
      await deliver(
        workflow,
        body,
        {
          'content-type': 'application/json; charset=utf-8',
          'x-hub-signature-256': sign(body),
          'x-github-event': 'push',
          authorization: 'Bearer sender-credential',
          cookie: 'session=sender-cookie',
        },
        '?source=test',
      ),
    );
    const shown = await detail(alice, sent.deliveryId);
    expect(shown).toMatchObject({ id: sent.deliveryId, status: 'accepted', executionId: sent.executionId, contentType: 'application/json; charset=utf-8', bodyBytes: Buffer.byteLength(body) });
    expect(shown.body).toBe(body);
    expect(shown.headers['x-github-event']).toBe('push');
    expect(shown.headers['content-type']).toBe('application/json; charset=utf-8');
    for (const name of ['authorization', 'cookie', 'x-hub-signature-256']) expect(shown.headers, name).not.toHaveProperty(name);
    expect(JSON.stringify(shown)).not.toMatch(/sender-credential|sender-cookie|sha256=/);

    // Latin-1 text is not UTF-8: its bytes come back exactly, as http.request records a binary body.
    const plain = await createHookWorkflow(alice);
    const latin1 = Buffer.from([0x63, 0x61, 0x66, 0xe9, 0xff]);
    const binary = await accepted(await deliver(plain, latin1, { 'content-type': 'text/plain; charset=latin1' }));
    const shownBinary = await detail(alice, binary.deliveryId);
    expect(shownBinary.bodyBytes).toBe(latin1.length);
    expect(shownBinary.body).toEqual({ base64: latin1.toString('base64'), contentType: 'text/plain; charset=latin1' });

    // A byte-order mark is part of the body as received.
    const withBom = `\ufeffhello`;
    const bom = await accepted(await deliver(plain, withBom, { 'content-type': 'text/plain' }));
    expect((await detail(alice, bom.deliveryId)).body).toBe(withBom);

    // A rejected delivery is shown as well (the owner may want to see what was refused), but its body was not kept: only its size.
    await deliver(workflow, body, { 'content-type': 'application/json; charset=utf-8', 'x-hub-signature-256': sign(body, 'wrong'), 'x-request-source': 'forger' });
    const [rejected] = (await list(alice, workflow.id, '?status=rejected')).items;
    const shownRejected = await detail(alice, rejected?.id ?? '');
    expect(shownRejected).toMatchObject({ status: 'rejected', bodyBytes: Buffer.byteLength(body), body: null, reason: expect.stringContaining('does not match') });
    expect(shownRejected.headers).toMatchObject({ 'x-request-source': 'forger' });
    expect(shownRejected.headers).not.toHaveProperty('x-hub-signature-256');
  });

  it('keeps no body of a repeated delivery, and counts none of what repeats keep towards their owner’s storage', async () => {
    const user = await signUp(app);
    await app.inject({ method: 'POST', url: '/api/v1/variables', headers: as(user), payload: { key: SECRET_KEY, value: SECRET, secret: true } });
    const workflow = await createHookWorkflow(user, hookGraph({ verify: githubVerify }));
    const body = JSON.stringify({ padding: 'x'.repeat(300_000) });
    const headers = { 'content-type': 'application/json', 'x-hub-signature-256': sign(body), 'idempotency-key': 'captured-once', 'x-pad': 'p'.repeat(7_000) };
    const first = await accepted(await deliver(workflow, body, headers));
    const afterFirst = await usageBytes(user);
    // A captured request sent again and again: each answers as the first did, and stores no body.
    for (let n = 0; n < 5; n++) expect((await accepted(await deliver(workflow, body, headers))).executionId).toBe(first.executionId);
    expect(await usageBytes(user)).toBe(afterFirst);
    const repeats = (await list(user, workflow.id, '?status=duplicate')).items;
    expect(repeats.map((item) => item.bodyBytes)).toEqual(Array.from({ length: 5 }, () => Buffer.byteLength(body)));
    const [row] = await app.database.sql<{ stored: number }[]>`select coalesce(sum(octet_length(body)), 0)::int as stored from webhook_deliveries where workflow_id = ${workflow.id}::uuid and status = 'duplicate'`;
    expect(row?.stored).toBe(0);
  });

  it('keeps no body of a rejected delivery: forged deliveries of a megabyte add nothing to their owner’s usage', async () => {
    const user = await signUp(app);
    await app.inject({ method: 'POST', url: '/api/v1/variables', headers: as(user), payload: { key: SECRET_KEY, value: SECRET, secret: true } });
    const workflow = await createHookWorkflow(user, hookGraph({ verify: githubVerify }));
    // As large as a run input may be (ENGINE_MAX_PAYLOAD_BYTES, 1 MiB, with the headers): a forgery
    // is refused at the signature (401), not for its size.
    const forged = JSON.stringify({ padding: 'x'.repeat(1_000_000) });
    const before = await usageBytes(user);
    for (let n = 0; n < 5; n++) {
      expectProblem(await deliver(workflow, forged, { 'content-type': 'application/json', 'x-hub-signature-256': sign(forged, `guess ${n}`) }), 401);
    }
    // Five rows of headers and a reason, kept for the owner, but no part of their stored bytes:
    // a forger cannot fill the owner's storage quota with them.
    expect((await usageBytes(user)) - before).toBe(0);
    expect((await app.inject({ url: '/api/v1/usage', headers: as(user) })).json<{ webhookDeliveries: number }>().webhookDeliveries).toBe(5);
    const rejected = (await list(user, workflow.id, '?status=rejected')).items;
    expect(rejected.map((item) => item.bodyBytes)).toEqual(Array.from({ length: 5 }, () => Buffer.byteLength(forged)));
    expect((await detail(user, rejected[0]?.id ?? '')).body).toBeNull();
  });

  it('replays a delivery: 202, a webhook run of the current version with the input its first run got, honouring Idempotency-Key', async () => {
    const workflow = await createHookWorkflow(alice);
    const body = 'name=ada&tag=a&tag=b';
    const sent = await accepted(await deliver(workflow, body, { 'content-type': 'application/x-www-form-urlencoded', 'x-request': 'one' }, '?via=test'));
    const original = await execution(alice, sent.executionId);
    expect(original).toMatchObject({ trigger: 'webhook', workflowVersion: 1 });
    expect(original.input).toMatchObject({ method: 'POST', body: { name: 'ada', tag: ['a', 'b'] }, query: { via: 'test' }, headers: { 'x-request': 'one' } });

    // A new version of the graph (its transform now wraps the body): the replay runs this one.
    const patched = await app.inject({
      method: 'PATCH',
      url: `/api/v1/workflows/${workflow.id}`,
      headers: as(alice),
      payload: hookGraph({}, { id: 'echo', type: 'transform', params: { expression: '{ "replayed": input.body }' } }),
    });
    expect(patched.statusCode, patched.body).toBe(200);

    const before = await executionCount(alice);
    const replayed = await replay(alice, sent.deliveryId, { 'idempotency-key': 'replay-1' });
    expect(replayed.statusCode, replayed.body).toBe(202);
    const run = replayed.json<Execution>();
    expect(replayed.headers.location).toBe(`/api/v1/executions/${run.id}`);
    expect(run).toMatchObject({ workflowId: workflow.id, workflowVersion: 2, trigger: 'webhook', status: 'pending', retryOfId: null });
    expect(run.id).not.toBe(sent.executionId);
    expect(run.input).toEqual(original.input);

    // The same key answers the same execution and starts nothing; another key starts another.
    const repeated = await replay(alice, sent.deliveryId, { 'idempotency-key': 'replay-1' });
    expect(repeated.statusCode).toBe(202);
    expect(repeated.json<Execution>().id).toBe(run.id);
    expect(await executionCount(alice)).toBe(before + 1);
    const another = await replay(alice, sent.deliveryId, { 'idempotency-key': 'replay-2' });
    expect(another.statusCode).toBe(202);
    expect(another.json<Execution>().id).not.toBe(run.id);
    expect(await executionCount(alice)).toBe(before + 2);

    // No delivery is recorded for a replay.
    expect((await list(alice, workflow.id)).items.map((item) => item.id)).toEqual([sent.deliveryId]);

    // It runs: the new graph over the same input.
    const engine = startEngine(app);
    try {
      const ended = await waitForStatus(app, alice, run.id, ['completed', 'failed']);
      expect(ended.status).toBe('completed');
      expect((await execution(alice, run.id)).output).toEqual({ echo: { replayed: { name: 'ada', tag: ['a', 'b'] } } });
    } finally {
      await engine.stop(2_000);
    }
  });

  it('never replays a rejected delivery: 409 DELIVERY_REJECTED, and nothing starts', async () => {
    const workflow = await createHookWorkflow(alice, hookGraph({ verify: githubVerify }));
    const body = '{"forged":true}';
    expectProblem(await deliver(workflow, body, { 'content-type': 'application/json', 'x-hub-signature-256': sign(body, 'forger') }), 401);
    const [rejected] = (await list(alice, workflow.id)).items;
    expect(rejected?.status).toBe('rejected');
    const before = await executionCount(alice);
    for (const headers of [{}, { 'idempotency-key': 'forged-replay' }] as Record<string, string>[]) {
      const refused = await replay(alice, rejected?.id ?? '', headers);
      expectProblem(refused, 409);
      expect(refused.json<{ code: string }>().code).toBe('DELIVERY_REJECTED');
    }
    expect(await executionCount(alice)).toBe(before);
  });

  it('refuses a replay once the workflow has no trigger.webhook node (409 NO_WEBHOOK_TRIGGER)', async () => {
    const workflow = await createHookWorkflow(alice);
    const sent = await accepted(await deliver(workflow, '{}'));
    const patched = await app.inject({
      method: 'PATCH',
      url: `/api/v1/workflows/${workflow.id}`,
      headers: as(alice),
      payload: { nodes: [{ id: 'start', type: 'trigger.manual', params: {} }], edges: [] },
    });
    expect(patched.json<{ webhook: unknown }>().webhook).toBeNull();
    const refused = await replay(alice, sent.deliveryId);
    expectProblem(refused, 409);
    expect(refused.json<{ code: string }>().code).toBe('NO_WEBHOOK_TRIGGER');
    // Its deliveries are still listed.
    expect((await list(alice, workflow.id)).items.map((item) => item.id)).toEqual([sent.deliveryId]);
  });

  // A second app with other settings beside the first: the embedded database serves one connection.
  it.skipIf(lacksConcurrentConnections())('counts a replay against the limits of a run: executions waiting, and the storage quota', async () => {
    const user = await signUp(app);
    // A run that waits an hour: once paused it stays waiting, whichever engine took it.
    const workflow = await createHookWorkflow(user, hookGraph({}, { id: 'wait', type: 'delay', params: { ms: 3_600_000 } }));
    // A body of 4 KiB puts the user over the smallest quota the server takes (1 KiB).
    const sent = await accepted(await deliver(workflow, JSON.stringify({ padding: 'x'.repeat(4096) })));
    const engine = startEngine(app);
    try {
      await waitForStatus(app, user, sent.executionId, ['paused']);
    } finally {
      await engine.stop(2_000);
    }
    const before = await executionCount(user);
    const crowded = await buildTestApp({ ENGINE_USER_WAITING_MAX: '1' });
    const full = await buildTestApp({ USER_STORAGE_MAX_BYTES: '1024' });
    try {
      const tooMany = await crowded.inject({ method: 'POST', url: `/api/v1/deliveries/${sent.deliveryId}/replay`, headers: as(user) });
      expectProblem(tooMany, 429);
      expect(tooMany.json<{ code: string }>().code).toBe('TOO_MANY_WAITING');
      expect(tooMany.headers['retry-after']).toBeDefined();
      const overQuota = await full.inject({ method: 'POST', url: `/api/v1/deliveries/${sent.deliveryId}/replay`, headers: as(user) });
      expectProblem(overQuota, 409);
      expect(overQuota.json<{ code: string }>().code).toBe('STORAGE_QUOTA_EXCEEDED');
    } finally {
      await crowded.close();
      await full.close();
    }
    expect(await executionCount(user)).toBe(before);
    // Within the limits, the same replay starts.
    expect((await replay(user, sent.deliveryId)).statusCode).toBe(202);
    await app.inject({ method: 'POST', url: `/api/v1/executions/${sent.executionId}/cancel`, headers: as(user) });
  });

  it('answers another user’s workflow, delivery and replay exactly as missing ones, and changes nothing', async () => {
    const workflow = await createHookWorkflow(alice);
    const sent = await accepted(await deliver(workflow, '{"private":"alice"}'));
    const bobs = await createHookWorkflow(bob);
    await accepted(await deliver(bobs, '{"mine":"bob"}'));
    const before = await executionCount(alice);
    for (const [url, method] of [
      [`/api/v1/workflows/${workflow.id}/deliveries`, 'GET'],
      [`/api/v1/deliveries/${sent.deliveryId}`, 'GET'],
      [`/api/v1/deliveries/${sent.deliveryId}/replay`, 'POST'],
    ] as const) {
      const response = await app.inject({ method, url, headers: as(bob) });
      expectProblem(response, 404);
      expect(response.body).not.toContain('alice');
    }
    expect(await executionCount(alice)).toBe(before);
    // Bob's own list holds his only.
    const own = await list(bob, bobs.id);
    expect(own.items.map((item) => item.workflowId)).toEqual([bobs.id]);
  });

  it('counts deliveries in the usage, and they go with their workflow and with their execution', async () => {
    const user = await signUp(app);
    await app.inject({ method: 'POST', url: '/api/v1/variables', headers: as(user), payload: { key: SECRET_KEY, value: SECRET, secret: true } });
    expect((await usage(user)).webhookDeliveries).toBe(0);
    const workflow = await createHookWorkflow(user, hookGraph({ verify: githubVerify }));
    const body = '{"n":1}';
    const headers = { 'content-type': 'application/json', 'x-hub-signature-256': sign(body), 'webhook-id': 'msg_1' };
    const sent = await accepted(await deliver(workflow, body, headers));
    await deliver(workflow, body, headers);
    await deliver(workflow, body, { ...headers, 'x-hub-signature-256': sign(body, 'wrong'), 'webhook-id': 'msg_2' });
    // Accepted, duplicate and rejected: each is a stored delivery; a replay is not one.
    expect((await usage(user)).webhookDeliveries).toBe(3);
    expect((await replay(user, sent.deliveryId)).statusCode).toBe(202);
    expect((await usage(user)).webhookDeliveries).toBe(3);

    // Its execution deleted (as retention deletes one): the delivery that started it goes too.
    await app.database.sql`delete from executions where id = ${sent.executionId}`;
    expectProblem(await app.inject({ url: `/api/v1/deliveries/${sent.deliveryId}`, headers: as(user) }), 404);
    expect((await list(user, workflow.id)).items.map((item) => item.status)).toEqual(['rejected']);

    // The workflow deleted: the rest go with it.
    const [rejected] = (await list(user, workflow.id)).items;
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${workflow.id}`, headers: as(user) })).statusCode).toBe(204);
    expectProblem(await app.inject({ url: `/api/v1/deliveries/${rejected?.id ?? ''}`, headers: as(user) }), 404);
    expect((await usage(user)).webhookDeliveries).toBe(0);
  });
});
