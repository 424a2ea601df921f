import { randomUUID } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { Engine } from '../src/engine/engine.js';
import {
  createSubscription,
  createWorkflow,
  eventually,
  getExecution,
  runWorkflow,
  startEngine,
  startEventReceiver,
  startTestHttpServer,
  waitForStatus,
  type EventReceiver,
  type ReceivedEvent,
  type TestHttpServer,
} from './engine-helpers.js';
import { buildTestApp, signUp, type SignedInUser } from './helpers.js';

/**
 * The outbox (src/events/outbox.ts): what each transition writes for event subscriptions, in its
 * own statement, and what a receiver verifying signatures as a customer would (the standardwebhooks
 * package) gets from the engine's delivery workers.
 */

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

interface Payload {
  type: string;
  timestamp: string;
  data: Record<string, unknown>;
}

/** Verifies as a receiver would (signature, timestamp within 5 minutes); throws when it does not. */
const verify = (secret: string, event: ReceivedEvent): Payload => new Webhook(secret).verify(event.body, event.headers) as Payload;
const verifies = (secret: string, event: ReceivedEvent): boolean => {
  try {
    verify(secret, event);
    return true;
  } catch {
    return false;
  }
};

describe('the outbox', () => {
  let app: App;
  let engine: Engine;
  let receiver: EventReceiver;
  let server: TestHttpServer;
  let user: SignedInUser;

  beforeAll(async () => {
    // The subscriptions' URLs pass the guard at save too: the app allows the local receiver.
    app = await buildTestApp({ ENGINE_HTTP_ALLOW: '127.0.0.1' });
    engine = startEngine(app);
    receiver = await startEventReceiver();
    server = await startTestHttpServer();
    user = await signUp(app);
  });
  afterAll(async () => {
    await engine.stop(1_000);
    await receiver.close();
    await server.close();
    await app.close();
  });

  const messagesOf = (executionIds: readonly string[]) =>
    app.database.sql<{ type: string; subscriptionId: string; status: string; webhookId: string; id: string }[]>`
      select type, subscription_id as "subscriptionId", status::text as status, webhook_id as "webhookId", id
        from event_messages where execution_id = any(${executionIds as string[]}::uuid[]) order by created_at, type`;

  it('sends every event type, signed, once per change, to the subscriptions that match it', async () => {
    const other = await signUp(app);
    await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key: 'HOOK_TOKEN', value: 'a-hook-token', secret: true } });

    const completes = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'double', type: 'transform', params: { expression: '{ "n": input.n * 2 }' } },
      ],
      edges: [{ source: 'start', target: 'double' }],
    });
    // A step with I/O fails in its own write (writeSteps); a failing transform is written with the finish.
    const failsCalling = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: `${server.url}/broken?status=500` } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const failsComputing = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'parse', type: 'transform', params: { expression: '$number("not a number")' } },
      ],
      edges: [{ source: 'start', target: 'parse' }],
    });
    const slowKey = randomUUID();
    const slow = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'slow', type: 'http.request', params: { method: 'GET', url: `${server.url}/slow?delay=10000&key=${slowKey}` } },
      ],
      edges: [{ source: 'start', target: 'slow' }],
    });
    const hooked = await app.inject({
      method: 'POST',
      url: '/api/v1/workflows',
      headers: { cookie: user.cookie },
      payload: {
        name: 'hooked',
        nodes: [
          { id: 'hook', type: 'trigger.webhook', params: { verify: { scheme: 'header', header: 'X-Hook-Token', secretVariable: 'HOOK_TOKEN' } } },
          { id: 'echo', type: 'transform', params: { expression: 'input.body' } },
        ],
        edges: [{ source: 'hook', target: 'echo' }],
      },
    });
    expect(hooked.statusCode, hooked.body).toBe(201);
    const hook = hooked.json<{ id: string; webhook: { hookId: string } }>();

    const allTypes = ['execution.completed', 'execution.failed', 'execution.cancelled', 'step.failed', 'webhook.rejected'];
    const everything = await createSubscription(app, user, { url: `${receiver.url}/everything`, events: allTypes });
    const stepsOnly = await createSubscription(app, user, { url: `${receiver.url}/steps-only`, events: ['step.failed'] });
    const completedOfSlow = await createSubscription(app, user, { url: `${receiver.url}/completed-of-slow`, events: ['execution.completed'], workflowId: slow });
    const failedOfCalling = await createSubscription(app, user, { url: `${receiver.url}/failed-of-calling`, events: ['execution.failed'], workflowId: failsCalling });
    const disabled = await createSubscription(app, user, { url: `${receiver.url}/disabled`, events: allTypes });
    const patched = await app.inject({ method: 'PATCH', url: `/api/v1/event-subscriptions/${disabled.id}`, headers: { cookie: user.cookie }, payload: { enabled: false } });
    expect(patched.statusCode, patched.body).toBe(200);
    const otherUsers = await createSubscription(app, other, { url: `${receiver.url}/other-user`, events: allTypes });

    const completed = await runWorkflow(app, user, completes, { n: 21 });
    const failedCalling = await runWorkflow(app, user, failsCalling);
    const failedComputing = await runWorkflow(app, user, failsComputing);
    const cancelled = await runWorkflow(app, user, slow);
    await eventually(async () => server.countFor(slowKey) === 1, 10_000, 'the slow request');
    const cancel = await app.inject({ method: 'POST', url: `/api/v1/executions/${cancelled.id}/cancel`, headers: { cookie: user.cookie } });
    expect(cancel.statusCode, cancel.body).toBe(200);
    const rejected = await app.inject({ method: 'POST', url: `/api/hooks/${hook.webhook.hookId}`, headers: { 'content-type': 'application/json' }, payload: '{"a":1}' });
    expect(rejected.statusCode).toBe(401);

    for (const [id, status] of [
      [completed.id, 'completed'],
      [failedCalling.id, 'failed'],
      [failedComputing.id, 'failed'],
      [cancelled.id, 'cancelled'],
    ] as const) {
      expect((await waitForStatus(app, user, id, [status])).status).toBe(status);
    }
    // Seven messages for the subscription to everything: 3 execution ends, 2 failed steps, a cancel, a rejection.
    await eventually(async () => receiver.on('/everything').length >= 7, 15_000, 'seven messages at /everything');
    await eventually(async () => receiver.on('/steps-only').length >= 2 && receiver.on('/failed-of-calling').length >= 1, 15_000, 'the filtered subscriptions’ messages');
    // Time for anything sent twice, or sent where it should not be, to arrive too.
    await new Promise((resolve) => setTimeout(resolve, 1_500));

    const everythingGot = receiver.on('/everything');
    const payloads = everythingGot.map((event) => verify(everything.secret, event));
    // Signed with this subscription's secret only.
    for (const event of everythingGot) expect(verifies(stepsOnly.secret, event)).toBe(false);
    const summary = payloads.map((payload) => `${payload.type} ${String(payload.data.executionId ?? payload.data.deliveryId)} ${String(payload.data.nodeId ?? '')}`.trim()).sort();
    const deliveryId = payloads.find((payload) => payload.type === 'webhook.rejected')?.data.deliveryId;
    expect(summary).toEqual(
      [
        `execution.completed ${completed.id}`,
        `execution.failed ${failedCalling.id}`,
        `execution.failed ${failedComputing.id}`,
        `execution.cancelled ${cancelled.id}`,
        `step.failed ${failedCalling.id} call`,
        `step.failed ${failedComputing.id} parse`,
        `webhook.rejected ${String(deliveryId)}`,
      ].sort(),
    );
    // One webhook-id per message, each once: no message was sent twice.
    expect(new Set(everythingGot.map((event) => event.headers['webhook-id'])).size).toBe(7);
    for (const event of everythingGot) {
      expect(event.headers['content-type']).toBe('application/json');
      expect(event.headers['webhook-id']).toMatch(/^msg_[0-9a-f-]{36}$/);
      expect(Number(event.headers['webhook-timestamp'])).toBeCloseTo(event.at / 1000, -1);
    }

    const byType = (type: string, executionId?: string) => payloads.find((payload) => payload.type === type && (executionId === undefined || payload.data.executionId === executionId));
    const completedView = await getExecution(app, user, completed.id);
    const completedEvent = byType('execution.completed');
    expect(completedEvent).toEqual({
      type: 'execution.completed',
      timestamp: expect.stringMatching(ISO),
      data: {
        executionId: completed.id,
        workflowId: completes,
        status: 'completed',
        error: null,
        startedAt: expect.stringMatching(ISO),
        finishedAt: (completedView as unknown as { finishedAt: string }).finishedAt,
      },
    });
    // Neither input nor output travels.
    expect(JSON.stringify(payloads)).not.toContain('"n":42');
    expect(byType('execution.failed', failedCalling.id)?.data).toMatchObject({ workflowId: failsCalling, status: 'failed', error: { nodeId: 'call', message: expect.stringContaining('500') } });
    expect(byType('step.failed', failedCalling.id)?.data).toMatchObject({
      executionId: failedCalling.id,
      workflowId: failsCalling,
      nodeId: 'call',
      status: 'failed',
      error: { message: expect.stringContaining('500') },
      startedAt: expect.stringMatching(ISO),
      finishedAt: expect.stringMatching(ISO),
    });
    expect(byType('step.failed', failedComputing.id)?.data).toMatchObject({ nodeId: 'parse', status: 'failed', error: expect.objectContaining({ message: expect.any(String) }) });
    expect(byType('execution.cancelled')?.data).toMatchObject({ executionId: cancelled.id, workflowId: slow, status: 'cancelled', error: { message: 'cancelled' }, finishedAt: expect.stringMatching(ISO) });
    expect(byType('webhook.rejected')).toEqual({
      type: 'webhook.rejected',
      timestamp: expect.stringMatching(ISO),
      data: { deliveryId: expect.any(String), workflowId: hook.id, reason: expect.stringMatching(/x-hook-token header is missing/i), receivedAt: expect.stringMatching(ISO) },
    });
    expect(JSON.stringify(byType('webhook.rejected'))).not.toContain('a-hook-token');

    // The filters: types, a workflow, disabled, another user.
    expect(receiver.on('/steps-only').map((event) => verify(stepsOnly.secret, event).type)).toEqual(['step.failed', 'step.failed']);
    expect(receiver.on('/failed-of-calling').map((event) => verify(failedOfCalling.secret, event).data.executionId)).toEqual([failedCalling.id]);
    // The cancelled run never completed (the cancel fenced its worker out): nothing for a subscription to its completions.
    expect(receiver.on('/completed-of-slow')).toEqual([]);
    expect(receiver.on('/disabled')).toEqual([]);
    expect(receiver.on('/other-user')).toEqual([]);
    expect(completedOfSlow.id).not.toBe(otherUsers.id);

    // And in the outbox: exactly these messages, each delivered at its first attempt.
    const stored = await messagesOf([completed.id, failedCalling.id, failedComputing.id, cancelled.id]);
    expect(stored.filter((message) => message.subscriptionId === everything.id)).toHaveLength(6);
    expect(stored.filter((message) => message.subscriptionId === stepsOnly.id)).toHaveLength(2);
    expect(stored.filter((message) => message.subscriptionId === failedOfCalling.id)).toHaveLength(1);
    expect(stored).toHaveLength(9);
    for (const message of stored) {
      expect(message.status).toBe('delivered');
      expect(message.webhookId).toBe(`msg_${message.id}`);
    }
    const [rejectedMessages] = await app.database.sql<{ count: number }[]>`
      select count(*)::int as count from event_messages where webhook_delivery_id = ${String(deliveryId)}::uuid`;
    expect(rejectedMessages?.count).toBe(1);
  }, 60_000);

  it('writes no message for a change that is rolled back', async () => {
    const subscription = await createSubscription(app, user, { url: `${receiver.url}/rollback`, events: ['execution.completed', 'execution.failed'] });
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'one', type: 'transform', params: { expression: '1' } },
      ],
      edges: [{ source: 'start', target: 'one' }],
    });
    // A test-only trigger fails the statement that completes this workflow's runs, after its every
    // part ran (an AFTER row trigger fires at the end of the statement, once the outbox CTE has
    // inserted): the whole statement rolls back. The sequence counts its firings (nextval is not
    // transactional). Both are dropped at the end.
    const tag = randomUUID().replaceAll('-', '');
    const sql = app.database.sql;
    await sql.unsafe(`create sequence forced_${tag}`);
    await sql.unsafe(`create function forced_${tag}() returns trigger language plpgsql as $$
      begin perform nextval('forced_${tag}'); raise exception 'rolled back by the test'; end $$`);
    await sql.unsafe(`create trigger forced_${tag} after update on executions for each row
      when (new.status = 'completed' and new.workflow_id = '${workflowId}') execute function forced_${tag}()`);
    let dropped = false;
    const drop = async () => {
      if (dropped) return;
      dropped = true;
      await sql.unsafe(`drop trigger if exists forced_${tag} on executions`);
      await sql.unsafe(`drop function if exists forced_${tag}()`);
      await sql.unsafe(`drop sequence if exists forced_${tag}`);
    };
    try {
      const execution = await runWorkflow(app, user, workflowId);
      // Two finishes rolled back: the first, and the takeover's after the lease (3 s here) expired.
      await eventually(
        async () => {
          const [row] = await sql.unsafe<{ fired: number }[]>(`select case when is_called then last_value else 0 end::int as fired from forced_${tag}`);
          return (row?.fired ?? 0) >= 2;
        },
        20_000,
        'two rolled-back finishes',
      );
      expect((await getExecution(app, user, execution.id)).status).toBe('running');
      expect(await messagesOf([execution.id])).toEqual([]);

      await drop();
      await waitForStatus(app, user, execution.id, ['completed'], 20_000);
      await eventually(async () => receiver.on('/rollback').length >= 1, 10_000, 'the completion message');
      await new Promise((resolve) => setTimeout(resolve, 500));
      // One message per subscription of the user that wants completions: this test's, and the first test's to everything.
      const messages = await messagesOf([execution.id]);
      expect(messages.filter((message) => message.subscriptionId === subscription.id).map((message) => message.type)).toEqual(['execution.completed']);
      expect(messages.map((message) => message.type)).toEqual(['execution.completed', 'execution.completed']);
      expect(receiver.on('/rollback').map((event) => verify(subscription.secret, event).data)).toEqual([expect.objectContaining({ executionId: execution.id, status: 'completed' })]);
    } finally {
      await drop();
    }
  }, 60_000);

  it('writes nothing for a user without subscriptions, and announces no work for it', async () => {
    const quiet = await signUp(app);
    const workflowId = await createWorkflow(app, quiet, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: `${server.url}/broken?status=500` } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const works: unknown[] = [];
    const unsubscribe = app.bus.subscribe((message) => {
      if (message.kind === 'work') works.push(message);
    });
    try {
      const execution = await runWorkflow(app, quiet, workflowId);
      await waitForStatus(app, quiet, execution.id, ['failed']);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(await messagesOf([execution.id])).toEqual([]);
      // The run's creation announced work; its failed step and its end (no subscription) did not.
      expect(works).toHaveLength(1);
    } finally {
      unsubscribe();
    }
  });
});
