/**
 * Pages of other origins calling the API with the user's session, in a real browser.
 *
 * The origins: the demo at http://localhost:<caddy port>, an allowed page at
 * http://localhost:<port A> (in CORS_ORIGINS) and a foreign page at http://localhost:<port B>
 * (not in it). All three are the same SITE (SameSite ignores ports), so Chromium sends the Lax
 * session cookie with every one of their requests, writes included. Had the foreign page been on
 * 127.0.0.1, a different site, the browser would drop the cookie on its POSTs and the test would
 * pass without the backend doing anything; here only CORS (reading) and the backend's Origin
 * checks (writing: src/plugins/security.ts on our routes, Better Auth's on its own) stand in the way.
 */
import { randomUUID } from 'node:crypto';
import type { Page } from 'playwright-core';
import { beforeEach, describe, expect, it } from 'vitest';
import { newDemoUser, openDemo, signUp, type DemoUser } from './demo.js';
import { useStack } from './stack.js';

const e2e = useStack();
const browser = e2e.browser;

let user: DemoUser;
beforeEach(async () => {
  // Signed in on the demo's origin: the cookie (host localhost) now goes to every localhost port.
  user = newDemoUser();
  const page = browser.page();
  await openDemo(page, e2e.stack.siteUrl);
  await signUp(page, user);
});

/** Opens a page of `origin` in the signed-in browser. */
async function pageOf(origin: string): Promise<Page> {
  const page = await browser.context().newPage();
  await page.goto(`${origin}/`);
  return page;
}

interface CallOutcome {
  /** 'blocked' when the browser refused to hand the response to the page (a CORS failure). */
  readonly status: number | 'blocked';
  readonly body: unknown;
}

/** A fetch with credentials from inside `page`, to the API through Caddy. */
async function callFrom(page: Page, request: { url: string; method?: string; contentType?: string; body?: string }): Promise<CallOutcome> {
  return page.evaluate(async ({ url, method, contentType, body }) => {
    try {
      const response = await fetch(url, {
        method: method ?? 'GET',
        credentials: 'include',
        ...(contentType ? { headers: { 'content-type': contentType } } : {}),
        ...(body !== undefined ? { body } : {}),
      });
      const text = await response.text();
      return { status: response.status, body: text ? (JSON.parse(text) as unknown) : null };
    } catch {
      return { status: 'blocked' as const, body: null };
    }
  }, request);
}

async function countsFor(email: string) {
  const [row] = await e2e.stack.sql<{ workflows: number; sessions: number }[]>`
    select (select count(*)::int from workflows w join "user" u on u.id = w.user_id where u.email = ${email}) as workflows,
           (select count(*)::int from session s join "user" u on u.id = s.user_id where u.email = ${email}) as sessions`;
  return row;
}

/** The status the backend answered a POST whose URL contains `marker`, from its own log. */
function loggedStatus(marker: string, method = 'POST'): number | undefined {
  const log = e2e.stack.backendLog();
  const incoming = log.find((line) => line.msg === 'incoming request' && line.req?.method === method && line.req.url?.includes(marker));
  return log.find((line) => line.msg === 'request completed' && line.reqId === incoming?.reqId)?.res?.statusCode;
}

/** The same, waiting a little: the child's log reaches this process a moment after the browser's answer. */
async function awaitLoggedStatus(marker: string): Promise<number | undefined> {
  for (let waited = 0; waited < 3_000; waited += 50) {
    const status = loggedStatus(marker);
    if (status !== undefined) return status;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return undefined;
}

const workflowBody = (name: string) =>
  JSON.stringify({ name, nodes: [{ id: 'start', type: 'trigger.manual', params: {} }], edges: [] });

/**
 * Starts, from the demo's own page, a run that waits ten minutes: something a foreign page could
 * change with a body-less POST (a "simple" request: no preflight) to /executions/:id/cancel.
 */
async function startLongRun(): Promise<string> {
  const demo = browser.page();
  const body = JSON.stringify({
    name: 'waits ten minutes',
    nodes: [
      { id: 'start', type: 'trigger.manual', params: {} },
      { id: 'wait', type: 'delay', params: { ms: 600_000 } },
    ],
    edges: [{ source: 'start', target: 'wait' }],
  });
  const workflow = await callFrom(demo, { url: '/api/v1/workflows', method: 'POST', contentType: 'application/json', body });
  const id = (workflow.body as { id: string }).id;
  const execution = await callFrom(demo, { url: `/api/v1/workflows/${id}/run`, method: 'POST', contentType: 'application/json', body: '{}' });
  expect(execution.status).toBe(202);
  return (execution.body as { id: string }).id;
}

async function executionStatus(id: string): Promise<string | undefined> {
  const [row] = await e2e.stack.sql<{ status: string }[]>`select status from executions where id = ${id}`;
  return row?.status;
}

describe('a page of an origin in CORS_ORIGINS', () => {
  it('calls the API with the session cookie, reads the answers and may write', async () => {
    expect(e2e.stack.backendEnv.CORS_ORIGINS).toBe(e2e.stack.allowedOrigin);
    const executionId = await startLongRun();
    const page = await pageOf(e2e.stack.allowedOrigin);

    const me = await callFrom(page, { url: `${e2e.stack.siteUrl}/api/v1/me` });
    expect(me).toMatchObject({ status: 200, body: { email: user.email, authenticatedVia: 'session' } });

    // A JSON body makes the browser ask first (preflight); CORS grants it, the Origin check too.
    const created = await callFrom(page, { url: `${e2e.stack.siteUrl}/api/v1/workflows`, method: 'POST', contentType: 'application/json', body: workflowBody('from the allowed origin') });
    expect(created).toMatchObject({ status: 201, body: { name: 'from the allowed origin' } });
    const cancelled = await callFrom(page, { url: `${e2e.stack.siteUrl}/api/v1/executions/${executionId}/cancel`, method: 'POST' });
    expect(cancelled).toMatchObject({ status: 200, body: { id: executionId, status: 'cancelled' } });

    expect(await countsFor(user.email)).toEqual({ workflows: 2, sessions: 1 });
    expect(await executionStatus(executionId)).toBe('cancelled');
  });
});

describe('a page of an origin not in CORS_ORIGINS', () => {
  it('reads nothing and changes nothing, though the browser sends the cookie', async () => {
    const executionId = await startLongRun();
    const before = await countsFor(user.email);
    expect(before).toEqual({ workflows: 1, sessions: 1 });
    const statusBefore = await executionStatus(executionId);
    expect(statusBefore).not.toBe('cancelled');
    const page = await pageOf(e2e.stack.foreignOrigin);

    // Reading: the backend answers, but without Access-Control-Allow-Origin the page gets nothing.
    expect(await callFrom(page, { url: `${e2e.stack.siteUrl}/api/v1/me` })).toEqual({ status: 'blocked', body: null });

    // A JSON write needs a preflight, which CORS does not grant: the POST itself is never sent.
    const jsonMarker = `json-${randomUUID()}`;
    const jsonWrite = { url: `${e2e.stack.siteUrl}/api/v1/workflows?probe=${jsonMarker}`, method: 'POST', contentType: 'application/json', body: workflowBody('foreign json') };
    expect(await callFrom(page, jsonWrite)).toEqual({ status: 'blocked', body: null });

    // Body-less POSTs are "simple": sent without a preflight, cookie and all. Without the backend's
    // Origin checks they would cancel the run and end the session; they must be refused with 403,
    // on our routes (src/plugins/security.ts) as on Better Auth's.
    const cancelMarker = `cancel-${randomUUID()}`;
    expect(await callFrom(page, { url: `${e2e.stack.siteUrl}/api/v1/executions/${executionId}/cancel?probe=${cancelMarker}`, method: 'POST' })).toEqual({ status: 'blocked', body: null });
    const signOutMarker = `sign-out-${randomUUID()}`;
    expect(await callFrom(page, { url: `${e2e.stack.siteUrl}/api/auth/sign-out?probe=${signOutMarker}`, method: 'POST' })).toEqual({ status: 'blocked', body: null });
    expect(await awaitLoggedStatus(cancelMarker)).toBe(403);
    expect(await awaitLoggedStatus(signOutMarker)).toBe(403);
    // Checked once the later requests are in the log, so its absence is not just a slow log: only
    // the preflight came (answered without an Access-Control-Allow-Origin), never the POST.
    expect(loggedStatus(jsonMarker, 'OPTIONS')).toBe(204);
    expect(loggedStatus(jsonMarker)).toBeUndefined();

    // Nothing changed: no new workflow, the run goes on, the session is there and still works.
    expect(await countsFor(user.email)).toEqual(before);
    expect(await executionStatus(executionId)).not.toBe('cancelled');
    expect(await callFrom(browser.page(), { url: '/api/v1/me' })).toMatchObject({ status: 200, body: { email: user.email } });
  });
});
