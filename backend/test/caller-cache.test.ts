import { describe, expect, it } from 'vitest';
import { CallerCache } from '../src/auth/caller-cache.js';
import type { RequestCaller } from '../src/auth/caller.js';
import { eventually } from './engine-helpers.js';
import { buildTestApp, signUp } from './helpers.js';

const callerOf = (id: string, name = 'Someone'): RequestCaller => ({
  user: { id, name, email: `${id}@example.test` },
  via: 'apiKey',
  keyId: `key-${id}`,
  expiresAt: null,
});

describe('the verified-caller cache', () => {
  it('never holds more than its byte budget, whatever it is given, and lets the oldest go first', () => {
    const maxBytes = 64 * 1024;
    const cache = new CallerCache(60_000, maxBytes);
    try {
      for (let index = 0; index < 5_000; index++) cache.set(`key:${index}`, callerOf(`user-${index % 7}`, 'x'.repeat(index % 300)), null, cache.mark());
      expect(cache.size.bytes).toBeLessThanOrEqual(maxBytes);
      expect(cache.size.entries).toBeGreaterThan(0);
      expect(cache.get('key:0')).toBeUndefined();
      expect(cache.get('key:4999')?.user.id).toBe('user-1');
      // One entry larger than the whole budget is not kept, and pushes nothing out.
      const before = cache.size;
      cache.set('key:huge', callerOf('huge', 'x'.repeat(maxBytes)), null, cache.mark());
      expect(cache.get('key:huge')).toBeUndefined();
      expect(cache.size).toEqual(before);
      // Forgetting a user gives its bytes back.
      cache.forgetUser('user-1');
      expect(cache.size.bytes).toBeLessThan(before.bytes);
      cache.forgetUser('user-0');
      for (let user = 2; user < 7; user++) cache.forgetUser(`user-${user}`);
      expect(cache.size).toEqual({ entries: 0, bytes: 0 });
    } finally {
      cache.stop();
    }
  });

  it('keeps nothing a verification begun before a forget brings back after it, and forgets everyone when told to', () => {
    const cache = new CallerCache(60_000, 64 * 1024);
    try {
      const before = cache.mark();
      cache.forgetUser('someone-else');
      // Verified from a mark older than a forget (of anyone): it may be what the forget was about.
      cache.set('key:late', callerOf('revoked'), null, before);
      expect(cache.get('key:late')).toBeUndefined();
      cache.set('key:fresh', callerOf('fresh'), null, cache.mark());
      expect(cache.get('key:fresh')?.user.id).toBe('fresh');
      cache.forgetAll();
      expect(cache.get('key:fresh')).toBeUndefined();
      expect(cache.size).toEqual({ entries: 0, bytes: 0 });
    } finally {
      cache.stop();
    }
  });

  it('sweeps callers verified once and never again, so memory returns to where it was after a TTL', async () => {
    const app = await buildTestApp({ AUTH_CACHE_TTL_MS: '2000' });
    try {
      const user = await signUp(app);
      const baseline = app.callerCache.size;
      const keys: string[] = [];
      for (let index = 0; index < 30; index++) {
        const created = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: user.cookie }, payload: { name: `once ${index}` } });
        keys.push(created.json<{ key: string }>().key);
      }
      for (const key of keys) expect((await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': key } })).statusCode).toBe(200);
      expect(app.callerCache.size.entries).toBeGreaterThanOrEqual(baseline.entries + 30);
      // No credential is presented again: only the sweep can let them go.
      const emptied = await eventually(async () => app.callerCache.size.entries === 0, 8_000, 'the cache emptied by its sweep');
      expect(emptied).toBe(true);
      expect(app.callerCache.size).toEqual({ entries: 0, bytes: 0 });
    } finally {
      await app.close();
    }
  });
});
