import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { App } from '../src/app.js';
import type { Engine } from '../src/engine/engine.js';
import { MAX_TAKEOVERS, MAX_STEPS_AT_ONCE } from '../src/engine/runner.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';
import {
  createWorkflow,
  eventually,
  getExecution,
  runWorkflow,
  startEngine,
  startTestHttpServer,
  stepsOf,
  waitForStatus,
  type TestHttpServer,
} from './engine-helpers.js';

describe('the engine', () => {
  let app: App;
  let engine: Engine;
  let user: SignedInUser;
  let server: TestHttpServer;

  beforeAll(async () => {
    app = await buildTestApp();
    engine = startEngine(app);
    user = await signUp(app);
    server = await startTestHttpServer();
  });
  afterAll(async () => {
    await engine?.stop(5_000);
    await server?.close();
    await app?.close();
  });

  it('runs a workflow using every node type, following the branch taken and skipping the other', async () => {
    const key = randomUUID();
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'double', type: 'transform', params: { expression: '{ "n": input.n * 2 }' } },
        { id: 'big', type: 'condition', params: { expression: 'steps.double.n > 5' } },
        { id: 'wait', type: 'delay', params: { ms: 200 } },
        { id: 'call', type: 'http.request', params: { method: 'POST', url: `${server.url}/echo?key=${key}&n={{ steps.double.n }}`, body: { doubled: '{{ steps.double.n }}' } } },
        { id: 'small', type: 'transform', params: { expression: '"small"' } },
        { id: 'afterSmall', type: 'transform', params: { expression: '"never"' } },
      ],
      edges: [
        { source: 'start', target: 'double' },
        { source: 'double', target: 'big' },
        { source: 'big', target: 'wait', when: true },
        { source: 'wait', target: 'call' },
        { source: 'big', target: 'small', when: false },
        { source: 'small', target: 'afterSmall' },
      ],
    });
    const started = await runWorkflow(app, user, workflowId, { n: 4 });
    expect(started.status).toBe('pending');
    const finished = await waitForStatus(app, user, started.id, ['completed', 'failed']);
    expect(finished.status, JSON.stringify(finished.error)).toBe('completed');

    const steps = await stepsOf(app, user, started.id);
    expect(Object.fromEntries(Object.entries(steps).map(([id, step]) => [id, [step.status, step.attempt]]))).toEqual({
      start: ['completed', 1],
      double: ['completed', 1],
      big: ['completed', 1],
      wait: ['completed', 1],
      call: ['completed', 1],
      small: ['skipped', 0],
      afterSmall: ['skipped', 0],
    });
    expect(steps.start?.output).toEqual({ n: 4 });
    expect(steps.double?.output).toEqual({ n: 8 });
    expect(steps.big?.output).toEqual({ result: true });
    expect(steps.wait?.output).toEqual({ waitedUntil: expect.any(String) });
    const call = steps.call?.output as { status: number; body: { query: Record<string, string>; body: string } };
    expect(call.status).toBe(200);
    expect(call.body.query.n).toBe('8');
    expect(JSON.parse(call.body.body)).toEqual({ doubled: 8 });
    expect(server.countFor(key)).toBe(1);
    // The output is that of the last steps reached.
    expect(Object.keys(finished.output as object)).toEqual(['call']);
  });

  it('retries a failing step with backoff, counting every attempt, and fails once attempts run out', async () => {
    const flaky = randomUUID();
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: `${server.url}/flaky?key={{ input.key }}&failTimes={{ input.failTimes }}` }, retry: { maxAttempts: 3, backoffMs: 20 } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const recovers = await runWorkflow(app, user, workflowId, { key: flaky, failTimes: 2 });
    expect((await waitForStatus(app, user, recovers.id, ['completed', 'failed'])).status).toBe('completed');
    expect((await stepsOf(app, user, recovers.id)).call?.attempt).toBe(3);
    expect(server.countFor(flaky)).toBe(3);

    const hopeless = randomUUID();
    const fails = await runWorkflow(app, user, workflowId, { key: hopeless, failTimes: 10 });
    const failed = await waitForStatus(app, user, fails.id, ['completed', 'failed']);
    expect(failed.status).toBe('failed');
    expect(failed.error).toMatchObject({ nodeId: 'call', message: expect.stringContaining('500') });
    const step = (await stepsOf(app, user, fails.id)).call;
    expect(step).toMatchObject({ status: 'failed', attempt: 3 });
    expect(server.countFor(hopeless)).toBe(3);
  });

  // Every engine of the suite allows 127.0.0.1 only (the test server), whichever claims the run:
  // a private, a metadata and an IPv6 loopback address stay refused (localhost without an allow
  // entry is covered by the http-request unit tests).
  it('refuses private, metadata and loopback addresses that are not allowed, after DNS resolution', async () => {
    for (const url of ['http://10.0.0.1/', 'http://169.254.169.254/latest/meta-data/', `http://[::1]:${new URL(server.url).port}/`]) {
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual' },
          { id: 'call', type: 'http.request', params: { method: 'GET', url }, retry: { maxAttempts: 3, backoffMs: 10 } },
        ],
        edges: [{ source: 'start', target: 'call' }],
      });
      const execution = await runWorkflow(app, user, workflowId);
      const failed = await waitForStatus(app, user, execution.id, ['completed', 'failed']);
      expect(failed.status).toBe('failed');
      expect((failed.error as { message: string }).message).toMatch(/refused to connect/);
      // A refusal is final: no retries against a forbidden address.
      expect((await stepsOf(app, user, execution.id)).call?.attempt).toBe(1);
    }
  });

  it('cancels during a slow step: the request is aborted within a second and nothing after it runs', async () => {
    const key = randomUUID();
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'slow', type: 'http.request', params: { method: 'GET', url: `${server.url}/slow?delay=10000&key=${key}` } },
        { id: 'after', type: 'transform', params: { expression: '"too late"' } },
      ],
      edges: [
        { source: 'start', target: 'slow' },
        { source: 'slow', target: 'after' },
      ],
    });
    const execution = await runWorkflow(app, user, workflowId);
    await eventually(async () => server.countFor(key) === 1, 10_000, 'the slow request');
    const cancelledAt = Date.now();
    const response = await app.inject({ method: 'POST', url: `/api/v1/executions/${execution.id}/cancel`, headers: { cookie: user.cookie } });
    expect(response.statusCode).toBe(200);
    expect(response.json().status).toBe('cancelled');

    const abort = await eventually(async () => server.aborted.find((entry) => entry.path.includes(key)), 5_000, 'the aborted request');
    expect(abort.at - cancelledAt).toBeLessThan(1_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const steps = await stepsOf(app, user, execution.id);
    expect(steps.slow?.status).toBe('failed');
    expect(steps.after).toBeUndefined();
    expect((await getExecution(app, user, execution.id)).status).toBe('cancelled');

    const again = await app.inject({ method: 'POST', url: `/api/v1/executions/${execution.id}/cancel`, headers: { cookie: user.cookie } });
    expect(expectProblem(again, 409).code).toBe('EXECUTION_ENDED');
  });

  it('retries a failed execution from the failed step (reusing earlier outputs) or from the start', async () => {
    const key = randomUUID();
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'first', type: 'http.request', params: { method: 'GET', url: `${server.url}/first?key=first-${key}` } },
        { id: 'second', type: 'http.request', params: { method: 'GET', url: `${server.url}/second?key=second-${key}&failTimes=1` } },
      ],
      edges: [
        { source: 'start', target: 'first' },
        { source: 'first', target: 'second' },
      ],
    });
    const original = await runWorkflow(app, user, workflowId);
    expect((await waitForStatus(app, user, original.id, ['completed', 'failed'])).status).toBe('failed');
    expect(server.countFor(`first-${key}`)).toBe(1);

    const notYet = await app.inject({ method: 'POST', url: `/api/v1/executions/${original.id}/retry`, headers: { cookie: user.cookie } });
    expect(notYet.statusCode).toBe(202);
    const fromFailed = notYet.json<{ id: string; trigger: string; retryOfId: string }>();
    expect(fromFailed).toMatchObject({ trigger: 'retry', retryOfId: original.id });
    expect((await waitForStatus(app, user, fromFailed.id, ['completed', 'failed'])).status).toBe('completed');
    expect(server.countFor(`first-${key}`)).toBe(1);
    expect(server.countFor(`second-${key}`)).toBe(2);
    expect((await stepsOf(app, user, fromFailed.id)).first?.status).toBe('completed');

    const fromStart = await app.inject({ method: 'POST', url: `/api/v1/executions/${original.id}/retry?from=start`, headers: { cookie: user.cookie } });
    expect(fromStart.statusCode).toBe(202);
    expect((await waitForStatus(app, user, fromStart.json().id, ['completed', 'failed'])).status).toBe('completed');
    expect(server.countFor(`first-${key}`)).toBe(2);

    const completed = await app.inject({ method: 'POST', url: `/api/v1/executions/${fromFailed.id}/retry`, headers: { cookie: user.cookie } });
    expect(expectProblem(completed, 409).code).toBe('EXECUTION_NOT_RETRYABLE');
  });

  it('honours Idempotency-Key on run', async () => {
    const workflowId = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] });
    const run = (input: unknown) =>
      app.inject({ method: 'POST', url: `/api/v1/workflows/${workflowId}/run`, headers: { cookie: user.cookie, 'idempotency-key': `run-${workflowId}` }, payload: { input } });
    const first = await run({ a: 1 });
    const again = await run({ a: 1 });
    expect(first.statusCode).toBe(202);
    expect(again.json().id).toBe(first.json().id);
    expect(expectProblem(await run({ a: 2 }), 409).code).toBe('IDEMPOTENCY_KEY_REUSED');

    // The scope is the route and its parameters as understood, not the URL as written.
    const [firstChar, ...rest] = workflowId;
    const spellings = [
      `/api/v1/workflows/${workflowId.toUpperCase()}/run`,
      `/api/v1/workflows/%${firstChar?.charCodeAt(0).toString(16)}${rest.join('')}/run`,
      `/api/v1/workflows/${workflowId}/run/`,
    ];
    for (const url of spellings) {
      const replay = await app.inject({ method: 'POST', url, headers: { cookie: user.cookie, 'idempotency-key': `run-${workflowId}` }, payload: { input: { a: 1 } } });
      expect(replay.statusCode, url).toBe(202);
      expect(replay.json().id, url).toBe(first.json().id);
    }
    // Another workflow with the same key is another scope.
    const otherId = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] });
    const other = await app.inject({
      method: 'POST',
      url: `/api/v1/workflows/${otherId}/run`,
      headers: { cookie: user.cookie, 'idempotency-key': `run-${workflowId}` },
      payload: { input: { a: 1 } },
    });
    expect(other.statusCode).toBe(202);
    expect(other.json().id).not.toBe(first.json().id);
  });

  it('streams ordered events until the execution ends', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'a', type: 'transform', params: { expression: '1' } },
        { id: 'pause', type: 'delay', params: { ms: 200 } },
        { id: 'b', type: 'transform', params: { expression: '2' } },
      ],
      edges: [
        { source: 'start', target: 'a' },
        { source: 'a', target: 'pause' },
        { source: 'pause', target: 'b' },
      ],
    });
    const execution = await runWorkflow(app, user, workflowId);
    const response = await app.inject({ url: `/api/v1/executions/${execution.id}/events`, headers: { cookie: user.cookie } });
    expect(response.headers['content-type']).toContain('text/event-stream');
    const events = response.body
      .split('\n\n')
      .filter((block) => block.startsWith('event:'))
      .map((block) => {
        const field = (name: string) => block.split('\n').find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2) ?? '';
        return { event: field('event'), id: Number(field('id')), data: JSON.parse(field('data')) as { status: string; nodeId?: string } };
      });
    // The stream opens with the current state, whose last event alone carries the current
    // revision; after that, steps written together (an instant step goes with the next write)
    // still get a revision each.
    const openingLength = events.findIndex((event) => event.event === 'execution') + 1;
    expect(events.slice(0, openingLength - 1).every((event) => event.id === 0)).toBe(true);
    const ids = events.slice(openingLength - 1).map((event) => event.id);
    expect(ids).toEqual([...ids].sort((x, y) => x - y));
    const live = ids.filter((id) => id > (ids[0] ?? 0));
    expect(live).toEqual([...new Set(live)]);
    const last = events[events.length - 1];
    expect(last).toMatchObject({ event: 'execution', data: { status: 'completed' } });
    const completedOrder = events.filter((event) => event.event === 'step' && event.data.status === 'completed').map((event) => event.data.nodeId);
    expect(completedOrder.indexOf('b')).toBeGreaterThan(completedOrder.indexOf('pause'));
    expect(new Set(completedOrder)).toEqual(new Set(['start', 'a', 'pause', 'b']));
  });
  it('answers a reconnect with the final state\'s Last-Event-ID with 204, and any id it never issued with the whole state', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'a', type: 'transform', params: { expression: '1' } },
      ],
      edges: [{ source: 'start', target: 'a' }],
    });
    const execution = await waitForStatus(app, user, (await runWorkflow(app, user, workflowId)).id, ['completed']);
    const open = (lastEventId?: string) =>
      app.inject({ url: `/api/v1/executions/${execution.id}/events`, headers: { cookie: user.cookie, ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) } });
    const first = await open();
    expect(first.statusCode).toBe(200);
    const finalId = Number(/id: (\d+)\n/.exec(first.body)?.[1]);
    expect(finalId).toBeGreaterThan(0);
    expect(first.body.match(/^event: step$/gm)).toHaveLength(2);

    const upToDate = await open(String(finalId));
    expect(upToDate.statusCode).toBe(204);
    expect(upToDate.body).toBe('');
    for (const unknown of [String(finalId + 1000), 'not-a-revision', '']) {
      const again = await open(unknown);
      expect(again.statusCode, unknown).toBe(200);
      expect(again.body, unknown).toBe(first.body);
    }
    // An earlier revision: the client missed something, so it gets the state again.
    expect((await open(String(finalId - 1))).body).toBe(first.body);
  });
});

describe('the rows of instant steps', () => {
  it('go with the execution\'s next write: a one-step workflow costs its claim and its finish', async () => {
    const statements: { query: string; parameters: readonly unknown[] }[] = [];
    const app = await buildTestApp({}, { onQuery: (query, parameters) => statements.push({ query, parameters }) });
    const engine = startEngine(app);
    try {
      const user = await signUp(app);
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual' },
          { id: 'double', type: 'transform', params: { expression: 'input.n * 2' } },
        ],
        edges: [{ source: 'start', target: 'double' }],
      });
      statements.length = 0;
      const execution = await runWorkflow(app, user, workflowId, { n: 21 });
      const finished = await waitForStatus(app, user, execution.id, ['completed', 'failed']);
      expect(finished).toMatchObject({ status: 'completed', output: { double: 42 } });
      // Counted by this execution's id: the engine may run this file's other executions meanwhile.
      const stepWrites = statements.filter(({ query, parameters }) => /insert into execution_steps/i.test(query) && parameters.includes(execution.id));
      expect(stepWrites).toHaveLength(1);
      const steps = await stepsOf(app, user, execution.id);
      expect(steps.start).toMatchObject({ status: 'completed', attempt: 1, output: { n: 21 } });
      expect(steps.double).toMatchObject({ status: 'completed', attempt: 1, output: 42 });
      for (const step of Object.values(steps)) expect(step.startedAt).not.toBeNull();
      // Written together, still listed in the order they ran.
      const listed = (await app.inject({ url: `/api/v1/executions/${execution.id}/steps?sortDirection=asc`, headers: { cookie: user.cookie } })).json<{ items: { nodeId: string }[] }>();
      expect(listed.items.map((step) => step.nodeId)).toEqual(['start', 'double']);
    } finally {
      await engine.stop(5_000);
      await app.close();
    }
  });
});

describe('the engine across a restart', () => {
  it('finishes a delay that spans a worker restart, without holding a worker while it waits', async () => {
    const app = await buildTestApp();
    const user = await signUp(app);
    let engine = startEngine(app);
    try {
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual' },
          { id: 'pause', type: 'delay', params: { ms: 1500 } },
          { id: 'after', type: 'transform', params: { expression: '"woke up"' } },
        ],
        edges: [
          { source: 'start', target: 'pause' },
          { source: 'pause', target: 'after' },
        ],
      });
      const execution = await runWorkflow(app, user, workflowId);
      await waitForStatus(app, user, execution.id, ['paused']);
      await engine.stop(2_000);
      engine = startEngine(app);
      const finished = await waitForStatus(app, user, execution.id, ['completed', 'failed']);
      expect(finished.status).toBe('completed');
      const steps = await stepsOf(app, user, execution.id);
      expect(steps.pause).toMatchObject({ status: 'completed', attempt: 1 });
      expect(steps.after?.output).toBe('woke up');
    } finally {
      await engine.stop(2_000);
      await app.close();
    }
  });
  it('fails a step that stops its run at the same place every time, after MAX_TAKEOVERS takeovers', async () => {
    const app = await buildTestApp();
    const user = await signUp(app);
    const server = await startTestHttpServer();
    // Short leases: each takeover waits for one to run out.
    const engine = startEngine(app, { ENGINE_LEASE_MS: '1000' });
    const tag = randomUUID().replaceAll('-', '');
    try {
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual' },
          { id: 'call', type: 'http.request', params: { method: 'POST', url: `${server.url}/charge?key=${tag}` } },
        ],
        edges: [{ source: 'start', target: 'call' }],
      });
      // A fault at the same place in every attempt: the database refuses the step's completion.
      await app.database.sql.unsafe(`create function refuse_${tag}() returns trigger language plpgsql as $$ begin
          if exists (select 1 from executions where id = new.execution_id and workflow_id = '${workflowId}') then raise exception 'refused by the test'; end if;
          return new; end $$`);
      await app.database.sql.unsafe(`create trigger refuse_${tag} before insert or update on execution_steps for each row
        when (new.status = 'completed' and new.node_id = 'call') execute function refuse_${tag}()`);
      const execution = await runWorkflow(app, user, workflowId);
      const ended = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 20_000);
      expect(ended.status).toBe('failed');
      expect(ended.error).toMatchObject({ nodeId: 'call', code: 'STEP_INTERRUPTED' });
      const steps = await stepsOf(app, user, execution.id);
      expect(steps.call).toMatchObject({ status: 'failed', attempt: 1 + MAX_TAKEOVERS });
      // Sent once per attempt, then never again.
      expect(server.countFor(tag)).toBe(1 + MAX_TAKEOVERS);
    } finally {
      await engine.stop(2_000);
      await app.database.sql.unsafe(`drop trigger if exists refuse_${tag} on execution_steps; drop function if exists refuse_${tag}()`);
      await server.close();
      await app.close();
    }
  });
});

/** An upstream answering after `delayMs()`, counting the requests it got, served, and held at once (most). */
async function slowUpstream(delayMs: () => number) {
  const counts = { received: 0, served: 0, open: 0, mostOpen: 0 };
  const server = createServer((request, response) => {
    counts.received++;
    counts.open++;
    counts.mostOpen = Math.max(counts.mostOpen, counts.open);
    request.resume();
    setTimeout(() => {
      counts.open--;
      counts.served++;
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"ok":true}');
    }, delayMs());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return { url, counts, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('a run of many independent steps', () => {
  it('runs them MAX_STEPS_AT_ONCE at a time, every one of them, in one wave', async () => {
    const app = await buildTestApp();
    const user = await signUp(app);
    const upstream = await slowUpstream(() => 100);
    const { url, counts } = upstream;
    const engine = startEngine(app);
    try {
      const fanOut = Array.from({ length: 3 * MAX_STEPS_AT_ONCE }, (_, index) => ({ id: `call${index}`, type: 'http.request', params: { method: 'GET', url } }));
      const workflowId = await createWorkflow(app, user, {
        nodes: [{ id: 'start', type: 'trigger.manual' }, ...fanOut],
        edges: fanOut.map((node) => ({ source: 'start', target: node.id })),
      });
      const execution = await runWorkflow(app, user, workflowId);
      const finished = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 20_000);
      expect(finished.status).toBe('completed');
      expect(counts.served).toBe(fanOut.length);
      // Side by side (more than one at once), never more than the cap (all 24 at once before it).
      expect(counts.mostOpen).toBeGreaterThan(1);
      expect(counts.mostOpen).toBeLessThanOrEqual(MAX_STEPS_AT_ONCE);
    } finally {
      await engine.stop(2_000);
      await upstream.close();
      await app.close();
    }
  });
});

describe('a run handed back at shutdown', () => {
  it('starts none of a wave`s waiting steps once the engine drains, and the next engine runs each once', async () => {
    const app = await buildTestApp();
    const user = await signUp(app);
    const upstream = await slowUpstream(() => 1_000);
    let engine = startEngine(app);
    try {
      const fanOut = Array.from({ length: 3 * MAX_STEPS_AT_ONCE }, (_, index) => ({ id: `call${index}`, type: 'http.request', params: { method: 'POST', url: upstream.url } }));
      // A long delay beside them: the steps left unstarted must not wait for it.
      const wait = { id: 'wait', type: 'delay', params: { ms: 86_400_000 } };
      const workflowId = await createWorkflow(app, user, {
        nodes: [{ id: 'start', type: 'trigger.manual' }, wait, ...fanOut],
        edges: [wait, ...fanOut].map((node) => ({ source: 'start', target: node.id })),
      });
      const execution = await runWorkflow(app, user, workflowId);
      await eventually(async () => upstream.counts.received > 0, 10_000, 'the first requests');
      // Draining, with grace to spare: the steps under way finish, no other starts.
      await engine.stop(10_000);
      const sentBeforeStop = upstream.counts.received;
      expect(sentBeforeStop).toBeLessThanOrEqual(MAX_STEPS_AT_ONCE);
      expect(upstream.counts.served).toBe(sentBeforeStop);
      expect((await getExecution(app, user, execution.id)).status).toBe('pending');
      engine = startEngine(app);
      // The rest run now; then the run waits for its delay.
      await eventually(async () => upstream.counts.served === fanOut.length, 20_000, 'every request served');
      const paused = await waitForStatus(app, user, execution.id, ['paused', 'completed', 'failed'], 20_000).catch(async (error: Error) => {
        const [row] = await app.database.sql`select status, lease_owner, lease_expires_at, wake_at from executions where id = ${execution.id}::uuid`;
        throw new Error(`${error.message}; row ${JSON.stringify(row)}; api ${JSON.stringify(await getExecution(app, user, execution.id))}`);
      });
      expect(paused.status).toBe('paused');
      // Each request sent once in all.
      expect(upstream.counts.received).toBe(fanOut.length);
    } finally {
      await engine.stop(2_000);
      await upstream.close();
      await app.close();
    }
  });

  it('never fails a step STEP_INTERRUPTED for shutdowns: a run handed back is not taken over, and one crash after many shutdowns is one takeover', async () => {
    const app = await buildTestApp();
    const user = await signUp(app);
    const shutdowns = MAX_TAKEOVERS + 2;
    // Too slow for each shutdown's grace, then prompt.
    const upstream = await slowUpstream(() => (upstream.counts.received <= shutdowns ? 30_000 : 10));
    try {
      const workflowId = await createWorkflow(app, user, {
        nodes: [{ id: 'start', type: 'trigger.manual' }, { id: 'call', type: 'http.request', params: { method: 'GET', url: upstream.url } }],
        edges: [{ source: 'start', target: 'call' }],
      });
      const execution = await runWorkflow(app, user, workflowId);
      for (let shutdown = 1; shutdown <= shutdowns; shutdown++) {
        const engine = startEngine(app);
        await eventually(async () => upstream.counts.received >= shutdown, 10_000, `request ${shutdown}`);
        await engine.stop(100);
      }
      // Then one crash: a worker held the run and died (its lease ran out, nothing handed back).
      await app.database.sql`
        update executions set status = 'running', lease_owner = 'a worker that died', lease_expires_at = now() - interval '1 second'
         where id = ${execution.id}::uuid`;
      const engine = startEngine(app);
      try {
        const ended = await waitForStatus(app, user, execution.id, ['completed', 'failed'], 20_000);
        expect(ended.status, JSON.stringify(ended.error)).toBe('completed');
        expect((await stepsOf(app, user, execution.id)).call).toMatchObject({ status: 'completed', attempt: shutdowns + 1 });
      } finally {
        await engine.stop(2_000);
      }
    } finally {
      await upstream.close();
      await app.close();
    }
  });
});

describe('shutting an engine down', () => {
  it('lets a running step finish within the grace period and hands the execution back; past the grace, aborts and hands back', async () => {
    const app = await buildTestApp();
    const user = await signUp(app);
    const server = await startTestHttpServer();
    try {
      const key = randomUUID();
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual' },
          { id: 'slow', type: 'http.request', params: { method: 'GET', url: `${server.url}/slow?delay={{ input.delay }}&key={{ input.key }}` } },
          { id: 'after', type: 'transform', params: { expression: '"done"' } },
        ],
        edges: [
          { source: 'start', target: 'slow' },
          { source: 'slow', target: 'after' },
        ],
      });

      // Within the grace: the step finishes, nothing after it starts on this engine, the lease is released.
      let engine = startEngine(app);
      const graceful = await runWorkflow(app, user, workflowId, { delay: 800, key: `graceful-${key}` });
      await eventually(async () => server.countFor(`graceful-${key}`) === 1, 10_000, 'the slow request');
      await engine.stop(5_000);
      const steps = await stepsOf(app, user, graceful.id);
      expect(steps.slow).toMatchObject({ status: 'completed', attempt: 1 });
      expect(server.aborted.filter((entry) => entry.path.includes(`graceful-${key}`))).toEqual([]);

      // Past the grace: the step is aborted and the execution handed back at once, not at lease expiry.
      engine = startEngine(app);
      const abrupt = await runWorkflow(app, user, workflowId, { delay: 5000, key: `abrupt-${key}` });
      await eventually(async () => server.countFor(`abrupt-${key}`) === 1, 10_000, 'the slow request');
      await engine.stop(200);
      expect(server.aborted.some((entry) => entry.path.includes(`abrupt-${key}`))).toBe(true);
      const handedBack = await getExecution(app, user, abrupt.id);
      expect(['pending', 'running', 'completed']).toContain(handedBack.status);

      // Another engine finishes both; the interrupted attempt counts.
      engine = startEngine(app);
      try {
        expect((await waitForStatus(app, user, graceful.id, ['completed', 'failed'])).status).toBe('completed');
        expect((await waitForStatus(app, user, abrupt.id, ['completed', 'failed'])).status).toBe('completed');
        expect((await stepsOf(app, user, abrupt.id)).slow?.attempt).toBe(2);
      } finally {
        await engine.stop(2_000);
      }
    } finally {
      await server.close();
      await app.close();
    }
  });
});

describe('the scheduler', () => {
  let app: App;
  let user: SignedInUser;
  let workflowId: string;

  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
    workflowId = await createWorkflow(app, user, {
      // The delay keeps each run in progress for a while, whichever engine of the suite picks it up,
      // so the job is observably locked right after firing.
      nodes: [
        { id: 'tick', type: 'trigger.schedule' },
        { id: 'hold', type: 'delay', params: { ms: 2000 } },
        { id: 'say', type: 'transform', params: { expression: '"scheduled " & input.jobId' } },
      ],
      edges: [
        { source: 'tick', target: 'hold' },
        { source: 'hold', target: 'say' },
      ],
    });
  });
  afterAll(async () => {
    await app?.close();
  });

  const createJob = async (status: 'ACTIVE' | 'PAUSED', cron = '* * * * *') =>
    (await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { cookie: user.cookie }, payload: { name: `job ${randomUUID()}`, workflowId, cron, status } })).json<{ id: string }>();
  const makeDue = (jobId: string, minutesAgo: number) =>
    app.database.sql`update jobs set next_run_at = now() - make_interval(mins => ${minutesAgo}) where id = ${jobId}`;
  const executionsOf = async (jobId: string) =>
    (await app.inject({ url: `/api/v1/executions?jobId=${jobId}&includeData=true`, headers: { cookie: user.cookie } })).json<{ items: { id: string; trigger: string; input: { jobId: string; scheduledAt: string } }[] }>().items;
  const jobOf = async (jobId: string) =>
    (await app.inject({ url: `/api/v1/jobs/${jobId}`, headers: { cookie: user.cookie } })).json<{ nextRunAt: string; lastRunAt: string | null; locked: boolean }>();

  it('fires a due job once, locks it while it runs, and moves nextRunAt to the future', async () => {
    const job = await createJob('ACTIVE');
    await makeDue(job.id, 1);
    // Two schedulers at once (as on two replicas): the slot fires once.
    await Promise.all([app.executions.fireDueJobs(), app.executions.fireDueJobs(), app.executions.fireDueJobs()]);
    const fired = await executionsOf(job.id);
    expect(fired).toHaveLength(1);
    expect(fired[0]).toMatchObject({ trigger: 'schedule', input: { jobId: job.id } });
    const afterFiring = await jobOf(job.id);
    expect(afterFiring.locked).toBe(true);
    expect(Date.parse(afterFiring.nextRunAt)).toBeGreaterThan(Date.now());
    expect(afterFiring.lastRunAt).not.toBeNull();

    // Due again while its execution has not run: a locked job is not started twice.
    await makeDue(job.id, 1);
    await app.executions.fireDueJobs();
    expect(await executionsOf(job.id)).toHaveLength(1);

    const engine = startEngine(app);
    try {
      const execution = await waitForStatus(app, user, fired[0]?.id as string, ['completed', 'failed']);
      expect(execution.status).toBe('completed');
      expect((execution.output as { say: string }).say).toBe(`scheduled ${job.id}`);
      await eventually(async () => !(await jobOf(job.id)).locked, 5_000, 'the job unlocked');
    } finally {
      await engine.stop(2_000);
    }
  });

  it('stays locked while its scheduled run is under way, whatever a retry of an earlier run does', async () => {
    const job = await createJob('ACTIVE');
    const cancel = (id: string) => app.inject({ method: 'POST', url: `/api/v1/executions/${id}/cancel`, headers: { cookie: user.cookie } });
    await makeDue(job.id, 1);
    await app.executions.fireDueJobs();
    const [first] = await executionsOf(job.id);
    expect((await cancel(first?.id as string)).statusCode).toBe(200);
    expect((await jobOf(job.id)).locked).toBe(false);
    const retry = await app.inject({ method: 'POST', url: `/api/v1/executions/${first?.id}/retry`, headers: { cookie: user.cookie } });
    expect(retry.statusCode).toBe(202);

    await makeDue(job.id, 1);
    await app.executions.fireDueJobs();
    const scheduled = (await executionsOf(job.id)).find((execution) => execution.trigger === 'schedule' && execution.id !== first?.id);
    expect(scheduled).toBeDefined();
    expect((await jobOf(job.id)).locked).toBe(true);
    // The retry carries the job's id, but did not lock it: ending it leaves the job locked.
    expect((await cancel(retry.json<{ id: string }>().id)).statusCode).toBe(200);
    expect((await jobOf(job.id)).locked).toBe(true);
    expect((await cancel(scheduled?.id as string)).statusCode).toBe(200);
    expect((await jobOf(job.id)).locked).toBe(false);
  });

  it('steps the next run from the database`s clock: a process whose clock runs behind does not fire the same slot again', async () => {
    const job = await createJob('ACTIVE');
    await makeDue(job.id, 1);
    // This process's clock an hour behind the database's (only Date: timers run as they do).
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() - 3_600_000 });
    try {
      await app.executions.fireDueJobs();
    } finally {
      vi.useRealTimers();
    }
    const [row] = await app.database.sql<{ ahead: boolean }[]>`select next_run_at > now() as ahead from jobs where id = ${job.id}`;
    expect(row?.ahead).toBe(true);
    expect(await executionsOf(job.id)).toHaveLength(1);
  });

  it('unlocks a job whose scheduled run goes with its former workflow, so it fires again', async () => {
    const job = await createJob('ACTIVE');
    const former = await createWorkflow(app, user, { nodes: [{ id: 'tick', type: 'trigger.schedule' }, { id: 'hold', type: 'delay', params: { ms: 60_000 } }], edges: [{ source: 'tick', target: 'hold' }] });
    const headers = { cookie: user.cookie };
    expect((await app.inject({ method: 'PATCH', url: `/api/v1/jobs/${job.id}`, headers, payload: { workflowId: former } })).statusCode).toBe(200);
    await makeDue(job.id, 1);
    await app.executions.fireDueJobs();
    const [run] = await executionsOf(job.id);
    expect((await jobOf(job.id)).locked).toBe(true);

    // Moved back while that run is under way, then its workflow deleted: the run goes with it.
    expect((await app.inject({ method: 'PATCH', url: `/api/v1/jobs/${job.id}`, headers, payload: { workflowId } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${former}`, headers })).statusCode).toBe(204);
    expect((await app.inject({ url: `/api/v1/executions/${run?.id}`, headers })).statusCode).toBe(404);
    expect((await jobOf(job.id)).locked).toBe(false);
    await makeDue(job.id, 1);
    await app.executions.fireDueJobs();
    expect(await executionsOf(job.id)).toEqual([expect.objectContaining({ trigger: 'schedule' })]);
  });

  it('fires one catch-up run after a downtime of many slots, and never fires a paused job', async () => {
    const job = await createJob('ACTIVE');
    await makeDue(job.id, 180);
    await app.executions.fireDueJobs();
    await app.executions.fireDueJobs();
    expect(await executionsOf(job.id)).toHaveLength(1);

    const paused = await createJob('PAUSED');
    await makeDue(paused.id, 5);
    await app.executions.fireDueJobs();
    expect(await executionsOf(paused.id)).toHaveLength(0);
  });
});

describe('execution limits', () => {
  it('refuses a run input over ENGINE_MAX_PAYLOAD_BYTES and fails a step whose output is over it', async () => {
    const app = await buildTestApp({ ENGINE_MAX_PAYLOAD_BYTES: '2048' });
    const user = await signUp(app);
    try {
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual' },
          { id: 'grow', type: 'transform', params: { expression: '$join([1..3000].("x"))' } },
        ],
        edges: [{ source: 'start', target: 'grow' }],
      });
      const tooBig = await app.inject({
        method: 'POST',
        url: `/api/v1/workflows/${workflowId}/run`,
        headers: { cookie: user.cookie },
        payload: { input: { text: 'y'.repeat(5000) } },
      });
      expect(expectProblem(tooBig, 400).errors).toEqual([expect.objectContaining({ path: 'input' })]);

      const engine = startEngine(app, { ENGINE_MAX_PAYLOAD_BYTES: '2048' });
      try {
        const execution = await runWorkflow(app, user, workflowId, { small: true });
        const failed = await waitForStatus(app, user, execution.id, ['completed', 'failed']);
        expect(failed.status).toBe('failed');
        expect((failed.error as { message: string }).message).toMatch(/larger than 2048 bytes/);
      } finally {
        await engine.stop(2_000);
      }
    } finally {
      await app.close();
    }
  });
});
