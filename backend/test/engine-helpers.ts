import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { App } from '../src/app.js';
import { pino } from 'pino';
import { Engine } from '../src/engine/engine.js';
import { testConfig, type SignedInUser } from './helpers.js';

/** An engine in this process, on the test app's pool and bus, with test-friendly timings. */
export function startEngine(app: App, overrides: Record<string, string> = {}): Engine {
  const config = testConfig({ ENGINE_POLL_MS: '50', ENGINE_LEASE_MS: '3000', ENGINE_HTTP_ALLOW: '127.0.0.1', ...overrides });
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
