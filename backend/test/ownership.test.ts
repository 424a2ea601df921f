import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';
import { makeResources } from './fixtures.js';

interface OpenApiOperation {
  requestBody?: unknown;
}
type OpenApiDocument = { paths: Record<string, Record<string, OpenApiOperation>> };

/** A body that passes validation, so the ownership check is what answers; `{}` for any route not listed. */
const validBodies: Record<string, Record<string, unknown>> = {
  'PATCH /api/v1/workflows/{id}': { name: 'hijacked' },
  'PATCH /api/v1/jobs/{id}': { name: 'hijacked' },
  'PATCH /api/v1/variables/{id}': { value: 'hijacked' },
  'PATCH /api/v1/connections/{id}': { description: 'hijacked' },
  'PATCH /api/v1/event-subscriptions/{id}': { url: 'https://hijacked.example.com/' },
};

describe('ownership, over every route that takes an id', () => {
  let app: App;
  let alice: SignedInUser;
  let bob: SignedInUser;
  let ids: Record<string, string>;
  let webhookWorkflowId: string;

  beforeAll(async () => {
    app = await buildTestApp();
    alice = await signUp(app);
    bob = await signUp(app);
    const resources = await makeResources(app, alice);
    webhookWorkflowId = resources.webhookWorkflow.id;
    ids = {
      workflows: resources.workflow.id,
      jobs: resources.job.id,
      executions: resources.execution.id,
      'api-keys': resources.apiKey.id,
      variables: resources.variable.id,
      connections: resources.connection.id,
      deliveries: resources.delivery.id,
      'event-subscriptions': resources.eventSubscription.id,
      'event-deliveries': resources.eventDelivery.id,
    };
  });
  afterAll(async () => {
    await app.close();
  });

  /** Alice's view of everything she owns, to prove nothing changed. */
  const snapshot = async () => {
    const read = async (url: string) => (await app.inject({ url, headers: { cookie: alice.cookie } })).body;
    return Promise.all([
      read(`/api/v1/workflows/${ids.workflows}`),
      read(`/api/v1/jobs/${ids.jobs}`),
      read(`/api/v1/executions/${ids.executions}`),
      read(`/api/v1/executions/${ids.executions}/steps`),
      read('/api/v1/api-keys'),
      read(`/api/v1/variables/${ids.variables}`),
      read(`/api/v1/connections/${ids.connections}`),
      read(`/api/v1/deliveries/${ids.deliveries}`),
      read(`/api/v1/workflows/${webhookWorkflowId}/deliveries`),
      read(`/api/v1/event-subscriptions/${ids['event-subscriptions']}`),
      // Which messages she has (delivery workers may move their status and attempts on): a retry's effect is its own test's.
      read(`/api/v1/event-subscriptions/${ids['event-subscriptions']}/deliveries`).then((body) => {
        const page = JSON.parse(body) as { items: { id: string; type: string; webhookId: string }[] };
        return JSON.stringify(page.items.map((item) => [item.id, item.type, item.webhookId]));
      }),
      // How many runs she has (their statuses move on as engines run them): a replay would add one.
      app.database.sql<{ count: number }[]>`select count(*)::int as count from executions where user_id = ${alice.id}`.then(([row]) => String(row?.count)),
    ]);
  };

  it('answers 404 to another user on every such route (taken from the route table), and changes nothing', async () => {
    const document = (await app.inject('/api/openapi.json')).json<OpenApiDocument>();
    const routes = Object.entries(document.paths)
      .filter(([path]) => path.startsWith('/api/v1/') && path.includes('{id}'))
      .flatMap(([path, operations]) => Object.entries(operations).map(([method, operation]) => ({ path, method: method.toUpperCase(), operation })));
    expect(routes.length).toBeGreaterThanOrEqual(9);

    const before = await snapshot();
    for (const { path, method, operation } of routes) {
      const resource = path.split('/')[3] as string;
      const id = ids[resource];
      if (!id) throw new Error(`no fixture for '${resource}' (${method} ${path}): add one to makeResources`);
      // Other path parameters take a value Alice's resource has (her workflow's first version).
      const url = path.replace('{id}', id).replace('{version}', '1');
      const payload = operation.requestBody ? (validBodies[`${method} ${path}`] ?? {}) : undefined;
      const response = await app.inject({ method: method as 'GET', url, headers: { cookie: bob.cookie }, ...(payload ? { payload } : {}) });
      expect(response.statusCode, `${method} ${path} as another user`).toBe(404);
      expectProblem(response, 404);

      const missing = await app.inject({
        method: method as 'GET',
        url: path.replace('{id}', '00000000-0000-4000-8000-000000000000').replace('{version}', '1'),
        headers: { cookie: bob.cookie },
        ...(payload ? { payload } : {}),
      });
      expect(missing.json().code, `${method} ${path}: not yours must look like missing`).toBe(response.json().code);
    }
    expect(await snapshot()).toEqual(before);
  });

  // The caller's own account, not lists of rows.
  const accountPaths = new Set(['/api/v1/me', '/api/v1/usage']);

  it('never shows another user’s rows in any list', async () => {
    const document = (await app.inject('/api/openapi.json')).json<OpenApiDocument>();
    const lists = Object.entries(document.paths)
      .filter(([path, operations]) => path.startsWith('/api/v1/') && !path.includes('{') && operations.get && !accountPaths.has(path))
      .map(([path]) => path);
    expect(lists.length).toBeGreaterThanOrEqual(4);
    for (const path of lists) {
      const page = (await app.inject({ url: path, headers: { cookie: bob.cookie } })).json<{ items: unknown[] }>();
      expect(page.items, path).toEqual([]);
    }
    // Bob's figures are his own: Alice's workflows, runs and their bytes are not in them.
    const usage = (await app.inject({ url: '/api/v1/usage', headers: { cookie: bob.cookie } })).json<Record<string, number>>();
    expect(usage).toMatchObject({ workflows: 0, jobs: 0, executions: 0, steps: 0, connections: 0, variables: 0, webhookDeliveries: 0, payloadBytes: 0 });
    const alicesUsage = (await app.inject({ url: '/api/v1/usage', headers: { cookie: alice.cookie } })).json<Record<string, number>>();
    expect(alicesUsage.executions).toBeGreaterThan(0);
    expect(alicesUsage.webhookDeliveries).toBe(1);
  });
});
