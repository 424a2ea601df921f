import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp, cookieHeaderFrom, expectProblem, signUp, uniqueEmail, type SignedInUser } from './helpers.js';

const trustedOrigin = 'http://localhost:8100';

describe('the Better Auth endpoints exposed', () => {
  let app: App;
  let user: SignedInUser;
  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const call = (method: 'GET' | 'POST', path: string, payload?: Record<string, unknown>) =>
    app.inject({
      method,
      url: `/api/auth/${path}`,
      headers: { cookie: user.cookie, origin: trustedOrigin },
      ...(payload ? { payload } : {}),
    });

  it.each([
    ['GET', 'list-sessions'],
    ['GET', 'list-accounts'],
    ['GET', 'account-info'],
    ['POST', 'sign-in/social'],
    ['POST', 'link-social'],
    ['POST', 'request-password-reset'],
    ['POST', 'reset-password'],
    ['GET', 'reset-password/some-token'],
    ['POST', 'delete-user'],
    ['POST', 'change-email'],
    ['POST', 'update-session'],
    ['POST', 'get-access-token'],
    ['GET', 'callback/github'],
    ['GET', 'sign-out'],
  ] as const)('answers %s /api/auth/%s with 404: the product does not use it', async (method, path) => {
    expectProblem(await call(method, path, method === 'POST' ? {} : undefined), 404);
  });

  it('never puts a session token in a body: sign-up, sign-in and get-session carry the cookie only', async () => {
    const email = uniqueEmail('tokens');
    const password = 'correct-horse-battery';
    const signedUp = await app.inject({ method: 'POST', url: '/api/auth/sign-up/email', headers: { origin: trustedOrigin }, payload: { name: 'T', email, password } });
    const signedIn = await app.inject({ method: 'POST', url: '/api/auth/sign-in/email', headers: { origin: trustedOrigin }, payload: { email, password } });
    const cookie = cookieHeaderFrom(signedIn);
    const session = await app.inject({ url: '/api/auth/get-session', headers: { cookie } });
    for (const response of [signedUp, signedIn, session]) {
      expect(response.statusCode).toBe(200);
      expect(response.body).not.toMatch(/"token"/);
    }
    // The cookie's token itself appears in no body (its value is "<token>.<signature>").
    const token = decodeURIComponent(cookie.split('=')[1] ?? '').split('.')[0] ?? '';
    expect(token.length).toBeGreaterThan(10);
    for (const response of [signedUp, signedIn, session]) expect(response.body).not.toContain(token);
    expect(session.json<{ user: { email: string } }>().user.email).toBe(email);
  });

  it('keeps the endpoints the product uses working', async () => {
    const own = await signUp(app);
    const changed = await app.inject({
      method: 'POST',
      url: '/api/auth/change-password',
      headers: { cookie: own.cookie, origin: trustedOrigin },
      payload: { currentPassword: own.password, newPassword: 'another-horse-battery', revokeOtherSessions: false },
    });
    expect(changed.statusCode).toBe(200);
    expect(changed.body).not.toMatch(/"token"/);
    const revoked = await app.inject({ method: 'POST', url: '/api/auth/revoke-other-sessions', headers: { cookie: own.cookie, origin: trustedOrigin }, payload: {} });
    expect(revoked.statusCode).toBe(200);
  });
});
