/**
 * Event subscriptions, the API half (API.md, Event subscriptions): CRUD under ETag/If-Match and
 * Idempotency-Key; the signing secret shown once (creation, rotation) and otherwise never, sealed
 * at rest; the SSRF guard at save; limits; ownership; the messages' list and retry.
 */
import { createHmac, randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { eventSubscriptionSecretBinding } from '../src/secrets/bindings.js';
import type { Engine } from '../src/engine/engine.js';
import { createSubscription, eventually, runWorkflow, startEngine, startEventReceiver, waitForStatus, type EventReceiver } from './engine-helpers.js';
import { buildTestApp, expectProblem, lacksConcurrentConnections, logsOf, sampleGraph, signUp, type SignedInUser } from './helpers.js';

interface SubscriptionView {
  id: string;
  url: string;
  events: string[];
  workflowId: string | null;
  enabled: boolean;
  disabledReason: string | null;
  createdAt: string;
  updatedAt: string;
  secret?: string;
}

interface DeliveryView {
  id: string;
  type: string;
  webhookId: string;
  status: string;
  attempts: number;
  lastStatusCode: number | null;
  lastError: string | null;
  nextAttemptAt: string | null;
  createdAt: string;
  deliveredAt: string | null;
}

interface Page<Item> {
  items: Item[];
  hasNext: boolean;
  nextCursor: string | null;
}

/** The sealed secrets of a subscription, as stored. */
interface StoredSecrets {
  userId: string;
  secretKeyId: string | null;
  secretCiphertext: string | null;
  previousSecretKeyId: string | null;
  previousSecretCiphertext: string | null;
  /** How long the previous secret still signs, by the database's clock; null without one. */
  previousSecretExpiresInMs: number | null;
}

const WHSEC = /^whsec_[A-Za-z0-9+/]{43}=$/;
/**
 * A receiver that never answers: `.invalid` never resolves (RFC 6761), so a delivery worker (of
 * any test file: they share the database) that attempts one of these messages fails it at once,
 * retryably, and sends nothing anywhere.
 */
const receiver = (path = 'hook') => `https://hooks.example.invalid/${path}`;
/** Far enough ahead that no delivery worker takes a pending message made here while a test looks at it. */
const NOT_DUE = '2100-01-01T00:00:00Z';

/** Sends requests as a user, keeping every response body: the secrets' leak checks read them. */
function clientOf(app: App, responseBodies: string[]) {
  const send = async (user: SignedInUser, options: { method?: 'GET' | 'POST' | 'PATCH' | 'DELETE'; url: string; payload?: unknown; headers?: Record<string, string> }) => {
    const response = await app.inject({
      method: options.method ?? 'GET',
      url: options.url,
      headers: { cookie: user.cookie, ...options.headers },
      ...(options.payload === undefined ? {} : { payload: options.payload as Record<string, unknown> }),
    });
    responseBodies.push(response.body);
    return response;
  };
  return {
    send,
    create: (user: SignedInUser, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
      send(user, { method: 'POST', url: '/api/v1/event-subscriptions', payload: body, headers }),
    read: (user: SignedInUser, id: string) => send(user, { url: `/api/v1/event-subscriptions/${id}` }),
    patch: (user: SignedInUser, id: string, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
      send(user, { method: 'PATCH', url: `/api/v1/event-subscriptions/${id}`, payload: body, headers }),
    remove: (user: SignedInUser, id: string, headers: Record<string, string> = {}) => send(user, { method: 'DELETE', url: `/api/v1/event-subscriptions/${id}`, headers }),
    rotate: (user: SignedInUser, id: string, headers: Record<string, string> = {}) =>
      send(user, { method: 'POST', url: `/api/v1/event-subscriptions/${id}/rotate-secret`, headers }),
    list: (user: SignedInUser, query = '') => send(user, { url: `/api/v1/event-subscriptions${query}` }),
    deliveries: (user: SignedInUser, id: string, query = '') => send(user, { url: `/api/v1/event-subscriptions/${id}/deliveries${query}` }),
    retry: (user: SignedInUser, messageId: string) => send(user, { method: 'POST', url: `/api/v1/event-deliveries/${messageId}/retry` }),
  };
}

async function createWorkflow(app: App, user: SignedInUser, name = 'events'): Promise<string> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: user.cookie }, payload: { name, ...sampleGraph } });
  expect(response.statusCode, response.body).toBe(201);
  return response.json<{ id: string }>().id;
}

async function storedSecrets(app: App, id: string): Promise<StoredSecrets> {
  const [row] = await app.database.sql<StoredSecrets[]>`
    select user_id as "userId", secret_key_id as "secretKeyId", secret_ciphertext as "secretCiphertext",
      previous_secret_key_id as "previousSecretKeyId", previous_secret_ciphertext as "previousSecretCiphertext",
      (extract(epoch from previous_secret_expires_at - now()) * 1000)::float8 as "previousSecretExpiresInMs"
    from event_subscriptions where id = ${id}`;
  if (!row) throw new Error(`no event subscription ${id}`);
  return row;
}

/** Opens a stored secret as the delivery workers do: bound to the subscription's row and owner. */
function openSecret(app: App, id: string, userId: string, keyId: string | null, ciphertext: string | null): string {
  if (keyId === null || ciphertext === null) throw new Error(`subscription ${id} has no such secret`);
  return app.keyring.open({ keyId, ciphertext }, eventSubscriptionSecretBinding({ id, userId }));
}

/** The whole row as text: any column holding a secret, whatever it is, would show in it. */
async function rowText(app: App, id: string): Promise<string> {
  const [row] = await app.database.sql<{ text: string }[]>`select row_to_json(s)::text as text from event_subscriptions s where id = ${id}`;
  return row?.text ?? '';
}

describe('event subscriptions', () => {
  let app: App;
  let alice: SignedInUser;
  let bob: SignedInUser;
  let api: ReturnType<typeof clientOf>;
  const responseBodies: string[] = [];
  /** Every secret a creation or rotation returned: once each, and nowhere else. */
  const issuedSecrets: string[] = [];

  beforeAll(async () => {
    app = await buildTestApp();
    api = clientOf(app, responseBodies);
    alice = await signUp(app);
    bob = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const created = async (user: SignedInUser, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<SubscriptionView & { secret: string }> => {
    const response = await api.create(user, body, headers);
    expect(response.statusCode, response.body).toBe(201);
    const view = response.json<SubscriptionView>();
    if (view.secret === undefined) throw new Error('a creation returned no secret');
    issuedSecrets.push(view.secret);
    return { ...view, secret: view.secret };
  };

  it('creates, reads, lists, changes and deletes a subscription, with its ETag and Location', async () => {
    const user = await signUp(app);
    const workflowId = await createWorkflow(app, user);
    const response = await api.create(user, { url: receiver('round-trip'), events: ['execution.failed', 'step.failed'], workflowId });
    expect(response.statusCode, response.body).toBe(201);
    const subscription = response.json<SubscriptionView>();
    issuedSecrets.push(subscription.secret ?? '');
    expect(response.headers.location).toBe(`/api/v1/event-subscriptions/${subscription.id}`);
    expect(response.headers['cache-control']).toBe('no-store');
    expect(subscription).toEqual({
      id: expect.any(String),
      url: receiver('round-trip'),
      events: ['execution.failed', 'step.failed'],
      workflowId,
      enabled: true,
      disabledReason: null,
      createdAt: expect.any(String),
      updatedAt: subscription.createdAt,
      secret: expect.stringMatching(WHSEC),
    });
    const { secret: _secret, ...shown } = subscription;

    const read = await api.read(user, subscription.id);
    expect(read.statusCode).toBe(200);
    expect(read.json()).toEqual(shown);
    expect(read.headers.etag).toBe('"1"');
    expect((await api.list(user)).json<Page<SubscriptionView>>().items).toEqual([shown]);

    // Every field at once, under the ETag just read: the URL is stored normalised.
    const changed = await api.patch(user, subscription.id, { url: 'HTTPS://Hooks.Example.INVALID:443/a/../changed', events: ['webhook.rejected'], workflowId: null, enabled: false }, { 'if-match': '"1"' });
    expect(changed.statusCode, changed.body).toBe(200);
    expect(changed.headers.etag).toBe('"2"');
    const after = changed.json<SubscriptionView>();
    expect(after).toEqual({ ...shown, url: receiver('changed'), events: ['webhook.rejected'], workflowId: null, enabled: false, updatedAt: expect.any(String) });
    expect(after.updatedAt > shown.updatedAt).toBe(true);
    expect((await api.read(user, subscription.id)).json()).toEqual(after);

    // A PATCH without fields is refused; so is one the schema does not know.
    expectProblem(await api.patch(user, subscription.id, {}), 400);
    expect(expectProblem(await api.patch(user, subscription.id, { secret: 'whsec_mine' }), 400).errors).toEqual(expect.arrayContaining([expect.objectContaining({ path: 'secret' })]));

    const deleted = await api.remove(user, subscription.id, { 'if-match': '"2"' });
    expect(deleted.statusCode).toBe(204);
    expectProblem(await api.read(user, subscription.id), 404);
    expect((await api.list(user)).json<Page<SubscriptionView>>().items).toEqual([]);
  });

  it('a subscription of one workflow goes with that workflow', async () => {
    const user = await signUp(app);
    const workflowId = await createWorkflow(app, user);
    const subscription = await created(user, { url: receiver(), events: ['execution.completed'], workflowId });
    const deleted = await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${workflowId}`, headers: { cookie: user.cookie } });
    expect(deleted.statusCode, deleted.body).toBe(204);
    expectProblem(await api.read(user, subscription.id), 404);
  });

  it('shows the secret once: whsec_ and 32 random bytes, a key the standardwebhooks package signs and verifies with', async () => {
    const subscription = await created(alice, { url: receiver('format'), events: ['execution.completed'] });
    const other = await created(alice, { url: receiver('format'), events: ['execution.completed'] });
    expect(subscription.secret).toMatch(WHSEC);
    const key = Buffer.from(subscription.secret.slice('whsec_'.length), 'base64');
    expect(key).toHaveLength(32);
    expect(other.secret).not.toBe(subscription.secret);

    // A receiver's check, as the README shows it: the package reads the secret as those 32 bytes.
    const webhookId = `msg_${randomUUID()}`;
    const timestamp = new Date();
    const body = JSON.stringify({ type: 'execution.completed', timestamp: timestamp.toISOString(), data: {} });
    const seconds = Math.floor(timestamp.getTime() / 1000);
    const signature = `v1,${createHmac('sha256', key).update(`${webhookId}.${seconds}.${body}`).digest('base64')}`;
    const headers = { 'webhook-id': webhookId, 'webhook-timestamp': String(seconds), 'webhook-signature': signature };
    expect(new Webhook(subscription.secret).sign(webhookId, timestamp, body)).toBe(signature);
    expect(new Webhook(subscription.secret).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(other.secret).verify(body, headers)).toThrow();
  });

  it('never shows the secret again (GET, list, PATCH, an idempotent replay) and stores it only sealed to its row', async () => {
    const key = `secret-replay-${randomUUID()}`;
    const body = { url: receiver('sealed'), events: ['execution.failed'] };
    const first = await created(alice, body, { 'idempotency-key': key });
    const readBack = [
      await api.read(alice, first.id),
      await api.list(alice),
      await api.patch(alice, first.id, { events: ['execution.failed', 'execution.cancelled'] }),
      await api.create(alice, body, { 'idempotency-key': key }),
    ];
    for (const response of readBack) {
      expect(response.statusCode, response.body).toBeLessThan(300);
      expect(response.body).not.toContain(first.secret);
      expect(response.body).not.toContain('whsec_');
    }
    const replay = readBack[3] as LightMyRequestResponse;
    expect(replay.statusCode).toBe(201);
    expect(replay.json<SubscriptionView>()).toEqual({ ...first, secret: undefined });
    expect(replay.json<SubscriptionView>()).not.toHaveProperty('secret');

    // Sealed to the row and its owner: it opens as the service opens it, and not bound to another row.
    const stored = await storedSecrets(app, first.id);
    expect(stored.secretKeyId).toBe(app.keyring.primaryKeyId);
    expect(openSecret(app, first.id, alice.id, stored.secretKeyId, stored.secretCiphertext)).toBe(first.secret);
    expect(() => openSecret(app, randomUUID(), alice.id, stored.secretKeyId, stored.secretCiphertext)).toThrow();
    expect(() => openSecret(app, first.id, bob.id, stored.secretKeyId, stored.secretCiphertext)).toThrow();
    // Neither the row nor the kept idempotent answer holds it, as is or as its key's base64.
    const keyText = first.secret.slice('whsec_'.length);
    const [kept] = await app.database.sql<{ text: string }[]>`select row_to_json(k)::text as text from idempotency_keys k where user_id = ${alice.id} and key = ${key}`;
    expect(kept?.text).toContain(first.id);
    for (const text of [await rowText(app, first.id), kept?.text ?? '']) expect(text).not.toContain(keyText);
  });

  it('rotates the secret: a new one shown once, the previous one kept sealed for 24 h, an earlier one dropped', async () => {
    const subscription = await created(alice, { url: receiver('rotate'), events: ['execution.completed'] });
    const before = await storedSecrets(app, subscription.id);
    expect(before.previousSecretCiphertext).toBeNull();

    const rotated = await api.rotate(alice, subscription.id, { 'if-match': '"1"' });
    expect(rotated.statusCode, rotated.body).toBe(200);
    expect(rotated.headers['cache-control']).toBe('no-store');
    expect(rotated.headers.etag).toBe('"2"');
    const view = rotated.json<SubscriptionView & { secret: string }>();
    issuedSecrets.push(view.secret);
    expect(view.secret).toMatch(WHSEC);
    expect(view.secret).not.toBe(subscription.secret);
    expect(view).toEqual({ ...subscription, secret: view.secret, updatedAt: expect.any(String) });

    // The previous secret is the current one moved as it was sealed (same binding); it expires 24 h from now.
    const after = await storedSecrets(app, subscription.id);
    expect({ keyId: after.previousSecretKeyId, ciphertext: after.previousSecretCiphertext }).toEqual({ keyId: before.secretKeyId, ciphertext: before.secretCiphertext });
    expect(openSecret(app, subscription.id, alice.id, after.previousSecretKeyId, after.previousSecretCiphertext)).toBe(subscription.secret);
    expect(openSecret(app, subscription.id, alice.id, after.secretKeyId, after.secretCiphertext)).toBe(view.secret);
    expect(before.previousSecretExpiresInMs).toBeNull();
    expect(after.previousSecretExpiresInMs).toBeGreaterThan(24 * 3_600_000 - 60_000);
    expect(after.previousSecretExpiresInMs).toBeLessThanOrEqual(24 * 3_600_000);

    // Shown once: not in a GET, the list, or the row.
    for (const response of [await api.read(alice, subscription.id), await api.list(alice)]) expect(response.body).not.toContain(view.secret);
    expect(await rowText(app, subscription.id)).not.toContain(view.secret.slice('whsec_'.length));

    // A stale ETag changes nothing; a second rotation keeps the secret just shown as the previous one.
    expectProblem(await api.rotate(alice, subscription.id, { 'if-match': '"1"' }), 412);
    expect(await storedSecrets(app, subscription.id)).toMatchObject({ secretCiphertext: after.secretCiphertext, previousSecretCiphertext: after.previousSecretCiphertext });
    const again = (await api.rotate(alice, subscription.id)).json<SubscriptionView & { secret: string }>();
    issuedSecrets.push(again.secret);
    const third = await storedSecrets(app, subscription.id);
    expect(openSecret(app, subscription.id, alice.id, third.previousSecretKeyId, third.previousSecretCiphertext)).toBe(view.secret);
    expect(openSecret(app, subscription.id, alice.id, third.secretKeyId, third.secretCiphertext)).toBe(again.secret);
  });

  it('refuses invalid events and URLs with 400 naming the field, creating nothing', async () => {
    const user = await signUp(app);
    const refusals: [Record<string, unknown>, string][] = [
      [{ url: receiver(), events: [] }, 'events'],
      [{ url: receiver(), events: ['execution.started'] }, 'events[0]'],
      [{ url: receiver(), events: ['step.failed', 'execution.failed', 'step.failed'] }, 'events[2]'],
      [{ url: receiver() }, 'events'],
      [{ url: 'https://user:password@hooks.example.com/x', events: ['step.failed'] }, 'url'],
      [{ url: 'https://token@hooks.example.com/x', events: ['step.failed'] }, 'url'],
      [{ url: 'ftp://hooks.example.com/x', events: ['step.failed'] }, 'url'],
      [{ url: '/relative/path', events: ['step.failed'] }, 'url'],
      [{ url: 'https://hooks.example.com/x#fragment', events: ['step.failed'] }, 'url'],
      [{ url: 'https://hooks.example.com/a b', events: ['step.failed'] }, 'url'],
      [{ url: `https://hooks.example.com/${'x'.repeat(2048)}`, events: ['step.failed'] }, 'url'],
      [{ url: 'http://127.0.0.1/x', events: ['step.failed'] }, 'url'],
      [{ url: 'http://[::1]/', events: ['step.failed'] }, 'url'],
      [{ url: 'http://169.254.169.254/', events: ['step.failed'] }, 'url'],
      [{ url: 'http://10.0.0.1/', events: ['step.failed'] }, 'url'],
      [{ url: 'http://192.168.1.20:8080/hook', events: ['step.failed'] }, 'url'],
      [{ url: 'http://[::ffff:10.0.0.1]/', events: ['step.failed'] }, 'url'],
      // Forms the URL parser turns into a blocked dotted quad.
      [{ url: 'http://2130706433/', events: ['step.failed'] }, 'url'],
      [{ url: 'http://0x7f.1/', events: ['step.failed'] }, 'url'],
      [{ url: 'http://localhost:3000/hook', events: ['step.failed'] }, 'url'],
      [{ url: 'http://api.localhost./hook', events: ['step.failed'] }, 'url'],
      [{ url: receiver(), events: ['step.failed'], workflowId: 'not-a-uuid' }, 'workflowId'],
      [{ url: receiver(), events: ['step.failed'], userId: user.id }, 'userId'],
    ];
    for (const [body, path] of refusals) {
      const problem = expectProblem(await api.create(user, body), 400);
      expect(problem.errors, JSON.stringify(body)).toEqual(expect.arrayContaining([expect.objectContaining({ path })]));
    }
    // A public address, and a host name (judged at each send), are taken.
    expect((await api.create(user, { url: 'http://93.184.215.14/hook', events: ['step.failed'] })).statusCode).toBe(201);
    expect((await api.create(user, { url: 'http://internal.example.invalid/hook', events: ['step.failed'] })).statusCode).toBe(201);
    expect((await api.list(user)).json<Page<SubscriptionView>>().items).toHaveLength(2);

    // A change is held to the same rules.
    const subscription = await created(user, { url: receiver(), events: ['step.failed'] });
    expect(expectProblem(await api.patch(user, subscription.id, { url: 'http://10.1.2.3/' }), 400).errors).toEqual([expect.objectContaining({ path: 'url' })]);
    expectProblem(await api.patch(user, subscription.id, { events: [] }), 400);
    expectProblem(await api.patch(user, subscription.id, { events: ['step.failed', 'step.failed'] }), 400);
    const unchanged = (await api.read(user, subscription.id)).json<SubscriptionView>();
    expect(unchanged).toMatchObject({ url: receiver(), events: ['step.failed'] });
    expect((await api.read(user, subscription.id)).headers.etag).toBe('"1"');
  });

  // A second app with other settings beside the first: the embedded database serves one connection.
  it.skipIf(lacksConcurrentConnections())('takes an internal address that ENGINE_HTTP_ALLOW allows, as the guard reads it, and no other', async () => {
    const allowing = await buildTestApp({ ENGINE_HTTP_ALLOW: '127.0.0.1,10.0.0.0/8,Printer.LAN' });
    try {
      const user = await signUp(allowing);
      const client = clientOf(allowing, responseBodies);
      const statusOf = async (url: string) => (await client.create(user, { url, events: ['step.failed'] })).statusCode;
      expect(await statusOf('http://127.0.0.1:9999/x')).toBe(201);
      expect(await statusOf('http://10.20.30.40/')).toBe(201);
      // The IPv4-mapped form of an allowed address is the same destination; localhost may resolve to 127.0.0.1.
      expect(await statusOf('http://[::ffff:10.0.0.1]/')).toBe(201);
      expect(await statusOf('http://localhost:8080/')).toBe(201);
      expect(await statusOf('http://printer.lan/')).toBe(201);
      for (const refused of ['http://[::1]/', 'http://169.254.169.254/', 'http://192.168.0.1/', 'http://127.0.0.2/']) {
        expect(await statusOf(refused), refused).toBe(400);
      }
    } finally {
      await allowing.close();
    }
  });

  it('names only the caller’s own workflow (404, as jobs answer), on creation and on change', async () => {
    const bobsWorkflow = await createWorkflow(app, bob, 'bob’s');
    const alicesWorkflow = await createWorkflow(app, alice, 'alice’s');
    const before = (await api.list(alice, '?pageSize=100')).json<Page<SubscriptionView>>().items.length;
    for (const workflowId of [bobsWorkflow, randomUUID()]) {
      const problem = expectProblem(await api.create(alice, { url: receiver(), events: ['execution.failed'], workflowId }), 404);
      expect(problem.code).toBe('NOT_FOUND');
      expect(problem.detail).toContain(workflowId);
    }
    expect((await api.list(alice, '?pageSize=100')).json<Page<SubscriptionView>>().items).toHaveLength(before);

    const subscription = await created(alice, { url: receiver(), events: ['execution.failed'], workflowId: alicesWorkflow });
    expectProblem(await api.patch(alice, subscription.id, { workflowId: bobsWorkflow }), 404);
    expect((await api.read(alice, subscription.id)).json<SubscriptionView>().workflowId).toBe(alicesWorkflow);
    expect((await api.patch(alice, subscription.id, { workflowId: null })).json<SubscriptionView>().workflowId).toBeNull();
  });

  it('refuses a PATCH, DELETE or rotation under a stale If-Match with 412, changing nothing', async () => {
    const subscription = await created(alice, { url: receiver('etag'), events: ['execution.completed'] });
    expect((await api.patch(alice, subscription.id, { events: ['execution.failed'] }, { 'if-match': '"1"' })).statusCode).toBe(200);
    const stored = await rowText(app, subscription.id);
    expectProblem(await api.patch(alice, subscription.id, { events: ['step.failed'] }, { 'if-match': '"1"' }), 412);
    expectProblem(await api.remove(alice, subscription.id, { 'if-match': '"1"' }), 412);
    expectProblem(await api.rotate(alice, subscription.id, { 'if-match': '"1"' }), 412);
    expect(await rowText(app, subscription.id)).toBe(stored);
    expect((await api.remove(alice, subscription.id, { 'if-match': '"2"' })).statusCode).toBe(204);
  });

  it('answers a replayed Idempotency-Key with the first result (one row), and the key with another body with 409', async () => {
    const user = await signUp(app);
    const key = `replay-${randomUUID()}`;
    const first = await created(user, { url: receiver('once'), events: ['execution.failed'] }, { 'idempotency-key': key });
    const replay = await api.create(user, { url: receiver('once'), events: ['execution.failed'] }, { 'idempotency-key': key });
    expect(replay.statusCode).toBe(201);
    expect(replay.headers.location).toBe(`/api/v1/event-subscriptions/${first.id}`);
    expect(replay.json<SubscriptionView>().id).toBe(first.id);
    expect(replay.json<SubscriptionView>().secret).toBeUndefined();
    expect(expectProblem(await api.create(user, { url: receiver('other'), events: ['execution.failed'] }, { 'idempotency-key': key }), 409).code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect((await api.list(user)).json<Page<SubscriptionView>>().items.map((item) => item.id)).toEqual([first.id]);
  });

  it('pages the list by cursor and by page number, newest first unless asked otherwise, by createdAt or updatedAt', async () => {
    const user = await signUp(app);
    const ids: string[] = [];
    for (let index = 0; index < 5; index += 1) ids.push((await created(user, { url: receiver(`page-${index}`), events: ['execution.completed'] })).id);
    const walk = async (query: string) => {
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const response = await api.list(user, `?pageSize=2&${query}${cursor ? `&cursor=${cursor}` : ''}`);
        expect(response.statusCode, response.body).toBe(200);
        const page = response.json<Page<SubscriptionView>>();
        seen.push(...page.items.map((item) => item.id));
        expect(page.hasNext).toBe(page.nextCursor !== null);
        cursor = page.nextCursor;
      } while (cursor);
      return seen;
    };
    expect(await walk('')).toEqual([...ids].reverse());
    expect(await walk('sortDirection=asc')).toEqual(ids);
    // Changed last, it comes first by updatedAt.
    const [oldest] = ids;
    expect((await api.patch(user, oldest ?? '', { enabled: false })).statusCode).toBe(200);
    expect((await walk('sortBy=updatedAt'))[0]).toBe(oldest);
    const second = (await api.list(user, '?pageSize=2&page=2&sortDirection=asc')).json<Page<SubscriptionView>>();
    expect(second.items.map((item) => item.id)).toEqual(ids.slice(2, 4));
    expect(second.hasNext).toBe(true);
    expectProblem(await api.list(user, '?sortBy=url'), 400);
    expectProblem(await api.list(user, '?searchQuery=hook'), 400);
    expectProblem(await api.list(user, '?pageSize=101'), 400);
  });

  it('re-enabling clears what the service set when it disabled the subscription; the owner disabling it sets no reason', async () => {
    const subscription = await created(alice, { url: receiver('disabled'), events: ['execution.failed'] });
    // As the delivery workers leave one after 5 days of failures.
    await app.database.sql`
      update event_subscriptions set enabled = false, disabled_reason = 'every delivery failed for 5 days', failing_since = now() - interval '5 days'
      where id = ${subscription.id}`;
    expect((await api.read(alice, subscription.id)).json<SubscriptionView>()).toMatchObject({ enabled: false, disabledReason: 'every delivery failed for 5 days' });
    const enabled = await api.patch(alice, subscription.id, { enabled: true });
    expect(enabled.json<SubscriptionView>()).toMatchObject({ enabled: true, disabledReason: null });
    const [row] = await app.database.sql<{ failingSince: Date | null }[]>`select failing_since as "failingSince" from event_subscriptions where id = ${subscription.id}`;
    expect(row?.failingSince).toBeNull();
    expect((await api.patch(alice, subscription.id, { enabled: false })).json<SubscriptionView>()).toMatchObject({ enabled: false, disabledReason: null });
  });

  it('answers 404 to another user on every route of a subscription and its messages, changes nothing, and lists nothing of it', async () => {
    const subscription = await created(alice, { url: receiver('mine'), events: ['execution.failed'] });
    const [message] = await insertMessages(app, subscription.id, alice.id, [{ status: 'failed' }]);
    if (!message) throw new Error('no message');
    const before = [await rowText(app, subscription.id), JSON.stringify(await app.database.sql`select * from event_messages where id = ${message}`)];
    const attempts = [
      await api.read(bob, subscription.id),
      await api.patch(bob, subscription.id, { enabled: false }),
      await api.remove(bob, subscription.id),
      await api.rotate(bob, subscription.id),
      await api.deliveries(bob, subscription.id),
      await api.retry(bob, message),
    ];
    const missing = [
      await api.read(bob, randomUUID()),
      await api.patch(bob, randomUUID(), { enabled: false }),
      await api.remove(bob, randomUUID()),
      await api.rotate(bob, randomUUID()),
      await api.deliveries(bob, randomUUID()),
      await api.retry(bob, randomUUID()),
    ];
    for (const [index, response] of attempts.entries()) {
      const problem = expectProblem(response, 404);
      // Exactly as a missing id answers (the id aside).
      const other = (missing[index] as LightMyRequestResponse).json<Record<string, unknown>>();
      expect(problem.code).toBe(other.code);
      expect(problem.title).toBe(other.title);
    }
    expect([await rowText(app, subscription.id), JSON.stringify(await app.database.sql`select * from event_messages where id = ${message}`)]).toEqual(before);
    expect((await api.list(bob)).json<Page<SubscriptionView>>().items).toEqual([]);
  });

  it('lists the messages the outbox writes for a subscription’s events: a completed run, a failed one', async () => {
    const user = await signUp(app);
    const completing = await createWorkflow(app, user, 'completes');
    const failing = await createWorkflow(app, user, 'fails');
    const failingGraph = {
      nodes: [
        { id: 'start', type: 'trigger.manual', params: {} },
        // The discard port refuses at once (127.0.0.1 is allowed to the test engine); no retry.
        { id: 'call', type: 'http.request', params: { method: 'GET', url: 'http://127.0.0.1:9/refused' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    };
    expect((await app.inject({ method: 'PATCH', url: `/api/v1/workflows/${failing}`, headers: { cookie: user.cookie }, payload: failingGraph })).statusCode).toBe(200);
    const everything = await created(user, { url: receiver('everything'), events: ['execution.completed', 'execution.failed', 'step.failed'] });
    const onlyFailing = await created(user, { url: receiver('only-failing'), events: ['execution.completed'], workflowId: failing });

    const engine = startEngine(app);
    try {
      for (const [workflowId, status] of [[completing, 'completed'], [failing, 'failed']] as const) {
        const run = await runWorkflow(app, user, workflowId, { n: 1 });
        expect((await waitForStatus(app, user, run.id, ['completed', 'failed'])).status).toBe(status);
      }
    } finally {
      await engine.stop(5_000);
    }

    const page = (await api.deliveries(user, everything.id)).json<Page<DeliveryView>>();
    expect(page.items.map((item) => item.type).sort()).toEqual(['execution.completed', 'execution.failed', 'step.failed']);
    for (const item of page.items) expect(item.webhookId).toBe(`msg_${item.id}`);
    // Newest first: the completed run's message is the oldest.
    expect(page.items.at(-1)?.type).toBe('execution.completed');
    expect((await api.deliveries(user, everything.id, '?type=step.failed')).json<Page<DeliveryView>>().items.map((item) => item.type)).toEqual(['step.failed']);
    // Another workflow's events, or events it did not ask for, are not its messages.
    expect((await api.deliveries(user, onlyFailing.id)).json<Page<DeliveryView>>().items).toEqual([]);
  });

  it('lists a subscription’s messages newest first, filtered by status and type, paged, never with their payload', async () => {
    const subscription = await created(alice, { url: receiver('deliveries'), events: ['execution.completed', 'execution.failed', 'step.failed'] });
    const other = await created(alice, { url: receiver('other-deliveries'), events: ['execution.completed'] });
    const ids = await insertMessages(app, subscription.id, alice.id, [
      { type: 'execution.completed', status: 'delivered', attempts: 1, lastStatusCode: 204 },
      { type: 'execution.failed', status: 'pending', attempts: 2, lastStatusCode: 503, lastError: 'the receiver answered 503' },
      { type: 'step.failed', status: 'failed', attempts: 9, lastError: 'connect ECONNREFUSED' },
      { type: 'execution.completed', status: 'pending' },
      { type: 'execution.failed', status: 'delivered', attempts: 3, lastStatusCode: 200 },
    ]);
    await insertMessages(app, other.id, alice.id, [{ type: 'execution.completed', status: 'failed' }]);
    const listed = async (query = '') => {
      const response = await api.deliveries(alice, subscription.id, query);
      expect(response.statusCode, response.body).toBe(200);
      return response.json<Page<DeliveryView>>();
    };

    const all = await listed();
    expect(all.items.map((item) => item.id)).toEqual([...ids].reverse());
    expect(Object.keys(all.items[0] ?? {}).sort()).toEqual(
      ['attempts', 'createdAt', 'deliveredAt', 'id', 'lastError', 'lastStatusCode', 'nextAttemptAt', 'status', 'type', 'webhookId'].sort(),
    );
    const failed = all.items.find((item) => item.status === 'failed');
    expect(failed).toEqual({
      id: ids[2],
      type: 'step.failed',
      webhookId: `msg_${ids[2]}`,
      status: 'failed',
      attempts: 9,
      lastStatusCode: null,
      lastError: 'connect ECONNREFUSED',
      nextAttemptAt: null,
      createdAt: expect.any(String),
      deliveredAt: null,
    });
    expect(all.items.find((item) => item.id === ids[1])?.nextAttemptAt).toEqual(expect.any(String));
    expect(all.items.find((item) => item.id === ids[0])).toMatchObject({ status: 'delivered', deliveredAt: expect.any(String), nextAttemptAt: null });
    expect(JSON.stringify(all)).not.toContain('payload');

    const idsOf = (page: Page<DeliveryView>) => page.items.map((item) => item.id);
    expect(idsOf(await listed('?status=pending'))).toEqual([ids[3], ids[1]]);
    expect(idsOf(await listed('?status=failed,delivered&sortDirection=asc'))).toEqual([ids[0], ids[2], ids[4]]);
    expect(idsOf(await listed('?type=execution.failed,step.failed'))).toEqual([ids[4], ids[2], ids[1]]);
    expect(idsOf(await listed('?type=execution.completed&status=pending'))).toEqual([ids[3]]);
    const firstPage = await listed('?pageSize=2');
    expect(idsOf(firstPage)).toEqual([ids[4], ids[3]]);
    expect(idsOf(await listed(`?pageSize=2&cursor=${firstPage.nextCursor ?? ''}`))).toEqual([ids[2], ids[1]]);
    expect(idsOf(await listed('?pageSize=2&page=3'))).toEqual([ids[0]]);
    for (const query of ['?status=sent', '?status=', '?type=execution.started', '?type=step.failed,nope', '?sortBy=attempts', '?searchQuery=x']) {
      expectProblem(await api.deliveries(alice, subscription.id, query), 400);
    }
    expect(idsOf(await listed('?status=failed'))).not.toContain(undefined);
  });

  it('sends a delivered or failed message again (202, pending, due now), refuses a pending one or a disabled subscription’s (409), and goes with its subscription', async () => {
    const subscription = await created(alice, { url: receiver('retry'), events: ['execution.failed'] });
    const [failedId, deliveredId, pendingId] = await insertMessages(app, subscription.id, alice.id, [
      { status: 'failed', attempts: 12, lastError: 'the receiver answered 500', lastStatusCode: 500, nextAttemptAt: '2000-01-01T00:00:00Z' },
      { status: 'delivered', attempts: 1, lastStatusCode: 200 },
      { status: 'pending', attempts: 1 },
    ]);
    if (!failedId || !deliveredId || !pendingId) throw new Error('messages missing');

    const retried = await api.retry(alice, failedId);
    expect(retried.statusCode, retried.body).toBe(202);
    const [clock] = await app.database.sql<{ nowMs: number }[]>`select (extract(epoch from now()) * 1000)::float8 as "nowMs"`;
    const view = retried.json<DeliveryView>();
    expect(view).toMatchObject({ id: failedId, status: 'pending', attempts: 12, lastStatusCode: 500, lastError: 'the receiver answered 500' });
    expect(Math.abs(Date.parse(view.nextAttemptAt ?? '') - (clock?.nowMs ?? 0))).toBeLessThan(10_000);
    // What a worker finds: pending and due (a worker of another test file may have taken it since: it stays pending, failing to resolve the host).
    const [stored] = await app.database.sql<{ status: string }[]>`select status from event_messages where id = ${failedId}`;
    expect(stored?.status).toBe('pending');

    expect((await api.retry(alice, deliveredId)).json<DeliveryView>()).toMatchObject({ status: 'pending', deliveredAt: expect.any(String) });
    const refused = expectProblem(await api.retry(alice, pendingId), 409);
    expect(refused.code).toBe('EVENT_DELIVERY_PENDING');
    const [untouched] = await app.database.sql<{ kept: boolean }[]>`
      select next_attempt_at = '2100-01-01T00:00:00Z'::timestamptz as kept from event_messages where id = ${pendingId}`;
    expect(untouched?.kept).toBe(true);
    expectProblem(await api.retry(alice, failedId), 409);
    expectProblem(await api.retry(alice, randomUUID()), 404);

    // A disabled subscription's messages are not sent (the workers would fail them unsent): enabled again, they are.
    const [stillFailed] = await insertMessages(app, subscription.id, alice.id, [{ status: 'failed', attempts: 3 }]);
    expect((await api.patch(alice, subscription.id, { enabled: false })).statusCode).toBe(200);
    expect(expectProblem(await api.retry(alice, stillFailed ?? ''), 409).code).toBe('EVENT_SUBSCRIPTION_DISABLED');
    const [kept] = await app.database.sql<{ status: string }[]>`select status from event_messages where id = ${stillFailed ?? ''}`;
    expect(kept?.status).toBe('failed');
    expect((await api.patch(alice, subscription.id, { enabled: true })).statusCode).toBe(200);
    expect((await api.retry(alice, stillFailed ?? '')).statusCode).toBe(202);

    expect((await api.remove(alice, subscription.id)).statusCode).toBe(204);
    expectProblem(await api.retry(alice, deliveredId), 404);
    const [left] = await app.database.sql<{ count: number }[]>`select count(*)::int as count from event_messages where subscription_id = ${subscription.id}`;
    expect(left?.count).toBe(0);
  });

  it('never logged nor answered a secret except in the response that issued it', () => {
    expect(issuedSecrets.length).toBeGreaterThan(5);
    const logs = logsOf(app);
    for (const secret of issuedSecrets) {
      expect(logs).not.toContain(secret);
      expect(logs).not.toContain(secret.slice('whsec_'.length));
      expect(responseBodies.filter((body) => body.includes(secret))).toHaveLength(1);
    }
  });
});

describe('an event delivery sent again, end to end', () => {
  let app: App;
  let receiver: EventReceiver;
  let engine: Engine;
  beforeAll(async () => {
    // The receiver is on this machine: the guard lets 127.0.0.1 through, at save and at send.
    app = await buildTestApp({ ENGINE_HTTP_ALLOW: '127.0.0.1' });
    receiver = await startEventReceiver();
    engine = startEngine(app);
  });
  afterAll(async () => {
    await engine?.stop(5_000);
    await receiver?.close();
    await app?.close();
  });

  it('a delivered message, retried, reaches its receiver again with its webhook-id, signed with the current secret', async () => {
    const user = await signUp(app);
    const workflowId = await createWorkflow(app, user);
    const subscription = await createSubscription(app, user, { url: `${receiver.url}/again`, events: ['execution.completed'], workflowId });
    const run = await runWorkflow(app, user, workflowId, { n: 2 });
    expect((await waitForStatus(app, user, run.id, ['completed', 'failed'])).status).toBe('completed');
    const deliveriesOf = async () =>
      (await app.inject({ url: `/api/v1/event-subscriptions/${subscription.id}/deliveries`, headers: { cookie: user.cookie } })).json<Page<DeliveryView>>().items;
    const delivered = await eventually(async () => (await deliveriesOf()).find((item) => item.status === 'delivered'), 15_000, 'the message delivered');
    expect(receiver.on('/again')).toHaveLength(1);

    const retried = await app.inject({ method: 'POST', url: `/api/v1/event-deliveries/${delivered.id}/retry`, headers: { cookie: user.cookie } });
    expect(retried.statusCode, retried.body).toBe(202);
    await eventually(async () => receiver.on('/again').length === 2, 15_000, 'the message sent again');
    const [first, second] = receiver.on('/again');
    expect(second?.headers['webhook-id']).toBe(first?.headers['webhook-id']);
    expect(second?.headers['webhook-id']).toBe(delivered.webhookId);
    expect(second?.body).toBe(first?.body);
    expect(new Webhook(subscription.secret).verify(second?.body ?? '', second?.headers ?? {})).toMatchObject({ type: 'execution.completed', data: { status: 'completed' } });
    const again = await eventually(async () => (await deliveriesOf()).find((item) => item.id === delivered.id && item.status === 'delivered' && item.attempts === 2), 15_000, 'delivered again');
    expect(again.nextAttemptAt).toBeNull();
  });
});

describe('event subscription limits', () => {
  let app: App;
  beforeAll(async () => {
    app = await buildTestApp({ EVENT_SUBSCRIPTIONS_PER_USER: '2', USER_STORAGE_MAX_BYTES: '2048' });
  });
  afterAll(async () => {
    await app.close();
  });

  const create = (user: SignedInUser) =>
    app.inject({ method: 'POST', url: '/api/v1/event-subscriptions', headers: { cookie: user.cookie }, payload: { url: receiver(), events: ['execution.failed'] } });

  it('refuses a subscription beyond EVENT_SUBSCRIPTIONS_PER_USER with 409 EVENT_SUBSCRIPTION_LIMIT_REACHED; deleting one makes room', async () => {
    const user = await signUp(app);
    const first = (await create(user)).json<SubscriptionView>();
    expect((await create(user)).statusCode).toBe(201);
    const refused = expectProblem(await create(user), 409);
    expect(refused.code).toBe('EVENT_SUBSCRIPTION_LIMIT_REACHED');
    expect(refused.detail).toContain('2 event subscriptions');
    // The limit is per user.
    expect((await create(await signUp(app))).statusCode).toBe(201);
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/event-subscriptions/${first.id}`, headers: { cookie: user.cookie } })).statusCode).toBe(204);
    expect((await create(user)).statusCode).toBe(201);
  });

  it('refuses a creation once the user’s stored payloads reach the storage quota (409 STORAGE_QUOTA_EXCEEDED)', async () => {
    const user = await signUp(app);
    const saved = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key: 'BIG', value: 'v'.repeat(3_000) } });
    expect(saved.statusCode, saved.body).toBe(201);
    expect(expectProblem(await create(user), 409).code).toBe('STORAGE_QUOTA_EXCEEDED');
    const [row] = await app.database.sql<{ count: number }[]>`select count(*)::int as count from event_subscriptions where user_id = ${user.id}`;
    expect(row?.count).toBe(0);
  });
});

interface MessageFields {
  type?: string;
  status?: 'pending' | 'delivered' | 'failed';
  attempts?: number;
  lastStatusCode?: number;
  lastError?: string;
  nextAttemptAt?: string;
}

/**
 * Messages of a subscription in the states a delivery worker leaves them (delivered, failed,
 * pending with a later attempt), one second apart in the order given (oldest first); their ids in
 * that order. Made by SQL because only the delivery workers move a message on, and they would
 * race a test that waits for them (the outbox's real path has its own test above). A pending one
 * is due at NOT_DUE unless told otherwise, so no worker takes it meanwhile.
 */
async function insertMessages(app: App, subscriptionId: string, userId: string, messages: readonly MessageFields[]): Promise<string[]> {
  const ids: string[] = [];
  for (const [index, message] of messages.entries()) {
    const id = randomUUID();
    const status = message.status ?? 'pending';
    await app.database.sql`
      insert into event_messages (id, subscription_id, user_id, type, webhook_id, payload, status, attempts, next_attempt_at,
        last_status_code, last_error, created_at, delivered_at)
      values (${id}, ${subscriptionId}, ${userId}, ${message.type ?? 'execution.failed'}, ${`msg_${id}`},
        ${JSON.stringify({ type: message.type ?? 'execution.failed', timestamp: new Date().toISOString(), data: {} })}::jsonb, ${status}, ${message.attempts ?? 0},
        ${message.nextAttemptAt ?? NOT_DUE}, ${message.lastStatusCode ?? null}, ${message.lastError ?? null},
        now() - make_interval(secs => ${messages.length - index}), ${status === 'delivered' ? new Date().toISOString() : null})`;
    ids.push(id);
  }
  return ids;
}
