/**
 * The session cookie as Chromium stores it behind Caddy: its attributes match the configuration
 * (src/auth/auth.ts: HttpOnly, SameSite=Lax, Secure only when NODE_ENV=production), it survives a
 * reload, and signing out ends the session on the server, not only in the browser. The production
 * case runs on plain http too: Chromium keeps Secure cookies for http://localhost, a trustworthy origin.
 */
import { describe, expect, it } from 'vitest';
import { fetchFromPage, newDemoUser, openDemo, signOut, signUp } from './demo.js';
import { useStack } from './stack.js';

/** Better Auth prefixes its cookies with __Secure- when it makes them Secure. */
const sessionCookieName = (production: boolean) => `${production ? '__Secure-' : ''}better-auth.session_token`;

describe.each(['development', 'production'] as const)('the session cookie with NODE_ENV=%s', (nodeEnv) => {
  const e2e = useStack({ nodeEnv });
  const browser = e2e.browser;

  async function sessionCookie() {
    const cookies = await browser.context().cookies(e2e.stack.siteUrl);
    return cookies.find((cookie) => cookie.name.endsWith('better-auth.session_token'));
  }

  it('is HttpOnly and SameSite=Lax, and Secure only in production', async () => {
    const page = browser.page();
    await openDemo(page, e2e.stack.siteUrl);
    await signUp(page, newDemoUser());

    const production = e2e.stack.backendEnv.NODE_ENV === 'production';
    const cookie = await sessionCookie();
    expect(cookie).toMatchObject({
      name: sessionCookieName(production),
      httpOnly: true,
      sameSite: 'Lax',
      secure: production,
      domain: 'localhost',
      path: '/',
    });
    // HttpOnly as the page sees it: its script cannot read the session.
    const visibleToScript = await page.evaluate(() => (globalThis as unknown as { document: { cookie: string } }).document.cookie);
    expect(visibleToScript).not.toContain('session_token');
  });

  it('survives a reload, and sign-out ends the session on the server', async () => {
    const page = browser.page();
    const user = newDemoUser();
    await openDemo(page, e2e.stack.siteUrl);
    await signUp(page, user);
    const before = await sessionCookie();
    expect(before).toBeDefined();

    await page.reload();
    await page.locator(`[data-testid="current-user"]:text-is("${user.email}")`).waitFor();
    expect(await fetchFromPage(page, '/api/v1/me')).toMatchObject({ status: 200, body: { email: user.email, authenticatedVia: 'session' } });
    expect((await sessionCookie())?.value).toBe(before?.value);

    await signOut(page);
    expect((await fetchFromPage(page, '/api/v1/me')).status).toBe(401);
    await page.reload();
    await page.getByTestId('signed-out').waitFor();

    // The old cookie, replayed by someone who kept it, opens nothing: the session row is gone.
    const replayed = await fetch(`${e2e.stack.siteUrl.replace('localhost', '127.0.0.1')}/api/v1/me`, {
      headers: { cookie: `${before?.name}=${before?.value}` },
    });
    expect(replayed.status).toBe(401);
    const sessions = await e2e.stack.sql<{ count: number }[]>`
      select count(*)::int as count from session s join "user" u on u.id = s.user_id where u.email = ${user.email}`;
    expect(sessions[0]?.count).toBe(0);
  });
});
