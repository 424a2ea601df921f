import { randomBytes } from 'node:crypto';
import type { App } from '../src/app.js';
import { eventually, startEngine, waitForStatus } from './engine-helpers.js';
import type { SignedInUser } from './helpers.js';

/**
 * A graph whose scheduled run ends failed after a completed step, as production makes it: `start`
 * completes with the schedule's details; `shape` calls a port that refuses (127.0.0.1:9, the
 * discard port, allowed to the test engine) and fails for good on its second attempt.
 */
export const failingScheduledGraph = {
  nodes: [
    { id: 'start', type: 'trigger.schedule', params: {} },
    { id: 'shape', type: 'http.request', params: { method: 'GET', url: 'http://127.0.0.1:9/refused' }, retry: { maxAttempts: 2, backoffMs: 0 } },
  ],
  edges: [{ source: 'start', target: 'shape' }],
};

/**
 * A workflow, a job and an execution of that job with two steps, owned by `user`, made through the
 * real routes, the scheduler and the engine; an event subscription to the workflow's failed
 * executions, made before the job fires, and the message its failed run wrote to the outbox (an
 * event delivery); an API key, a variable, a secret variable and a connection (with a secret); a
 * workflow whose trigger.webhook node checks a header against the secret variable, and one
 * delivery to its webhook URL that fails the check: `rejected`, so it started nothing and the
 * job's run stays the user's only execution.
 */
export async function makeResources(app: App, user: SignedInUser) {
  const headers = { cookie: user.cookie };
  const workflow = (
    await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'fixture', ...failingScheduledGraph } })
  ).json<{ id: string; version: number }>();
  const job = (
    await app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: { name: 'fixture job', workflowId: workflow.id, cron: '0 * * * *', status: 'ACTIVE' } })
  ).json<{ id: string }>();
  // `.invalid` never resolves (RFC 6761): the fixture's messages are attempted and fail, and reach no one.
  const eventSubscription = (
    await app.inject({
      method: 'POST',
      url: '/api/v1/event-subscriptions',
      headers,
      payload: { url: 'https://hooks.example.invalid/fixture', events: ['execution.failed'], workflowId: workflow.id },
    })
  ).json<{ id: string; secret: string }>();
  const execution = await fireJob(app, user, job.id);
  const [eventMessage] = (await app.inject({ url: `/api/v1/event-subscriptions/${eventSubscription.id}/deliveries`, headers })).json<{ items: { id: string }[] }>().items;
  if (!eventMessage) throw new Error('the failed run wrote no event message');
  const eventDelivery = { id: eventMessage.id };
  const apiKey = (await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers, payload: { name: 'fixture key' } })).json<{ id: string; key: string }>();
  // Names are unique per user: every call makes new ones.
  const suffix = randomBytes(4).toString('hex');
  const variable = (await app.inject({ method: 'POST', url: '/api/v1/variables', headers, payload: { key: `FIXTURE_${suffix}`, value: 'fixture value' } })).json<{ id: string }>();
  const secretVariable = (
    await app.inject({ method: 'POST', url: '/api/v1/variables', headers, payload: { key: `FIXTURE_SECRET_${suffix}`, value: 'fixture secret value', secret: true } })
  ).json<{ id: string }>();
  const connection = (
    await app.inject({
      method: 'POST',
      url: '/api/v1/connections',
      headers,
      payload: { name: `fixture-${suffix}`, baseUrl: 'https://api.example.com/v1', auth: { type: 'bearer', secret: 'fixture-token' } },
    })
  ).json<{ id: string }>();
  const webhookWorkflow = (
    await app.inject({
      method: 'POST',
      url: '/api/v1/workflows',
      headers,
      payload: {
        name: 'fixture webhook',
        nodes: [{ id: 'hook', type: 'trigger.webhook', params: { verify: { scheme: 'header', header: 'x-fixture-token', secretVariable: `FIXTURE_SECRET_${suffix}` } } }],
        edges: [],
      },
    })
  ).json<{ id: string; webhook: { url: string; hookId: string } }>();
  // The sender needs no caller (the URL is the capability); this one sends the wrong token.
  const delivered = await app.inject({
    method: 'POST',
    url: new URL(webhookWorkflow.webhook.url).pathname,
    headers: { 'content-type': 'application/json', 'x-fixture-token': 'not the secret' },
    payload: { fixture: suffix },
  });
  if (delivered.statusCode !== 401) throw new Error(`the fixture delivery answered ${delivered.statusCode}: ${delivered.body}`);
  const [rejected] = (await app.inject({ url: `/api/v1/workflows/${webhookWorkflow.id}/deliveries`, headers })).json<{ items: { id: string }[] }>().items;
  if (!rejected) throw new Error('the fixture delivery was not recorded');
  const delivery = { id: rejected.id };
  return { workflow, job, execution: { id: execution.id }, eventSubscription, eventDelivery, apiKey, variable, secretVariable, connection, webhookWorkflow, delivery };
}

/** Makes the job due and answers the id of the execution the scheduler fired for it. */
export async function fireJobExecution(app: App, user: SignedInUser, jobId: string): Promise<string> {
  // Only the clock is moved: the scheduler then fires the job as it would at its time.
  await app.database.sql`update jobs set next_run_at = now() - interval '1 second' where id = ${jobId}`;
  // Any replica's scheduler may fire it (another test file's engine too): look for its execution.
  return eventually(
    async () => {
      await app.executions.fireDueJobs();
      const page = (await app.inject({ url: `/api/v1/executions?jobId=${jobId}`, headers: { cookie: user.cookie } })).json<{ items: { id: string }[] }>();
      return page.items[0]?.id;
    },
    10_000,
    'the job fired',
  );
}

/** Makes the job due, fires it through the scheduler and runs its execution to its end with an engine. */
export async function fireJob(app: App, user: SignedInUser, jobId: string) {
  const executionId = await fireJobExecution(app, user, jobId);
  const engine = startEngine(app);
  try {
    return await waitForStatus(app, user, executionId, ['completed', 'failed', 'cancelled']);
  } finally {
    await engine.stop(2_000);
  }
}
