import type { App } from '../src/app.js';
import * as executions from '../src/routes/executions/repository.js';
import { sampleGraph, type SignedInUser } from './helpers.js';

/** A workflow, a job and an execution with two steps, owned by `user`, made through the real routes and repositories. */
export async function makeResources(app: App, user: SignedInUser) {
  const headers = { cookie: user.cookie };
  const workflow = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'fixture', ...sampleGraph } })).json<{ id: string; version: number }>();
  const job = (
    await app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: { name: 'fixture job', workflowId: workflow.id, cron: '0 * * * *' } })
  ).json<{ id: string }>();
  const execution = await executions.create(app.db, user.id, {
    workflowId: workflow.id,
    workflowVersion: workflow.version,
    workflowSnapshot: sampleGraph,
    jobId: job.id,
    trigger: 'schedule',
    input: { n: 1 },
    // Not runnable: engines of other test files must leave this recorded run alone.
    status: 'failed',
  });
  await executions.upsertStep(app.db, user.id, execution.id, { nodeId: 'start', status: 'completed', attempt: 1, output: { n: 1 } });
  await executions.upsertStep(app.db, user.id, execution.id, { nodeId: 'shape', status: 'failed', attempt: 2, error: { message: 'boom' } });
  const apiKey = (await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers, payload: { name: 'fixture key' } })).json<{ id: string; key: string }>();
  return { workflow, job, execution, apiKey };
}
