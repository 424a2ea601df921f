import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { StepChange } from '../src/executions/lifecycle.js';
import { buildTestApp, signUp, type SignedInUser } from './helpers.js';
import { createWorkflow, getExecution, runWorkflow, stepsOf } from './engine-helpers.js';

/**
 * Ends of one user's runs that come while another of theirs is being written are written together
 * (lifecycle.ts, writeEnd). Each must keep its own outcome: fenced on its own lease, refused alone
 * when its value is refused, and counted once in the user's usage.
 */

describe('ends of one user written together', () => {
  let app: App;
  let user: SignedInUser;

  beforeAll(async () => {
    app = await buildTestApp({ ENGINE_ENABLED: 'false' });
    user = await signUp(app);
  });
  afterAll(async () => {
    await app?.close();
  });

  /** `count` runs of a one-node workflow, claimed by `workerId`. */
  async function claimRuns(workerId: string, count: number): Promise<string[]> {
    const workflowId = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] });
    const ids: string[] = [];
    for (let index = 0; index < count; index += 1) ids.push((await runWorkflow(app, user, workflowId, { index })).id);
    const claimed = await app.executions.claim(workerId, 100, 30_000, 100);
    for (const execution of claimed) if (!ids.includes(execution.id)) await app.executions.release(workerId, execution, 'pending', null);
    expect(claimed.filter((execution) => ids.includes(execution.id))).toHaveLength(count);
    return ids;
  }

  const startStep = (output: unknown): StepChange => ({ nodeId: 'start', status: 'completed', attempt: 1, output, started: true, finished: true });

  async function usageMatchesRows(): Promise<void> {
    const sql = app.database.sql;
    const [usage] = await sql<{ executions: number; steps: number }[]>`select executions::int, steps::int from user_usage where user_id = ${user.id}`;
    const [rows] = await sql<{ executions: number; steps: number }[]>`
      select (select count(*)::int from executions where user_id = ${user.id}) as executions,
             (select count(*)::int from execution_steps s join executions e on e.id = s.execution_id where e.user_id = ${user.id}) as steps`;
    expect(usage).toEqual(rows);
  }

  it('ends each run as asked, and a run whose lease is gone not at all', async () => {
    const workerId = 'batched-ends-worker';
    const ids = await claimRuns(workerId, 5);
    const lost = ids[1] as string;
    const kept = ids.filter((id) => id !== lost);
    // Started together: the first is written alone, the others (the lost one among them) wait for it and go in one transaction.
    const results = await Promise.all(
      ids.map((id) => {
        if (id === lost) return app.executions.finish('another-worker', { id, userId: user.id }, { status: 'completed', output: { lost: true } }, [startStep({ lost: true })]);
        const index = kept.indexOf(id);
        return app.executions.finish(workerId, { id, userId: user.id }, index === 0 ? { status: 'failed', error: { message: 'no' } } : { status: 'completed', output: { index } }, [startStep({ index })]);
      }),
    );
    expect(results).toEqual([true, false, true, true, true]);

    const lostView = await getExecution(app, user, lost);
    expect(lostView.status).toBe('running');
    expect((await stepsOf(app, user, lost)).start).toBeUndefined();
    for (const [index, id] of kept.entries()) {
      const view = await getExecution(app, user, id);
      expect(view.status).toBe(index === 0 ? 'failed' : 'completed');
      if (index > 0) expect(view.output).toEqual({ index });
      expect((await stepsOf(app, user, id)).start).toMatchObject({ status: 'completed', output: { index } });
    }
    await app.executions.finish(workerId, { id: lost, userId: user.id }, { status: 'completed', output: null });
    await usageMatchesRows();
  });

  it('fails only the run whose value the database refuses, when it is written with others', async () => {
    const workerId = 'batched-ends-refused';
    const ids = await claimRuns(workerId, 4);
    const refusedId = ids[2] as string;
    const results = await Promise.all(
      ids.map((id, index) => app.executions.finish(workerId, { id, userId: user.id }, { status: 'completed', output: { index } }, [startStep(id === refusedId ? { text: 'a\u0000b' } : { index })])),
    );
    expect(results).toEqual(ids.map((id) => id !== refusedId));

    for (const [index, id] of ids.entries()) {
      const view = await getExecution(app, user, id);
      if (id === refusedId) {
        expect(view.status).toBe('failed');
        expect(view.error).toMatchObject({ code: 'UNSTORABLE_VALUE' });
      } else {
        expect(view.status).toBe('completed');
        expect(view.output).toEqual({ index });
      }
    }
    await usageMatchesRows();
  });
});
