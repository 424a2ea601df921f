import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { apiKeys } from '../src/db/schema/index.js';
import { createDbClient } from '../src/db/client.js';
import { sessionsWaitForALock } from './engine-helpers.js';
import { buildTestApp, databaseUrl, expectProblem, lacksConcurrentConnections, logsOf, signUp, type SignedInUser } from './helpers.js';

describe('API keys', () => {
  let app: App;
  let alice: SignedInUser;

  beforeAll(async () => {
    app = await buildTestApp();
    alice = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const createKey = (payload: Record<string, unknown>, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: alice.cookie, ...headers }, payload });

  it('works as Bearer and as x-api-key; the secret is shown once and is never listed, stored or logged', async () => {
    const created = await createKey({ name: 'ci script' });
    expect(created.statusCode).toBe(201);
    const key = created.json<{ id: string; key: string; prefix: string }>();
    expect(key.key.startsWith(key.prefix)).toBe(true);

    for (const headers of [{ authorization: `Bearer ${key.key}` }, { 'x-api-key': key.key }]) {
      const me = await app.inject({ url: '/api/v1/me', headers });
      expect(me.statusCode).toBe(200);
      expect(me.json()).toMatchObject({ id: alice.id, authenticatedVia: 'apiKey' });
    }

    const listed = await app.inject({ url: '/api/v1/api-keys', headers: { cookie: alice.cookie } });
    expect(listed.json().items).toEqual([expect.objectContaining({ id: key.id, name: 'ci script', prefix: key.prefix })]);
    expect(listed.body).not.toContain(key.key);
    expect(listed.body).not.toContain('keyHash');
    expect(listed.json().items[0].lastUsedAt).not.toBeNull();

    const [stored] = await app.database.db.select().from(apiKeys).where(eq(apiKeys.id, key.id));
    expect(JSON.stringify(stored)).not.toContain(key.key);
    expect(logsOf(app)).not.toContain(key.key.slice(key.prefix.length));
  });

  it('refuses a revoked key, an expired key and a made-up key with 401', async () => {
    const key = (await createKey({ name: 'short-lived' })).json<{ id: string; key: string }>();
    const revoke = await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.id}`, headers: { cookie: alice.cookie } });
    expect(revoke.statusCode).toBe(204);
    expectProblem(await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': key.key } }), 401);

    // Used (and so cached) shortly before it expires: refused from its expiry on, cache or not.
    const expiresAt = Date.now() + 1_500;
    const expiring = (await createKey({ name: 'expiring', expiresAt: new Date(expiresAt).toISOString() })).json<{ id: string; key: string }>();
    expect((await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': expiring.key } })).statusCode).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, expiresAt - Date.now() + 50));
    expectProblem(await app.inject({ url: '/api/v1/me', headers: { authorization: `Bearer ${expiring.key}` } }), 401);

    expectProblem(await app.inject({ url: '/api/v1/me', headers: { authorization: 'Bearer ank_made-up' } }), 401);
    // A bad key is refused even next to a good cookie: a script must learn its key is broken.
    expectProblem(await app.inject({ url: '/api/v1/me', headers: { cookie: alice.cookie, 'x-api-key': 'ank_nope' } }), 401);
  });

  // Holds the key's row from a second connection: the embedded database serves one.
  it.skipIf(lacksConcurrentConnections())('refuses a key at once after its revocation, even when a verification of it began before and ended after', async () => {
    const key = (await createKey({ name: 'revoked mid-verification' })).json<{ id: string; key: string }>();
    const holder = createDbClient({ url: databaseUrl(), poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 });
    try {
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let held!: () => void;
      const holding = new Promise<void>((resolve) => (held = resolve));
      const holderDone = holder.sql.begin(async (tx) => {
        await tx`select 1 from api_keys where id = ${key.id}::uuid for update`;
        held();
        await released;
      });
      await holding;
      // The revocation's delete waits for the row; then the key's first use reads it (still there)
      // and its lastUsedAt write waits behind the delete.
      const revoked = app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.id}`, headers: { cookie: alice.cookie } });
      await sessionsWaitForALock(app, 'the revocation waiting for the key row');
      const used = app.inject({ url: '/api/v1/me', headers: { 'x-api-key': key.key } });
      await sessionsWaitForALock(app, 'the first use waiting behind the revocation', 2);
      release();
      await holderDone;
      expect((await revoked).statusCode).toBe(204);
      // Begun before the revocation committed, that request may be served; nothing after it may.
      expect([200, 401]).toContain((await used).statusCode);
      expectProblem(await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': key.key } }), 401);
    } finally {
      await holder.close();
    }
  });

  it('never lets a key create a key that outlives it, by expiry or by revocation', async () => {
    const parentExpiresAt = new Date(Date.now() + 60_000).toISOString();
    const parent = (await createKey({ name: 'parent', expiresAt: parentExpiresAt })).json<{ id: string; key: string }>();
    const byParent = (payload: Record<string, unknown>) =>
      app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': parent.key }, payload });

    // Without an expiry, the child takes its creator's; a later one is refused with the field named.
    const child = await byParent({ name: 'child' });
    expect(child.statusCode).toBe(201);
    const childKey = child.json<{ id: string; key: string; expiresAt: string }>();
    expect(childKey.expiresAt).toBe(parentExpiresAt);
    const tooLate = expectProblem(await byParent({ name: 'later', expiresAt: new Date(Date.now() + 120_000).toISOString() }), 400);
    expect(tooLate.errors).toEqual([expect.objectContaining({ path: 'expiresAt' })]);
    const grandchild = (
      await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { 'x-api-key': childKey.key }, payload: { name: 'grandchild' } })
    ).json<{ key: string; expiresAt: string }>();
    expect(grandchild.expiresAt).toBe(parentExpiresAt);

    // Revoking the creator revokes what it created, all the way down.
    for (const key of [childKey.key, grandchild.key]) expect((await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': key } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${parent.id}`, headers: { cookie: alice.cookie } })).statusCode).toBe(204);
    for (const key of [parent.key, childKey.key, grandchild.key]) expectProblem(await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': key } }), 401);

    // A session's keys are free of this rule: a key without expiry may be made in a session.
    const sessionKey = await createKey({ name: 'from a session' });
    expect(sessionKey.json<{ expiresAt: string | null }>().expiresAt).toBeNull();
  });

  // A second app beside this file's: the embedded database serves one connection.
  it.skipIf(lacksConcurrentConnections())('caps the keys a user holds, even against concurrent creations; a deleted key frees its place', async () => {
    const capped = await buildTestApp({ API_KEYS_PER_USER: '3' });
    try {
      const user = await signUp(capped);
      const create = (index: number) =>
        capped.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: user.cookie }, payload: { name: `key ${index}` } });
      const statuses = (await Promise.all([0, 1, 2, 3, 4].map(create))).map((response) => response.statusCode).sort();
      expect(statuses).toEqual([201, 201, 201, 409, 409]);
      const refused = await create(5);
      expect(expectProblem(refused, 409).code).toBe('API_KEY_LIMIT_REACHED');
      const listed = await capped.inject({ url: '/api/v1/api-keys', headers: { cookie: user.cookie } });
      const items = listed.json<{ items: { id: string }[] }>().items;
      expect(items).toHaveLength(3);
      await capped.inject({ method: 'DELETE', url: `/api/v1/api-keys/${items[0]?.id}`, headers: { cookie: user.cookie } });
      expect((await create(6)).statusCode).toBe(201);
    } finally {
      await capped.close();
    }
  });

  it('refuses an expiry in the past and unknown fields', async () => {
    expectProblem(await createKey({ name: 'old', expiresAt: '2000-01-01T00:00:00Z' }), 400);
    expectProblem(await createKey({ name: 'x', userId: alice.id }), 400);
  });

  it('replays an Idempotency-Key without the secret, and refuses it with another body', async () => {
    const first = await createKey({ name: 'idempotent' }, { 'idempotency-key': 'key-create-1' });
    const replay = await createKey({ name: 'idempotent' }, { 'idempotency-key': 'key-create-1' });
    expect(replay.statusCode).toBe(201);
    const { key: secret, ...metadata } = first.json();
    expect(secret).toEqual(expect.any(String));
    expect(replay.json()).toEqual(metadata);
    expectProblem(await createKey({ name: 'different' }, { 'idempotency-key': 'key-create-1' }), 409);
  });
});
