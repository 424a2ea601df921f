/**
 * What Caddy tells the backend about the browser, and what the backend builds from AUTH_BASE_URL;
 * then the typed client (@autonode/client) used from Node through the same Caddy.
 *
 * Telling the browser from Caddy: the browser reaches Caddy on 127.0.0.1, Caddy reaches the
 * backend on ::1, and the backend trusts ::1 only (TRUST_PROXY; see e2e.stack.ts). The backend can log
 * 127.0.0.1 for a request only by believing the X-Forwarded-For that Caddy added.
 */
import { randomUUID } from 'node:crypto';
import { createAutonodeClient } from '@autonode/client';
import { describe, expect, it } from 'vitest';
import { fetchFromPage, newDemoUser, openDemo, signUp } from './demo.js';
import { browserAddress, caddyAddress, useStack } from './stack.js';

const e2e = useStack();
const browser = e2e.browser;

describe('Caddy in front of the backend', () => {
  it("forwards the browser's address: the backend logs it and records it on the session, not Caddy's", async () => {
    expect(browserAddress).not.toBe(caddyAddress);
    expect(e2e.stack.backendEnv.TRUST_PROXY).toBe(caddyAddress);
    const page = browser.page();
    const user = newDemoUser();
    await openDemo(page, e2e.stack.siteUrl);
    await signUp(page, user);

    // A request the page makes, found in the backend's log by the id it carries.
    const requestId = `e2e-${randomUUID()}`;
    const status = await page.evaluate(async (id) => (await fetch('/api/v1/me', { headers: { 'x-request-id': id } })).status, requestId);
    expect(status).toBe(200);
    const incoming = await e2e.stack.incomingRequest(requestId);
    expect(incoming?.req).toMatchObject({ method: 'GET', url: '/api/v1/me', remoteAddress: browserAddress, host: new URL(e2e.stack.siteUrl).host });

    // Better Auth got the same address (rate limits per address depend on it).
    const sessions = await e2e.stack.sql<{ ipAddress: string | null }[]>`
      select s.ip_address as "ipAddress" from session s join "user" u on u.id = s.user_id where u.email = ${user.email}`;
    expect(sessions).toEqual([{ ipAddress: browserAddress }]);
  });

  it("forwards the browser's scheme: a page on HTTPS reaches the backend as https, one on HTTP as http", async () => {
    // Caddy talks plain HTTP to the backend either way: only X-Forwarded-Proto, trusted, can say https.
    const secure = await e2e.stack.browser.newContext({ ignoreHTTPSErrors: true });
    try {
      const page = await secure.newPage();
      await page.goto(e2e.stack.secureSiteUrl);
      const plain = browser.page();
      await openDemo(plain, e2e.stack.siteUrl);
      const seen: Record<string, string | undefined> = {};
      for (const [scheme, onPage] of [['https', page], ['http', plain]] as const) {
        const requestId = `e2e-${randomUUID()}`;
        const status = await onPage.evaluate(async (id) => (await fetch('/api/health', { headers: { 'x-request-id': id } })).status, requestId);
        expect(status).toBe(200);
        const incoming = await e2e.stack.incomingRequest(requestId);
        seen[scheme] = incoming?.req?.protocol;
        expect(incoming?.req?.remoteAddress).toBe(browserAddress);
      }
      expect(seen).toEqual({ https: 'https', http: 'http' });
    } finally {
      await secure.close();
    }
  });

  it('builds its public links from AUTH_BASE_URL, the URL the browser uses', async () => {
    const page = browser.page();
    await openDemo(page, e2e.stack.siteUrl);
    const pageOrigin = await page.evaluate(() => (globalThis as unknown as { location: { origin: string } }).location.origin);
    expect(`${pageOrigin}/api`).toBe(e2e.stack.backendEnv.AUTH_BASE_URL);

    // The OpenAPI document served through Caddy names the site the browser is on as its server.
    const document = await fetchFromPage(page, '/api/openapi.json');
    expect(document).toMatchObject({ status: 200, body: { servers: [{ url: pageOrigin }] } });

    // The demo's origin is not in CORS_ORIGINS: Better Auth and the CSRF check trust it only as the
    // origin of AUTH_BASE_URL, so a sign-up from this page (an Origin-checked POST) proves the two agree.
    expect(e2e.stack.backendEnv.CORS_ORIGINS?.split(',')).not.toContain(pageOrigin);
    await signUp(page, newDemoUser());
  });
});

describe('the typed client (@autonode/client) through Caddy', () => {
  it('lists and creates with an API key made in the browser', async () => {
    const page = browser.page();
    const user = newDemoUser();
    await openDemo(page, e2e.stack.siteUrl);
    await signUp(page, user);
    const created = await page.evaluate(async () => {
      const response = await fetch('/api/v1/api-keys', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'e2e script' }) });
      return { status: response.status, key: ((await response.json()) as { key?: string }).key };
    });
    expect(created.status).toBe(201);

    const api = createAutonodeClient(e2e.stack.siteUrl.replace('localhost', browserAddress), { apiKey: created.key ?? '' });
    const me = await api.GET('/api/v1/me');
    expect(me.data).toMatchObject({ email: user.email, authenticatedVia: 'apiKey' });

    const workflow = await api.POST('/api/v1/workflows', {
      body: { name: 'typed', description: '', nodes: [{ id: 'start', type: 'trigger.manual', params: {} }], edges: [] },
    });
    expect(workflow.response.status).toBe(201);
    const page1 = await api.GET('/api/v1/workflows', { params: { query: { pageSize: 1 } } });
    expect(page1.data?.items.map((item) => item.name)).toEqual(['typed']);
    expect(page1.data?.hasNext).toBe(false);

    // A wrong key is an error the types know of, not an exception.
    const anonymous = await createAutonodeClient(e2e.stack.siteUrl.replace('localhost', browserAddress), { apiKey: 'ank_not-a-key' }).GET('/api/v1/me');
    expect(anonymous.response.status).toBe(401);
    expect(anonymous.data).toBeUndefined();
    expect(anonymous.error).toMatchObject({ status: 401, code: 'UNAUTHORIZED' });
  });
});
