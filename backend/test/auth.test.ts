import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp, cookieHeaderFrom, expectProblem, signUp, uniqueEmail } from './helpers.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';

describe('authentication', () => {
  let app: App;
  beforeAll(async () => {
    app = await buildTestApp();
  });
  afterAll(async () => {
    await app.close();
  });

  it('refuses the protected scope without a caller', async () => {
    const response = await app.inject({ method: 'GET', url: '/api/v1/me' });
    const problem = expectProblem(response, 401);
    expect(problem.code).toBe('UNAUTHORIZED');
  });

  it('signs up with an HttpOnly, SameSite=Lax session cookie that opens the protected scope', async () => {
    const email = uniqueEmail('signup');
    const response = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-up/email',
      payload: { name: 'Ada', email, password: 'correct-horse-battery' },
    });
    expect(response.statusCode).toBe(200);
    const session = response.cookies.find((cookie) => cookie.name.endsWith('session_token'));
    expect(session).toBeDefined();
    expect(session?.httpOnly).toBe(true);
    expect(session?.sameSite).toBe('Lax');
    expect(session?.secure).toBeFalsy();

    const me = await app.inject({ method: 'GET', url: '/api/v1/me', headers: { cookie: cookieHeaderFrom(response) } });
    expect(me.statusCode).toBe(200);
    expect(me.json()).toMatchObject({ name: 'Ada', email, authenticatedVia: 'session' });
  });

  it('signs in, reports the session, and signs out for good', async () => {
    const user = await signUp(app);
    const signIn = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      payload: { email: user.email, password: user.password },
    });
    expect(signIn.statusCode).toBe(200);
    const cookie = cookieHeaderFrom(signIn);

    const session = await app.inject({ method: 'GET', url: '/api/auth/get-session', headers: { cookie } });
    expect(session.statusCode).toBe(200);
    expect(session.json()).toMatchObject({ user: { id: user.id, email: user.email } });

    const signOut = await app.inject({ method: 'POST', url: '/api/auth/sign-out', headers: { cookie, origin: 'http://localhost:8100' }, payload: {} });
    expect(signOut.statusCode).toBe(200);

    // The old cookie value is dead server-side, even if a client kept it.
    expectProblem(await app.inject({ method: 'GET', url: '/api/v1/me', headers: { cookie } }), 401);
  });

  it('refuses a wrong password without a session', async () => {
    const user = await signUp(app);
    const response = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      payload: { email: user.email, password: 'not-the-password' },
    });
    expect(response.statusCode).toBe(401);
    expect(response.cookies.find((cookie) => cookie.name.endsWith('session_token') && cookie.value)).toBeUndefined();
  });

  it('refuses a tampered session cookie', async () => {
    const user = await signUp(app);
    const tampered = user.cookie.replace(/session_token=([^;]{4})/, 'session_token=XXXX');
    expect(tampered).not.toBe(user.cookie);
    expectProblem(await app.inject({ method: 'GET', url: '/api/v1/me', headers: { cookie: tampered } }), 401);
  });

  it('refuses sign-in from an Origin outside CORS_ORIGINS', async () => {
    const user = await signUp(app);
    const response = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      headers: { origin: 'https://evil.example', cookie: user.cookie },
      payload: { email: user.email, password: user.password },
    });
    expect(response.statusCode).toBe(403);
  });
});

describe('Better Auth’s errors', () => {
  let app: App;
  beforeAll(async () => {
    app = await buildTestApp();
  });
  afterAll(async () => {
    await app.close();
  });

  // API.md: every error is problem+json with a stable code, Better Auth's included, with its status.
  it('answers a wrong password with 401 problem+json INVALID_EMAIL_OR_PASSWORD, echoing nothing sent', async () => {
    const user = await signUp(app);
    const response = await app.inject({ method: 'POST', url: '/api/auth/sign-in/email', payload: { email: user.email, password: 'not-the-password' } });
    const problem = expectProblem(response, 401);
    expect(problem).toMatchObject({ code: 'INVALID_EMAIL_OR_PASSWORD', detail: 'Invalid email or password', title: 'Unauthorized' });
    expect(response.body).not.toContain(user.email);
    expect(response.body).not.toContain('not-the-password');
  });

  it('keeps Better Auth’s status and code for a taken email (422), a bad field (400) and an untrusted Origin (403)', async () => {
    const user = await signUp(app);
    const taken = await app.inject({ method: 'POST', url: '/api/auth/sign-up/email', payload: { name: 'Again', email: user.email, password: 'correct-horse-battery' } });
    expect(expectProblem(taken, 422).code).toBe('USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL');
    expect(taken.body).not.toContain(user.email);

    const invalid = await app.inject({ method: 'POST', url: '/api/auth/sign-up/email', payload: { name: 'Bad', email: 'not-an-email', password: 'correct-horse-battery' } });
    const problem = expectProblem(invalid, 400);
    expect(problem.code).toBe('VALIDATION_ERROR');
    expect(problem.errors).toEqual([expect.objectContaining({ path: 'email' })]);
    expect(invalid.body).not.toContain('not-an-email');

    const short = await app.inject({ method: 'POST', url: '/api/auth/sign-up/email', payload: { name: 'Short', email: uniqueEmail('short'), password: 'x' } });
    expect(expectProblem(short, 400).code).toBe('PASSWORD_TOO_SHORT');

    const foreign = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      headers: { origin: 'https://evil.example', cookie: user.cookie },
      payload: { email: user.email, password: user.password },
    });
    expect(expectProblem(foreign, 403).code).toBe('INVALID_ORIGIN');
  });

  it('leaves successful answers as Better Auth wrote them', async () => {
    const user = await signUp(app);
    const session = await app.inject({ method: 'GET', url: '/api/auth/get-session', headers: { cookie: user.cookie } });
    expect(session.statusCode).toBe(200);
    expect(String(session.headers['content-type'])).toMatch(/^application\/json/);
    expect(session.json()).toMatchObject({ user: { id: user.id }, session: expect.any(Object) });
  });
});

describe('authentication in production', () => {
  it('marks the session cookie Secure', async () => {
    const app = await buildTestApp({ NODE_ENV: 'production', SECRETS_KEYS: generateKeyEntry('k1'), BETTER_AUTH_SECRET: 'x'.repeat(40), AUTH_BASE_URL: 'https://autonode.example/api' });
    try {
      const response = await app.inject({
        method: 'POST',
        url: '/api/auth/sign-up/email',
        payload: { name: 'Prod', email: uniqueEmail('prod'), password: 'correct-horse-battery' },
      });
      expect(response.statusCode).toBe(200);
      const session = response.cookies.find((cookie) => cookie.name.endsWith('session_token'));
      expect(session?.secure).toBe(true);
      expect(session?.httpOnly).toBe(true);
    } finally {
      await app.close();
    }
  });
});

describe('one database client', () => {
  it('carries Better Auth’s queries through the same postgres.js pool as the routes', async () => {
    const statements: string[] = [];
    const app = await buildTestApp({}, { onQuery: (query) => statements.push(query) });
    try {
      const user = await signUp(app);
      statements.length = 0;
      expect((await app.inject({ method: 'GET', url: '/api/v1/me', headers: { cookie: user.cookie } })).statusCode).toBe(200);
      // getSession's lookup of the session row went through the app's own client, not a second pool.
      expect(statements.some((query) => /from "session"/.test(query))).toBe(true);
    } finally {
      await app.close();
    }
  });
});
