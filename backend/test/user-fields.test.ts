import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { USER_FIELD_LIMITS } from '../src/auth/auth.js';
import { buildTestApp, expectProblem, signUp, uniqueEmail, type SignedInUser } from './helpers.js';

const trustedOrigin = 'http://localhost:8100';

describe('user fields', () => {
  let app: App;
  let user: SignedInUser;
  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  const updateUser = (payload: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: '/api/auth/update-user', headers: { cookie: user.cookie, origin: trustedOrigin }, payload });
  const me = async () => (await app.inject({ url: '/api/v1/me', headers: { cookie: user.cookie } })).json<{ name: string }>();

  it('refuses a name or email past its bound at sign-up, and creates no user', async () => {
    for (const fields of [
      { name: 'n'.repeat(USER_FIELD_LIMITS.nameLength + 1), email: uniqueEmail('long-name') },
      { name: 'Huge', email: `${'e'.repeat(USER_FIELD_LIMITS.emailLength)}@example.test` },
      { name: 'x'.repeat(1_000_000), email: uniqueEmail('megabyte') },
    ]) {
      const response = await app.inject({
        method: 'POST',
        url: '/api/auth/sign-up/email',
        headers: { origin: trustedOrigin },
        payload: { ...fields, password: 'correct-horse-battery' },
      });
      expect(response.statusCode, fields.email.slice(0, 40)).toBe(400);
      expect(response.body).not.toContain('x'.repeat(1000));
      const signIn = await app.inject({
        method: 'POST',
        url: '/api/auth/sign-in/email',
        headers: { origin: trustedOrigin },
        payload: { email: fields.email, password: 'correct-horse-battery' },
      });
      expect(signIn.statusCode).toBe(401);
    }
    const atTheBound = await signUp(app, { name: 'n'.repeat(USER_FIELD_LIMITS.nameLength) });
    expect(atTheBound.id).toBeTruthy();
  });

  it('refuses a long name and any image that is not a bounded http(s) URL on update, and keeps what was there', async () => {
    const before = await me();
    const tooLong = expectProblem(await updateUser({ name: 'n'.repeat(USER_FIELD_LIMITS.nameLength + 1) }), 400);
    expect(tooLong).toMatchObject({ code: 'INVALID_USER_FIELD', errors: [{ path: 'name' }] });
    for (const image of ['javascript:alert(1)', 'data:text/html,<script>1</script>', 'not a url', `https://example.test/${'i'.repeat(USER_FIELD_LIMITS.imageLength)}`]) {
      expect((await updateUser({ image })).statusCode, image.slice(0, 40)).toBe(400);
    }
    expect((await me()).name).toBe(before.name);

    expect((await updateUser({ name: 'Renamed', image: 'https://example.test/avatar.png' })).statusCode).toBe(200);
    expect((await me()).name).toBe('Renamed');
    expect((await updateUser({ image: null })).statusCode).toBe(200);
  });
});
