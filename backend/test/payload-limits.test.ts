import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { Engine } from '../src/engine/engine.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';
import { createWorkflow, getExecution, runWorkflow, startEngine, stepsOf, waitForStatus } from './engine-helpers.js';

/**
 * Issue 14, points 3, 5, 6 and the runtime half of 10: every payload an execution writes is
 * bounded and storable, a value the database refuses ends the run `failed` (never a re-run loop),
 * http.request records any body, and no response grows without bound.
 */

const MAX_PAYLOAD = 16_384;
const bytesOf = (value: unknown): number => Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
/** Phrases of PostgreSQL's own messages that must never reach a user. */
const postgresPhrases = /unsupported Unicode escape|payload string too long|stack depth limit|invalid input syntax|cannot be converted to text|jsonb|SQLSTATE/i;

interface Upstream {
  readonly url: string;
  /** The requests each path got. */
  readonly calls: Map<string, number>;
  close(): Promise<void>;
}

/** An upstream for http.request: answers by path with the bodies the review sent. */
async function startUpstream(): Promise<Upstream> {
  const calls = new Map<string, number>();
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://upstream');
    const path = url.pathname;
    calls.set(path, (calls.get(path) ?? 0) + 1);
    request.resume();
    request.on('end', () => {
      switch (path) {
        case '/deep': {
          // Arrays nested `depth` deep: a few bytes a level, as any server may answer.
          const depth = Number(url.searchParams.get('depth'));
          response.writeHead(200, { 'content-type': 'application/json' });
          response.end('['.repeat(depth) + ']'.repeat(depth));
          return;
        }
        case '/nul':
          response.writeHead(200, { 'content-type': 'text/plain' });
          response.end(Buffer.from('before\u0000after', 'utf8'));
          return;
        case '/png':
          response.writeHead(200, { 'content-type': 'image/png' });
          response.end(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe, 0x80]));
          return;
        case '/euro':
          response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
          response.end('€'.repeat(2700));
          return;
        case '/euro-json':
          response.writeHead(200, { 'content-type': 'application/json' });
          response.end(JSON.stringify({ text: '€'.repeat(2700) }));
          return;
        case '/big-404':
          response.writeHead(404, { 'content-type': 'text/plain' });
          response.end('x'.repeat(40_000));
          return;
        case '/big':
          response.writeHead(200, { 'content-type': 'text/plain' });
          response.end('y'.repeat(40_000));
          return;
        default:
          response.writeHead(200, { 'content-type': 'application/json' });
          response.end('{"ok":true}');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface ErrorView {
  code?: string;
  message?: string;
  nodeId?: string;
}

describe('payloads through the engine', () => {
  let app: App;
  let engine: Engine;
  let user: SignedInUser;
  let upstream: Upstream;

  beforeAll(async () => {
    app = await buildTestApp({ ENGINE_MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD), ENGINE_HTTP_MAX_RESPONSE_BYTES: '65536' });
    engine = startEngine(app, { ENGINE_MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD), ENGINE_HTTP_MAX_RESPONSE_BYTES: '65536' });
    user = await signUp(app);
    upstream = await startUpstream();
  });
  afterAll(async () => {
    await engine?.stop(5_000);
    await upstream?.close();
    await app?.close();
  });

  const run = async (graph: { nodes: unknown[]; edges: unknown[] }, input?: unknown) => {
    const workflowId = await createWorkflow(app, user, graph);
    return runWorkflow(app, user, workflowId, input);
  };

  // Point 3: each leaf fits, but the output that joins them would not.
  it('fails a run whose joined output is over the payload bound, with EXECUTION_OUTPUT_TOO_LARGE', async () => {
    const leaves = ['a', 'b', 'c'].map((id) => ({ id, type: 'transform', params: { expression: 'input' } }));
    const execution = await run(
      { nodes: [{ id: 'start', type: 'trigger.manual' }, ...leaves], edges: leaves.map((leaf) => ({ source: 'start', target: leaf.id })) },
      'z'.repeat(6_000),
    );
    const ended = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 10_000);
    expect(ended.status).toBe('failed');
    expect(ended.output).toBeNull();
    expect((ended.error as ErrorView).code).toBe('EXECUTION_OUTPUT_TOO_LARGE');
    expect(bytesOf(ended.error)).toBeLessThanOrEqual(MAX_PAYLOAD);
    const steps = await stepsOf(app, user, execution.id);
    expect(['a', 'b', 'c'].map((id) => steps[id]?.status)).toEqual(['completed', 'completed', 'completed']);
  });

  // Point 3: a step's output, input and error are each bounded too.
  it('bounds each step output, input and error', async () => {
    const tooLarge = await run({
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'fetch', type: 'http.request', params: { method: 'GET', url: `${upstream.url}/big` } },
      ],
      edges: [{ source: 'start', target: 'fetch' }],
    });
    const tooLargeEnded = await waitForStatus(app, user, tooLarge.id, ['completed', 'failed'], 10_000);
    expect(tooLargeEnded.status).toBe('failed');
    expect((tooLargeEnded.error as ErrorView).code).toBe('STEP_OUTPUT_TOO_LARGE');

    // A 404 with a 40 kB body: the error keeps its message, not a detail past the bound.
    const notFound = await run({
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'fetch', type: 'http.request', params: { method: 'GET', url: `${upstream.url}/big-404` } },
      ],
      edges: [{ source: 'start', target: 'fetch' }],
    });
    const notFoundEnded = await waitForStatus(app, user, notFound.id, ['completed', 'failed'], 10_000);
    expect(notFoundEnded.status).toBe('failed');
    expect((notFoundEnded.error as ErrorView).message).toContain('404');
    expect(bytesOf(notFoundEnded.error)).toBeLessThanOrEqual(MAX_PAYLOAD);
    const notFoundSteps = await stepsOf(app, user, notFound.id);
    expect(bytesOf(notFoundSteps.fetch?.error)).toBeLessThanOrEqual(MAX_PAYLOAD);

    // A request body of 20 kB (the recorded input holds the resolved params).
    const posted = await run({
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'send', type: 'http.request', params: { method: 'POST', url: `${upstream.url}/ok`, body: '{{ $pad("", 20000, "q") }}' } },
      ],
      edges: [{ source: 'start', target: 'send' }],
    });
    const postedEnded = await waitForStatus(app, user, posted.id, ['completed', 'failed'], 10_000);
    expect(postedEnded.status).toBe('completed');
    const postedSteps = await app.inject({ url: `/api/v1/executions/${posted.id}/steps`, headers: { cookie: user.cookie } });
    const send = postedSteps.json<{ items: { nodeId: string; input: unknown }[] }>().items.find((step) => step.nodeId === 'send');
    expect(bytesOf(send?.input)).toBeLessThanOrEqual(MAX_PAYLOAD);
    expect(send?.input).toMatchObject({ omitted: expect.stringContaining('bytes') as unknown });
  });

  // Point 5: jsonb refuses \u0000; the run used to stay `running` and be re-run every lease.
  it('fails a step whose output holds a NUL character, and the run ends failed', async () => {
    const execution = await run({
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'poison', type: 'transform', params: { expression: '{ "text": "a\\u0000b" }' } },
      ],
      edges: [{ source: 'start', target: 'poison' }],
    });
    const ended = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 5_000);
    expect(ended.status).toBe('failed');
    expect(ended.error).toMatchObject({ nodeId: 'poison', code: 'UNSTORABLE_VALUE' });
    expect(JSON.stringify(ended.error)).not.toMatch(postgresPhrases);
    const steps = await stepsOf(app, user, execution.id);
    expect(steps.poison?.status).toBe('failed');
  });

  // An answer nested deeper than JSON.stringify can recurse used to throw outside the step's
  // failure handling: the run stayed `running` and its request was sent again at every lease expiry.
  it.each([20_000, 1_000])('fails a step whose answer is nested %i deep, sending its request once', async (depth) => {
    const path = '/deep';
    const before = upstream.calls.get(path) ?? 0;
    const execution = await run({
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'charge', type: 'http.request', params: { method: 'POST', url: `${upstream.url}${path}?depth=${depth}`, body: { amount: 100 } } },
      ],
      edges: [{ source: 'start', target: 'charge' }],
    });
    const ended = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 10_000);
    expect(ended.status).toBe('failed');
    expect(ended.error).toMatchObject({ nodeId: 'charge', code: 'UNSTORABLE_VALUE', message: expect.stringContaining('nested deeper than 512 levels') as unknown });
    const steps = await stepsOf(app, user, execution.id);
    expect(steps.charge).toMatchObject({ status: 'failed', attempt: 1 });
    expect(upstream.calls.get(path)).toBe(before + 1);
  });

  // Point 5: 2,700 "€" are 2,700 characters but 8,100 bytes, over NOTIFY's 8000-byte payload.
  it('completes a step whose event would pass a character count but not the NOTIFY byte limit', async () => {
    const execution = await run({
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'euros', type: 'transform', params: { expression: '$pad("", 2700, "€")' } },
      ],
      edges: [{ source: 'start', target: 'euros' }],
    });
    const ended = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 5_000);
    expect(ended.status).toBe('completed');
    expect((ended.output as { euros: string }).euros).toBe('€'.repeat(2700));
  });

  // Point 6: text as text, other bytes as { base64, contentType }; no PostgreSQL text in any error.
  it('records any http.request response body', async () => {
    const nodes = ['nul', 'png', 'euro', 'euro-json'].map((path) => ({
      id: path.replace('-', '_'),
      type: 'http.request',
      params: { method: 'GET', url: `${upstream.url}/${path}` },
    }));
    // A chain, so the execution output (its last step's) stays within the bound; each step's output is read from the steps.
    const execution = await run({
      nodes: [{ id: 'start', type: 'trigger.manual' }, ...nodes],
      edges: nodes.map((node, index) => ({ source: index === 0 ? 'start' : (nodes[index - 1]?.id ?? ''), target: node.id })),
    });
    const ended = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 10_000);
    expect(JSON.stringify(ended.error)).not.toMatch(postgresPhrases);
    expect({ status: ended.status, error: ended.error }).toEqual({ status: 'completed', error: null });
    const steps = await stepsOf(app, user, execution.id);
    const output = Object.fromEntries(Object.entries(steps).map(([nodeId, step]) => [nodeId, step.output as { body: unknown }]));
    expect(output.nul?.body).toEqual({ base64: Buffer.from('before\u0000after').toString('base64'), contentType: 'text/plain' });
    expect(output.png?.body).toEqual({
      base64: Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe, 0x80]).toString('base64'),
      contentType: 'image/png',
    });
    expect(output.euro?.body).toBe('€'.repeat(2700));
    expect(output.euro_json?.body).toEqual({ text: '€'.repeat(2700) });
  });

  // Point 10, runtime half: a node id that is a prototype name stays a plain key of the output.
  it('keeps a leaf whose id is __proto__ in the execution output', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'leaf', type: 'transform', params: { expression: '"kept"' } },
      ],
      edges: [{ source: 'start', target: 'leaf' }],
    });
    // A workflow saved before such ids were refused at save: the rows say so, whatever the API allows now.
    await app.database.sql`
      update workflow_versions
         set nodes = replace(nodes::text, '"leaf"', '"__proto__"')::jsonb, edges = replace(edges::text, '"leaf"', '"__proto__"')::jsonb
       where workflow_id = ${workflowId}::uuid`;
    const execution = await runWorkflow(app, user, workflowId);
    const ended = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 5_000);
    expect(ended.status).toBe('completed');
    const output = ended.output as Record<string, unknown>;
    expect(Object.keys(output)).toEqual(['__proto__']);
    expect(Object.getOwnPropertyDescriptor(output, '__proto__')?.value).toBe('kept');
  });
});

describe('reads with stored payloads', () => {
  let app: App;
  let user: SignedInUser;
  const budget = 10_000;

  beforeAll(async () => {
    // No engine: the executions stay pending with their inputs, which is all these reads need.
    app = await buildTestApp({ ENGINE_MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD), API_MAX_PAGE_DATA_BYTES: String(budget), ENGINE_ENABLED: 'false' });
    user = await signUp(app);
  });
  afterAll(async () => {
    await app?.close();
  });

  // Point 3: a page with data holds whole items up to the byte budget; the cursor walks the rest.
  it('cuts a list page with includeData at the response byte budget, and the cursor walks on', async () => {
    const workflowId = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] });
    const ids = new Set<string>();
    for (let index = 0; index < 6; index++) ids.add((await runWorkflow(app, user, workflowId, `${index}`.repeat(3_000))).id);

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const query: string = `/api/v1/executions?workflowId=${workflowId}&includeData=true&pageSize=20${cursor ? `&cursor=${cursor}` : ''}`;
      const response = await app.inject({ url: query, headers: { cookie: user.cookie } });
      expect(response.statusCode).toBe(200);
      expect(Buffer.byteLength(response.body)).toBeLessThan(budget + 3_000 + 2_000);
      const page = response.json<{ items: { id: string; input: string }[]; hasNext: boolean; nextCursor: string | null }>();
      expect(page.items.length).toBeGreaterThan(0);
      for (const item of page.items) {
        expect(item.input).toHaveLength(3_000);
        seen.push(item.id);
      }
      cursor = page.nextCursor;
      pages++;
    } while (cursor && pages < 10);
    expect(pages).toBeGreaterThan(1);
    expect(new Set(seen)).toEqual(ids);
    expect(seen).toHaveLength(ids.size);

    // Numbered pages cannot be cut (the next number would skip what was left out): such a page is
    // refused, and one that fits is whole.
    const numbered = await app.inject({ url: `/api/v1/executions?workflowId=${workflowId}&includeData=true&pageSize=20&page=1`, headers: { cookie: user.cookie } });
    expect(expectProblem(numbered, 400).errors).toEqual([expect.objectContaining({ path: 'page' })]);
    const small = await app.inject({ url: `/api/v1/executions?workflowId=${workflowId}&includeData=true&pageSize=2&page=2`, headers: { cookie: user.cookie } });
    expect(small.statusCode).toBe(200);
    expect(small.json<{ items: unknown[] }>().items).toHaveLength(2);
  });

  it('cuts a page of steps at the same budget', async () => {
    const workflowId = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] });
    const execution = await runWorkflow(app, user, workflowId);
    // Six stored steps of 3 kB each (an engine would write them; the read is what is under test).
    for (let index = 0; index < 6; index++) {
      await app.database.sql`
        insert into execution_steps (execution_id, node_id, status, attempt, output, created_at)
        values (${execution.id}::uuid, ${`n${index}`}, 'completed', 1, ${JSON.stringify('s'.repeat(3_000))}::jsonb, now() + ${index} * interval '1 millisecond')`;
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const url: string = `/api/v1/executions/${execution.id}/steps?pageSize=100${cursor ? `&cursor=${cursor}` : ''}`;
      const response = await app.inject({ url, headers: { cookie: user.cookie } });
      expect(response.statusCode).toBe(200);
      expect(Buffer.byteLength(response.body)).toBeLessThan(budget + 3_000 + 2_000);
      const page = response.json<{ items: { nodeId: string }[]; nextCursor: string | null }>();
      seen.push(...page.items.map((step) => step.nodeId));
      cursor = page.nextCursor;
      pages++;
    } while (cursor && pages < 10);
    expect(pages).toBeGreaterThan(1);
    expect(seen).toEqual(['n0', 'n1', 'n2', 'n3', 'n4', 'n5']);
  });
});

describe('a write the database refuses', () => {
  let app: App;
  let user: SignedInUser;

  beforeAll(async () => {
    app = await buildTestApp({ ENGINE_ENABLED: 'false' });
    user = await signUp(app);
  });
  afterAll(async () => {
    await app?.close();
  });

  // Values JSON.stringify writes and jsonb refuses: 22P05 (NUL) and 22P02 (unpaired surrogate).
  const refused = { nul: { text: 'a\u0000b' }, surrogate: { text: 'a\ud800b' } } as const;

  // Point 5, the class: whatever the value, a data error on a step or final write ends the run failed.
  it.each([
    ['writeSteps', 'nul'],
    ['finish', 'nul'],
    ['writeSteps', 'surrogate'],
    ['release', 'surrogate'],
  ] as const)('ends the execution failed when %s is refused by the database (%s)', async (write, value) => {
    const workflowId = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] });
    const created = await runWorkflow(app, user, workflowId);
    const workerId = `payload-test-${write}-${value}`;
    const claimed = await app.executions.claim(workerId, 10, 30_000, 100);
    const mine = claimed.find((execution) => execution.id === created.id);
    expect(mine).toBeDefined();
    for (const other of claimed) if (other.id !== created.id) await app.executions.release(workerId, other, 'pending', null);
    const execution = { id: created.id, userId: user.id };
    const change = { nodeId: 'start', status: 'completed' as const, attempt: 1, output: refused[value], started: true, finished: true };

    const kept =
      write === 'writeSteps'
        ? await app.executions.writeSteps(workerId, execution, [change])
        : write === 'finish'
          ? await app.executions.finish(workerId, execution, { status: 'completed', output: { start: 1 } }, [change])
          : await app.executions.release(workerId, execution, 'pending', null, [change]);
    // The write did not go through as asked: the worker learns the execution is no longer its to run.
    expect(kept).toBe(false);

    const ended = await getExecution(app, user, created.id);
    expect(ended.status).toBe('failed');
    expect(ended.error).toMatchObject({ code: 'UNSTORABLE_VALUE' });
    expect(JSON.stringify(ended.error)).not.toMatch(postgresPhrases);
    const steps = await stepsOf(app, user, created.id);
    expect(steps.start?.status).toBe('failed');
    expect(JSON.stringify(steps.start?.error)).not.toMatch(postgresPhrases);
    // Nothing is left to claim: no re-run loop.
    const again = await app.executions.claim(`${workerId}-later`, 10, 30_000, 100);
    expect(again.map((execution) => execution.id)).not.toContain(created.id);
  });
});
