/**
 * API.md: a body that is not JSON is 415 problem+json on every route (but /api/hooks/*). Routes
 * come from the OpenAPI document, so a new route is covered without editing this file; Better
 * Auth's routes, which the document hides, are listed here.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp, expectProblem, sampleGraph, signUp, type SignedInUser } from './helpers.js';
import { operationsOf, publishedDocument, type Operation } from './openapi-document.js';

const SPA_ORIGIN = 'http://localhost:8100';

/** Bodies of every kind but JSON, each with what it claims to be (undefined: no Content-Type at all). */
const NON_JSON: readonly { readonly contentType: string | undefined; readonly payload: string }[] = [
  { contentType: 'text/plain', payload: '{"name":"x"}' },
  { contentType: 'text/plain; charset=utf-8', payload: 'hello' },
  { contentType: 'application/x-www-form-urlencoded', payload: 'name=x' },
  { contentType: 'multipart/form-data; boundary=b', payload: '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n' },
  { contentType: 'application/xml', payload: '<name>x</name>' },
  { contentType: 'application/octet-stream', payload: '\u0000\u0001' },
  { contentType: 'application/jsonp', payload: '{"name":"x"}' },
  { contentType: undefined, payload: '{"name":"x"}' },
];

describe('content types', () => {
  let app: App;
  let user: SignedInUser;
  let writes: Operation[];
  let ids: Record<string, string>;

  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
    writes = operationsOf(await publishedDocument(app)).filter((operation) => operation.method !== 'GET');
    const headers = { cookie: user.cookie, origin: SPA_ORIGIN };
    const workflow = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'target', ...sampleGraph } })).json<{ id: string }>();
    const job = (await app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: { name: 'target', workflowId: workflow.id, cron: '0 0 * * *' } })).json<{ id: string }>();
    ids = { workflows: workflow.id, jobs: job.id };
  });
  afterAll(async () => {
    await app.close();
  });

  const send = (method: Operation['method'], url: string, body: (typeof NON_JSON)[number], extra: Record<string, string> = {}) =>
    app.inject({
      method,
      url,
      headers: { ...extra, ...(body.contentType === undefined ? {} : { 'content-type': body.contentType }) },
      payload: body.payload,
    });

  it('answers 415 UNSUPPORTED_MEDIA_TYPE to a non-JSON body on every write route, with or without a body schema, changing nothing', async () => {
    expect(writes.length).toBeGreaterThanOrEqual(8);
    const failures: string[] = [];
    for (const operation of writes) {
      const url = operation.path.replace(/\{[^}]+\}/g, () => ids[operation.path.split('/')[3] ?? ''] ?? randomUUID());
      for (const body of NON_JSON) {
        const response = await send(operation.method, url, body, { cookie: user.cookie, origin: SPA_ORIGIN });
        const code = response.headers['content-type']?.toString().startsWith('application/problem+json') ? response.json<{ code?: string }>().code : undefined;
        if (response.statusCode !== 415 || code !== 'UNSUPPORTED_MEDIA_TYPE') {
          failures.push(`${operation.method} ${operation.path} as ${body.contentType ?? '(none)'}: ${response.statusCode} ${response.body.slice(0, 120)}`);
        }
      }
    }
    expect(failures).toEqual([]);
    // The DELETEs among them changed nothing.
    expect((await app.inject({ url: `/api/v1/workflows/${ids.workflows}`, headers: { cookie: user.cookie } })).statusCode).toBe(200);
    expect((await app.inject({ url: `/api/v1/jobs/${ids.jobs}`, headers: { cookie: user.cookie } })).statusCode).toBe(200);
  });

  it('answers 415 on Better Auth’s routes too, which still take JSON', async () => {
    const email = `ct-${randomUUID()}@example.test`;
    for (const url of ['/api/auth/sign-up/email', '/api/auth/sign-in/email', '/api/auth/sign-out']) {
      for (const body of NON_JSON) {
        const payload = url.endsWith('sign-out') ? '{}' : JSON.stringify({ name: 'CT', email, password: 'correct-horse-battery' });
        const response = await send('POST', url, { ...body, payload }, { origin: SPA_ORIGIN });
        expect(expectProblem(response, 415).code, `${url} as ${body.contentType ?? '(none)'}`).toBe('UNSUPPORTED_MEDIA_TYPE');
      }
    }
    // Nothing was created by the refused sign-ups; JSON still works.
    const signIn = await app.inject({ method: 'POST', url: '/api/auth/sign-in/email', payload: { email, password: 'correct-horse-battery' } });
    expect(signIn.statusCode).toBe(401);
    const signUpJson = await app.inject({ method: 'POST', url: '/api/auth/sign-up/email', payload: { name: 'CT', email, password: 'correct-horse-battery' } });
    expect(signUpJson.statusCode).toBe(200);
    const charset = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      headers: { 'content-type': 'application/json; charset=utf-8' },
      payload: JSON.stringify({ email, password: 'correct-horse-battery' }),
    });
    expect(charset.statusCode).toBe(200);
  });

  it('still takes a write without a body where none is needed', async () => {
    const headers = { cookie: user.cookie, origin: SPA_ORIGIN };
    const workflow = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'bodiless', ...sampleGraph } })).json<{ id: string }>();
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${workflow.id}`, headers })).statusCode).toBe(204);
  });
});
