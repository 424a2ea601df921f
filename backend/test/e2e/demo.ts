/** What a person does in the demo SPA (spa/), as the tests do it: through its data-testid hooks. */
import { randomUUID } from 'node:crypto';
import type { Page } from 'playwright-core';

export interface DemoUser {
  readonly name: string;
  readonly email: string;
  readonly password: string;
}

export function newDemoUser(): DemoUser {
  const id = randomUUID().slice(0, 8);
  return { name: `Ada ${id}`, email: `ada-${id}@example.test`, password: `e2e-password-${id}` };
}

/** Opens the SPA and waits until it knows whether someone is signed in. */
export async function openDemo(page: Page, siteUrl: string): Promise<void> {
  await page.goto(siteUrl);
  await page.locator('body[data-ready="true"]').waitFor();
}

/** The text of the demo's status line, for failure messages. */
async function message(page: Page): Promise<string> {
  return (await page.getByTestId('message').textContent()) ?? '';
}

async function waitUntilSignedIn(page: Page, user: DemoUser): Promise<void> {
  await page
    .locator(`[data-testid="current-user"]:text-is("${user.email}")`)
    .waitFor()
    .catch(async (error: unknown) => {
      throw new Error(`not signed in as ${user.email}; the page says: ${await message(page)}`, { cause: error });
    });
}

export async function signUp(page: Page, user: DemoUser): Promise<void> {
  await page.getByTestId('sign-up-name').fill(user.name);
  await page.getByTestId('sign-up-email').fill(user.email);
  await page.getByTestId('sign-up-password').fill(user.password);
  await page.getByTestId('sign-up-submit').click();
  await waitUntilSignedIn(page, user);
}

export async function signIn(page: Page, user: DemoUser): Promise<void> {
  await page.getByTestId('sign-in-email').fill(user.email);
  await page.getByTestId('sign-in-password').fill(user.password);
  await page.getByTestId('sign-in-submit').click();
  await waitUntilSignedIn(page, user);
}

export async function signOut(page: Page): Promise<void> {
  await page.getByTestId('sign-out').click();
  await page.getByTestId('signed-out').waitFor();
}

/** Creates a workflow from one of the SPA's templates and waits until it tops the first page. */
export async function createFromTemplate(page: Page, template: 'greeting' | 'echo' | 'webhook', name: string): Promise<void> {
  await page.getByTestId('template-select').selectOption(template);
  await page.getByTestId('new-workflow-name').fill(name);
  await page.getByTestId('create-workflow').click();
  await page.locator(`[data-testid="workflow-list"] > li:first-child [data-testid="workflow-name"]:text-is("${name}")`).waitFor();
}

/** The names on the page of workflows the SPA shows, once page `pageNumber` is displayed. */
export async function workflowNamesOnPage(page: Page, pageNumber: number): Promise<string[]> {
  await page.locator(`[data-testid="page-number"]:text-is("${pageNumber}")`).waitFor();
  await page.locator('[data-testid="workflow-list"][aria-busy="false"]').waitFor({ state: 'attached' });
  return page.locator('[data-testid="workflow-list"] [data-testid="workflow-name"]').allTextContents();
}

/** A call from inside the page (its origin, its cookies), answered as status and parsed body. */
export async function fetchFromPage(page: Page, url: string): Promise<{ status: number; body: unknown }> {
  return page.evaluate(async (target) => {
    const response = await fetch(target, { credentials: 'include' });
    const text = await response.text();
    return { status: response.status, body: text ? (JSON.parse(text) as unknown) : null };
  }, url);
}
