/**
 * The demo's Connections page in headless Chromium, through Caddy: it lists the user's connections
 * (name, base URL, auth type, whether a secret is set, last use) at /connections, a real URL that
 * survives a reload and the back button, and no secret reaches the page, in what it shows or in
 * what the API sent it.
 */
import { randomBytes } from 'node:crypto';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { newDemoUser, openDemo, signUp } from './demo.js';
import { useStack } from './stack.js';

const e2e = useStack();
const browser = e2e.browser;

/** A JSON POST from inside the page (its origin, its session cookie), answered as status and parsed body. */
async function postFromPage(page: Page, url: string, body: unknown): Promise<{ status: number; body: unknown }> {
  return page.evaluate(
    async ([target, payload]) => {
      const response = await fetch(target, { method: 'POST', credentials: 'include', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) });
      const text = await response.text();
      return { status: response.status, body: text ? (JSON.parse(text) as unknown) : null };
    },
    [url, body] as const,
  );
}

/** The rows the page shows, once it shows `count` of them: one array of cell texts per connection. */
async function connectionRows(page: Page, count: number): Promise<string[][]> {
  await page.locator('[data-testid="connection-item"]').nth(count - 1).waitFor();
  await page.locator('[data-testid="connection-table"][aria-busy="false"]').waitFor();
  return page
    .locator('[data-testid="connection-item"]')
    .evaluateAll((rows) => rows.map((row) => [...row.querySelectorAll('td')].map((cell) => cell.textContent ?? '')));
}

describe('the Connections page of the demo SPA', () => {
  it('lists the connections with their auth type, whether a secret is set and their last use, and never a secret', async () => {
    const page = browser.page();
    const user = newDemoUser();
    // Everything the API sends the page, to search for secrets afterwards.
    const apiBodies: Promise<string>[] = [];
    page.on('response', (response) => {
      if (new URL(response.url()).pathname.startsWith('/api/')) apiBodies.push(response.text().catch(() => ''));
    });
    await openDemo(page, e2e.stack.siteUrl);
    await page.getByTestId('signed-out').waitFor();
    await signUp(page, user);

    const secret = (label: string) => `${label}-${randomBytes(16).toString('hex')}`;
    const secrets = { bearer: secret('bearer'), basic: secret('basic'), header: secret('header'), query: secret('query') };
    const created = [
      { name: 'a-bearer', baseUrl: 'https://api.example.test/v1', auth: { type: 'bearer', secret: secrets.bearer } },
      { name: 'b-basic', baseUrl: 'https://basic.example.test', auth: { type: 'basic', username: 'ada', secret: secrets.basic } },
      { name: 'c-header', baseUrl: 'https://header.example.test', auth: { type: 'header', name: 'x-api-key', secret: secrets.header } },
      { name: 'd-query', baseUrl: 'https://query.example.test', auth: { type: 'query', name: 'api_key', secret: secrets.query } },
      { name: 'e-open', baseUrl: 'https://open.example.test', auth: { type: 'none' } },
    ];
    const ids: Record<string, string> = {};
    for (const connection of created) {
      const response = await postFromPage(page, '/api/v1/connections', connection);
      expect(response.status, JSON.stringify(response.body)).toBe(201);
      ids[connection.name] = (response.body as { id: string }).id;
    }
    // A run's use sets lastUsedAt; this stack's engine may reach no outside server, so it is set here.
    const lastUsedAt = '2026-03-04T05:06:07.000Z';
    await e2e.stack.sql`update connections set last_used_at = ${lastUsedAt} where id = ${ids['b-basic'] ?? ''}`;

    await page.getByTestId('nav-connections').click();
    await page.getByTestId('connections-page').waitFor();
    expect(new URL(page.url()).pathname).toBe('/connections');
    expect(await page.getByTestId('workflows-page').isHidden()).toBe(true);
    const rows = await connectionRows(page, 5);
    // Base URLs as the API stores them: normalised by the URL parser (a bare origin gains its `/`).
    expect(rows.map(([name, baseUrl, auth, secretCell]) => [name, baseUrl, auth, secretCell])).toEqual([
      ['a-bearer', 'https://api.example.test/v1', 'bearer', 'set'],
      ['b-basic', 'https://basic.example.test/', 'basic, user ada', 'set'],
      ['c-header', 'https://header.example.test/', 'header x-api-key', 'set'],
      ['d-query', 'https://query.example.test/', 'query parameter api_key', 'set'],
      ['e-open', 'https://open.example.test/', 'none', 'not needed'],
    ]);
    expect(rows.map((row) => row[4] === 'never')).toEqual([true, false, true, true, true]);
    expect(await page.locator(`[data-connection-id="${ids['b-basic']}"] time`).getAttribute('datetime')).toBe(lastUsedAt);

    // The page holds no secret, and neither did anything the API sent it.
    const html = await page.content();
    const sent = (await Promise.all(apiBodies)).join('\n');
    for (const value of Object.values(secrets)) {
      expect(html).not.toContain(value);
      expect(sent).not.toContain(value);
    }

    // A real URL: a reload shows the same page (Caddy answers index.html for /connections).
    await page.reload();
    await page.locator('body[data-ready="true"]').waitFor();
    expect((await connectionRows(page, 5)).map((row) => row[0])).toEqual(['a-bearer', 'b-basic', 'c-header', 'd-query', 'e-open']);

    // Back to the workflows and, with the browser's back button, to the connections again.
    await page.getByTestId('nav-workflows').click();
    await page.getByTestId('workflows-page').waitFor();
    expect(new URL(page.url()).pathname).toBe('/');
    expect(await page.getByTestId('connections-page').isHidden()).toBe(true);
    await page.goBack();
    await page.getByTestId('connections-page').waitFor();
    expect((await connectionRows(page, 5)).length).toBe(5);
  });

  it('says so when there is no connection', async () => {
    const page = browser.page();
    await openDemo(page, `${e2e.stack.siteUrl}/connections`);
    await signUp(page, newDemoUser());
    await page.getByTestId('connections-empty').waitFor();
    expect(await page.getByTestId('connection-table').isHidden()).toBe(true);
  });
});
