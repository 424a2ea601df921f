import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { App } from '../src/app.js';
import { Engine } from '../src/engine/engine.js';
import { performHttpRequest } from '../src/engine/http-request.js';
import { Redactor, secretForms } from '../src/engine/redaction.js';
import { createWorkflow, eventually, getExecution, runWorkflow, waitForStatus } from './engine-helpers.js';
import { buildTestApp, expectProblem, lacksConcurrentConnections, logsOf, signUp, testConfig, type SignedInUser } from './helpers.js';

/**
 * Connections, variables and secrets in runs (API.md, Connections and Variables): what reaches the
 * upstream, and that no secret is recorded, streamed or logged. The engine logs through the app's
 * logger, so logsOf(app) holds the engine's lines too.
 */

/** A request as the echo server received it. */
interface Echoed {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

interface EchoServer {
  readonly url: string;
  readonly received: Echoed[];
  close(): Promise<void>;
}

/**
 * Answers every request with `{ method, url, headers, body }` as JSON, with the status `?status=N`
 * asks for (200 by default), as bytes (application/octet-stream) with `?as=bytes`; `/previous`
 * answers with the request before it instead (a service that keeps what it was sent, read back later).
 */
async function startEchoServer(): Promise<EchoServer> {
  const received: Echoed[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const echoed: Echoed = { method: request.method ?? '', url: request.url ?? '', headers: request.headers, body: Buffer.concat(chunks).toString('utf8') };
      received.push(echoed);
      const url = new URL(echoed.url, 'http://echo');
      const status = Number(url.searchParams.get('status') ?? 200);
      const answer = url.pathname === '/previous' ? received.at(-2) : echoed;
      response.writeHead(status, { 'content-type': url.searchParams.get('as') === 'bytes' ? 'application/octet-stream' : 'application/json' });
      response.end(JSON.stringify(answer));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A step as the API lists it. */
interface StepRow {
  nodeId: string;
  status: string;
  input: unknown;
  output: unknown;
  error: { code?: string; message: string; details?: unknown } | null;
}

/** A secret with a random marker that survives every encoding it is sent in (hex): if the marker shows, the secret leaked. */
function secretWith(prefix: string, suffix: string): { value: string; marker: string } {
  const marker = `${prefix}${randomBytes(8).toString('hex')}`;
  return { value: `${marker}${suffix}`, marker };
}

describe('connections, variables and secrets in workflows', () => {
  let app: App;
  let engine: Engine;
  let user: SignedInUser;
  let echo: EchoServer;
  let other: EchoServer;
  /** Every statement the app's pool sent, with its parameters. */
  const statements: { query: string; parameters: readonly unknown[] }[] = [];

  const bearer = secretWith('bt', '+/=x');
  const basicPassword = secretWith('pw', ':&x é');
  const headerSecret = secretWith('hv', '"q');
  const querySecret = secretWith('qv', ' &=/+é#?');
  // A quote and a backslash (JSON-escaped in a body), a space (percent-encoded in a url), and a template that must never be evaluated.
  const secretVariable = secretWith('sv', '"\\{{ steps }} x');
  const basicUsername = 'alice';
  const basicCredential = Buffer.from(`${basicUsername}:${basicPassword.value}`).toString('base64');
  const markers = [bearer, basicPassword, headerSecret, querySecret, secretVariable].map((secret) => secret.marker);

  /** The texts that must never appear: each secret's marker, and the Basic credential. */
  function expectNoSecret(text: string, where: string): void {
    for (const marker of [...markers, basicCredential]) expect(text, `${where} holds a secret (${marker})`).not.toContain(marker);
  }

  /** An engine on the app's logger (its lines are captured with the app's: logsOf). */
  function startCapturedEngine(): Engine {
    const config = testConfig({ ENGINE_POLL_MS: '50', ENGINE_LEASE_MS: '3000', ENGINE_HTTP_ALLOW: '127.0.0.1' });
    // The app's logger is the pino instance buildTestApp made, writing to the captured sink.
    const started = new Engine({ lifecycle: app.executions, bus: app.bus, config: config.engine, logger: app.log as unknown as Logger, db: app.database.db, keyring: app.keyring });
    started.start();
    return started;
  }

  async function createConnection(body: Record<string, unknown>): Promise<{ id: string; lastUsedAt: string | null; version: number; updatedAt: string }> {
    const response = await app.inject({ method: 'POST', url: '/api/v1/connections', headers: { cookie: user.cookie }, payload: body });
    if (response.statusCode !== 201) throw new Error(`connection refused: ${response.body}`);
    return response.json();
  }

  async function createVariable(key: string, value: unknown, secret = false): Promise<string> {
    const response = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key, value, secret } });
    if (response.statusCode !== 201) throw new Error(`variable refused: ${response.body}`);
    return response.json<{ id: string }>().id;
  }

  async function stepsOf(executionId: string): Promise<{ text: string; byNode: Record<string, StepRow> }> {
    const response = await app.inject({ url: `/api/v1/executions/${executionId}/steps?pageSize=100`, headers: { cookie: user.cookie } });
    const items = response.json<{ items: StepRow[] }>().items;
    return { text: response.body, byNode: Object.fromEntries(items.map((step) => [step.nodeId, step])) };
  }

  async function runToEnd(workflowId: string, input?: unknown) {
    const execution = await runWorkflow(app, user, workflowId, input);
    return waitForStatus(app, user, execution.id, ['completed', 'failed']);
  }

  const save = (graph: { nodes: unknown[]; edges: unknown[] }) =>
    app.inject({ method: 'POST', url: '/api/v1/workflows', headers: { cookie: user.cookie }, payload: { name: 'refused', ...graph } });

  let greetingId: string;

  beforeAll(async () => {
    app = await buildTestApp({}, { onQuery: (query, parameters) => statements.push({ query, parameters }) });
    user = await signUp(app);
    echo = await startEchoServer();
    other = await startEchoServer();
    engine = startCapturedEngine();

    await createConnection({ name: 'echo-bearer', baseUrl: `${echo.url}/api/`, headers: { 'x-plain': 'from-connection', 'x-kept': 'kept' }, auth: { type: 'bearer', secret: bearer.value } });
    await createConnection({ name: 'echo-basic', baseUrl: echo.url, auth: { type: 'basic', username: basicUsername, secret: basicPassword.value } });
    await createConnection({ name: 'echo-header', baseUrl: echo.url, auth: { type: 'header', name: 'x-api-key', secret: headerSecret.value } });
    await createConnection({ name: 'echo-query', baseUrl: `${echo.url}/q`, auth: { type: 'query', name: 'key', secret: querySecret.value } });
    await createVariable('SV', secretVariable.value, true);
    greetingId = await createVariable('GREETING', 'hello');
    await createVariable('LIMITS', { max: 3 });
  });
  afterAll(async () => {
    await engine?.stop(5_000);
    await echo?.close();
    await other?.close();
    await app?.close();
  });

  /** Connections of every auth type and secret variables in one run. */
  const everyKindGraph = () => ({
    nodes: [
      { id: 'start', type: 'trigger.manual' },
      {
        id: 'bearer',
        type: 'http.request',
        // The node's own headers replace the connection's plain ones; the auth replaces the node's.
        params: { method: 'GET', connection: 'echo-bearer', url: '/bearer', headers: { 'X-Plain': 'from-node', Authorization: 'forged' } },
      },
      { id: 'basic', type: 'http.request', params: { method: 'GET', connection: 'echo-basic', url: 'basic' } },
      { id: 'header', type: 'http.request', params: { method: 'GET', connection: 'echo-header', url: `${echo.url}/header` } },
      { id: 'query', type: 'http.request', params: { method: 'GET', connection: 'echo-query', url: '/search?keep=a%20b' } },
      // A parameter of the auth's name in the url is replaced by the credential; the rest of the query stays as written.
      { id: 'queryReplaced', type: 'http.request', params: { method: 'GET', connection: 'echo-query', url: '/replace?key=forged&keep=a+b' } },
      {
        id: 'secrets',
        type: 'http.request',
        params: {
          method: 'POST',
          url: `${echo.url}/secrets?sig={{ $secrets.SV }}`,
          headers: { 'x-secret': '{{ $secrets.SV }}', 'x-mixed': 'pre-{{ $secrets.SV }}-{{ $vars.GREETING }}' },
          body: { nested: [{ token: '{{  $secrets.SV  }}' }], greeting: '{{ $vars.GREETING }}' },
        },
      },
    ],
    edges: ['bearer', 'basic', 'header', 'query', 'queryReplaced', 'secrets'].map((target) => ({ source: 'start', target })),
  });

  it('sends each auth type and secret to the upstream, and records, streams and logs none of them', async () => {
    const workflowId = await createWorkflow(app, user, everyKindGraph());
    const receivedBefore = echo.received.length;
    const execution = await runToEnd(workflowId);
    expect(execution.status, JSON.stringify(execution.error)).toBe('completed');

    // What the upstream received: the stored credentials, in their places.
    const received = echo.received.slice(receivedBefore);
    const at = (path: string) => {
      const found = received.find((request) => new URL(request.url, 'http://echo').pathname === path);
      if (!found) throw new Error(`no request to ${path}`);
      return found;
    };
    expect(at('/api/bearer').headers).toMatchObject({ authorization: `Bearer ${bearer.value}`, 'x-plain': 'from-node', 'x-kept': 'kept' });
    expect(at('/basic').headers.authorization).toBe(`Basic ${basicCredential}`);
    expect(at('/header').headers['x-api-key']).toBe(headerSecret.value);
    const queryUrl = new URL(at('/q/search').url, 'http://echo');
    expect(queryUrl.searchParams.get('key')).toBe(querySecret.value);
    expect(at('/q/search').url.startsWith('/q/search?keep=a%20b&key=')).toBe(true);
    expect(at('/q/replace').url).toBe(`/q/replace?keep=a+b&key=${encodeURIComponent(querySecret.value)}`);
    const secrets = at('/secrets');
    expect(new URL(secrets.url, 'http://echo').searchParams.get('sig')).toBe(secretVariable.value);
    expect(secrets.headers['x-secret']).toBe(secretVariable.value);
    expect(secrets.headers['x-mixed']).toBe(`pre-${secretVariable.value}-hello`);
    expect(JSON.parse(secrets.body)).toEqual({ nested: [{ token: secretVariable.value }], greeting: 'hello' });

    // What was recorded: the echo's answers, with every secret masked where it was.
    const steps = await stepsOf(execution.id);
    expectNoSecret(steps.text, 'the steps');
    const echoOf = (nodeId: string) => (steps.byNode[nodeId]?.output as { body: Echoed }).body;
    expect(echoOf('bearer').headers.authorization).toBe('Bearer [secret]');
    expect(echoOf('basic').headers.authorization).toBe('Basic [secret]');
    expect(echoOf('header').headers['x-api-key']).toBe('[secret]');
    expect(echoOf('query').url).toBe('/q/search?keep=a%20b&key=[secret]');
    // The recorded url is the one sent, the credential masked: not one without the parameter.
    expect(steps.byNode.query?.input).toMatchObject({ url: `${echo.url}/q/search?keep=a%20b&key=[secret]`, connection: 'echo-query' });
    expect(steps.byNode.queryReplaced?.input).toMatchObject({ url: `${echo.url}/q/replace?keep=a+b&key=[secret]` });
    expect(echoOf('secrets').url).toBe('/secrets?sig=[secret]');
    expect(echoOf('secrets').headers).toMatchObject({ 'x-secret': '[secret]', 'x-mixed': 'pre-[secret]-hello' });
    expect(JSON.parse(echoOf('secrets').body)).toEqual({ nested: [{ token: '[secret]' }], greeting: 'hello' });
    // Header names in any order (a saved graph is jsonb, which orders keys its own way).
    expect(steps.byNode.secrets?.input).toEqual({
      method: 'POST',
      url: `${echo.url}/secrets?sig=[secret]`,
      body: { nested: [{ token: '[secret]' }], greeting: 'hello' },
      headers: expect.arrayContaining(['x-secret', 'x-mixed']),
    });
    expect(steps.byNode.bearer?.input).toEqual({
      method: 'GET',
      url: `${echo.url}/api/bearer`,
      connection: 'echo-bearer',
      // The node's spelling of a name it replaces; the auth's own name for the credential.
      headers: expect.arrayContaining(['X-Plain', 'x-kept', 'authorization']),
    });
    expect(steps.byNode.bearer?.input).toMatchObject({ headers: { length: 3 } });

    const output = await app.inject({ url: `/api/v1/executions/${execution.id}`, headers: { cookie: user.cookie } });
    expect(output.body).toContain('[secret]');
    expectNoSecret(output.body, 'the execution');

    const events = await app.inject({ url: `/api/v1/executions/${execution.id}/events`, headers: { cookie: user.cookie } });
    expect(events.body).toContain('event: execution');
    expectNoSecret(events.body, 'the event stream');
    expectNoSecret(logsOf(app), 'the logs');
  });

  it('masks a secret in the error of a non-2xx answer that carries it', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'refused', type: 'http.request', params: { method: 'GET', connection: 'echo-bearer', url: '/denied?status=403', headers: { 'x-copy': '{{ $secrets.SV }}' } } },
      ],
      edges: [{ source: 'start', target: 'refused' }],
    });
    const execution = await runToEnd(workflowId);
    expect(execution.status).toBe('failed');
    const steps = await stepsOf(execution.id);
    const error = steps.byNode.refused?.error;
    expect(error?.message).toContain('403');
    const echoed = (error?.details as { body: Echoed }).body;
    expect(echoed.headers).toMatchObject({ authorization: 'Bearer [secret]', 'x-copy': '[secret]' });
    expectNoSecret(steps.text, 'the failed step');
    expectNoSecret(JSON.stringify(await getExecution(app, user, execution.id)), 'the failed execution');
    const events = await app.inject({ url: `/api/v1/executions/${execution.id}/events`, headers: { cookie: user.cookie } });
    expectNoSecret(events.body, 'the event stream');
    expectNoSecret(logsOf(app), 'the logs');
  });

  it('masks a secret one step sent wherever a later step that never named it gets it back', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'store', type: 'http.request', params: { method: 'POST', url: `${echo.url}/store`, body: { password: '{{ $secrets.SV }}' } } },
        { id: 'store2', type: 'http.request', params: { method: 'GET', connection: 'echo-header', url: '/store2' } },
        // Reads back what the step before it sent: its own params name no secret.
        { id: 'load', type: 'http.request', params: { method: 'GET', url: `${echo.url}/previous` } },
        { id: 'copy', type: 'transform', params: { expression: 'steps.load.body' } },
      ],
      edges: [
        { source: 'start', target: 'store' },
        { source: 'store', target: 'store2' },
        { source: 'store2', target: 'load' },
        { source: 'load', target: 'copy' },
      ],
    });
    const execution = await runToEnd(workflowId);
    expect(execution.status, JSON.stringify(execution.error)).toBe('completed');
    const steps = await stepsOf(execution.id);
    // The server did send them back: the request before /previous was /store2, with the header secret.
    expect((steps.byNode.load?.output as { body: Echoed }).body.headers['x-api-key']).toBe('[secret]');
    expectNoSecret(steps.text, 'the steps');
    expectNoSecret(JSON.stringify(await getExecution(app, user, execution.id)), 'the execution');
    const events = await app.inject({ url: `/api/v1/executions/${execution.id}/events`, headers: { cookie: user.cookie } });
    expectNoSecret(events.body, 'the event stream');
  });

  it('masks a secret in a response kept as bytes (base64), and one the response bound cuts in two', async () => {
    const secret = secretWith('cut', 'tail');
    const redactor = new Redactor(secretForms(secret.value));
    const send = (path: string, maxResponseBytes: number) =>
      performHttpRequest({ method: 'GET', url: `${echo.url}${path}`, headers: { 'x-token': secret.value } }, { allow: ['127.0.0.1'], maxResponseBytes, defaultTimeoutMs: 5_000 }, new AbortController().signal, redactor);

    const bytes = (await send('/b?as=bytes', 1_000_000)).body as { base64: string };
    const decoded = Buffer.from(bytes.base64, 'base64').toString('utf8');
    expect(decoded).toContain('"x-token":"[secret]"');
    expect(decoded).not.toContain(secret.marker);

    // Cut at every byte of the secret (where it is in the answer, asked for unmasked): no first part of it stays.
    const full = await fetch(`${echo.url}/c`, { headers: { 'x-token': secret.value } }).then((response) => response.text());
    const at = Buffer.from(full).indexOf(secret.value);
    expect(at).toBeGreaterThan(0);
    for (let cut = at + 1; cut < at + Buffer.byteLength(secret.value); cut++) {
      const text = String((await send('/c', cut)).body);
      expect(text).toMatch(/…\[truncated: response exceeded \d+ bytes\]$/);
      expect(text, `cut at ${cut}`).not.toContain(secret.marker.slice(0, 4));
    }
  });

  it('gives expressions $vars beside the root scope, read when the step runs', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        {
          id: 'shape',
          type: 'transform',
          params: { expression: '{ "greeting": $vars.GREETING & " " & input.name, "max": $vars.LIMITS.max, "root": $keys($$), "looked": $lookup($vars, "GREETING") }' },
        },
        // A missing key is JSONata's nothing, as any missing field: null as a step's output.
        { id: 'missing', type: 'transform', params: { expression: '$vars.MISSING' } },
        { id: 'check', type: 'condition', params: { expression: '$vars.LIMITS.max = 3' } },
        { id: 'call', type: 'http.request', params: { method: 'POST', url: `${echo.url}/vars?max={{ $vars.LIMITS.max }}`, body: { limits: '{{ $vars.LIMITS }}', text: 'say {{ $vars.GREETING }}' } } },
      ],
      edges: [
        { source: 'start', target: 'shape' },
        { source: 'start', target: 'missing' },
        { source: 'shape', target: 'check' },
        { source: 'check', target: 'call', when: true },
      ],
    });
    const execution = await runToEnd(workflowId, { name: 'Ada' });
    expect(execution.status, JSON.stringify(execution.error)).toBe('completed');
    const steps = await stepsOf(execution.id);
    expect(steps.byNode.shape?.output).toEqual({ greeting: 'hello Ada', max: 3, root: ['input', 'steps'], looked: 'hello' });
    expect(steps.byNode.missing).toMatchObject({ status: 'completed', output: null });
    expect(steps.byNode.check?.output).toEqual({ result: true });
    const echoed = (steps.byNode.call?.output as { body: Echoed }).body;
    expect(echoed.url).toBe('/vars?max=3');
    expect(JSON.parse(echoed.body)).toEqual({ limits: { max: 3 }, text: 'say hello' });

    // Read when the step runs: a changed value shows in the next run.
    const patched = await app.inject({ method: 'PATCH', url: `/api/v1/variables/${greetingId}`, headers: { cookie: user.cookie }, payload: { value: 'bonjour' } });
    expect(patched.statusCode).toBe(200);
    const again = await runToEnd(workflowId, { name: 'Ada' });
    expect(((await stepsOf(again.id)).byNode.shape?.output as { greeting: string }).greeting).toBe('bonjour Ada');
    await app.inject({ method: 'PATCH', url: `/api/v1/variables/${greetingId}`, headers: { cookie: user.cookie }, payload: { value: 'hello' } });
  });

  it('refuses at save $secrets outside a whole template in http.request params, unknown secrets and connections, and another origin', async () => {
    const start = { id: 'start', type: 'trigger.manual' };
    const cases: { node: Record<string, unknown>; path: string }[] = [
      { node: { id: 'x', type: 'transform', params: { expression: '$secrets.SV' } }, path: 'nodes[1].params.expression' },
      { node: { id: 'x', type: 'delay', params: { ms: '{{ $secrets.SV }}' } }, path: 'nodes[1].params.ms' },
      {
        node: { id: 'x', type: 'http.request', params: { method: 'GET', url: `${echo.url}/x`, headers: { 'x-token': '{{ $base64encode($secrets.SV) }}' } } },
        path: 'nodes[1].params.headers.x-token',
      },
      { node: { id: 'x', type: 'http.request', params: { method: 'GET', url: `${echo.url}/x?t={{ $secrets.SV & "" }}` } }, path: 'nodes[1].params.url' },
      { node: { id: 'x', type: 'http.request', params: { method: 'GET', url: `${echo.url}/x`, body: { a: ['Bearer $secrets.SV'] } } }, path: 'nodes[1].params.body.a.0' },
      { node: { id: 'x', type: 'http.request', params: { method: 'POST', url: `${echo.url}/x`, body: { token: '{{ $secrets.NOPE }}' } } }, path: 'nodes[1].params.body.token' },
      // A plain variable is no secret.
      { node: { id: 'x', type: 'http.request', params: { method: 'POST', url: `${echo.url}/x`, headers: { 'x-g': '{{ $secrets.GREETING }}' } } }, path: 'nodes[1].params.headers.x-g' },
      { node: { id: 'x', type: 'http.request', params: { method: 'GET', connection: 'no-such-connection', url: '/x' } }, path: 'nodes[1].params.connection' },
      { node: { id: 'x', type: 'http.request', params: { method: 'GET', connection: 'echo-bearer', url: `${other.url}/x` } }, path: 'nodes[1].params.url' },
      { node: { id: 'x', type: 'http.request', params: { method: 'GET', connection: 'Not A Name', url: '/x' } }, path: 'nodes[1].params.connection' },
      // A secret where the url's host or scheme is: errors show those as the URL parser leaves them (lower-cased, punycoded).
      { node: { id: 'x', type: 'http.request', params: { method: 'GET', url: 'http://{{ $secrets.SV }}.invalid/x' } }, path: 'nodes[1].params.url' },
      { node: { id: 'x', type: 'http.request', params: { method: 'GET', url: '{{ $secrets.SV }}' } }, path: 'nodes[1].params.url' },
      // Through a connection too: a value with a scheme makes the url absolute.
      { node: { id: 'x', type: 'http.request', params: { method: 'GET', connection: 'echo-bearer', url: '{{ $secrets.SV }}' } }, path: 'nodes[1].params.url' },
    ];
    for (const { node, path } of cases) {
      const problem = expectProblem(await save({ nodes: [start, node], edges: [{ source: 'start', target: 'x' }] }), 400);
      expect(problem.code, JSON.stringify(node)).toBe('INVALID_GRAPH');
      expect((problem.errors as { path: string }[]).map((error) => error.path), JSON.stringify(node)).toEqual([path]);
    }

    // The same checks on a change of the graph.
    const workflowId = await createWorkflow(app, user, { nodes: [start], edges: [] });
    const patched = await app.inject({
      method: 'PATCH',
      url: `/api/v1/workflows/${workflowId}`,
      headers: { cookie: user.cookie },
      payload: { nodes: [start, { id: 'x', type: 'http.request', params: { method: 'GET', connection: 'missing-one', url: '/x' } }], edges: [{ source: 'start', target: 'x' }] },
    });
    expect((expectProblem(patched, 400).errors as { path: string }[])[0]?.path).toBe('nodes[1].params.connection');
  });

  it.skipIf(lacksConcurrentConnections())('makes a save naming a connection wait for its concurrent delete, then refuses it', async () => {
    const racing = await createConnection({ name: 'racing', baseUrl: echo.url });
    // Another session deletes the connection as the connections route does: row locked FOR UPDATE first.
    const deleting = await app.database.sql.reserve();
    try {
      await deleting`begin`;
      await deleting`select id from connections where id = ${racing.id} for update`;
      let settled = false;
      const saving = save({
        nodes: [
          { id: 'start', type: 'trigger.manual' },
          { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'racing', url: '/x' } },
        ],
        edges: [{ source: 'start', target: 'call' }],
      }).finally(() => (settled = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Without the share lock the save would have read the row (the delete is not committed) and succeeded by now.
      expect(settled).toBe(false);
      await deleting`delete from connections where id = ${racing.id}`;
      await deleting`commit`;
      const problem = expectProblem(await saving, 400);
      expect((problem.errors as { path: string }[]).map((error) => error.path)).toEqual(['nodes[1].params.connection']);
    } finally {
      deleting.release();
    }
  });

  it('fails a step whose templated url leaves the connection\'s origin, before any request', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'echo-bearer', url: '{{ input.target }}' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const [echoBefore, otherBefore] = [echo.received.length, other.received.length];
    const execution = await runToEnd(workflowId, { target: `${other.url}/steal` });
    expect(execution.status).toBe('failed');
    const error = (await stepsOf(execution.id)).byNode.call?.error;
    expect(error?.code).toBe('CONNECTION_ORIGIN_MISMATCH');
    expect(error?.message).toContain(`leads to ${other.url},`);
    expect(other.received.length).toBe(otherBefore);
    expect(echo.received.length).toBe(echoBefore);

    // The same origin, absolute, is allowed.
    const allowed = await runToEnd(workflowId, { target: `${echo.url}/api/fine` });
    expect(allowed.status).toBe('completed');
  });

  it('fails a queued run of a version naming a connection deleted since with CONNECTION_NOT_FOUND', async () => {
    const doomedId = (await createConnection({ name: 'doomed', baseUrl: echo.url, auth: { type: 'bearer', secret: 'doomed-secret-1' } })).id;
    const usingIt = {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'doomed', url: '/x' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    };
    const workflowId = await createWorkflow(app, user, usingIt);
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/connections/${doomedId}`, headers: { cookie: user.cookie } })).statusCode).toBe(409);

    await engine.stop(5_000);
    const queued = await runWorkflow(app, user, workflowId);
    const notUsingIt = { nodes: [usingIt.nodes[0]], edges: [] };
    expect((await app.inject({ method: 'PATCH', url: `/api/v1/workflows/${workflowId}`, headers: { cookie: user.cookie }, payload: notUsingIt })).statusCode).toBe(200);
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/connections/${doomedId}`, headers: { cookie: user.cookie } })).statusCode).toBe(204);
    engine = startCapturedEngine();

    const execution = await waitForStatus(app, user, queued.id, ['completed', 'failed']);
    expect(execution.status).toBe('failed');
    const error = (await stepsOf(queued.id)).byNode.call?.error;
    expect(error?.code).toBe('CONNECTION_NOT_FOUND');
    expect(error?.message).toContain('doomed');
  });

  it('fails a step whose secret variable was deleted or made plain after the save with SECRET_NOT_FOUND', async () => {
    const goneId = await createVariable('GONE', 'gone-secret-1', true);
    const plainId = await createVariable('TURNED', 'turned-secret-1', true);
    const workflow = (key: string) => ({
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: `${echo.url}/x`, headers: { 'x-token': `{{ $secrets.${key} }}` } } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const deletedWorkflow = await createWorkflow(app, user, workflow('GONE'));
    const plainWorkflow = await createWorkflow(app, user, workflow('TURNED'));
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/variables/${goneId}`, headers: { cookie: user.cookie } })).statusCode).toBe(204);
    const madePlain = await app.inject({ method: 'PATCH', url: `/api/v1/variables/${plainId}`, headers: { cookie: user.cookie }, payload: { value: 'now plain', secret: false } });
    expect(madePlain.statusCode).toBe(200);

    for (const workflowId of [deletedWorkflow, plainWorkflow]) {
      const execution = await runToEnd(workflowId);
      expect(execution.status).toBe('failed');
      expect((await stepsOf(execution.id)).byNode.call?.error?.code).toBe('SECRET_NOT_FOUND');
    }
  });

  it('fails a step whose stored secret was altered with SECRET_UNREADABLE, logs the row, and keeps serving', async () => {
    const tampered = await createConnection({ name: 'tampered', baseUrl: echo.url, auth: { type: 'bearer', secret: 'tampered-secret-1' } });
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'tampered', url: '/x' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    // Simulates tampering in the database: one character of the sealed envelope changed.
    await app.database.sql`
      update connections
         set secret_ciphertext = overlay(secret_ciphertext placing (case when substr(secret_ciphertext, 60, 1) = 'A' then 'B' else 'A' end) from 60 for 1)
       where id = ${tampered.id}`;
    const execution = await runToEnd(workflowId);
    expect(execution.status).toBe('failed');
    expect((await stepsOf(execution.id)).byNode.call?.error?.code).toBe('SECRET_UNREADABLE');
    const warning = logsOf(app)
      .split('\n')
      .find((line) => line.includes('a stored secret cannot be decrypted'));
    expect(warning).toContain(tampered.id);
    expect(logsOf(app)).not.toContain('tampered-secret-1');

    expect((await app.inject({ url: '/api/ready' })).statusCode).toBe(200);
    const healthy = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] });
    expect((await runToEnd(healthy)).status).toBe('completed');
  });

  it('stamps lastUsedAt when a run uses a connection, at most once a minute, without changing its version', async () => {
    const created = await createConnection({ name: 'stamped', baseUrl: echo.url });
    expect(created.lastUsedAt).toBeNull();
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'stamped', url: '/stamp' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    for (let run = 0; run < 3; run++) expect((await runToEnd(workflowId)).status).toBe('completed');

    const after = await eventually(async () => {
      const response = await app.inject({ url: `/api/v1/connections/${created.id}`, headers: { cookie: user.cookie } });
      const connection = response.json<{ lastUsedAt: string | null; version: number; updatedAt: string }>();
      return connection.lastUsedAt !== null && connection;
    });
    expect(after.version).toBe(created.version);
    expect(after.updatedAt).toBe(created.updatedAt);
    // Three runs within the minute: one write.
    const stamps = statements.filter((statement) => statement.query.includes('last_used_at = now()') && statement.parameters.includes(created.id));
    expect(stamps).toHaveLength(1);
  });

  it('applies the connection as last saved: the next run sends its new headers and secret, nothing of the old', async () => {
    const [first, second] = [secretWith('c1', ''), secretWith('c2', '')];
    const created = await createConnection({ name: 'changing', baseUrl: echo.url, headers: { 'x-version': 'one' }, auth: { type: 'bearer', secret: first.value } });
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'changing', url: '/changing' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    expect((await runToEnd(workflowId)).status).toBe('completed');
    const patched = await app.inject({
      method: 'PATCH',
      url: `/api/v1/connections/${created.id}`,
      headers: { cookie: user.cookie },
      payload: { headers: { 'x-version': 'two' }, auth: { type: 'bearer', secret: second.value } },
    });
    expect(patched.statusCode, patched.body).toBe(200);
    expect((await runToEnd(workflowId)).status).toBe('completed');
    const calls = echo.received.filter((request) => request.url === '/changing');
    expect(calls.map((request) => [request.headers['x-version'], request.headers.authorization])).toEqual([
      ['one', `Bearer ${first.value}`],
      ['two', `Bearer ${second.value}`],
    ]);
  });

  it("guards a request through a connection as any other: a connection to an address outside ENGINE_HTTP_ALLOW fails its step, unsent", async () => {
    const internal = secretWith('in', '');
    await createConnection({ name: 'internal', baseUrl: 'http://10.20.30.40:8080/', auth: { type: 'bearer', secret: internal.value } });
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'internal', url: 'admin' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const execution = await runToEnd(workflowId);
    expect(execution.status).toBe('failed');
    const error = (await stepsOf(execution.id)).byNode.call?.error;
    expect(error?.message).toMatch(/^refused to connect to .*ENGINE_HTTP_ALLOW/);
    expect(JSON.stringify(error)).not.toContain(internal.marker);
  });

  it('reads nothing of connections or variables for a step whose params name none', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'shape', type: 'transform', params: { expression: '{ "n": input.n + 1, "varsText": "no binding named here" }' } },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: `${echo.url}/plain?n={{ steps.shape.n }}` } },
      ],
      edges: [
        { source: 'start', target: 'shape' },
        { source: 'shape', target: 'call' },
      ],
    });
    const from = statements.length;
    expect((await runToEnd(workflowId, { n: 1 })).status).toBe('completed');
    const touching = statements.slice(from).filter((statement) => /"(connections|variables)"/.test(statement.query));
    expect(touching.map((statement) => statement.query)).toEqual([]);
  });

  it('masks a secret that a graph saved before such urls were refused puts in a url host or scheme, as the parser leaves it', async () => {
    const host = secretWith('TenantHost', 'XYZ');
    const scheme = secretWith('MyScHeMe', 'Token');
    await createVariable('HOST_SECRET', host.value, true);
    await createVariable('SCHEME_SECRET', scheme.value, true);
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'host', type: 'http.request', params: { method: 'GET', url: 'http://placeholder.invalid/x' } },
        { id: 'scheme', type: 'http.request', params: { method: 'GET', url: 'http://placeholder.invalid/y' } },
      ],
      edges: [
        { source: 'start', target: 'host' },
        { source: 'start', target: 'scheme' },
      ],
    });
    // Such a graph is refused at save now: written as an older version could have stored it.
    for (const table of ['workflows', 'workflow_versions']) {
      await app.database.sql.unsafe(
        `update ${table} set nodes = jsonb_set(jsonb_set(nodes, '{1,params,url}', to_jsonb($1::text)), '{2,params,url}', to_jsonb($2::text)) where ${table === 'workflows' ? 'id' : 'workflow_id'} = $3`,
        ['http://{{ $secrets.HOST_SECRET }}.invalid/x', '{{ $secrets.SCHEME_SECRET }}://x/y', workflowId],
      );
    }
    const execution = await runToEnd(workflowId);
    expect(execution.status).toBe('failed');
    const steps = await stepsOf(execution.id);
    expect(steps.byNode.host?.error?.message).toMatch(/^could not resolve \[secret\]\.invalid/);
    expect(steps.byNode.scheme?.error?.message).toBe('only http and https URLs are supported, not [secret]');
    const events = await app.inject({ url: `/api/v1/executions/${execution.id}/events`, headers: { cookie: user.cookie } });
    const execution_ = JSON.stringify(await getExecution(app, user, execution.id));
    for (const [where, text] of [['the steps', steps.text], ['the execution', execution_], ['the event stream', events.body], ['the logs', logsOf(app)]] as const) {
      for (const secret of [host, scheme]) expect(text.toLowerCase(), `${where} hold ${secret.marker}`).not.toContain(secret.marker.toLowerCase());
    }
  });

  it('gives $vars a stored string as that string, even one that reads as JSON', async () => {
    const strings = { STR_NUMBER: '42', STR_OBJECT: '{"a":1}', STR_TRUE: 'true', STR_NULL: 'null' };
    for (const [key, value] of Object.entries(strings)) await createVariable(key, value);
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        // $vars.KEY reads those keys; $lookup reads them all: both reads.
        { id: 'named', type: 'transform', params: { expression: '{ "STR_NUMBER": $vars.STR_NUMBER, "STR_OBJECT": $vars.STR_OBJECT, "STR_TRUE": $vars.STR_TRUE, "STR_NULL": $vars.STR_NULL }' } },
        { id: 'all', type: 'transform', params: { expression: '[$lookup($vars, "STR_NUMBER"), $lookup($vars, "STR_OBJECT"), $lookup($vars, "STR_TRUE"), $lookup($vars, "STR_NULL")]' } },
      ],
      edges: [
        { source: 'start', target: 'named' },
        { source: 'start', target: 'all' },
      ],
    });
    const execution = await runToEnd(workflowId);
    expect(execution.status, JSON.stringify(execution.error)).toBe('completed');
    const steps = await stepsOf(execution.id);
    expect(steps.byNode.named?.output).toEqual(strings);
    expect(steps.byNode.all?.output).toEqual(Object.values(strings));
  });

  it('does not count a step refused for another origin as a use of its connection', async () => {
    const refused = await createConnection({ name: 'refused-use', baseUrl: echo.url });
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'refused-use', url: '{{ input.target }}' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const execution = await runToEnd(workflowId, { target: `${other.url}/elsewhere` });
    expect((await stepsOf(execution.id)).byNode.call?.error?.code).toBe('CONNECTION_ORIGIN_MISMATCH');
    const stamps = statements.filter((statement) => statement.query.includes('last_used_at = now()') && statement.parameters.includes(refused.id));
    expect(stamps).toEqual([]);
    const [row] = await app.database.sql<{ lastUsedAt: Date | null }[]>`select last_used_at as "lastUsedAt" from connections where id = ${refused.id}`;
    expect(row?.lastUsedAt).toBeNull();
  });

  it.skipIf(lacksConcurrentConnections())('has written lastUsedAt by the time the engine has stopped', async () => {
    const used = await createConnection({ name: 'used-at-stop', baseUrl: echo.url });
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', connection: 'used-at-stop', url: '/at-stop' } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    // Another session holds the row, so the stamp waits for it.
    const holding = await app.database.sql.reserve();
    try {
      await holding`begin`;
      await holding`select id from connections where id = ${used.id} for update`;
      const receivedBefore = echo.received.length;
      await runWorkflow(app, user, workflowId);
      await eventually(async () => echo.received.slice(receivedBefore).some((request) => request.url === '/at-stop'));
      const released = new Promise<void>((resolve) => setTimeout(() => void holding`commit`.then(() => resolve()), 1_000));
      await engine.stop(10_000);
      const [row] = await app.database.sql<{ lastUsedAt: Date | null }[]>`select last_used_at as "lastUsedAt" from connections where id = ${used.id}`;
      expect(row?.lastUsedAt).not.toBeNull();
      await released;
    } finally {
      holding.release();
      engine = startCapturedEngine();
    }
  });

  it('logs a database failure of a secret write with its statement but without its parameters: no sealed secret in the log', async () => {
    await app.database.sql.unsafe(`
      create or replace function forced_failure() returns trigger language plpgsql as $$
      begin
        if new.key = 'FORCED_FAILURE' then raise exception 'forced failure'; end if;
        return new;
      end $$`);
    await app.database.sql.unsafe('create trigger forced_failure before insert on variables for each row execute function forced_failure()');
    const sealed: string[] = [];
    const seal = app.keyring.seal.bind(app.keyring);
    const spy = vi.spyOn(app.keyring, 'seal').mockImplementation((plaintext, binding) => {
      const result = seal(plaintext, binding);
      sealed.push(result.ciphertext);
      return result;
    });
    try {
      const response = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: { cookie: user.cookie }, payload: { key: 'FORCED_FAILURE', value: 'forced-secret-1', secret: true } });
      expectProblem(response, 500);
    } finally {
      spy.mockRestore();
      await app.database.sql.unsafe('drop trigger forced_failure on variables');
    }
    expect(sealed).toHaveLength(1);
    const line = logsOf(app)
      .split('\n')
      .find((text) => text.includes('forced failure'));
    expect(line).toContain('insert into \\"variables\\"');
    expect(line).toContain('"code":"P0001"');
    for (const ciphertext of sealed) expect(logsOf(app)).not.toContain(ciphertext);
    expect(logsOf(app)).not.toContain('forced-secret-1');
  });
});
