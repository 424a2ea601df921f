import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp, cookieHeaderFrom, expectProblem, logsOf, signUp, uniqueEmail, type SignedInUser } from './helpers.js';
import { requestCounts, SharedRateLimiter } from '../src/lib/rate-limiter.js';

const trustedOrigin = 'http://localhost:8100';

describe('security headers and CSRF', () => {
  let app: App;
  let user: SignedInUser;
  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  it('sends headers fit for a JSON API', async () => {
    const response = await app.inject({ url: '/api/v1/me', headers: { cookie: user.cookie } });
    expect(response.headers['content-security-policy']).toContain("default-src 'none'");
    expect(response.headers['x-content-type-options']).toBe('nosniff');
    expect(response.headers['x-frame-options']).toBe('SAMEORIGIN');
    expect(response.headers['x-powered-by']).toBeUndefined();
    expect(response.headers['cross-origin-resource-policy']).toBe('same-site');
    expect(response.headers['strict-transport-security']).toMatch(/max-age=\d+/);
    // Errors and unauthenticated answers carry them too.
    const refused = await app.inject({ url: '/api/v1/me' });
    expect(refused.statusCode).toBe(401);
    expect(refused.headers['content-security-policy']).toBe(response.headers['content-security-policy']);
  });

  it('gives the docs page a policy that lets its own scripts and styles run, and only there', async () => {
    const page = await app.inject('/api/docs/');
    expect(page.headers['content-type']).toContain('text/html');
    const policy = String(page.headers['content-security-policy']);
    expect(policy).toContain("script-src 'self'");
    expect(policy).not.toContain("default-src 'none'");
    expect(page.headers['x-content-type-options']).toBe('nosniff');
  });

  it('refuses a cookie-authenticated write from an untrusted origin, and changes nothing', async () => {
    const before = (await app.inject({ url: '/api/v1/workflows', headers: { cookie: user.cookie } })).json<{ items: unknown[] }>().items.length;
    const body = { name: 'csrf', nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] };
    const evil = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: user.cookie, origin: 'https://evil.example' }, payload: body });
    expect(expectProblem(evil, 403).code).toBe('CSRF_ORIGIN_REJECTED');
    const crossSite = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: user.cookie, 'sec-fetch-site': 'cross-site' }, payload: body });
    expectProblem(crossSite, 403);
    expect((await app.inject({ url: '/api/v1/workflows', headers: { cookie: user.cookie } })).json<{ items: unknown[] }>().items).toHaveLength(before);

    const trusted = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: user.cookie, origin: trustedOrigin }, payload: body });
    expect(trusted.statusCode).toBe(201);
    // API keys carry no ambient authority: the Origin check does not apply to them.
    const key = (await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: user.cookie, origin: trustedOrigin }, payload: { name: 'script' } })).json<{ key: string }>();
    const scripted = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { 'x-api-key': key.key, origin: 'https://evil.example' }, payload: body });
    expect(scripted.statusCode).toBe(201);
  });

  it('refuses JSON nested deeper than the bound with 400', async () => {
    const deep = `${'['.repeat(200)}${']'.repeat(200)}`;
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/workflows/00000000-0000-4000-8000-000000000000/run',
      headers: { cookie: user.cookie, 'content-type': 'application/json' },
      payload: `{"input": ${deep}}`,
    });
    expect(expectProblem(response, 400).code).toBe('JSON_TOO_DEEP');
  });
});

describe('rate limits', () => {
  it('limits each user on /api/v1 with 429 problem+json and Retry-After, without touching other users', async () => {
    const app = await buildTestApp({ RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' });
    try {
      const busy = await signUp(app);
      const calm = await signUp(app);
      const statuses: number[] = [];
      for (let index = 0; index < 4; index++) statuses.push((await app.inject({ url: '/api/v1/me', headers: { cookie: busy.cookie } })).statusCode);
      expect(statuses).toEqual([200, 200, 200, 429]);
      const limited = await app.inject({ url: '/api/v1/me', headers: { cookie: busy.cookie } });
      expect(expectProblem(limited, 429).code).toBe('RATE_LIMITED');
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
      expect((await app.inject({ url: '/api/v1/me', headers: { cookie: calm.cookie } })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('keeps the counts of a window still running when a replica with a shorter window purges, and deletes its own ended windows', async () => {
    const app = await buildTestApp();
    const limiters: SharedRateLimiter[] = [];
    try {
      const daily = await signUp(app);
      const brief = await signUp(app);
      // Synced by hand (an hour between timed syncs): as two replicas mid-way through a change of RATE_LIMIT_WINDOW_MS.
      const limiter = (windowMs: number) => {
        const created = new SharedRateLimiter(requestCounts(app.database.sql), { max: 100, windowMs, syncMs: 3_600_000 }, app.log);
        limiters.push(created);
        return created;
      };
      const longWindow = limiter(86_400_000);
      const shortWindow = limiter(1_000);
      const rows = (userId: string) => app.database.sql<{ count: number }[]>`select count from request_counts where user_id = ${userId}`;
      for (let index = 0; index < 3; index++) expect(longWindow.take(daily.id)).toBe(true);
      await longWindow.sync();
      shortWindow.take(brief.id);
      await shortWindow.sync();
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      shortWindow.take(brief.id);
      await shortWindow.sync();
      expect(await rows(daily.id)).toEqual([{ count: 3 }]);
      expect(await rows(brief.id)).toEqual([{ count: 1 }]);
    } finally {
      await Promise.all(limiters.map((limiter) => limiter.stop()));
      await app.close();
    }
  });

  it('limits callers without valid credentials by client address; a spoofed X-Forwarded-For changes nothing without TRUST_PROXY', async () => {
    const app = await buildTestApp({ AUTH_FAILURE_LIMIT: '5' });
    try {
      const statuses: number[] = [];
      for (let index = 0; index < 7; index++) {
        const response = await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': `ank_guess${index}`, 'x-forwarded-for': `203.0.113.${index}` } });
        statuses.push(response.statusCode);
      }
      expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
    } finally {
      await app.close();
    }
    const proxied = await buildTestApp({ AUTH_FAILURE_LIMIT: '5', TRUST_PROXY: 'true' });
    try {
      // Behind a trusted proxy each forwarded address is its own client.
      for (let index = 0; index < 7; index++) {
        const response = await proxied.inject({ url: '/api/v1/me', headers: { 'x-api-key': 'ank_guess', 'x-forwarded-for': `203.0.113.${index}` } });
        expect(response.statusCode).toBe(401);
      }
    } finally {
      await proxied.close();
    }
  });

  it('still serves the credentials seen valid from an address that failed too often, at no database cost for the rest', async () => {
    const statements: string[] = [];
    const app = await buildTestApp({ AUTH_FAILURE_LIMIT: '5' }, { onQuery: (query) => statements.push(query) });
    try {
      const user = await signUp(app);
      const create = async (name: string) =>
        (await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: user.cookie }, payload: { name } })).json<{ key: string }>().key;
      const [working, unseen, doomed] = [await create('working'), await create('never used from here'), await create('revoked later')];
      // Colleagues at one address work with a key and a session...
      expect((await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': working } })).statusCode).toBe(200);
      // ...and with a key revoked since (seen valid, then not).
      expect((await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': doomed } })).statusCode).toBe(200);
      const doomedId = (await app.inject({ url: '/api/v1/api-keys', headers: { cookie: user.cookie } })).json<{ items: { id: string; name: string }[] }>().items.find((key) => key.name === 'revoked later')?.id;
      expect((await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${doomedId}`, headers: { cookie: user.cookie } })).statusCode).toBe(204);
      // ...then one client there fails until the address is blocked.
      const failures = [];
      for (let index = 0; index < 6; index++) failures.push((await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': `ank_guess${index}` } })).statusCode);
      expect(failures).toEqual([401, 401, 401, 401, 401, 429]);
      // Past the cache's TTL too: the ones seen valid are verified again and served.
      app.callerCache.forgetUser(user.id);
      expect((await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': working } })).statusCode).toBe(200);
      expect((await app.inject({ url: '/api/v1/me', headers: { cookie: user.cookie } })).statusCode).toBe(200);
      // Anything else gets 429 with when to come back, before any lookup: guesses cost the database nothing.
      statements.length = 0;
      for (const headers of [{ 'x-api-key': 'ank_guess-again' }, {}, { 'x-api-key': unseen }]) {
        const refused = await app.inject({ url: '/api/v1/me', headers });
        expectProblem(refused, 429);
        expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
      }
      // (Other statements, such as the rate limiter's periodic sync, may run meanwhile.)
      const lookups = () => statements.filter((query) => /\bapi_keys\b|"session"/.test(query));
      expect(lookups()).toEqual([]);
      // The revoked key was seen valid: it is looked up once more, fails, and is forgotten.
      expectProblem(await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': doomed } }), 429);
      const once = lookups().length;
      expect(once).toBeGreaterThan(0);
      expectProblem(await app.inject({ url: '/api/v1/me', headers: { 'x-api-key': doomed } }), 429);
      expect(lookups()).toHaveLength(once);
    } finally {
      await app.close();
    }
  });

  it('renews the session cookie when a request to /api/v1 extends the session, as Better Auth`s own routes do', async () => {
    const app = await buildTestApp();
    try {
      const user = await signUp(app);
      const expiresAt = async () => {
        const [row] = await app.database.sql<{ ms: number }[]>`select (extract(epoch from expires_at) * 1000)::float8 as ms from session where user_id = ${user.id}`;
        return row?.ms ?? 0;
      };
      // A fresh session is not due for refresh: no cookie.
      expect((await app.inject({ url: '/api/v1/me', headers: { cookie: user.cookie } })).headers['set-cookie']).toBeUndefined();
      // Two days later (of its seven), it is: Better Auth extends it and renews the cookie to match.
      await app.database.sql`update session set expires_at = now() + interval '5 days' where user_id = ${user.id}`;
      app.callerCache.forgetUser(user.id);
      const before = await expiresAt();
      const response = await app.inject({ url: '/api/v1/me', headers: { cookie: user.cookie } });
      expect(response.statusCode).toBe(200);
      const after = await expiresAt();
      expect(after).toBeGreaterThan(before + 86_400_000);
      const cookies = ([] as string[]).concat(response.headers['set-cookie'] ?? []);
      const renewed = cookies.find((cookie) => cookie.startsWith(`${app.sessionCookieName}=`));
      expect(renewed).toMatch(/Max-Age=604800/);
      expect(renewed).toMatch(/HttpOnly/);
      expect((await app.inject({ url: '/api/v1/me', headers: { cookie: cookieHeaderFrom(response) } })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('limits repeated failed sign-ins, answering alike whether or not the email exists', async () => {
    const app = await buildTestApp({ AUTH_RATE_LIMIT_MAX: '3' });
    try {
      // The counters live in the shared database, keyed by address: this test uses addresses of its own.
      const base = `10.${Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}`;
      const email = uniqueEmail('brute');
      const created = await app.inject({ method: 'POST', url: '/api/auth/sign-up/email', remoteAddress: `${base}.9`, payload: { name: 'B', email, password: 'right-password-1' } });
      expect(created.statusCode).toBe(200);
      const user = { email };
      const attempt = (email: string, ip: string) =>
        app.inject({ method: 'POST', url: '/api/auth/sign-in/email', remoteAddress: ip, payload: { email, password: 'wrong-password-1' } });
      const known = await attempt(user.email, `${base}.1`);
      const unknown = await attempt(uniqueEmail('nobody'), `${base}.2`);
      expect(known.statusCode).toBe(401);
      expect(unknown.statusCode).toBe(401);
      // The same problem, but for the id of each request.
      const { requestId: _known, ...knownProblem } = expectProblem(known, 401);
      const { requestId: _unknown, ...unknownProblem } = expectProblem(unknown, 401);
      expect(knownProblem).toEqual(unknownProblem);

      const answers = [];
      for (let index = 0; index < 5; index++) answers.push(await attempt(user.email, `${base}.3`));
      expect(answers.map((answer) => answer.statusCode)).toEqual([401, 401, 401, 429, 429]);
      const limited = answers[3] as (typeof answers)[number];
      expect(expectProblem(limited, 429).code).toBe('RATE_LIMITED');
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
      // Another address is not affected (the counter is per client, and lives in the database).
      expect((await attempt(user.email, `${base}.4`)).statusCode).toBe(401);
    } finally {
      await app.close();
    }
  });
});

describe('nothing leaks into the logs', () => {
  it('keeps passwords, cookies, session tokens and API keys out of every log line', async () => {
    const app = await buildTestApp({ LOG_LEVEL: 'trace' });
    try {
      const password = 'very-secret-password-42';
      const signUpResponse = await app.inject({
        method: 'POST',
        url: '/api/auth/sign-up/email',
        payload: { name: 'Leak', email: uniqueEmail('leak'), password },
      });
      const cookie = cookieHeaderFrom(signUpResponse);
      const token = signUpResponse.json<{ token: string }>().token;
      const key = (await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie, origin: trustedOrigin }, payload: { name: 'k' } })).json<{ key: string }>().key;
      await app.inject({ url: '/api/v1/me', headers: { authorization: `Bearer ${key}` } });
      await app.inject({ url: '/api/v1/me', headers: { cookie } });
      await app.inject({ method: 'POST', url: '/api/auth/sign-in/email', payload: { email: 'x@example.test', password } });
      await app.inject({ url: '/api/v1/nothing', headers: { cookie, 'x-api-key': key } });

      const logs = logsOf(app);
      expect(logs.length).toBeGreaterThan(0);
      for (const secret of [password, token, key, cookie.split('=')[1] ?? 'missing']) expect(logs).not.toContain(secret);
    } finally {
      await app.close();
    }
  });
});
