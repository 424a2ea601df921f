import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { sql } from 'drizzle-orm';
import type { LightMyRequestResponse } from 'fastify';
import { inject } from 'vitest';
import { buildApp, type App } from '../src/app.js';
import { createAuth } from '../src/auth/auth.js';
import { loadConfig, type Config } from '../src/config.js';
import { createDbClient, type Db } from '../src/db/client.js';
import { createLogger } from '../src/logger.js';

/** The database of this test file: its own copy on a real server (test/file-setup.ts), else the embedded one. */
export const databaseUrl = () => process.env.AUTONODE_TEST_FILE_DATABASE_URL ?? inject('databaseUrl');
export const isEmbeddedDatabase = () => inject('databaseKind') === 'embedded';
/** For `it.skipIf(...)`: true on the embedded database, where tests needing several connections at once cannot run. */
export const lacksConcurrentConnections = () => isEmbeddedDatabase();

/** The config a test app runs with: the test database, quiet logs, then the test's own variables. */
export function testConfig(overrides: Record<string, string | undefined> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    LOG_LEVEL: 'debug',
    DATABASE_URL: databaseUrl(),
    DB_POOL_SIZE: isEmbeddedDatabase() ? '1' : '5',
    // Tests sign up and call far more than a person would; the limit tests set their own values.
    AUTH_RATE_LIMIT_MAX: '100000',
    AUTH_FAILURE_LIMIT: '100000',
    RATE_LIMIT_MAX: '1000000',
    SECRETS_KEYS: inject('secretsKeys'),
    ...overrides,
  });
}

const capturedLogs = new WeakMap<App, string[]>();
/** Every log line of every app this test file built: test/log-scan.ts searches them for secrets. */
export const allCapturedLogLines: string[][] = [];

/** Every log line the app wrote (JSON), for tests that check what reaches the logs. */
export function logsOf(app: App): string {
  return (capturedLogs.get(app) ?? []).join('');
}

/**
 * The real app, on the test database, with its own pool (closed by app.close()) and its logs
 * captured in memory. Routes may be added before the first inject.
 */
export async function buildTestApp(
  overrides: Record<string, string | undefined> = {},
  hooks: { onQuery?: (query: string, parameters: readonly unknown[]) => void } = {},
): Promise<App> {
  const config = testConfig(overrides);
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const logger = createLogger(config, sink);
  const url = config.database.kind === 'external' ? config.database.url : databaseUrl();
  // The suite's embedded server serves one connection: the app must know, so it uses no LISTEN connection.
  const kind = isEmbeddedDatabase() && url === databaseUrl() ? 'embedded' : 'external';
  const database = createDbClient({
    url,
    poolSize: config.db.poolSize,
    idleTimeoutSeconds: config.db.idleTimeoutSeconds,
    connectTimeoutSeconds: config.db.connectTimeoutSeconds,
    statementTimeoutMs: config.db.statementTimeoutMs,
    logger,
    ...(hooks.onQuery ? { onQuery: hooks.onQuery } : {}),
  }, kind);
  const auth = createAuth({ config, db: database.db, logger });
  const app = await buildApp({ config, database, auth, logger });
  capturedLogs.set(app, lines);
  allCapturedLogLines.push(lines);
  return app;
}

export interface SignedInUser {
  readonly id: string;
  readonly email: string;
  readonly password: string;
  /** The `Cookie` header value that carries the session. */
  readonly cookie: string;
}

/** The cookie pairs of a response's Set-Cookie headers, as a Cookie header value. */
export function cookieHeaderFrom(response: LightMyRequestResponse): string {
  return response.cookies.map((cookie) => `${cookie.name}=${cookie.value}`).join('; ');
}

export function uniqueEmail(prefix = 'user'): string {
  return `${prefix}-${randomUUID()}@example.test`;
}

/** Signs up a new user through the real Better Auth endpoint and returns its session cookie. */
export async function signUp(app: App, fields: { name?: string; email?: string; password?: string } = {}): Promise<SignedInUser> {
  const email = fields.email ?? uniqueEmail();
  const password = fields.password ?? 'correct-horse-battery';
  const response = await app.inject({
    method: 'POST',
    url: '/api/auth/sign-up/email',
    payload: { name: fields.name ?? 'Test User', email, password },
  });
  if (response.statusCode !== 200) throw new Error(`sign-up failed: ${response.statusCode} ${response.body}`);
  const body = response.json<{ user: { id: string } }>();
  return { id: body.user.id, email, password, cookie: cookieHeaderFrom(response) };
}

/** Empties every application table (keeps the schema), for tests that need a known-empty database. */
export async function truncateAll(db: Db): Promise<void> {
  const tables = await db.execute<{ name: string }>(sql`select quote_ident(tablename) as name from pg_tables where schemaname = 'public'`);
  if (tables.length === 0) return;
  await db.execute(sql.raw(`truncate table ${tables.map((table) => table.name).join(', ')} restart identity cascade`));
}

export function expectProblem(response: LightMyRequestResponse, status: number): Record<string, unknown> {
  if (response.statusCode !== status) throw new Error(`expected ${status}, got ${response.statusCode}: ${response.body}`);
  if (!String(response.headers['content-type']).startsWith('application/problem+json')) {
    throw new Error(`expected problem+json, got ${String(response.headers['content-type'])}`);
  }
  const body = response.json<Record<string, unknown>>();
  for (const field of ['type', 'title', 'status', 'detail', 'code', 'requestId']) {
    if (!(field in body)) throw new Error(`problem is missing '${field}': ${response.body}`);
  }
  if (body.status !== status) throw new Error(`problem status ${String(body.status)} differs from HTTP ${status}`);
  return body;
}

/** A small valid graph: a manual trigger feeding a transform. */
export const sampleGraph = {
  nodes: [
    { id: 'start', type: 'trigger.manual', params: {} },
    { id: 'shape', type: 'transform', params: { expression: '{ "n": input.n * 2 }' } },
  ],
  edges: [{ source: 'start', target: 'shape' }],
};
