/**
 * The whole path a browser takes, started for one test file: a scratch database on the local
 * PostgreSQL, the backend as a child process (src/server.ts, migrating at start), the project's
 * Caddyfile run by a real Caddy in front of it, two tiny static sites for the cross-origin tests,
 * and Debian's headless Chromium driven by playwright-core. `stop()` undoes all of it, and a start
 * that fails half-way undoes what it had started.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { get as httpsGet } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import postgres, { type Sql } from 'postgres';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { repoRoot } from '../../src/config.js';
import { runScript } from '../process.js';

const execFileAsync = promisify(execFile);

/** Where failing tests leave their screenshots and the backend's log (gitignored). */
export const artifactsDir = path.join(repoRoot, 'backend', 'test', '.artifacts', 'e2e');

/** The server the scratch database is created on: the suite's own, or the machine's local PostgreSQL. */
const adminDatabaseUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/**
 * Debian's Chromium, never a downloaded browser. The flags keep it off the network this machine
 * does not have (background services, component updates, QUIC) and out of the GPU it has not got.
 * Playwright gives every launch a new, empty profile directory of its own (it refuses a
 * --user-data-dir here), so no state leaks from one run to the next.
 */
const chromiumFlags = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * The addresses that tell the browser from Caddy in the backend's logs. Caddy listens for the
 * browser on IPv4 loopback only, so the browser's address is 127.0.0.1; the backend listens on
 * IPv6 loopback only, so Caddy's connection to it comes from ::1. The backend trusts ::1 alone
 * (TRUST_PROXY): it reports 127.0.0.1 only if it took the address from Caddy's X-Forwarded-For.
 */
export const browserAddress = '127.0.0.1';
export const caddyAddress = '::1';

export interface BackendLogLine {
  readonly reqId?: string;
  readonly msg?: string;
  readonly req?: { readonly method?: string; readonly url?: string; readonly host?: string; readonly protocol?: string; readonly remoteAddress?: string };
  readonly res?: { readonly statusCode?: number };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export interface E2eStack {
  /** The site as the browser sees it, through Caddy: http://localhost:<port>. */
  readonly siteUrl: string;
  /** The same site over HTTPS (a certificate of Caddy's internal CA: browsers must ignore its errors). */
  readonly secureSiteUrl: string;
  /** A static site whose origin is in CORS_ORIGINS. */
  readonly allowedOrigin: string;
  /** A static site whose origin is NOT in CORS_ORIGINS. */
  readonly foreignOrigin: string;
  /** The environment the backend runs with (tests derive expectations from it). */
  readonly backendEnv: Readonly<Record<string, string>>;
  readonly browser: Browser;
  /** The scratch database, for checking what a request did or did not change. */
  readonly sql: Sql;
  /** The backend's JSON log lines so far. */
  backendLog(): BackendLogLine[];
  /** The backend's "incoming request" line of the request with this id, waited for up to 3 s (the child's log lags the answer). */
  incomingRequest(requestId: string): Promise<BackendLogLine | undefined>;
  backendOutput(): string;
  stop(): Promise<void>;
}

/**
 * `count` distinct free ports: all are held until each is known, then let go (asked one after
 * another, the system may give the same port twice, and Caddy then refuses its config).
 */
async function freePorts(host: string, count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createNetServer());
  try {
    for (const server of servers) {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, host, resolve);
      });
    }
    return servers.map((server) => (server.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))));
  }
}

/** Polls `attempt` until it gives a value; fails at once when `child` exits, else after `timeoutMs`. */
async function waitFor<T>(what: string, child: ChildProcess, timeoutMs: number, attempt: () => Promise<T | undefined>, output: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await attempt().catch(() => undefined);
    if (result !== undefined) return result;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what}: the process exited (${child.exitCode ?? child.signalCode}):\n${output()}`);
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The status of a GET over HTTPS, accepting the certificate of Caddy's internal CA (the test's own). */
function httpsStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = httpsGet(url, { rejectUnauthorized: false }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on('error', reject);
    request.setTimeout(2_000, () => request.destroy(new Error('timeout')));
  });
}

/** Stops a child: SIGTERM, then SIGKILL if it is still there after `graceMs`. */
async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * If the test process ends without running its afterAll (a crash, an interrupted run), its
 * children must not outlive it holding ports. Playwright does the same for the browser it launched.
 */
function killOnExit(child: ChildProcess): void {
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', kill);
  child.once('exit', () => process.removeListener('exit', kill));
}

/** A site that serves one empty page at every path: a page of another origin to run fetches from. */
async function startStaticSite(title: string): Promise<{ origin: string; server: Server }> {
  const server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end(`<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1></body></html>`);
  });
  // Both loopback families: Chromium may try ::1 or 127.0.0.1 first for "localhost".
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '::', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return { origin: `http://localhost:${port}`, server };
}

/**
 * The project's Caddyfile, adapted to JSON with the test's upstream and SPA root, with two changes
 * that let it run beside a developer's own Caddy: the site listens on a free port of IPv4 loopback
 * instead of :8100, and the admin endpoint (localhost:2019 by default) is off. The routes, the
 * proxying and the file server are the Caddyfile's own.
 */
async function caddyConfig(env: Record<string, string>, listen: string, secureListen: string): Promise<string> {
  const { stdout } = await execFileAsync('caddy', ['adapt', '--config', path.join(repoRoot, 'Caddyfile'), '--adapter', 'caddyfile'], {
    env: { ...process.env, ...env },
  });
  const config: unknown = JSON.parse(stdout);
  const servers = isRecord(config) && isRecord(config.apps) && isRecord(config.apps.http) && isRecord(config.apps.http.servers) ? config.apps.http.servers : undefined;
  const names = servers ? Object.keys(servers) : [];
  const site = servers && names.length === 1 && names[0] ? servers[names[0]] : undefined;
  if (!isRecord(config) || !isRecord(site)) throw new Error(`unexpected shape of the adapted Caddyfile: ${stdout.slice(0, 500)}`);
  site.listen = [listen];
  site.automatic_https = { disable: true };
  // The same site over HTTPS (Caddy's internal CA, a certificate for localhost), so the tests can
  // see the browser's scheme reach the backend through X-Forwarded-Proto.
  if (servers) servers.secure = { ...site, listen: [secureListen], tls_connection_policies: [{}] };
  config.apps = {
    ...(isRecord(config.apps) ? config.apps : {}),
    tls: { certificates: { automate: ['localhost'] }, automation: { policies: [{ subjects: ['localhost'], issuers: [{ module: 'internal' }] }] } },
    pki: { certificate_authorities: { local: { install_trust: false } } },
  };
  config.admin = { disabled: true };
  return JSON.stringify(config);
}

export interface StackOptions {
  /** The backend's NODE_ENV: production makes the session cookie Secure (and __Secure- named). */
  readonly nodeEnv?: 'development' | 'production';
}

export async function startStack({ nodeEnv = 'development' }: StackOptions = {}): Promise<E2eStack> {
  // Undone in reverse order by stop(), or at once if the start fails half-way.
  const undo: { what: string; run: () => Promise<void> }[] = [];
  const stop = async () => {
    const failures: string[] = [];
    for (const step of undo.splice(0).reverse()) {
      await step.run().catch((error: unknown) => failures.push(`${step.what}: ${error instanceof Error ? error.message : String(error)}`));
    }
    if (failures.length > 0) throw new Error(`e2e clean-up failed:\n${failures.join('\n')}`);
  };

  try {
    const workDir = await mkdtemp(path.join(tmpdir(), 'autonode-e2e-'));
    undo.push({ what: 'remove the work directory', run: () => rm(workDir, { recursive: true, force: true }) });

    // A database of its own (the CI clean-up also drops leftovers by this prefix).
    const databaseName = `autonode_scratch_e2e_${randomUUID().replaceAll('-', '')}`;
    const admin = postgres(adminDatabaseUrl, { max: 1, onnotice: () => undefined });
    try {
      await admin.unsafe(`create database ${databaseName}`);
    } finally {
      await admin.end({ timeout: 5 });
    }
    undo.push({
      what: 'drop the scratch database',
      run: async () => {
        const cleanup = postgres(adminDatabaseUrl, { max: 1, onnotice: () => undefined });
        try {
          await cleanup.unsafe(`drop database if exists ${databaseName} with (force)`);
        } finally {
          await cleanup.end({ timeout: 5 });
        }
      },
    });
    const databaseUrl = new URL(adminDatabaseUrl);
    databaseUrl.pathname = `/${databaseName}`;
    const sql = postgres(databaseUrl.toString(), { max: 2, onnotice: () => undefined });
    undo.push({ what: 'close the test connection', run: () => sql.end({ timeout: 5 }) });

    const allowed = await startStaticSite('allowed origin');
    undo.push({ what: 'stop the allowed site', run: () => new Promise((resolve) => allowed.server.close(() => resolve())) });
    const foreign = await startStaticSite('foreign origin');
    undo.push({ what: 'stop the foreign site', run: () => new Promise((resolve) => foreign.server.close(() => resolve())) });
    // Closing a server waits for its keep-alive connections: end them first.
    undo.push({ what: 'end static-site connections', run: async () => { allowed.server.closeAllConnections(); foreign.server.closeAllConnections(); } });

    const [caddyPort, secureCaddyPort] = (await freePorts(browserAddress, 2)) as [number, number];
    // "localhost", not 127.0.0.1: the allowed and foreign sites are localhost too, so all three
    // are the same site (ports do not count for SameSite) and the Lax session cookie goes with
    // their requests; only CORS and the Origin checks can then stop them.
    const siteUrl = `http://localhost:${caddyPort}`;
    const backendEnv: Record<string, string> = {
      NODE_ENV: nodeEnv,
      HOST: caddyAddress,
      PORT: '0',
      LOG_LEVEL: 'info',
      DATABASE_URL: databaseUrl.toString(),
      MIGRATE_ON_START: 'true',
      BETTER_AUTH_SECRET: randomBytes(32).toString('base64url'),
      // Production refuses to start without keys for stored secrets.
      SECRETS_KEYS: `e2e:${randomBytes(32).toString('base64')}`,
      AUTH_BASE_URL: `${siteUrl}/api`,
      // Only the second site: the demo's own origin is trusted as the origin of AUTH_BASE_URL, so
      // signing in through Caddy also proves AUTH_BASE_URL is the URL the browser uses.
      CORS_ORIGINS: allowed.origin,
      TRUST_PROXY: caddyAddress,
      // The tests sign up far more often than a person.
      AUTH_RATE_LIMIT_MAX: '100000',
      AUTH_FAILURE_LIMIT: '100000',
      // Delays end promptly, and a stopped backend does not keep the run waiting.
      ENGINE_POLL_MS: '100',
      SHUTDOWN_GRACE_MS: '3000',
    };
    const backend = runScript('src/server.ts', [], backendEnv);
    undo.push({ what: 'stop the backend', run: () => stopChild(backend.child, 5_000) });
    killOnExit(backend.child);
    const backendUrl = await waitFor('the backend listening', backend.child, 60_000, async () => /Server listening at (http:\/\/\[::1\]:\d+)/.exec(backend.output())?.[1], backend.output);

    const caddyEnv = {
      BACKEND_UPSTREAM: new URL(backendUrl).host,
      SPA_ROOT: path.join(repoRoot, 'spa'),
      // Caddy keeps its autosave and data here, not in the user's home.
      XDG_CONFIG_HOME: path.join(workDir, 'config'),
      XDG_DATA_HOME: path.join(workDir, 'data'),
    };
    const caddyConfigPath = path.join(workDir, 'caddy.json');
    await writeFile(caddyConfigPath, await caddyConfig(caddyEnv, `${browserAddress}:${caddyPort}`, `${browserAddress}:${secureCaddyPort}`));
    const caddy = spawn('caddy', ['run', '--config', caddyConfigPath], {
      env: { PATH: process.env.PATH, HOME: workDir, ...caddyEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let caddyOutput = '';
    caddy.stdout.on('data', (chunk: Buffer) => (caddyOutput += chunk.toString()));
    caddy.stderr.on('data', (chunk: Buffer) => (caddyOutput += chunk.toString()));
    undo.push({ what: 'stop caddy', run: () => stopChild(caddy, 5_000) });
    killOnExit(caddy);
    // Ready when a request goes all the way through Caddy to the backend.
    await waitFor(
      'caddy proxying /api/health',
      caddy,
      30_000,
      async () => ((await fetch(`http://${browserAddress}:${caddyPort}/api/health`)).ok ? true : undefined),
      () => caddyOutput,
    );
    // The HTTPS site is ready once Caddy's internal CA has issued its certificate.
    await waitFor('caddy serving HTTPS', caddy, 30_000, () => httpsStatus(`https://localhost:${secureCaddyPort}/api/health`).then((status) => (status === 200 ? true : undefined)), () => caddyOutput);

    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: chromiumFlags, timeout: 30_000 });
    undo.push({ what: 'close chromium', run: () => browser.close() });

    const backendLog = (): BackendLogLine[] =>
      backend
        .output()
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .flatMap((line): BackendLogLine[] => {
          try {
            const parsed: unknown = JSON.parse(line);
            return isRecord(parsed) ? [parsed as BackendLogLine] : [];
          } catch {
            return [];
          }
        });

    const incomingRequest = async (requestId: string): Promise<BackendLogLine | undefined> => {
      for (let waited = 0; waited < 3_000; waited += 50) {
        const line = backendLog().find((entry) => entry.reqId === requestId && entry.msg === 'incoming request');
        if (line) return line;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      return undefined;
    };

    return {
      siteUrl,
      secureSiteUrl: `https://localhost:${secureCaddyPort}`,
      allowedOrigin: allowed.origin,
      foreignOrigin: foreign.origin,
      backendEnv,
      browser,
      sql,
      backendLog,
      incomingRequest,
      backendOutput: backend.output,
      stop,
    };
  } catch (error) {
    await stop().catch(() => undefined);
    throw error;
  }
}

/**
 * A fresh browser context (no cookies) per test, closed after it; when the test failed, a
 * screenshot of its page and the backend's log are saved to test/.artifacts/e2e/ first.
 */
export function browserPerTest(stack: () => E2eStack): { page: () => Page; context: () => BrowserContext } {
  let context: BrowserContext | undefined;
  let page: Page | undefined;
  beforeEach(async () => {
    context = await stack().browser.newContext();
    page = await context.newPage();
  });
  afterEach(async ({ task }) => {
    try {
      if (task.result?.state === 'fail') {
        await mkdir(artifactsDir, { recursive: true });
        const name = `${path.basename(task.file.name, '.test.ts')}--${task.name}`.replace(/[^A-Za-z0-9._-]+/g, '-');
        for (const open of context?.pages() ?? []) {
          await open.screenshot({ path: path.join(artifactsDir, `${name}--${context?.pages().indexOf(open)}.png`), fullPage: true }).catch(() => undefined);
        }
        await writeFile(path.join(artifactsDir, `${name}--backend.log`), stack().backendOutput());
      }
    } finally {
      await context?.close();
      context = undefined;
      page = undefined;
    }
  });
  return {
    page: () => {
      if (!page) throw new Error('no page: called outside a test');
      return page;
    },
    context: () => {
      if (!context) throw new Error('no browser context: called outside a test');
      return context;
    },
  };
}

/**
 * A test file's stack: started before its tests, stopped after them, with a fresh browser context
 * per test (screenshots on failure). Call at the top level of a file or inside a describe.
 */
export function useStack(options: StackOptions = {}): { readonly stack: E2eStack; readonly browser: ReturnType<typeof browserPerTest> } {
  let started: E2eStack | undefined;
  const current = () => {
    if (!started) throw new Error('no stack: called outside a test');
    return started;
  };
  beforeAll(async () => {
    started = await startStack(options);
  });
  afterAll(async () => {
    await started?.stop();
  });
  const browser = browserPerTest(current);
  return {
    get stack() {
      return current();
    },
    browser,
  };
}
