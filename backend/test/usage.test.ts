import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { Engine } from '../src/engine/engine.js';
import { createWorkflow, runWorkflow, startEngine, waitForStatus } from './engine-helpers.js';
import { fireJobExecution } from './fixtures.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';

interface UsageView {
  workflows: number;
  jobs: number;
  executions: number;
  steps: number;
  payloadBytes: number;
  payloadBytesLimit: number;
}

const graph = (say: string) => ({
  nodes: [
    { id: 'start', type: 'trigger.manual' },
    { id: 'say', type: 'transform', params: { expression: `"${say}" & " " & $string(input)` } },
    { id: 'check', type: 'condition', params: { expression: 'steps.say != ""' } },
  ],
  edges: [
    { source: 'start', target: 'say' },
    { source: 'say', target: 'check' },
  ],
});

describe('usage', () => {
  let app: App;
  let engine: Engine;
  let user: SignedInUser;
  beforeAll(async () => {
    app = await buildTestApp({ USER_STORAGE_MAX_BYTES: '60000' });
    engine = startEngine(app);
    user = await signUp(app);
  });
  afterAll(async () => {
    await engine.stop(2_000);
    await app.close();
  });

  const usage = async (who: SignedInUser = user) => (await app.inject({ url: '/api/v1/usage', headers: { cookie: who.cookie } })).json<UsageView>();
  /** The same figures counted from the rows themselves: what the triggers must agree with. */
  const counted = async (who: SignedInUser = user) => {
    const [row] = await app.database.sql<Omit<UsageView, 'payloadBytesLimit'>[]>`
      select (select count(*)::int from workflows where user_id = ${who.id}) as workflows,
             (select count(*)::int from jobs where user_id = ${who.id}) as jobs,
             (select count(*)::int from executions where user_id = ${who.id}) as executions,
             (select count(*)::int from execution_steps s join executions e on e.id = s.execution_id where e.user_id = ${who.id}) as steps,
             ((select coalesce(sum(octet_length(nodes::text) + octet_length(edges::text)), 0) from workflow_versions where user_id = ${who.id})
              + (select coalesce(sum(coalesce(octet_length(input::text), 0) + coalesce(octet_length(output::text), 0) + coalesce(octet_length(error::text), 0)), 0)
                   from executions where user_id = ${who.id})
              + (select coalesce(sum(coalesce(octet_length(s.input::text), 0) + coalesce(octet_length(s.output::text), 0) + coalesce(octet_length(s.error::text), 0)), 0)
                   from execution_steps s join executions e on e.id = s.execution_id where e.user_id = ${who.id}))::float8 as "payloadBytes"`;
    return row;
  };
  const stored = ({ workflows, jobs, executions, steps, payloadBytes }: UsageView) => ({ workflows, jobs, executions, steps, payloadBytes });

  it('counts what the user stores, exactly, through saves, runs, retries, the scheduler and cascading deletes', async () => {
    expect(await usage()).toMatchObject({ workflows: 0, jobs: 0, executions: 0, steps: 0, payloadBytes: 0, payloadBytesLimit: 60_000 });

    const first = await createWorkflow(app, user, graph('hello'));
    const second = await createWorkflow(app, user, graph('bye'));
    const patched = await app.inject({ method: 'PATCH', url: `/api/v1/workflows/${first}`, headers: { cookie: user.cookie }, payload: graph('hi there') });
    expect(patched.statusCode).toBe(200);
    const job = await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { cookie: user.cookie }, payload: { name: 'daily', workflowId: second, cron: '0 9 * * *', status: 'ACTIVE' } });
    expect(job.statusCode).toBe(201);
    for (const input of [{ n: 1 }, { n: 2 }]) {
      const run = await runWorkflow(app, user, first, input);
      await waitForStatus(app, user, run.id, ['completed']);
    }
    const failing = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.manual' }, { id: 'bad', type: 'transform', params: { expression: '$error("no")' } }], edges: [{ source: 'start', target: 'bad' }] });
    const failed = await runWorkflow(app, user, failing);
    await waitForStatus(app, user, failed.id, ['failed']);
    const retry = await app.inject({ method: 'POST', url: `/api/v1/executions/${failed.id}/retry`, headers: { cookie: user.cookie } });
    expect(retry.statusCode).toBe(202);
    await waitForStatus(app, user, retry.json<{ id: string }>().id, ['failed']);
    const scheduled = await fireJobExecution(app, user, job.json<{ id: string }>().id);
    await waitForStatus(app, user, scheduled, ['completed', 'failed']);

    const afterWork = await usage();
    expect(afterWork).toMatchObject({ workflows: 3, jobs: 1 });
    expect(afterWork.executions).toBeGreaterThanOrEqual(5);
    expect(afterWork.payloadBytes).toBeGreaterThan(0);
    expect(stored(afterWork)).toEqual(await counted());

    // Deleting a workflow takes its versions, jobs, executions and steps with it, and their share.
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${second}`, headers: { cookie: user.cookie } })).statusCode).toBe(204);
    expect(stored(await usage())).toEqual(await counted());
    for (const id of [first, failing]) await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${id}`, headers: { cookie: user.cookie } });
    expect(await usage()).toMatchObject({ workflows: 0, jobs: 0, executions: 0, steps: 0, payloadBytes: 0 });
  });

  it('counts steps as they are written: a paused run and a retry\'s copied steps count before they end', async () => {
    const parked = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'big', type: 'transform', params: { expression: '$pad("", 5000, "x")' } },
        { id: 'wait', type: 'delay', params: { ms: 3_600_000 } },
      ],
      edges: [
        { source: 'start', target: 'big' },
        { source: 'big', target: 'wait' },
      ],
    });
    const paused = await runWorkflow(app, user, parked);
    await waitForStatus(app, user, paused.id, ['paused']);
    const whileParked = await usage();
    expect(whileParked.payloadBytes).toBeGreaterThan(5_000);
    expect(stored(whileParked)).toEqual(await counted());

    // A retry from the failed step copies the completed ones into a new, pending execution.
    const failing = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'big', type: 'transform', params: { expression: '$pad("", 3000, "y")' } },
        { id: 'bad', type: 'transform', params: { expression: '$error("no")' } },
      ],
      edges: [
        { source: 'start', target: 'big' },
        { source: 'big', target: 'bad' },
      ],
    });
    const failed = await runWorkflow(app, user, failing);
    await waitForStatus(app, user, failed.id, ['failed']);
    await engine.stop(2_000);
    try {
      const before = await usage();
      const retry = await app.inject({ method: 'POST', url: `/api/v1/executions/${failed.id}/retry`, headers: { cookie: user.cookie } });
      expect(retry.statusCode).toBe(202);
      const after = await usage();
      expect(after.steps).toBeGreaterThan(before.steps);
      expect(after.payloadBytes - before.payloadBytes).toBeGreaterThan(3_000);
      expect(stored(after)).toEqual(await counted());
    } finally {
      engine = startEngine(app);
    }
    for (const id of [parked, failing]) await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${id}`, headers: { cookie: user.cookie } });
    expect(await usage()).toMatchObject({ workflows: 0, jobs: 0, executions: 0, steps: 0, payloadBytes: 0 });
  });

  it('refuses new runs, retries and saves past the storage quota, skips scheduled runs, and allows them again once data is deleted', async () => {
    const owner = await signUp(app);
    const bystander = await signUp(app);
    const workflowId = await createWorkflow(app, owner, graph('big'));
    const other = await createWorkflow(app, bystander, graph('small'));
    // Runs until the quota is reached: the run that crosses it is accepted (it started under it).
    const big = 'x'.repeat(8_000);
    for (let run = 0; run < 20 && (await usage(owner)).payloadBytes < 60_000; run++) {
      const started = await runWorkflow(app, owner, workflowId, { big });
      await waitForStatus(app, owner, started.id, ['completed']);
    }
    const full = await usage(owner);
    expect(full.payloadBytes).toBeGreaterThanOrEqual(60_000);

    const refusals = [
      await app.inject({ method: 'POST', url: `/api/v1/workflows/${workflowId}/run`, headers: { cookie: owner.cookie }, payload: {} }),
      await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: owner.cookie }, payload: { name: 'more', ...graph('more') } }),
      await app.inject({ method: 'PATCH', url: `/api/v1/workflows/${workflowId}`, headers: { cookie: owner.cookie }, payload: { name: 'renamed' } }),
    ];
    for (const refused of refusals) expect(expectProblem(refused, 409).code).toBe('STORAGE_QUOTA_EXCEEDED');
    // A scheduled run of the owner is skipped (its slot passes); the bystander is not affected.
    const job = await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { cookie: owner.cookie }, payload: { name: 'hourly', workflowId, cron: '0 * * * *', status: 'ACTIVE' } });
    await app.database.sql`update jobs set next_run_at = now() - interval '1 second' where id = ${job.json<{ id: string }>().id}`;
    const fired = await app.executions.fireDueJobs();
    expect(fired.map((entry) => entry.jobId)).not.toContain(job.json<{ id: string }>().id);
    expect((await usage(owner)).executions).toBe(full.executions);
    expect((await runWorkflow(app, bystander, other)).id).toBeTruthy();

    // Deleting the workflow frees the space.
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${workflowId}`, headers: { cookie: owner.cookie } })).statusCode).toBe(204);
    const again = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: owner.cookie }, payload: { name: 'fresh', ...graph('fresh') } });
    expect(again.statusCode).toBe(201);
  });
});
