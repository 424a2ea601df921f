import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { runMigrations } from '../src/db/migrate.js';
import type { Engine } from '../src/engine/engine.js';
import { createWorkflow, eventually, runWorkflow, startEngine, startTestHttpServer, waitForStatus, type TestHttpServer } from './engine-helpers.js';
import { buildTestApp as buildSharedTestApp, isEmbeddedDatabase, signUp, type SignedInUser } from './helpers.js';
import { createScratchDatabase, type ScratchDatabase } from './scratch.js';

/* This file counts what its own engine runs: on a real server it gets a database of its own. */
let scratch: ScratchDatabase | undefined;
beforeAll(async () => {
  if (isEmbeddedDatabase()) return;
  scratch = await createScratchDatabase();
  await scratch.use((client) => runMigrations(client.db));
});
afterAll(async () => {
  await scratch?.drop();
});

describe("one user's share of the engine", () => {
  let app: App;
  let engine: Engine;
  let upstream: TestHttpServer;
  let hog: SignedInUser;
  let neighbour: SignedInUser;

  beforeAll(async () => {
    app = await buildSharedTestApp(scratch ? { DATABASE_URL: scratch.url } : {});
    upstream = await startTestHttpServer();
    // Four workers, at most two of them for any one user.
    engine = startEngine(app, { ENGINE_CONCURRENCY: '4', ENGINE_USER_CONCURRENCY: '2', ...(scratch ? { DATABASE_URL: scratch.url } : {}) });
    hog = await signUp(app);
    neighbour = await signUp(app);
  });
  afterAll(async () => {
    await engine.stop(1_000);
    await upstream.close();
    await app.close();
  });

  const runningOf = async (user: SignedInUser) => {
    const page = await app.inject({ url: '/api/v1/executions?status=running&pageSize=100', headers: { cookie: user.cookie } });
    return page.json<{ items: unknown[] }>().items.length;
  };

  it("runs another user's work while one user's runs hang, and never more than the cap of one user at once", async () => {
    const hanging = await createWorkflow(app, hog, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'call', type: 'http.request', params: { method: 'GET', url: `${upstream.url}/hang?delay=60000`, timeoutMs: 60_000 } },
      ],
      edges: [{ source: 'start', target: 'call' }],
    });
    const hogRuns = [];
    for (let index = 0; index < 4; index++) hogRuns.push(await runWorkflow(app, hog, hanging));
    await eventually(async () => upstream.requests.filter((request) => request.path === '/hang').length >= 2, 10_000, 'two hanging calls');

    const trivial = await createWorkflow(app, neighbour, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'add', type: 'transform', params: { expression: '1 + 1' } },
      ],
      edges: [{ source: 'start', target: 'add' }],
    });
    const neighbourRun = await runWorkflow(app, neighbour, trivial);
    const done = await waitForStatus(app, neighbour, neighbourRun.id, ['completed', 'failed'], 3_000);
    expect(done.status).toBe('completed');

    // The hog's other two wait for its own slots, though two of the four workers are free.
    expect(await runningOf(hog)).toBe(2);
    expect(upstream.requests.filter((request) => request.path === '/hang')).toHaveLength(2);

    for (const run of hogRuns) {
      await app.inject({ method: 'POST', url: `/api/v1/executions/${run.id}/cancel`, headers: { cookie: hog.cookie } });
    }
  }, 30_000);
});
