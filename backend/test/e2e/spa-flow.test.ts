/**
 * The demo's whole flow in headless Chromium, through Caddy: sign up, sign out, sign in, create
 * workflows from templates, page through them by cursor, run one and watch its steps arrive over
 * server-sent events, sign out.
 */
import { describe, expect, it } from 'vitest';
import { createFromTemplate, fetchFromPage, newDemoUser, openDemo, signIn, signOut, signUp, workflowNamesOnPage } from './demo.js';
import { useStack } from './stack.js';

const e2e = useStack();
const browser = e2e.browser;

describe('the demo SPA through Caddy', () => {
  it('signs up, signs in, pages through workflows, creates one from a template, runs it with live steps, signs out', async () => {
    const page = browser.page();
    const user = newDemoUser();
    await openDemo(page, e2e.stack.siteUrl);
    await page.getByTestId('signed-out').waitFor();

    await signUp(page, user);
    await signOut(page);
    await signIn(page, user);
    expect(await page.getByTestId('workflow-list').locator('li').count()).toBe(0);

    // Three workflows, newest first; two per page makes two pages.
    await createFromTemplate(page, 'echo', 'Echo one');
    await createFromTemplate(page, 'echo', 'Echo two');
    await createFromTemplate(page, 'greeting', 'Greeting');
    await page.getByTestId('page-size').fill('2');
    await page.getByTestId('page-size').press('Tab');
    expect(await workflowNamesOnPage(page, 1)).toEqual(['Greeting', 'Echo two']);
    expect(await page.getByTestId('previous-page').isDisabled()).toBe(true);
    await page.getByTestId('next-page').click();
    expect(await workflowNamesOnPage(page, 2)).toEqual(['Echo one']);
    expect(await page.getByTestId('next-page').isDisabled()).toBe(true);
    await page.getByTestId('previous-page').click();
    expect(await workflowNamesOnPage(page, 1)).toEqual(['Greeting', 'Echo two']);

    // The run: trigger, a 1 s delay, a transform. The page changes only on stream events, so seeing
    // the trigger done while the run is still under way, and later the end, means they came live.
    const eventStreams: string[] = [];
    page.on('request', (request) => {
      if (request.url().endsWith('/events')) eventStreams.push(request.url());
    });
    await page.locator('[data-testid="workflow-item"]', { hasText: 'Greeting' }).getByTestId('run-workflow').click();
    await page.locator('[data-testid="step-item"][data-node-id="start"][data-status="completed"]').waitFor();
    const midway = {
      status: await page.getByTestId('execution-status').textContent(),
      greetDone: await page.locator('[data-testid="step-item"][data-node-id="greet"][data-status="completed"]').count(),
    };
    expect(midway.status).not.toBe('completed');
    expect(midway.greetDone).toBe(0);

    await page.locator('[data-testid="execution-status"]:text-is("completed")').waitFor({ timeout: 15_000 });
    const steps = await page.locator('[data-testid="step-item"]').evaluateAll((items) =>
      items.map((item) => [item.getAttribute('data-node-id'), item.getAttribute('data-status')]),
    );
    expect(steps).toEqual([
      ['start', 'completed'],
      ['pause', 'completed'],
      ['greet', 'completed'],
    ]);
    // An execution's output holds the outputs of its last nodes, by node id.
    expect(JSON.parse((await page.getByTestId('execution-output').textContent()) ?? 'null')).toEqual({ greet: `Hello, ${user.name}!` });
    const executionId = (await page.getByTestId('execution-id').textContent()) ?? '';
    expect(eventStreams).toEqual([`${e2e.stack.siteUrl}/api/v1/executions/${executionId}/events`]);

    // What the page showed is what the database holds.
    const [execution] = await e2e.stack.sql<{ status: string; steps: number }[]>`
      select e.status, (select count(*)::int from execution_steps s where s.execution_id = e.id) as steps
      from executions e where e.id = ${executionId}`;
    expect(execution).toEqual({ status: 'completed', steps: 3 });

    await signOut(page);
    expect((await fetchFromPage(page, '/api/v1/me')).status).toBe(401);
  });
});
