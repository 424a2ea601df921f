/**
 * Every protected route (everything under /api/v1, read from the OpenAPI document, so a new route
 * is covered without touching this file) against every way a credential can be missing or dead:
 * none, a tampered session cookie, an expired session, a signed-out session, a revoked API key, a
 * made-up key. Each must answer 401 problem+json — before any body is read, before any lookup
 * of the id, and before the event stream starts.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { makeResources } from './fixtures.js';
import { buildTestApp, signUp, type SignedInUser } from './helpers.js';

const SPA_ORIGIN = 'http://localhost:8100';
const SESSION_COOKIE = 'better-auth.session_token';
/** A response that takes longer is taken for a stream that started: a 401 is immediate. */
const ANSWER_WITHIN_MS = 5_000;

type OpenApiDocument = { paths: Record<string, Record<string, { requestBody?: unknown }>> };
interface Route {
  readonly method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE';
  readonly path: string;
  readonly hasBody: boolean;
}

/** A credential case: the headers it adds to a request. */
interface Credential {
  readonly name: string;
  readonly headers: Record<string, string>;
}

describe('every protected route refuses every missing or dead credential with 401', () => {
  let app: App;
  let routes: Route[];
  /** Real ids of the owner's resources: a route must not even find out whether they exist. */
  let ids: Record<string, string>;
  let owner: SignedInUser;

  beforeAll(async () => {
    // No cache of verified callers: the database's state of a session or key is what must count.
    // (The test config's per-address failure limit is far above the few hundred 401s sent here.)
    app = await buildTestApp({ AUTH_CACHE_TTL_MS: '0' });
    owner = await signUp(app);
    const resources = await makeResources(app, owner);
    ids = {
      workflows: resources.workflow.id,
      jobs: resources.job.id,
      executions: resources.execution.id,
      'api-keys': resources.apiKey.id,
      variables: resources.variable.id,
      connections: resources.connection.id,
      deliveries: resources.delivery.id,
      'event-subscriptions': resources.eventSubscription.id,
      'event-deliveries': resources.eventDelivery.id,
    };

    const document = (await app.inject('/api/openapi.json')).json<OpenApiDocument>();
    routes = Object.entries(document.paths)
      .filter(([path]) => path === '/api/v1' || path.startsWith('/api/v1/'))
      .flatMap(([path, operations]) =>
        Object.entries(operations)
          .filter(([method]) => ['get', 'post', 'patch', 'put', 'delete'].includes(method))
          .map(([method, operation]): Route => ({ method: method.toUpperCase() as Route['method'], path, hasBody: operation.requestBody !== undefined })),
      );
  });
  afterAll(async () => {
    await app.close();
  });

  const urlOf = (route: Route) =>
    route.path.replace(/\{([^}]+)\}/g, () => ids[route.path.split('/')[3] ?? ''] ?? randomUUID());

  /** Sends `credential` to every route; returns what did not answer a prompt 401 problem+json. */
  const refusals = async (credential: Credential): Promise<string[]> => {
    const failures: string[] = [];
    for (const route of routes) {
      const headers: Record<string, string> = { ...credential.headers };
      // A cookie-carrying write from the SPA's origin: the CSRF check must not be what refuses it.
      if (route.method !== 'GET') headers.origin = SPA_ORIGIN;
      const request = app.inject({ method: route.method, url: urlOf(route), headers, ...(route.hasBody ? { payload: {} } : {}) });
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), ANSWER_WITHIN_MS);
      });
      const response = await Promise.race([request, timeout]).finally(() => clearTimeout(timer));
      const problem = response === 'timeout' ? `no answer within ${ANSWER_WITHIN_MS} ms (a stream started?)` : unauthorizedProblem(response);
      if (problem) failures.push(`${route.method} ${route.path} with ${credential.name}: ${problem}`);
    }
    return failures;
  };

  /** A credential that works, first: otherwise the 401s below would prove nothing. */
  const expectAccepted = async (headers: Record<string, string>) => {
    const response = await app.inject({ url: '/api/v1/me', headers });
    expect(response.statusCode, `the credential should work before it is broken: ${response.body}`).toBe(200);
  };

  it('covers every /api/v1 route of the document, the event stream included', () => {
    expect(routes.length).toBeGreaterThanOrEqual(20);
    expect(routes.map((route) => `${route.method} ${route.path}`)).toContain('GET /api/v1/executions/{id}/events');
  });

  it('without any credential', async () => {
    expect(await refusals({ name: 'no credential', headers: {} })).toEqual([]);
  });

  it('with a tampered session cookie', async () => {
    await expectAccepted({ cookie: owner.cookie });
    const value = sessionCookieValue(owner.cookie);
    // Better Auth's cookie is `<token>.<signature>`: the token part is what is tampered with.
    const separator = decodeURIComponent(value).indexOf('.');
    const decoded = decodeURIComponent(value);
    const token = decoded.slice(0, separator);
    const signature = decoded.slice(separator);
    const flip = (character: string) => (character === 'A' ? 'B' : 'A');
    const tampered = [
      `${flip(token[0] ?? 'A')}${token.slice(1)}${signature}`,
      `${token.slice(0, -1)}${flip(token.at(-1) ?? 'A')}${signature}`,
      `${token.slice(0, Math.floor(token.length / 2))}${signature}`,
      `${token}x${signature}`,
      token,
      `${token}.`,
      `${randomBytes(24).toString('base64url')}${signature}`,
    ];
    const failures: string[] = [];
    for (const [index, cookieValue] of tampered.entries()) {
      const cookie = `${SESSION_COOKIE}=${encodeURIComponent(cookieValue)}`;
      failures.push(...(await refusals({ name: `tampered cookie #${index}`, headers: { cookie } })));
    }
    expect(failures).toEqual([]);
  });

  it('with an expired session', async () => {
    const user = await signUp(app);
    await expectAccepted({ cookie: user.cookie });
    await app.database.sql`update session set expires_at = now() - interval '1 minute' where user_id = ${user.id}`;
    expect(await refusals({ name: 'an expired session', headers: { cookie: user.cookie } })).toEqual([]);
  });

  it('with a signed-out session', async () => {
    const user = await signUp(app);
    await expectAccepted({ cookie: user.cookie });
    const signOut = await app.inject({ method: 'POST', url: '/api/auth/sign-out', headers: { cookie: user.cookie, origin: SPA_ORIGIN }, payload: {} });
    expect(signOut.statusCode, signOut.body).toBe(200);
    expect(await refusals({ name: 'a signed-out session', headers: { cookie: user.cookie } })).toEqual([]);
  });

  it('with a revoked API key, as Bearer and as x-api-key', async () => {
    const created = await app.inject({ method: 'POST', url: '/api/v1/api-keys', headers: { cookie: owner.cookie, origin: SPA_ORIGIN }, payload: { name: 'to revoke' } });
    expect(created.statusCode, created.body).toBe(201);
    const key = created.json<{ id: string; key: string }>();
    await expectAccepted({ authorization: `Bearer ${key.key}` });
    await expectAccepted({ 'x-api-key': key.key });
    const revoked = await app.inject({ method: 'DELETE', url: `/api/v1/api-keys/${key.id}`, headers: { cookie: owner.cookie, origin: SPA_ORIGIN } });
    expect(revoked.statusCode, revoked.body).toBe(204);
    const failures = [
      ...(await refusals({ name: 'a revoked key as Bearer', headers: { authorization: `Bearer ${key.key}` } })),
      ...(await refusals({ name: 'a revoked key as x-api-key', headers: { 'x-api-key': key.key } })),
    ];
    expect(failures).toEqual([]);
  });

  it('with a made-up API key, as Bearer and as x-api-key', async () => {
    const madeUp = [`ank_${randomBytes(32).toString('base64url')}`, 'not-a-key', `ank_${'x'.repeat(200)}`];
    const failures: string[] = [];
    for (const key of madeUp) {
      failures.push(...(await refusals({ name: `made-up key '${key.slice(0, 12)}…' as Bearer`, headers: { authorization: `Bearer ${key}` } })));
      failures.push(...(await refusals({ name: `made-up key '${key.slice(0, 12)}…' as x-api-key`, headers: { 'x-api-key': key } })));
    }
    // A bad key is refused even beside a good session cookie: it is never passed over for the cookie.
    failures.push(...(await refusals({ name: 'a made-up key beside a valid cookie', headers: { cookie: owner.cookie, 'x-api-key': `ank_${randomBytes(32).toString('base64url')}` } })));
    expect(failures).toEqual([]);
  });
});

function sessionCookieValue(cookieHeader: string): string {
  const pair = cookieHeader.split(';').map((part) => part.trim()).find((part) => part.startsWith(`${SESSION_COOKIE}=`));
  if (!pair) throw new Error(`no ${SESSION_COOKIE} in '${cookieHeader}'`);
  return pair.slice(SESSION_COOKIE.length + 1);
}

/** Empty when the response is a 401 problem+json; otherwise what is wrong with it. */
function unauthorizedProblem(response: LightMyRequestResponse): string {
  if (response.statusCode !== 401) return `answered ${response.statusCode} ${String(response.headers['content-type'] ?? '')}: ${response.body.slice(0, 200)}`;
  const contentType = String(response.headers['content-type'] ?? '');
  if (!contentType.startsWith('application/problem+json')) return `401 with content-type '${contentType}'`;
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(response.body) as Record<string, unknown>;
  } catch {
    return '401 whose body is not JSON';
  }
  const missing = ['type', 'title', 'status', 'detail', 'code', 'requestId'].filter((field) => !(field in body));
  if (missing.length > 0) return `401 problem lacks ${missing.join(', ')}`;
  if (body.status !== 401) return `401 problem says status ${String(body.status)}`;
  return '';
}
