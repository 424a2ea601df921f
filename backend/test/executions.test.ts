import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { createWorkflow, runWorkflow, startEngine, startTestHttpServer, waitForStatus, type TestHttpServer } from './engine-helpers.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';
import { makeResources } from './fixtures.js';

/** Ends completed, or failed when its input says `fail`: runs whose outcome the test chooses. */
const outcomeGraph = {
  nodes: [
    { id: 'start', type: 'trigger.manual', params: {} },
    { id: 'decide', type: 'transform', params: { expression: 'input.fail ? $error("chosen failure") : { "ok": true }' } },
  ],
  edges: [{ source: 'start', target: 'decide' }],
};

/** Runs `count` executions of the outcome graph through the engine, alternating completed and failed, one after another. */
async function runOutcomes(app: App, user: SignedInUser, workflowId: string, count: number) {
  const ran: { id: string; status: string; createdAt: string }[] = [];
  const engine = startEngine(app);
  try {
    for (let index = 0; index < count; index++) {
      const created = await runWorkflow(app, user, workflowId, { fail: index % 2 === 1 });
      const ended = await waitForStatus(app, user, created.id, ['completed', 'failed']);
      ran.push({ id: ended.id, status: ended.status, createdAt: created.createdAt });
    }
  } finally {
    await engine.stop(2_000);
  }
  return ran;
}

describe('executions and steps', () => {
  let app: App;
  let alice: SignedInUser;
  let bob: SignedInUser;
  let resources: Awaited<ReturnType<typeof makeResources>>;

  beforeAll(async () => {
    app = await buildTestApp();
    alice = await signUp(app);
    bob = await signUp(app);
    resources = await makeResources(app, alice);
  });
  afterAll(async () => {
    await app.close();
  });

  it('reads an execution and its steps, without the owner or the snapshot', async () => {
    const response = await app.inject({ url: `/api/v1/executions/${resources.execution.id}`, headers: { cookie: alice.cookie } });
    expect(response.statusCode).toBe(200);
    const execution = response.json();
    expect(execution).toMatchObject({ id: resources.execution.id, workflowId: resources.workflow.id, jobId: resources.job.id, trigger: 'schedule', status: 'failed', input: { jobId: resources.job.id } });
    expect(execution).not.toHaveProperty('userId');
    expect(execution).not.toHaveProperty('workflowSnapshot');

    // In the order they ran, by default.
    const steps = (await app.inject({ url: `/api/v1/executions/${resources.execution.id}/steps`, headers: { cookie: alice.cookie } })).json();
    expect(steps.items.map((step: { nodeId: string; status: string; attempt: number }) => [step.nodeId, step.status, step.attempt])).toEqual([
      ['start', 'completed', 1],
      ['shape', 'failed', 2],
    ]);
    const newestFirst = (await app.inject({ url: `/api/v1/executions/${resources.execution.id}/steps?sortDirection=desc`, headers: { cookie: alice.cookie } })).json();
    expect(newestFirst.items.map((step: { nodeId: string }) => step.nodeId)).toEqual(['shape', 'start']);
    const failed = (await app.inject({ url: `/api/v1/executions/${resources.execution.id}/steps?status=failed`, headers: { cookie: alice.cookie } })).json();
    expect(failed.items.map((step: { nodeId: string }) => step.nodeId)).toEqual(['shape']);
  });

  it('leaves input and output out of list items unless includeData=true, with at most 20 a page', async () => {
    const url = `/api/v1/executions?jobId=${resources.job.id}`;
    const [plain] = (await app.inject({ url, headers: { cookie: alice.cookie } })).json().items;
    expect(plain).toMatchObject({ id: resources.execution.id, status: 'failed' });
    expect(plain).not.toHaveProperty('input');
    expect(plain).not.toHaveProperty('output');
    expect(plain).not.toHaveProperty('revision');
    expect(plain.error).toMatchObject({ nodeId: 'shape' });
    const [full] = (await app.inject({ url: `${url}&includeData=true`, headers: { cookie: alice.cookie } })).json().items;
    expect(full).toMatchObject({ id: resources.execution.id, input: { jobId: resources.job.id }, output: null });
    expect(full).not.toHaveProperty('revision');
    expectProblem(await app.inject({ url: `${url}&includeData=true&pageSize=21`, headers: { cookie: alice.cookie } }), 400);
    expect((await app.inject({ url: `${url}&includeData=true&pageSize=20`, headers: { cookie: alice.cookie } })).statusCode).toBe(200);
    expectProblem(await app.inject({ url: `${url}&includeData=yes`, headers: { cookie: alice.cookie } }), 400);
  });

  it('filters by status list, workflow, job and creation time, and never shows another user’s rows', async () => {
    const user = await signUp(app);
    const own = await makeResources(app, user);
    const other = await createWorkflow(app, user, outcomeGraph);
    const [, failed] = await runOutcomes(app, user, other, 2);
    // A run held in an http.request that answers late stays `running` while the filters are read.
    const slow: TestHttpServer = await startTestHttpServer();
    const hanging = await createWorkflow(app, user, {
      nodes: [{ id: 'call', type: 'http.request', params: { method: 'GET', url: `${slow.url}/slow?delay=20000` } }],
      edges: [],
    });
    const engine = startEngine(app);
    const running = await runWorkflow(app, user, hanging);
    await waitForStatus(app, user, running.id, ['running']);
    try {
    const ids = async (query: string, caller: SignedInUser = user) =>
      (await app.inject({ url: `/api/v1/executions?${query}`, headers: { cookie: caller.cookie } })).json().items.map((item: { id: string }) => item.id);

    expect((await ids('status=failed,running')).sort()).toEqual([running.id, failed?.id, own.execution.id].sort());
    expect(await ids(`jobId=${own.job.id}`)).toEqual([own.execution.id]);
    expect(await ids(`workflowId=${other}`)).toHaveLength(2);
    expect(await ids(`createdAfter=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).toEqual([]);
    expect(await ids(`createdBefore=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).toHaveLength(4);
    // Someone else's workflow or job as a filter is an empty page, never their rows.
    expect(await ids(`workflowId=${resources.workflow.id}`)).toEqual([]);
    expect(await ids(`jobId=${resources.job.id}`, bob)).toEqual([]);
    expect(await ids('', bob)).toEqual([]);
    expectProblem(await app.inject({ url: '/api/v1/executions?status=failed,exploded', headers: { cookie: user.cookie } }), 400);
    expectProblem(await app.inject({ url: '/api/v1/executions?sortBy=status', headers: { cookie: user.cookie } }), 400);
    } finally {
      await app.inject({ method: 'POST', url: `/api/v1/executions/${running.id}/cancel`, headers: { cookie: user.cookie } });
      await engine.stop(2_000);
      await slow.close();
    }
  });

  it('answers another user’s execution and steps exactly like a missing one', async () => {
    const missing = '00000000-0000-4000-8000-000000000000';
    for (const suffix of ['', '/steps']) {
      const theirs = expectProblem(await app.inject({ url: `/api/v1/executions/${resources.execution.id}${suffix}`, headers: { cookie: bob.cookie } }), 404);
      const none = expectProblem(await app.inject({ url: `/api/v1/executions/${missing}${suffix}`, headers: { cookie: bob.cookie } }), 404);
      expect({ ...theirs, detail: '', requestId: '' }).toEqual({ ...none, detail: '', requestId: '' });
    }
  });

  it('walks every execution once by cursor, newest or oldest first, with and without a filter', async () => {
    const user = await signUp(app);
    const own = await makeResources(app, user);
    const ownExecution = (await app.inject({ url: `/api/v1/executions/${own.execution.id}`, headers: { cookie: user.cookie } })).json<{ id: string; status: string; createdAt: string }>();
    const created = [ownExecution, ...(await runOutcomes(app, user, await createWorkflow(app, user, outcomeGraph), 7))];
    const walk = async (query: string) => {
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const url = `/api/v1/executions?pageSize=3&${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
        const page = (await app.inject({ url, headers: { cookie: user.cookie } })).json() as { items: { id: string; createdAt: string }[]; nextCursor: string | null };
        seen.push(...page.items.map((item) => item.id));
        cursor = page.nextCursor;
        if (seen.length > created.length + 3) throw new Error(`the walk does not end: ${query}`);
      } while (cursor);
      return seen;
    };
    // The expected order: creation time, then id (rows made in the same millisecond).
    const byCreation = [...created].sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt) || a.id.localeCompare(b.id));
    const oldestFirst = byCreation.map((row) => row.id);
    expect(await walk('sortDirection=asc')).toEqual(oldestFirst);
    expect(await walk('sortDirection=desc')).toEqual([...oldestFirst].reverse());
    const failedOldestFirst = byCreation.filter((row) => row.status === 'failed').map((row) => row.id);
    expect(failedOldestFirst.length).toBeGreaterThan(3);
    expect(await walk('sortDirection=asc&status=failed')).toEqual(failedOldestFirst);
    expect(await walk('sortDirection=desc&status=failed')).toEqual([...failedOldestFirst].reverse());
  });

  it('keeps a deleted job’s executions, and deletes a workflow’s executions with it', async () => {
    const user = await signUp(app);
    const own = await makeResources(app, user);
    const headers = { cookie: user.cookie };
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/jobs/${own.job.id}`, headers })).statusCode).toBe(204);
    expect((await app.inject({ url: `/api/v1/executions/${own.execution.id}`, headers })).json().jobId).toBeNull();
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${own.workflow.id}`, headers })).statusCode).toBe(204);
    expectProblem(await app.inject({ url: `/api/v1/executions/${own.execution.id}`, headers }), 404);
  });
});
