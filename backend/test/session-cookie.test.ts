import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';

/**
 * The verified-caller cache is keyed by the session cookie. An attacker who can plant a cookie in
 * the victim's browser (a sibling subdomain, a plain-http response) adds a decoy whose name looks
 * like the session cookie, with a value the attacker knows. Better Auth verifies the real cookie;
 * if the cache were keyed by the decoy, the decoy's value alone would then act as the victim.
 */

/** A value the attacker chose (no session, no valid signature), new for each test: the cache is the app's. */
const known = () => `attacker-${randomUUID()}`;

async function me(app: App, cookie: string) {
  return app.inject({ method: 'GET', url: '/api/v1/me', headers: { cookie } });
}

/** The victim's session cookie value (the pair named `name` in its Cookie header). */
function sessionValue(user: SignedInUser, name: string): string {
  const pair = user.cookie.split('; ').find((item) => item.startsWith(`${name}=`));
  if (!pair) throw new Error(`no ${name} cookie in ${user.cookie}`);
  return pair.slice(name.length + 1);
}

/** Counts Better Auth's session lookups, to see whether a request was answered from the cache. */
function sessionQueries(statements: string[]): number {
  return statements.filter((query) => /from "session"/.test(query)).length;
}

describe('the session cookie beside a decoy', () => {
  let app: App;
  const statements: string[] = [];
  beforeAll(async () => {
    app = await buildTestApp({ AUTH_CACHE_TTL_MS: '60000' }, { onQuery: (query) => statements.push(query) });
  });
  afterAll(async () => {
    await app.close();
  });

  const name = 'better-auth.session_token';
  // Each decoy comes first: a parser that takes the first name-alike would key the cache with it.
  const decoys = [`x.${name}`, `__Secure-${name}`, `${name.replace('.', '-')}`];

  for (const decoy of decoys) {
    it(`answers as the victim beside ${decoy}=KNOWN, and KNOWN alone is refused`, async () => {
      const KNOWN = known();
      const victim = await signUp(app);
      const real = `${name}=${sessionValue(victim, name)}`;
      for (let attempt = 0; attempt < 2; attempt++) {
        const response = await me(app, `${decoy}=${KNOWN}; ${real}`);
        expect(response.statusCode).toBe(200);
        expect(response.json()).toMatchObject({ email: victim.email });
      }
      for (const alone of [`${name}=${KNOWN}`, `${decoy}=${KNOWN}`, `x.${name}=${KNOWN}`, `__Secure-${name}=${KNOWN}`]) {
        expectProblem(await me(app, alone), 401);
      }
    });
  }

  it('leaves the same cookie name twice to Better Auth, uncached', async () => {
    const KNOWN = known();
    const victim = await signUp(app);
    const real = `${name}=${sessionValue(victim, name)}`;
    // Better Auth reads the first of two same-named cookies.
    expect((await me(app, `${real}; ${name}=${KNOWN}`)).json()).toMatchObject({ email: victim.email });
    expectProblem(await me(app, `${name}=${KNOWN}; ${real}`), 401);
    expectProblem(await me(app, `${name}=${KNOWN}`), 401);
  });

  it('caches the exact cookie alone, and never a request with a decoy', async () => {
    const KNOWN = known();
    const victim = await signUp(app);
    const real = `${name}=${sessionValue(victim, name)}`;
    const decoyed = `x.${name}=${KNOWN}; ${real}`;
    statements.length = 0;
    expect((await me(app, decoyed)).statusCode).toBe(200);
    expect((await me(app, decoyed)).statusCode).toBe(200);
    expect(sessionQueries(statements)).toBe(2);

    statements.length = 0;
    expect((await me(app, `other=1; ${real}`)).statusCode).toBe(200);
    expect((await me(app, `${real}; other=2`)).statusCode).toBe(200);
    expect(sessionQueries(statements)).toBe(1);
  });
});

describe('the __Secure- session cookie beside a decoy (production)', () => {
  let app: App;
  beforeAll(async () => {
    app = await buildTestApp({
      NODE_ENV: 'production',
      SECRETS_KEYS: generateKeyEntry('k1'),
      BETTER_AUTH_SECRET: 'x'.repeat(40),
      AUTH_BASE_URL: 'https://autonode.example/api',
      AUTH_CACHE_TTL_MS: '60000',
    });
  });
  afterAll(async () => {
    await app.close();
  });

  const name = '__Secure-better-auth.session_token';

  for (const decoy of ['better-auth.session_token', 'x.better-auth.session_token']) {
    it(`answers as the victim beside ${decoy}=KNOWN, and KNOWN alone is refused`, async () => {
      const KNOWN = known();
      const victim = await signUp(app);
      const real = `${name}=${sessionValue(victim, name)}`;
      const response = await me(app, `${decoy}=${KNOWN}; ${real}`);
      expect(response.statusCode).toBe(200);
      expect(response.json()).toMatchObject({ email: victim.email });
      for (const alone of [`${decoy}=${KNOWN}`, `${name}=${KNOWN}`]) expectProblem(await me(app, alone), 401);
    });
  }

  it('takes the session cookie by its exact name only, cached or not', async () => {
    const victim = await signUp(app);
    const value = sessionValue(victim, name);
    expect((await me(app, `${name}=${value}`)).statusCode).toBe(200);
    for (const other of ['better-auth.session_token', 'x.__Secure-better-auth.session_token']) {
      expectProblem(await me(app, `${other}=${value}`), 401);
    }
  });
});
