import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { purgeExpiredIdempotencyKeys } from '../src/lib/idempotency.js';
import { buildTestApp, signUp, type SignedInUser } from './helpers.js';

describe('housekeeping', () => {
  let app: App;
  let gone: SignedInUser;
  let active: SignedInUser;
  beforeAll(async () => {
    app = await buildTestApp();
    gone = await signUp(app);
    active = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const createWithKey = (user: SignedInUser, key: string) =>
    app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: user.cookie, 'idempotency-key': key }, payload: { name: key } });
  const keysOf = async (user: SignedInUser) =>
    (await app.database.sql<{ key: string }[]>`select key from idempotency_keys where user_id = ${user.id} order by key`).map((row) => row.key);

  it("deletes expired idempotency keys of users who never come back, and keeps every live key", async () => {
    expect((await createWithKey(gone, 'old-1')).statusCode).toBe(201);
    expect((await createWithKey(gone, 'old-2')).statusCode).toBe(201);
    expect((await createWithKey(active, 'fresh')).statusCode).toBe(201);
    // Only the clock is moved: the first user's keys are a day and an hour old.
    await app.database.sql`update idempotency_keys set created_at = now() - interval '25 hours' where user_id = ${gone.id}`;

    // In batches smaller than what is expired: the purge goes on until nothing expired is left.
    const purged = await purgeExpiredIdempotencyKeys(app.database.db, 1);
    expect(purged).toBeGreaterThanOrEqual(2);
    expect(await keysOf(gone)).toEqual([]);
    expect(await keysOf(active)).toEqual(['fresh']);
    // A live key still answers with its first result.
    const replay = await createWithKey(active, 'fresh');
    expect(replay.statusCode).toBe(201);
    expect((await app.inject({ url: '/api/v1/api-keys?pageSize=100', headers: { cookie: active.cookie } })).json<{ items: unknown[] }>().items).toHaveLength(1);
  });
});
