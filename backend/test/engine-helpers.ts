import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { App } from '../src/app.js';
import { pino } from 'pino';
import { Engine } from '../src/engine/engine.js';
import { testConfig, type SignedInUser } from './helpers.js';

/**
 * An engine in this process, on the test app's pool and bus, with test-friendly timings. Every test
 * engine retries event deliveries quickly: the delivery workers of one test file may take another
 * file's messages (they share the database), and a 30 s backoff there would stall that file's test.
 */
export function startEngine(app: App, overrides: Record<string, string> = {}): Engine {
  const config = testConfig({ ENGINE_POLL_MS: '50', ENGINE_LEASE_MS: '3000', ENGINE_HTTP_ALLOW: '127.0.0.1', EVENT_RETRY_BASE_MS: '50', ...overrides });
  // Warnings and errors of the engine reach the test output; the rest stays quiet.
  const engine = new Engine({ lifecycle: app.executions, bus: app.bus, config: config.engine, logger: pino({ level: 'warn' }), db: app.database.db, keyring: app.keyring });
  engine.start();
  return engine;
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly body: string;
}

/**
 * A local HTTP server for http.request steps. Query parameters steer it: `delay=ms` answers late,
 * `status=N` answers N, `failTimes=K&key=X` fails the first K calls with that key (500).
 * It records every request, and which ones the client abandoned.
 */
export interface TestHttpServer {
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Requests whose connection closed before the answer (aborted by the caller). */
  readonly aborted: { path: string; at: number }[];
  countFor(key: string): number;
  close(): Promise<void>;
}

export async function startTestHttpServer(): Promise<TestHttpServer> {
  const requests: RecordedRequest[] = [];
  const aborted: { path: string; at: number }[] = [];
  const failures = new Map<string, number>();
  const server: Server = createServer((request: IncomingMessage, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      const url = new URL(request.url ?? '/', 'http://test');
      requests.push({ method: request.method ?? 'GET', path: url.pathname, query: url.searchParams, body });
      const delay = Number(url.searchParams.get('delay') ?? 0);
      const key = url.searchParams.get('key') ?? '';
      const failTimes = Number(url.searchParams.get('failTimes') ?? 0);
      const failedSoFar = failures.get(key) ?? 0;
      let status = Number(url.searchParams.get('status') ?? 200);
      if (failedSoFar < failTimes) {
        failures.set(key, failedSoFar + 1);
        status = 500;
      }
      const timer = setTimeout(() => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ ok: status < 400, path: url.pathname, query: Object.fromEntries(url.searchParams), body: body || null }));
      }, delay);
      response.on('close', () => {
        if (!response.writableFinished) {
          clearTimeout(timer);
          aborted.push({ path: url.pathname + url.search, at: Date.now() });
        }
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    aborted,
    countFor: (key) => requests.filter((request) => request.query.get('key') === key).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface ExecutionView {
  id: string;
  status: string;
  output: unknown;
  error: unknown;
  jobId: string | null;
  retryOfId: string | null;
  createdAt: string;
}
export interface StepView {
  nodeId: string;
  status: string;
  attempt: number;
  output: unknown;
  error: unknown;
  startedAt: string | null;
  finishedAt: string | null;
}

export async function createWorkflow(app: App, user: SignedInUser, graph: { nodes: unknown[]; edges: unknown[] }, name = 'engine test'): Promise<string> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: user.cookie }, payload: { name, ...graph } });
  if (response.statusCode !== 201) throw new Error(`workflow refused: ${response.body}`);
  return response.json<{ id: string }>().id;
}

export async function runWorkflow(app: App, user: SignedInUser, workflowId: string, input?: unknown): Promise<ExecutionView> {
  const response = await app.inject({
    method: 'POST',
    url: `/api/v1/workflows/${workflowId}/run`,
    headers: { cookie: user.cookie },
    payload: input === undefined ? {} : { input },
  });
  if (response.statusCode !== 202) throw new Error(`run refused: ${response.body}`);
  return response.json<ExecutionView>();
}

export async function getExecution(app: App, user: SignedInUser, id: string): Promise<ExecutionView> {
  return (await app.inject({ url: `/api/v1/executions/${id}`, headers: { cookie: user.cookie } })).json<ExecutionView>();
}

export async function stepsOf(app: App, user: SignedInUser, id: string): Promise<Record<string, StepView>> {
  const page = (await app.inject({ url: `/api/v1/executions/${id}/steps?pageSize=100`, headers: { cookie: user.cookie } })).json<{ items: StepView[] }>();
  return Object.fromEntries(page.items.map((step) => [step.nodeId, step]));
}

/** Polls until the execution reaches one of `statuses` (or fails the test after `timeoutMs`). */
export async function waitForStatus(app: App, user: SignedInUser, id: string, statuses: string[], timeoutMs = 15_000): Promise<ExecutionView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const execution = await getExecution(app, user, id);
    if (statuses.includes(execution.status)) return execution;
    if (Date.now() > deadline) throw new Error(`execution ${id} is ${execution.status}, not ${statuses.join('/')} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Polls until `check` passes. */
export async function eventually<T>(check: () => Promise<T | undefined | false>, timeoutMs = 15_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * Until at least `sessions` sessions other than the asking one wait for a lock on the app's database:
 * the requests under test, blocked where the test holds a row.
 */
export function sessionsWaitForALock(app: App, what: string, sessions = 1): Promise<true> {
  return eventually(
    async () => {
      const [row] = await app.database.sql<{ waiting: number }[]>`
        select count(*)::int as waiting from pg_stat_activity
         where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()`;
      return (row?.waiting ?? 0) >= sessions;
    },
    5_000,
    what,
  );
}

/** One request an event receiver got: what a customer's endpoint would see. */
export interface ReceivedEvent {
  readonly path: string;
  /** Lower-case names; a repeated header joined by ', '. */
  readonly headers: Record<string, string>;
  /** The raw body, as signed. */
  readonly body: string;
  readonly at: number;
  /** What it answered; undefined while it holds the request (or if it never answered). */
  status: number | undefined;
}

/** How an event receiver answers one request: a status, or no answer at all (the request is held until the client gives up or the receiver closes). */
export type EventAnswer = number | 'hang';

/**
 * A local HTTP endpoint for event subscriptions (ENGINE_HTTP_ALLOW=127.0.0.1 lets the delivery
 * workers reach it). It records every request and answers as `answer` says (200 unless set), per
 * request: `nth` counts the requests to that path so far, from 1.
 */
export interface EventReceiver {
  readonly url: string;
  readonly received: ReceivedEvent[];
  answer: (request: ReceivedEvent, nth: number) => EventAnswer;
  /** The requests to `path` held open now. */
  openCount(path: string): number;
  /** The most requests to `path` ever held open at once. */
  maxOpen(path: string): number;
  on(path: string): ReceivedEvent[];
  close(): Promise<void>;
}

export async function startEventReceiver(): Promise<EventReceiver> {
  const received: ReceivedEvent[] = [];
  const open = new Map<string, number>();
  const peak = new Map<string, number>();
  const receiver: EventReceiver = {
    url: '',
    received,
    answer: () => 200,
    openCount: (path) => open.get(path) ?? 0,
    maxOpen: (path) => peak.get(path) ?? 0,
    on: (path) => received.filter((request) => request.path === path),
    close: async () => undefined,
  };
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const path = new URL(request.url ?? '/', 'http://receiver').pathname;
      const headers = Object.fromEntries(Object.entries(request.headersDistinct).map(([name, values]) => [name, (values ?? []).join(', ')]));
      const event: ReceivedEvent = { path, headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now(), status: undefined };
      received.push(event);
      const nth = received.filter((other) => other.path === path).length;
      open.set(path, (open.get(path) ?? 0) + 1);
      peak.set(path, Math.max(peak.get(path) ?? 0, open.get(path) ?? 0));
      response.on('close', () => open.set(path, (open.get(path) ?? 1) - 1));
      const answer = receiver.answer(event, nth);
      if (answer === 'hang') return;
      event.status = answer;
      response.writeHead(answer, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ received: answer < 300 }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(receiver, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

export interface CreatedSubscription {
  readonly id: string;
  /** `whsec_...`: shown once, at creation. */
  readonly secret: string;
}

/** Creates an event subscription through the API (POST /api/v1/event-subscriptions). */
export async function createSubscription(app: App, user: SignedInUser, fields: { url: string; events: readonly string[]; workflowId?: string }): Promise<CreatedSubscription> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/event-subscriptions', headers: { cookie: user.cookie }, payload: fields });
  if (response.statusCode !== 201) throw new Error(`subscription refused: ${response.statusCode} ${response.body}`);
  return response.json<CreatedSubscription>();
}
