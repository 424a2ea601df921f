import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import * as executions from '../src/routes/executions/repository.js';
import { buildTestApp, expectProblem, sampleGraph, signUp, type SignedInUser } from './helpers.js';
import { makeResources } from './fixtures.js';

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
    expect(execution).toMatchObject({ id: resources.execution.id, workflowId: resources.workflow.id, jobId: resources.job.id, trigger: 'schedule', status: 'failed', input: { n: 1 } });
    expect(execution).not.toHaveProperty('userId');
    expect(execution).not.toHaveProperty('workflowSnapshot');

    const steps = (await app.inject({ url: `/api/v1/executions/${resources.execution.id}/steps?sortDirection=asc`, headers: { cookie: alice.cookie } })).json();
    expect(steps.items.map((step: { nodeId: string; status: string; attempt: number }) => [step.nodeId, step.status, step.attempt])).toEqual([
      ['start', 'completed', 1],
      ['shape', 'failed', 2],
    ]);
    const failed = (await app.inject({ url: `/api/v1/executions/${resources.execution.id}/steps?status=failed`, headers: { cookie: alice.cookie } })).json();
    expect(failed.items.map((step: { nodeId: string }) => step.nodeId)).toEqual(['shape']);
  });

  it('filters by status list, workflow, job and creation time, and never shows another user’s rows', async () => {
    const user = await signUp(app);
    const own = await makeResources(app, user);
    const make = (status: 'running' | 'failed' | 'completed') =>
      executions
        .create(app.db, user.id, { workflowId: own.workflow.id, workflowVersion: 1, workflowSnapshot: sampleGraph, trigger: 'manual', status });
    const running = await make('running');
    const failed = await make('failed');
    await make('completed');
    const ids = async (query: string, caller: SignedInUser = user) =>
      (await app.inject({ url: `/api/v1/executions?${query}`, headers: { cookie: caller.cookie } })).json().items.map((item: { id: string }) => item.id);

    expect((await ids('status=failed,running')).sort()).toEqual([running.id, failed.id, own.execution.id].sort());
    expect(await ids(`jobId=${own.job.id}`)).toEqual([own.execution.id]);
    expect(await ids(`workflowId=${own.workflow.id}`)).toHaveLength(4);
    expect(await ids(`createdAfter=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).toEqual([]);
    expect(await ids(`createdBefore=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).toHaveLength(4);
    // Someone else's workflow or job as a filter is an empty page, never their rows.
    expect(await ids(`workflowId=${resources.workflow.id}`)).toEqual([]);
    expect(await ids(`jobId=${resources.job.id}`, bob)).toEqual([]);
    expect(await ids('', bob)).toEqual([]);
    expectProblem(await app.inject({ url: '/api/v1/executions?status=failed,exploded', headers: { cookie: user.cookie } }), 400);
    expectProblem(await app.inject({ url: '/api/v1/executions?sortBy=status', headers: { cookie: user.cookie } }), 400);
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
    const created = [own.execution];
    for (let index = 0; index < 7; index++) {
      const status = index % 2 === 0 ? 'completed' : 'failed';
      created.push(await executions.create(app.db, user.id, { workflowId: own.workflow.id, workflowVersion: 1, workflowSnapshot: sampleGraph, trigger: 'manual', status }));
    }
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
    const byCreation = [...created].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.id.localeCompare(b.id));
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
