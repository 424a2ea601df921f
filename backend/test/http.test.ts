import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { QUERIES_PER_CONNECTION } from '../src/plugins/admission.js';
import { buildTestApp, expectProblem, logsOf } from './helpers.js';

describe('operations and the error contract', () => {
  let app: App;
  beforeAll(async () => {
    app = await buildTestApp({ ENABLE_TEST_ROUTES: 'true' });
    // A route that fails the way a bug would, to see what reaches the caller and the log.
    app.get('/api/test/explode', async () => {
      throw new Error('internal detail: select * from secrets where token = 42');
    });
  });
  afterAll(async () => {
    await app.close();
  });

  it('answers liveness and readiness', async () => {
    expect((await app.inject('/api/health')).json()).toEqual({ status: 'ok' });
    const ready = await app.inject('/api/ready');
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toEqual({ status: 'ok' });
  });

  it('answers an unknown route with a problem+json 404', async () => {
    const problem = expectProblem(await app.inject('/api/v1/nothing-here'), 404);
    expect(problem.code).toBe('ROUTE_NOT_FOUND');
  });

  it('answers a schema violation with 400 and the offending path', async () => {
    const problem = expectProblem(await app.inject('/api/test/sleep?ms=-5'), 400);
    expect(problem.code).toBe('VALIDATION_FAILED');
    expect(problem.errors).toEqual([expect.objectContaining({ path: 'ms' })]);
    const unknown = expectProblem(await app.inject('/api/test/sleep?ms=1&sneaky=1'), 400);
    expect(unknown.errors).toEqual([expect.objectContaining({ path: 'sneaky' })]);
  });

  it('answers malformed JSON with 400 and a non-JSON body with 415', async () => {
    const malformed = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      headers: { 'content-type': 'application/json' },
      payload: '{"email": ',
    });
    expect(expectProblem(malformed, 400).code).toBe('MALFORMED_JSON');
    const xml = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      headers: { 'content-type': 'application/xml' },
      payload: '<email/>',
    });
    expect(expectProblem(xml, 415).code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });

  it('answers an oversized body with 413', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ email: 'a@b.c', password: 'x'.repeat(2 * 1024 * 1024) }),
    });
    expectProblem(response, 413);
  });

  it('keeps a 500 generic for the caller and complete in the log', async () => {
    const response = await app.inject({ url: '/api/test/explode', headers: { 'x-request-id': 'trace-500-check' } });
    const problem = expectProblem(response, 500);
    expect(problem.requestId).toBe('trace-500-check');
    expect(response.body).not.toContain('secrets');
    expect(response.body).not.toContain('at ');
    expect(logsOf(app)).toContain('internal detail: select * from secrets');
  });

  it('redacts credentials from log lines', async () => {
    app.log.info(
      { headers: { cookie: 'session=SECRET-COOKIE', authorization: 'Bearer SECRET-BEARER', 'x-api-key': 'SECRET-HEADER-KEY' }, body: { password: 'SECRET-PASSWORD', key: 'SECRET-KEY' } },
      'redaction probe',
    );
    const logs = logsOf(app);
    expect(logs).toContain('redaction probe');
    for (const secret of ['SECRET-COOKIE', 'SECRET-BEARER', 'SECRET-HEADER-KEY', 'SECRET-PASSWORD', 'SECRET-KEY']) expect(logs).not.toContain(secret);
  });

  it('honours a sane x-request-id and replaces an unsafe one', async () => {
    const honoured = await app.inject({ url: '/api/health', headers: { 'x-request-id': 'abc-123' } });
    expect(honoured.headers['x-request-id']).toBe('abc-123');
    const unsafe = await app.inject({ url: '/api/health', headers: { 'x-request-id': 'evil\nline injected' } });
    expect(unsafe.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('allows credentialed CORS for CORS_ORIGINS only', async () => {
    const trusted = await app.inject({
      method: 'OPTIONS',
      url: '/api/v1/me',
      headers: { origin: 'http://localhost:8100', 'access-control-request-method': 'GET' },
    });
    expect(trusted.headers['access-control-allow-origin']).toBe('http://localhost:8100');
    expect(trusted.headers['access-control-allow-credentials']).toBe('true');
    const untrusted = await app.inject({
      method: 'OPTIONS',
      url: '/api/v1/me',
      headers: { origin: 'https://evil.example', 'access-control-request-method': 'GET' },
    });
    expect(untrusted.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('publishes the OpenAPI document without the auth catch-all, and the docs page', async () => {
    const document = (await app.inject('/api/openapi.json')).json<{ openapi: string; paths: Record<string, unknown> }>();
    expect(document.openapi).toMatch(/^3\./);
    expect(Object.keys(document.paths)).toEqual(expect.arrayContaining(['/api/health', '/api/ready', '/api/v1/me']));
    expect(Object.keys(document.paths).filter((route) => route.startsWith('/api/auth'))).toEqual([]);
    const docs = await app.inject('/api/docs');
    expect([200, 302]).toContain(docs.statusCode);
    const page = docs.statusCode === 302 ? await app.inject(String(docs.headers.location)) : docs;
    expect(page.headers['content-type']).toContain('text/html');
  });
});

describe('when the database is unreachable', () => {
  it('reports not ready (503 problem+json, quickly) while liveness stays 200', async () => {
    // Port 1 on loopback: nothing listens, so every connection attempt is refused.
    const app = await buildTestApp({ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', DB_CONNECT_TIMEOUT: '2' });
    try {
      const started = Date.now();
      const ready = await app.inject('/api/ready');
      expect(Date.now() - started).toBeLessThan(5_000);
      const problem = expectProblem(ready, 503);
      expect(problem.code).toBe('DATABASE_UNAVAILABLE');
      expect(ready.headers['retry-after']).toBeDefined();
      expect((await app.inject('/api/health')).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });
});

describe('the handler deadline', () => {
  it('answers a request still running after HANDLER_TIMEOUT_MS with 503 problem+json', async () => {
    const app = await buildTestApp({ ENABLE_TEST_ROUTES: 'true', HANDLER_TIMEOUT_MS: '300' });
    try {
      const started = Date.now();
      const response = await app.inject('/api/test/sleep?ms=1500');
      expect(expectProblem(response, 503).code).toBe('TIMEOUT');
      expect(response.headers['retry-after']).toBe('5');
      expect(Date.now() - started).toBeLessThan(1_400);
    } finally {
      await app.close();
    }
  });
});

describe('database permits', () => {
  it('come back when clients abort, even while they wait for one', async () => {
    const app = await buildTestApp({ ENABLE_TEST_ROUTES: 'true', DB_ACQUIRE_TIMEOUT_MS: '2000' });
    try {
      // More aborted requests than there are permits: one that leaked would leave none for the last request.
      const permits = app.config.db.poolSize * QUERIES_PER_CONNECTION;
      const address = await app.listen({ host: '127.0.0.1', port: 0 });
      const aborted = Array.from({ length: permits + 7 }, () =>
        fetch(`${address}/api/test/sleep?ms=200`, { signal: AbortSignal.timeout(30) }).catch(() => 'aborted'),
      );
      await Promise.all(aborted);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const response = await fetch(`${address}/api/test/sleep?ms=1`);
      expect(response.status).toBe(200);
    } finally {
      await app.close();
    }
  });
});
