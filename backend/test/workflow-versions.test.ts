import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { createWorkflow, runWorkflow, startEngine, waitForStatus } from './engine-helpers.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';

describe('workflow versions', () => {
  let app: App;
  let user: SignedInUser;
  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
  });
  afterAll(async () => {
    await app.close();
  });

  it('stores a graph once per version, however many runs it has', async () => {
    // A graph of about 200 KB that does not compress: each copy of it would show.
    const bulky = randomBytes(100_000).toString('hex');
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'send', type: 'http.request', params: { method: 'POST', url: 'https://example.test/hook', body: { bulky } } },
      ],
      edges: [{ source: 'start', target: 'send' }],
    });
    for (let run = 0; run < 10; run++) await runWorkflow(app, user, workflowId);
    const [stored] = await app.database.sql<{ versions: number; versionBytes: number; executionBytes: number }[]>`
      select (select count(*)::int from workflow_versions where workflow_id = ${workflowId}) as versions,
             (select coalesce(sum(pg_column_size(v.*)), 0)::int from workflow_versions v where workflow_id = ${workflowId}) as "versionBytes",
             (select coalesce(sum(pg_column_size(e.*)), 0)::int from executions e where workflow_id = ${workflowId}) as "executionBytes"`;
    expect(stored?.versions).toBe(1);
    // Ten runs together hold less than one copy of the graph would (jsonb compresses, so compare
    // with the version row as stored, not with the text's length).
    expect(stored?.executionBytes).toBeLessThan(stored?.versionBytes ?? 0);
  });

  it('runs the version an execution was created with, though the workflow changed since', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'say', type: 'transform', params: { expression: '"first"' } },
      ],
      edges: [{ source: 'start', target: 'say' }],
    });
    const pending = await runWorkflow(app, user, workflowId);
    const changed = await app.inject({
      method: 'PATCH',
      url: `/api/v1/workflows/${workflowId}`,
      headers: { cookie: user.cookie },
      payload: {
        nodes: [
          { id: 'start', type: 'trigger.manual' },
          { id: 'say', type: 'transform', params: { expression: '"second"' } },
        ],
      },
    });
    expect(changed.statusCode).toBe(200);
    const later = await runWorkflow(app, user, workflowId);
    const engine = startEngine(app);
    try {
      const [first, second] = [
        // The engine starts cold here (its first expression worker), beside another test file's load.
        await waitForStatus(app, user, pending.id, ['completed', 'failed'], 25_000),
        await waitForStatus(app, user, later.id, ['completed', 'failed']),
      ];
      const versionOf = async (id: string) =>
        (await app.inject({ url: `/api/v1/executions/${id}`, headers: { cookie: user.cookie } })).json<{ workflowVersion: number }>().workflowVersion;
      expect([await versionOf(first.id), await versionOf(second.id)]).toEqual([1, 2]);
      expect([first.output, second.output]).toEqual([{ say: 'first' }, { say: 'second' }]);
    } finally {
      await engine.stop(2_000);
    }
  });

  it('lists a workflow\'s saved versions and reads each graph as it was; another user sees none of it', async () => {
    const workflowId = await createWorkflow(app, user, {
      nodes: [
        { id: 'start', type: 'trigger.manual' },
        { id: 'say', type: 'transform', params: { expression: '"v1"' } },
      ],
      edges: [{ source: 'start', target: 'say' }],
    });
    for (const say of ['v2', 'v3']) {
      const changed = await app.inject({
        method: 'PATCH',
        url: `/api/v1/workflows/${workflowId}`,
        headers: { cookie: user.cookie },
        payload: { nodes: [{ id: 'start', type: 'trigger.manual' }, { id: 'say', type: 'transform', params: { expression: `"${say}"` } }] },
      });
      expect(changed.statusCode).toBe(200);
    }
    const versions = (url: string, who: SignedInUser = user) => app.inject({ url, headers: { cookie: who.cookie } });

    // Newest first, walked by cursor two at a time.
    const first = (await versions(`/api/v1/workflows/${workflowId}/versions?pageSize=2`)).json<{ items: { version: number; payloadBytes: number }[]; nextCursor: string }>();
    expect(first.items.map((item) => item.version)).toEqual([3, 2]);
    expect(first.items[0]?.payloadBytes).toBeGreaterThan(0);
    const rest = (await versions(`/api/v1/workflows/${workflowId}/versions?pageSize=2&cursor=${first.nextCursor}`)).json<{ items: { version: number }[]; hasNext: boolean }>();
    expect(rest).toMatchObject({ items: [{ version: 1 }], hasNext: false });

    const v1 = (await versions(`/api/v1/workflows/${workflowId}/versions/1`)).json<{ nodes: { params?: { expression?: string } }[] }>();
    expect(v1.nodes[1]?.params?.expression).toBe('"v1"');
    expectProblem(await versions(`/api/v1/workflows/${workflowId}/versions/4`), 404);

    const stranger = await signUp(app);
    expectProblem(await versions(`/api/v1/workflows/${workflowId}/versions`, stranger), 404);
    expectProblem(await versions(`/api/v1/workflows/${workflowId}/versions/1`, stranger), 404);
  });
});
