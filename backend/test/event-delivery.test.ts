import { Webhook } from 'standardwebhooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import type { Engine } from '../src/engine/engine.js';
import { DELIVERY_LEASE_MS } from '../src/events/delivery-store.js';
import { purgeExpired } from '../src/retention/purge.js';
import {
  createSubscription,
  createWorkflow,
  eventually,
  runWorkflow,
  startEngine,
  startEventReceiver,
  waitForStatus,
  type EventReceiver,
  type ReceivedEvent,
} from './engine-helpers.js';
import { buildTestApp, isEmbeddedDatabase, signUp, type SignedInUser } from './helpers.js';
import { runScript } from './process.js';

/**
 * The delivery workers (src/events/delivery-worker.ts, delivery-store.ts): retries and their
 * records, signing across a secret rotation, the send-time guard, disabling a subscription that
 * keeps failing, the per-subscription cap, and a worker process killed while it sends. The
 * receiver verifies as a customer would, with the standardwebhooks package. Each test runs its
 * own engine on the file's database (emptied for the file on the embedded server: test/file-setup.ts):
 * no other engine takes these messages, and this one sends no other file's.
 */

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

const verifies = (secret: string, event: ReceivedEvent): boolean => {
  try {
    new Webhook(secret).verify(event.body, event.headers);
    return true;
  } catch {
    return false;
  }
};

interface MessageRow {
  id: string;
  webhookId: string;
  status: string;
  attempts: number;
  lastStatusCode: number | null;
  lastError: string | null;
  /** Times come back from raw SQL as text. */
  deliveredAt: string | null;
  lockedUntil: string | null;
}
interface AttemptRow {
  statusCode: number | null;
  latencyMs: number;
  error: string | null;
  responseHead: string | null;
}

describe('the event delivery workers', () => {
  let app: App;
  let user: SignedInUser;
  let receiver: EventReceiver;
  const engines: Engine[] = [];
  /** An engine for one test (stopped after it), with short retries unless told otherwise. */
  const engineWith = (overrides: Record<string, string> = {}) => {
    const engine = startEngine(app, { EVENT_RETRY_BASE_MS: '50', ...overrides });
    engines.push(engine);
    return engine;
  };

  beforeAll(async () => {
    app = await buildTestApp({ ENGINE_HTTP_ALLOW: '127.0.0.1' });
    user = await signUp(app);
    receiver = await startEventReceiver();
  });
  afterEach(async () => {
    // Attempts still held by a receiver are aborted and their messages given back.
    await Promise.all(engines.splice(0).map((engine) => engine.stop(200)));
    receiver.answer = () => 200;
  });
  afterAll(async () => {
    await receiver.close();
    await app.close();
  });

  const quickWorkflow = (owner = user) =>
    createWorkflow(app, owner, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'one', type: 'transform', params: { expression: '1' } },
      ],
      edges: [{ source: 'start', target: 'one' }],
    });
  const messagesOf = (subscriptionId: string) =>
    app.database.sql<MessageRow[]>`
      select id, webhook_id as "webhookId", status::text as status, attempts, last_status_code as "lastStatusCode", last_error as "lastError",
             delivered_at as "deliveredAt", locked_until as "lockedUntil"
        from event_messages where subscription_id = ${subscriptionId}::uuid order by created_at`;
  const attemptsOf = (messageId: string) =>
    app.database.sql<AttemptRow[]>`
      select status_code as "statusCode", latency_ms as "latencyMs", error, response_head as "responseHead"
        from event_attempts where message_id = ${messageId}::uuid order by attempted_at`;
  const subscriptionRow = async (id: string) => {
    const [row] = await app.database.sql<{ enabled: boolean; disabledReason: string | null; failingSince: string | null; version: number }[]>`
      select enabled, disabled_reason as "disabledReason", failing_since as "failingSince", version from event_subscriptions where id = ${id}::uuid`;
    if (!row) throw new Error(`no subscription ${id}`);
    return row;
  };
  /** Runs the workflow to completion: one execution.completed message per subscription that wants it. */
  const complete = async (workflowId: string, owner = user) => {
    const execution = await runWorkflow(app, owner, workflowId);
    await waitForStatus(app, owner, execution.id, ['completed']);
    return execution;
  };

  it('retries with backoff until a 2xx: delivered once, every attempt recorded, the same webhook-id', async () => {
    engineWith();
    const subscription = await createSubscription(app, user, { url: `${receiver.url}/flaky`, events: ['execution.completed'] });
    receiver.answer = (_request, nth) => (nth <= 3 ? 500 : 200);
    await complete(await quickWorkflow());

    const [message] = await eventually(async () => {
      const rows = await messagesOf(subscription.id);
      return rows[0]?.status === 'delivered' && rows;
    }, 15_000, 'the message delivered');
    if (!message) throw new Error('no message');
    await sleep(500);

    const got = receiver.on('/flaky');
    expect(got.map((event) => event.status)).toEqual([500, 500, 500, 200]);
    expect(new Set(got.map((event) => event.headers['webhook-id']))).toEqual(new Set([message.webhookId]));
    for (const event of got) expect(verifies(subscription.secret, event)).toBe(true);
    expect(message).toMatchObject({ attempts: 4, lastStatusCode: 200, lastError: null, deliveredAt: expect.any(String), lockedUntil: null });

    const attempts = await attemptsOf(message.id);
    expect(attempts.map((attempt) => attempt.statusCode)).toEqual([500, 500, 500, 200]);
    expect(attempts.map((attempt) => attempt.responseHead)).toEqual(['{"received":false}', '{"received":false}', '{"received":false}', '{"received":true}']);
    expect(attempts.slice(0, 3).every((attempt) => /status 500/.test(attempt.error ?? ''))).toBe(true);
    expect(attempts[3]?.error).toBeNull();
    for (const attempt of attempts) expect(attempt.latencyMs).toBeGreaterThanOrEqual(0);
    // The success ended the failing streak its first failure began.
    expect((await subscriptionRow(subscription.id)).failingSince).toBeNull();

    const listed = await app.inject({ url: `/api/v1/event-subscriptions/${subscription.id}/deliveries`, headers: { cookie: user.cookie } });
    expect(listed.statusCode, listed.body).toBe(200);
    expect(listed.json<{ items: unknown[] }>().items).toEqual([expect.objectContaining({ webhookId: message.webhookId, status: 'delivered', attempts: 4, lastStatusCode: 200 })]);
  });

  it('delivers each message once when two engines (as on two replicas) claim the same backlog', async () => {
    const workflowId = await quickWorkflow();
    const subscription = await createSubscription(app, user, { url: `${receiver.url}/shared`, events: ['execution.completed'], workflowId });
    // Queued with no engine running; then two start at once and race for the runs and their messages.
    for (let run = 0; run < 20; run++) await runWorkflow(app, user, workflowId);
    engineWith();
    engineWith();
    const messages = await eventually(async () => {
      const rows = await messagesOf(subscription.id);
      return rows.length === 20 && rows.every((row) => row.status === 'delivered') && rows;
    }, 20_000, 'twenty messages delivered');
    await sleep(300);
    const got = receiver.on('/shared');
    expect(got).toHaveLength(20);
    expect(new Set(got.map((event) => event.headers['webhook-id']))).toEqual(new Set(messages.map((message) => message.webhookId)));
    expect(messages.every((message) => message.attempts === 1)).toBe(true);
  });

  it('gives up on a message once it is a day old: its next failure ends it failed, and it is not sent again', async () => {
    engineWith();
    const workflowId = await quickWorkflow();
    const subscription = await createSubscription(app, user, { url: `${receiver.url}/down`, events: ['execution.completed'], workflowId });
    receiver.answer = () => 503;
    await complete(workflowId);
    const [first] = await eventually(async () => {
      const rows = await messagesOf(subscription.id);
      return (rows[0]?.attempts ?? 0) >= 1 && rows;
    }, 10_000, 'a first failed attempt');
    if (!first) throw new Error('no message');
    expect(first.status).toBe('pending');
    // Only the clock moves: the message was written 25 hours ago.
    await app.database.sql`update event_messages set created_at = now() - interval '25 hours' where id = ${first.id}::uuid`;
    const [given] = await eventually(async () => {
      const rows = await messagesOf(subscription.id);
      return rows[0]?.status === 'failed' && rows;
    }, 10_000, 'the message given up');
    await sleep(500);
    const [after] = await messagesOf(subscription.id);
    expect(after?.attempts).toBe(given?.attempts);
    expect(receiver.on('/down')).toHaveLength(given?.attempts ?? -1);
    expect(after).toMatchObject({ status: 'failed', lastStatusCode: 503, deliveredAt: null, lockedUntil: null });
  });

  it('signs with both secrets during a rotation’s overlap, and with the new one only after it', async () => {
    engineWith();
    const workflowId = await quickWorkflow();
    const subscription = await createSubscription(app, user, { url: `${receiver.url}/rotating`, events: ['execution.completed'], workflowId });
    const received = (count: number) => eventually(async () => receiver.on('/rotating').length >= count && receiver.on('/rotating')[count - 1], 15_000, `message ${count}`);

    await complete(workflowId);
    const before = await received(1);
    expect(before.headers['webhook-signature']?.split(' ')).toHaveLength(1);
    expect(verifies(subscription.secret, before)).toBe(true);

    const rotation = await app.inject({ method: 'POST', url: `/api/v1/event-subscriptions/${subscription.id}/rotate-secret`, headers: { cookie: user.cookie } });
    expect(rotation.statusCode, rotation.body).toBe(200);
    const rotated = rotation.json<{ secret: string }>().secret;
    expect(rotated).not.toBe(subscription.secret);
    await complete(workflowId);
    const during = await received(2);
    expect(during.headers['webhook-signature']?.split(' ')).toHaveLength(2);
    expect(verifies(subscription.secret, during)).toBe(true);
    expect(verifies(rotated, during)).toBe(true);

    // The 24 h overlap ends: moved into the past by SQL rather than waited for.
    await app.database.sql`update event_subscriptions set previous_secret_expires_at = now() - interval '1 second' where id = ${subscription.id}::uuid`;
    await complete(workflowId);
    const after = await received(3);
    expect(after.headers['webhook-signature']?.split(' ')).toHaveLength(1);
    expect(verifies(rotated, after)).toBe(true);
    expect(verifies(subscription.secret, after)).toBe(false);
  });

  it('sends through the http.request guard: a receiver it refuses gets nothing, and the attempt says why', async () => {
    // The app let the URL be saved (its ENGINE_HTTP_ALLOW has the address); this engine's guard does not.
    engineWith({ ENGINE_HTTP_ALLOW: '' });
    const subscription = await createSubscription(app, user, { url: `${receiver.url}/guarded`, events: ['execution.completed'] });
    await complete(await quickWorkflow());
    const message = await eventually(async () => {
      const [row] = await messagesOf(subscription.id);
      return row && row.attempts >= 1 && row.lastError !== null && row;
    }, 10_000, 'a refused attempt');
    expect(message.status).toBe('pending');
    expect(message.lastError).toMatch(/refused to connect to 127\.0\.0\.1 \(loopback address\)/);
    expect((await attemptsOf(message.id))[0]).toMatchObject({ statusCode: null, responseHead: null });
    expect(receiver.on('/guarded')).toEqual([]);
  });

  it('disables a subscription whose messages have failed for 5 days; its pending messages stop', async () => {
    engineWith();
    const workflowId = await quickWorkflow();
    const subscription = await createSubscription(app, user, { url: `${receiver.url}/dead`, events: ['execution.completed'], workflowId });
    receiver.answer = () => 503;
    await complete(workflowId);
    await complete(workflowId);
    await eventually(async () => {
      const rows = await messagesOf(subscription.id);
      return rows.length === 2 && rows.every((row) => row.attempts >= 1 && row.lastStatusCode === 503);
    }, 15_000, 'both messages failed once');
    const failing = await subscriptionRow(subscription.id);
    expect(failing).toMatchObject({ enabled: true, failingSince: expect.any(String) });

    // Five days of failures, by SQL: failing_since moved back, and both messages made due now.
    await app.database.sql`update event_subscriptions set failing_since = now() - interval '5 days 1 minute' where id = ${subscription.id}::uuid`;
    await app.database.sql`update event_messages set next_attempt_at = now() where subscription_id = ${subscription.id}::uuid and status = 'pending' and locked_until is null`;
    const disabled = await eventually(async () => {
      const row = await subscriptionRow(subscription.id);
      return !row.enabled && row;
    }, 10_000, 'the subscription disabled');
    expect(disabled.disabledReason).toMatch(/failed for 5 days.*503/);
    expect(disabled.version).toBe(failing.version + 1);
    const shown = await app.inject({ url: `/api/v1/event-subscriptions/${subscription.id}`, headers: { cookie: user.cookie } });
    expect(shown.json()).toMatchObject({ enabled: false, disabledReason: disabled.disabledReason });
    const ended = await eventually(async () => {
      const rows = await messagesOf(subscription.id);
      return rows.every((row) => row.status === 'failed') && rows;
    }, 10_000, 'both messages failed');
    expect(ended).toHaveLength(2);

    // Nothing more is sent, and no new message is written for it.
    const sent = receiver.on('/dead').length;
    await complete(workflowId);
    await sleep(1_000);
    expect(receiver.on('/dead')).toHaveLength(sent);
    expect(await messagesOf(subscription.id)).toHaveLength(2);
  });

  it('holds at most two attempts per subscription: one user’s dead receiver does not delay another user’s messages', async () => {
    // Four slots in this process; without the per-subscription cap the dead receiver would take them all for 10 s.
    const engine = engineWith({ EVENT_DELIVERY_CONCURRENCY: '4' });
    // A user of its own: the file's shared user has subscriptions of earlier tests, whose messages
    // would share this user's EVENT_DELIVERY_PER_USER attempts with the dead receiver's.
    const owner = await signUp(app);
    const other = await signUp(app);
    const deadWorkflow = await quickWorkflow(owner);
    await createSubscription(app, owner, { url: `${receiver.url}/hanging`, events: ['execution.completed'], workflowId: deadWorkflow });
    const liveWorkflow = await quickWorkflow(other);
    const live = await createSubscription(app, other, { url: `${receiver.url}/prompt`, events: ['execution.completed'] });
    receiver.answer = (request) => (request.path === '/hanging' ? 'hang' : 200);

    for (let run = 0; run < 6; run++) await complete(deadWorkflow, owner);
    await eventually(async () => receiver.openCount('/hanging') === 2, 10_000, 'two attempts held by the dead receiver');
    await sleep(300);

    const started = Date.now();
    await complete(liveWorkflow, other);
    const arrived = await eventually(async () => receiver.on('/prompt')[0], 8_000, 'the other user’s message');
    expect(verifies(live.secret, arrived)).toBe(true);
    expect(arrived.at - started).toBeLessThan(3_000);
    // Meanwhile the dead receiver never held more than two, and still holds them.
    expect(receiver.openCount('/hanging')).toBe(2);
    expect(receiver.maxOpen('/hanging')).toBe(2);
    expect(receiver.on('/hanging')).toHaveLength(2);
    expect(engine).toBeDefined();
  });

  it('holds at most EVENT_DELIVERY_PER_USER attempts for one user: many dead receivers of one user do not delay another user’s messages', async () => {
    // Six slots; four subscriptions of two attempts each would take them all for 10 s without the per-user cap.
    engineWith({ EVENT_DELIVERY_CONCURRENCY: '6', EVENT_DELIVERY_PER_USER: '3' });
    const owner = await signUp(app);
    const other = await signUp(app);
    const deadWorkflow = await quickWorkflow(owner);
    for (let n = 1; n <= 4; n++) await createSubscription(app, owner, { url: `${receiver.url}/stuck-${n}`, events: ['execution.completed'], workflowId: deadWorkflow });
    const liveWorkflow = await quickWorkflow(other);
    const live = await createSubscription(app, other, { url: `${receiver.url}/answered`, events: ['execution.completed'] });
    receiver.answer = (request) => (request.path.startsWith('/stuck-') ? 'hang' : 200);
    const stuck = () => [1, 2, 3, 4].reduce((open, n) => open + receiver.openCount(`/stuck-${n}`), 0);

    for (let run = 0; run < 4; run++) await complete(deadWorkflow, owner);
    await eventually(async () => stuck() === 3, 10_000, 'three attempts held by the dead receivers');
    await sleep(300);

    const started = Date.now();
    await complete(liveWorkflow, other);
    const arrived = await eventually(async () => receiver.on('/answered')[0], 8_000, 'the other user’s message');
    expect(verifies(live.secret, arrived)).toBe(true);
    expect(arrived.at - started).toBeLessThan(3_000);
    expect(stuck()).toBe(3);
  });

  it('keeps the pending messages of a deleted workflow for the subscriptions that remain, and the purge deletes them once ended and old', async () => {
    engineWith();
    const owner = await signUp(app);
    const doomed = await quickWorkflow(owner);
    const everywhere = await createSubscription(app, owner, { url: `${receiver.url}/later`, events: ['execution.completed'] });
    const scoped = await createSubscription(app, owner, { url: `${receiver.url}/scoped`, events: ['execution.completed'], workflowId: doomed });
    let up = false;
    receiver.answer = (request) => (request.path === '/later' && up ? 200 : 500);
    await complete(doomed, owner);
    await eventually(async () => receiver.on('/later').length > 0 && receiver.on('/scoped').length > 0, 10_000, 'first attempts, refused');

    const deleted = await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${doomed}`, headers: { cookie: owner.cookie } });
    expect(deleted.statusCode, deleted.body).toBe(204);
    // The workflow's own subscription went with it, and its message; the other's waits for its receiver.
    expect(await messagesOf(scoped.id)).toEqual([]);
    up = true;
    const [message] = await eventually(async () => {
      const rows = await messagesOf(everywhere.id);
      return rows[0]?.status === 'delivered' && rows;
    }, 15_000, 'the message of the deleted workflow delivered');
    expect(message).toMatchObject({ status: 'delivered', lastStatusCode: 200 });
    const received = receiver.on('/later').at(-1);
    if (!received) throw new Error('nothing received at /later');
    expect(verifies(everywhere.secret, received)).toBe(true);

    // Ended, and written before the default retention's cutoff: the purge deletes it (it has no execution to go with).
    await app.database.sql`update event_messages set created_at = now() - interval '31 days' where id = ${message?.id ?? ''}::uuid`;
    expect(await purgeExpired(app.database.sql, { defaultDays: 30, pauseMs: 0 })).toMatchObject({ ran: true, messages: 1 });
    expect(await messagesOf(everywhere.id)).toEqual([]);
  });

  describe.skipIf(isEmbeddedDatabase())('across processes (a real PostgreSQL)', () => {
    it('sends again, with the same webhook-id, a message whose worker was killed while sending it', async () => {
      type Worker = ReturnType<typeof runScript>;
      const workers: Worker[] = [];
      const database = app.config.database;
      if (database.kind !== 'external' || !app.config.secretsKeys) throw new Error('needs the file database and the test keys');
      const startWorker = (): Worker => {
        const worker = runScript('src/worker.ts', [], {
          DATABASE_URL: database.url,
          // The app's keys: the worker opens the secrets the app sealed.
          SECRETS_KEYS: app.config.secretsKeys,
          NODE_ENV: 'test',
          LOG_LEVEL: 'warn',
          ENGINE_HTTP_ALLOW: '127.0.0.1',
          ENGINE_POLL_MS: '50',
          DB_POOL_SIZE: '3',
          SHUTDOWN_GRACE_MS: '2000',
        });
        workers.push(worker);
        return worker;
      };
      const alive = (worker: Worker) => {
        if (worker.child.exitCode !== null || worker.child.signalCode !== null) throw new Error(`worker exited:\n${worker.output()}`);
        return true;
      };
      try {
        const workflowId = await quickWorkflow();
        const subscription = await createSubscription(app, user, { url: `${receiver.url}/crash`, events: ['execution.completed'], workflowId });
        // The first attempt is never answered: its worker is killed while it waits.
        receiver.answer = (_request, nth) => (nth === 1 ? 'hang' : 200);
        const first = startWorker();
        const execution = await runWorkflow(app, user, workflowId);
        await waitForStatus(app, user, execution.id, ['completed'], 30_000);
        const held = await eventually(async () => alive(first) && receiver.on('/crash')[0], 20_000, 'the first attempt');
        const [inFlight] = await messagesOf(subscription.id);
        expect(inFlight).toMatchObject({ status: 'pending', attempts: 1, lockedUntil: expect.any(String) });

        first.child.kill('SIGKILL');
        expect(await first.exited).toBe('SIGKILL');
        const second = startWorker();
        const delivered = await eventually(
          async () => {
            alive(second);
            const [row] = await messagesOf(subscription.id);
            return row?.status === 'delivered' && row;
          },
          DELIVERY_LEASE_MS + 20_000,
          'the message delivered after the lease',
        );
        const got = receiver.on('/crash');
        expect(got).toHaveLength(2);
        expect(got[1]?.status).toBe(200);
        expect(got.map((event) => event.headers['webhook-id'])).toEqual([delivered.webhookId, delivered.webhookId]);
        for (const event of got) expect(verifies(subscription.secret, event)).toBe(true);
        // Not before the killed worker's lease had passed.
        expect((got[1]?.at ?? 0) - held.at).toBeGreaterThan(DELIVERY_LEASE_MS - 2_000);
        // The interrupted attempt counts; only the one that got an answer is recorded.
        expect(delivered.attempts).toBe(2);
        expect((await attemptsOf(delivered.id)).map((attempt) => attempt.statusCode)).toEqual([200]);
      } finally {
        for (const worker of workers) {
          if (worker.child.exitCode === null && worker.child.signalCode === null) {
            worker.child.kill('SIGTERM');
            await Promise.race([worker.exited, sleep(8_000).then(() => worker.child.kill('SIGKILL'))]);
          }
        }
      }
    }, 90_000);
  });
});
