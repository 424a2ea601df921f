import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { Engine } from '../src/engine/engine.js';
import { createWorkflow, eventually, runWorkflow, startEngine, startTestHttpServer, waitForStatus, type TestHttpServer } from './engine-helpers.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';

describe("one user's share of the engine", () => {
  let app: App;
  let engine: Engine;
  let upstream: TestHttpServer;
  let hog: SignedInUser;
  let neighbour: SignedInUser;

  beforeAll(async () => {
    app = await buildTestApp();
    upstream = await startTestHttpServer();
    // Four workers, at most two of them for any one user.
    engine = startEngine(app, { ENGINE_CONCURRENCY: '4', ENGINE_USER_CONCURRENCY: '2' });
    hog = await signUp(app);
    neighbour = await signUp(app);
  });
  afterAll(async () => {
    await engine.stop(1_000);
    await upstream.close();
    await app.close();
  });

  const runningOf = async (user: SignedInUser) => {
    const page = await app.inject({ url: '/api/v1/executions?status=running&pageSize=100', headers: { cookie: user.cookie } });
    return page.json<{ items: unknown[] }>().items.length;
  };

  it("runs another user's work while one user's runs hang, and never more than the cap of one user at once", async () => {
    const hanging = await createWorkflow(app, hog, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: `${upstream.url}/hang?delay=60000`, timeoutMs: 60_000 } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const hogRuns = [];
    for (let index = 0; index < 4; index++) hogRuns.push(await runWorkflow(app, hog, hanging));
    await eventually(async () => upstream.requests.filter((request) => request.path === '/hang').length >= 2, 10_000, 'two hanging calls');

    const trivial = await createWorkflow(app, neighbour, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'add', type: 'transform', params: { expression: '1 + 1' } },
      ],
      edges: [{ source: 'start', target: 'add' }],
    });
    const neighbourRun = await runWorkflow(app, neighbour, trivial);
    const done = await waitForStatus(app, neighbour, neighbourRun.id, ['completed', 'failed'], 3_000);
    expect(done.status).toBe('completed');

    // The hog's other two wait for its own slots, though two of the four workers are free.
    expect(await runningOf(hog)).toBe(2);
    expect(upstream.requests.filter((request) => request.path === '/hang')).toHaveLength(2);

    for (const run of hogRuns) {
      await app.inject({ method: 'POST', url: `/api/v1/executions/${run.id}/cancel`, headers: { cookie: hog.cookie } });
    }
  }, 30_000);

});

describe("one user's share of the scheduler", () => {
  let app: App;
  let hog: SignedInUser;
  let neighbour: SignedInUser;

  // No engine here: the test fires the jobs itself, batch by batch.
  beforeAll(async () => {
    app = await buildTestApp();
    hog = await signUp(app);
    neighbour = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  it("fires every user's most overdue job before anyone's second, whatever one user has due", async () => {
    const scheduledGraph = { nodes: [{ id: 'start', type: 'trigger.schedule' }], edges: [] };
    const createJobs = async (user: SignedInUser, count: number) => {
      const workflowId = await createWorkflow(app, user, scheduledGraph);
      const ids: string[] = [];
      for (let index = 0; index < count; index++) {
        const response = await app.inject({
          method: 'POST',
          url: '/api/v1/jobs',
          headers: { cookie: user.cookie },
          payload: { name: `every minute ${index}`, workflowId, cron: '* * * * *', status: 'ACTIVE' },
        });
        ids.push(response.json<{ id: string }>().id);
      }
      return ids;
    };
    // Only the clock is moved: the hog's thirty jobs are long overdue, the neighbour's just due.
    const hogJobs = await createJobs(hog, 30);
    const [neighbourJob] = await createJobs(neighbour, 1);
    await app.database.sql`update jobs set next_run_at = now() - interval '10 minutes' where id = any(${hogJobs}::uuid[])`;
    await app.database.sql`update jobs set next_run_at = now() - interval '1 second' where id = ${neighbourJob as string}`;

    const firstBatch = await app.executions.fireDueJobs(5);
    expect(firstBatch).toHaveLength(5);
    expect(firstBatch.map((fired) => fired.jobId)).toContain(neighbourJob);
    // The rest of the hog's jobs follow in later batches; none is lost or fired twice.
    const fired = [...firstBatch];
    for (let batch = await app.executions.fireDueJobs(5); batch.length > 0; batch = await app.executions.fireDueJobs(5)) fired.push(...batch);
    const firedJobs = fired.map((job) => job.jobId).filter((id) => hogJobs.includes(id) || id === neighbourJob);
    expect(new Set(firedJobs).size).toBe(31);
    expect(firedJobs).toHaveLength(31);
  }, 30_000);
});

describe("one user's backlog", () => {
  let app: App;
  let busy: SignedInUser;
  let other: SignedInUser;

  // No engine: runs stay waiting, so the backlog builds up.
  beforeAll(async () => {
    app = await buildTestApp({ ENGINE_USER_WAITING_MAX: '3' });
    busy = await signUp(app);
    other = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  it('refuses runs and retries past the waiting bound (429 with Retry-After), skips scheduled runs, and lets go as runs end', async () => {
    const graph = { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] };
    const workflowId = await createWorkflow(app, busy, graph);
    const run = () => app.inject({ method: 'POST', url: `/api/v1/workflows/${workflowId}/run`, headers: { cookie: busy.cookie }, payload: {} });
    const accepted: string[] = [];
    for (let index = 0; index < 3; index++) {
      const response = await run();
      expect(response.statusCode).toBe(202);
      accepted.push(response.json<{ id: string }>().id);
    }
    const refused = await run();
    expect(expectProblem(refused, 429).code).toBe('TOO_MANY_WAITING');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);

    // A cancelled run can be retried only when there is room, and cancelling makes room.
    const cancel = (id: string) => app.inject({ method: 'POST', url: `/api/v1/executions/${id}/cancel`, headers: { cookie: busy.cookie } });
    expect((await cancel(accepted[0] as string)).statusCode).toBe(200);
    expect((await run()).statusCode).toBe(202);
    const retry = await app.inject({ method: 'POST', url: `/api/v1/executions/${accepted[0]}/retry`, headers: { cookie: busy.cookie } });
    expect(expectProblem(retry, 429).code).toBe('TOO_MANY_WAITING');

    // The scheduler skips the busy user's slot; another user's job fires.
    const jobOf = async (user: SignedInUser, workflow: string) =>
      (
        await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { cookie: user.cookie }, payload: { name: 'often', workflowId: workflow, cron: '* * * * *', status: 'ACTIVE' } })
      ).json<{ id: string }>().id;
    const busyJob = await jobOf(busy, workflowId);
    const otherJob = await jobOf(other, await createWorkflow(app, other, graph));
    await app.database.sql`update jobs set next_run_at = now() - interval '1 second' where id = any(${[busyJob, otherJob]}::uuid[])`;
    const fired = (await app.executions.fireDueJobs()).map((job) => job.jobId);
    expect(fired).toContain(otherJob);
    expect(fired).not.toContain(busyJob);
  });
});
