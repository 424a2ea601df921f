import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { Engine } from '../src/engine/engine.js';
import { createWorkflow, runWorkflow, startEngine, stepsOf, waitForStatus } from './engine-helpers.js';
import { buildTestApp, signUp, type SignedInUser } from './helpers.js';

// A delay parks its execution (and holds its job) until it is due: a templated `until` or `ms`
// beyond the longest wait (30 days, as for a literal `ms`) fails its step instead of parking for ever.
describe('delay bounds at run time', () => {
  let app: App;
  let engine: Engine;
  let user: SignedInUser;
  let workflowId: string;

  beforeAll(async () => {
    app = await buildTestApp();
    engine = startEngine(app);
    user = await signUp(app);
    workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'wait', type: 'delay', params: { until: '{{ input.until }}' } },
      ],
      edges: [{ source: 'start', target: 'wait' }],
    });
  });
  afterAll(async () => {
    await engine?.stop(5_000);
    await app?.close();
  });

  it.each(['9999-12-31', new Date(Date.now() + 31 * 86_400_000).toISOString()])('fails the step for until %s, with DELAY_TOO_LONG', async (until) => {
    const started = await runWorkflow(app, user, workflowId, { until });
    const ended = await waitForStatus(app, user, started.id, ['completed', 'failed', 'paused']);
    expect(ended.status).toBe('failed');
    const wait = (await stepsOf(app, user, started.id)).wait;
    expect(wait?.status).toBe('failed');
    // One attempt: waiting longer will not make the time nearer.
    expect(wait?.attempt).toBe(1);
    expect(wait?.error).toMatchObject({ message: expect.stringMatching(/at most 30 days ahead/) });
    expect(JSON.stringify(wait?.error)).toContain('DELAY_TOO_LONG');
  });

  it('still waits for a time within the bound', async () => {
    const until = new Date(Date.now() + 300).toISOString();
    const started = await runWorkflow(app, user, workflowId, { until });
    const ended = await waitForStatus(app, user, started.id, ['completed', 'failed']);
    expect(ended.status).toBe('completed');
    expect((await stepsOf(app, user, started.id)).wait?.output).toEqual({ waitedUntil: until });
  });

  it('fails a templated ms beyond the bound the same way', async () => {
    const id = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'wait', type: 'delay', params: { ms: '{{ input.ms }}' } },
      ],
      edges: [{ source: 'start', target: 'wait' }],
    });
    const started = await runWorkflow(app, user, id, { ms: 31 * 86_400_000 });
    expect((await waitForStatus(app, user, started.id, ['completed', 'failed', 'paused'])).status).toBe('failed');
    expect(JSON.stringify((await stepsOf(app, user, started.id)).wait?.error)).toContain('DELAY_TOO_LONG');
  });
});
