import { describe, expect, it } from 'vitest';
import { createDbClient } from '../src/db/client.js';
import { databaseUrl, isEmbeddedDatabase, uniqueEmail } from './helpers.js';
import { startServerProcess, type ServerProcess } from './process.js';

const trustedOrigin = 'http://localhost:8100';

/** Polls `url` until it answers `status`; returns how long that took. */
async function msUntilStatus(url: string, headers: Record<string, string>, status: number, limitMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    const response = await fetch(url, { headers });
    if (response.status === status) return Date.now() - started;
    if (Date.now() - started > limitMs) throw new Error(`${url} still answers ${response.status} after ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe.skipIf(isEmbeddedDatabase())('replicas (skipped on the embedded database: needs two server processes)', () => {
  it('refuses a signed-out session and a revoked API key on another replica within 5 s, although it cached them, and ends its event stream', async () => {
    // A cache TTL far longer than the 5 s promise: only the notification can make the other replica refuse in time.
    const env = { DATABASE_URL: databaseUrl(), ENGINE_ENABLED: 'false', AUTH_CACHE_TTL_MS: '60000' };
    const replicas: ServerProcess[] = [];
    try {
      replicas.push(await startServerProcess(env), await startServerProcess(env));
      const [a, b] = replicas as [ServerProcess, ServerProcess];

      const signUp = await fetch(`${a.baseUrl}/api/auth/sign-up/email`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', origin: trustedOrigin },
        body: JSON.stringify({ name: 'Replica', email: uniqueEmail('replica'), password: 'correct-horse-battery' }),
      });
      expect(signUp.status).toBe(200);
      const cookie = signUp.headers.getSetCookie().map((line) => line.split(';')[0]).join('; ');
      const keyResponse = await fetch(`${a.baseUrl}/api/v1/api-keys`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', cookie, origin: trustedOrigin },
        body: JSON.stringify({ name: 'replica key' }),
      });
      const apiKey = (await keyResponse.json()) as { id: string; key: string };

      // Replica B verifies both once, and from then on answers from its cache.
      expect((await fetch(`${b.baseUrl}/api/v1/me`, { headers: { cookie } })).status).toBe(200);
      expect((await fetch(`${b.baseUrl}/api/v1/me`, { headers: { 'x-api-key': apiKey.key } })).status).toBe(200);

      // An event stream on B, opened with the key, of an execution that waits (no engine runs).
      const workflow = await fetch(`${a.baseUrl}/api/v1/workflows`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': apiKey.key },
        body: JSON.stringify({ name: 'waits', nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] }),
      });
      const { id: workflowId } = (await workflow.json()) as { id: string };
      const run = await fetch(`${a.baseUrl}/api/v1/workflows/${workflowId}/run`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': apiKey.key },
        body: '{}',
      });
      const { id: executionId } = (await run.json()) as { id: string };
      const stream = await fetch(`${b.baseUrl}/api/v1/executions/${executionId}/events`, { headers: { 'x-api-key': apiKey.key } });
      expect(stream.status).toBe(200);
      const streamEnded = stream.text().then(() => Date.now());

      const revoke = await fetch(`${a.baseUrl}/api/v1/api-keys/${apiKey.id}`, { method: 'DELETE', headers: { cookie, origin: trustedOrigin } });
      expect(revoke.status).toBe(204);
      const revokedAt = Date.now();
      const keyRefusedAfter = await msUntilStatus(`${b.baseUrl}/api/v1/me`, { 'x-api-key': apiKey.key }, 401, 5_000);
      const streamEndedAfter = (await Promise.race([streamEnded, new Promise<number>((resolve) => setTimeout(() => resolve(Infinity), 5_000))])) - revokedAt;
      expect(streamEndedAfter).toBeLessThan(5_000);

      const signOut = await fetch(`${a.baseUrl}/api/auth/sign-out`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', cookie, origin: trustedOrigin },
        body: '{}',
      });
      expect(signOut.status).toBe(200);
      const sessionRefusedAfter = await msUntilStatus(`${b.baseUrl}/api/v1/me`, { cookie }, 401, 5_000);

      expect(keyRefusedAfter).toBeLessThan(5_000);
      expect(sessionRefusedAfter).toBeLessThan(5_000);
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()));
    }
  }, 60_000);

  it('holds the per-user rate limit across replicas: requests to one count on the other', async () => {
    // A window of a day, so the test cannot straddle two; counts are shared every 50 ms.
    const env = { DATABASE_URL: databaseUrl(), ENGINE_ENABLED: 'false', RATE_LIMIT_MAX: '10', RATE_LIMIT_WINDOW_MS: '86400000', RATE_LIMIT_SYNC_MS: '50' };
    const replicas: ServerProcess[] = [];
    const observer = createDbClient({ url: databaseUrl(), poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 });
    try {
      replicas.push(await startServerProcess(env), await startServerProcess(env));
      const [a, b] = replicas as [ServerProcess, ServerProcess];
      const signUp = await fetch(`${a.baseUrl}/api/auth/sign-up/email`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', origin: trustedOrigin },
        body: JSON.stringify({ name: 'Limited', email: uniqueEmail('limited'), password: 'correct-horse-battery' }),
      });
      const { user } = (await signUp.json()) as { user: { id: string } };
      const cookie = signUp.headers.getSetCookie().map((line) => line.split(';')[0]).join('; ');
      const me = async (replica: ServerProcess) => (await fetch(`${replica.baseUrl}/api/v1/me`, { headers: { cookie } })).status;
      /** Waits until the replicas have shared `expected` requests in the database, then lets the last one read its answer. */
      const waitForSharedCount = async (expected: number) => {
        // Generous for a loaded machine: each replica shares its counts every 50 ms.
        const deadline = Date.now() + 15_000;
        for (;;) {
          const [row] = await observer.sql<{ total: number }[]>`
            select coalesce(sum(count), 0)::int as total from request_counts where user_id = ${user.id}`;
          if ((row?.total ?? 0) >= expected) break;
          if (Date.now() > deadline) throw new Error(`the shared count never reached ${expected}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      };

      for (let index = 0; index < 6; index++) expect(await me(a)).toBe(200);
      await waitForSharedCount(6);
      // B admits on what it knows until its own sync returns the total (6 + 1).
      expect(await me(b)).toBe(200);
      await waitForSharedCount(7);
      const statuses: number[] = [];
      for (let index = 0; index < 4; index++) statuses.push(await me(b));
      expect(statuses).toEqual([200, 200, 200, 429]);
      await waitForSharedCount(10);
      // A learns the total when it next shares its own counts: the overshoot is bounded by what a
      // replica admits in one sync interval.
      expect(await me(a)).toBe(200);
      await waitForSharedCount(11);
      expect(await me(a)).toBe(429);
    } finally {
      await Promise.all(replicas.map((replica) => replica.stop()));
      await observer.close();
    }
  }, 60_000);
});
