/**
 * A workflow's webhook in the demo SPA, in headless Chromium through Caddy: a workflow made from
 * the webhook template shows its webhook URL (on the site's own origin, from AUTH_BASE_URL), and
 * the requests sent to that URL appear as its deliveries, newest first, with their status, time,
 * content type and size, read from the API.
 */
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { createFromTemplate, newDemoUser, openDemo, signUp } from './demo.js';
import { useStack } from './stack.js';

const e2e = useStack();
const browser = e2e.browser;

/** A request to the webhook from inside the page, as a sender makes it: no cookie, a body of `contentType`. */
async function deliverFromPage(page: Page, url: string, contentType: string, body: string): Promise<number> {
  return page.evaluate(
    async ([target, type, payload]) => (await fetch(target, { method: 'POST', credentials: 'omit', headers: { 'content-type': type }, body: payload })).status,
    [url, contentType, body] as const,
  );
}

/** The delivery rows, once the table shows `count` of them: one array of cell texts each. */
async function deliveryRows(page: Page, count: number): Promise<string[][]> {
  await page.locator('[data-testid="delivery-item"]').nth(count - 1).waitFor();
  await page.locator('[data-testid="delivery-table"][aria-busy="false"]').waitFor();
  return page.locator('[data-testid="delivery-item"]').evaluateAll((rows) => rows.map((row) => [...row.querySelectorAll('td')].map((cell) => cell.textContent ?? '')));
}

describe('a workflow’s webhook in the demo SPA', () => {
  it('shows the webhook URL and the deliveries sent to it', async () => {
    const page = browser.page();
    await openDemo(page, e2e.stack.siteUrl);
    await signUp(page, newDemoUser());
    await createFromTemplate(page, 'echo', 'No hook');
    await createFromTemplate(page, 'webhook', 'Inbox');

    // A workflow without a trigger.webhook node has no URL.
    await page.locator('[data-testid="workflow-item"]', { hasText: 'No hook' }).getByTestId('open-workflow').click();
    await page.locator('[data-testid="detail-name"]:text-is("No hook")').waitFor();
    await page.getByTestId('no-webhook').waitFor();
    expect(await page.getByTestId('webhook').isHidden()).toBe(true);

    await page.locator('[data-testid="workflow-item"]', { hasText: 'Inbox' }).getByTestId('open-workflow').click();
    await page.locator('[data-testid="detail-name"]:text-is("Inbox")').waitFor();
    await page.getByTestId('webhook').waitFor();
    const url = (await page.getByTestId('webhook-url').textContent()) ?? '';
    expect(url).toMatch(new RegExp(`^${e2e.stack.siteUrl}/api/hooks/[A-Za-z0-9_-]{22}$`));
    await page.getByTestId('deliveries-empty').waitFor();

    const json = '{"event":"push"}';
    expect(await deliverFromPage(page, url, 'application/json', json)).toBe(202);
    expect(await deliverFromPage(page, url, 'text/plain', 'hello')).toBe(202);
    await page.getByTestId('refresh-deliveries').click();
    const rows = await deliveryRows(page, 2);
    // Newest first: status, received, content type, size, reason.
    expect(rows.map(([status, , contentType, size, reason]) => [status, contentType, size, reason])).toEqual([
      ['accepted', 'text/plain', '5 B', ''],
      ['accepted', 'application/json', `${json.length} B`, ''],
    ]);
    const received = await page.locator('[data-testid="delivery-received"] time').first().getAttribute('datetime');
    expect(Math.abs(Date.parse(received ?? '') - Date.now())).toBeLessThan(60_000);
    expect(await page.getByTestId('deliveries-empty').isHidden()).toBe(true);
  });
});
