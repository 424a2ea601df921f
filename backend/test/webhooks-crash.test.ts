/**
 * "Nothing lost": a delivery answered or not, once its transaction commits, runs. A real server
 * process (ENABLE_TEST_ROUTES) kills itself with SIGKILL right after the accept transaction
 * commits and before it answers; the sender sees its connection drop; a restarted server runs the
 * stored execution to its end. On a database of its own: the servers' engines would otherwise run
 * other files' executions.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { App } from '../src/app.js';
import { runMigrations } from '../src/db/migrate.js';
import { CRASH_AFTER_COMMIT_HEADER } from '../src/webhooks/test-crash.js';
import { waitForStatus } from './engine-helpers.js';
import { buildTestApp, isEmbeddedDatabase, signUp, type SignedInUser } from './helpers.js';
import { startServerProcess, type ServerProcess } from './process.js';
import { createScratchDatabase, type ScratchDatabase } from './scratch.js';

describe.skipIf(isEmbeddedDatabase())('a server killed between the commit of a delivery and its answer', () => {
  let scratch: ScratchDatabase;
  let app: App;
  let user: SignedInUser;
  const servers: ServerProcess[] = [];

  beforeAll(async () => {
    scratch = await createScratchDatabase();
    await scratch.use((client) => runMigrations(client.db));
    // The test's own view of the database: it signs up and saves the workflow, and runs no engine.
    app = await buildTestApp({ DATABASE_URL: scratch.url });
    user = await signUp(app);
  });
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.stop()));
    await app?.close();
    await scratch?.drop();
  });

  const start = async (env: Record<string, string>) => {
    const server = await startServerProcess({ DATABASE_URL: scratch.url, SECRETS_KEYS: inject('secretsKeys'), DB_POOL_SIZE: '3', ENGINE_POLL_MS: '50', ...env });
    servers.push(server);
    return server;
  };

  it('keeps the delivery and its execution, which the restarted server runs to completed', async () => {
    const created = await app.inject({
      method: 'POST',
      url: '/api/v1/workflows',
      headers: { cookie: user.cookie },
      payload: {
        name: 'crash',
        nodes: [
          { id: 'hook', type: 'trigger.webhook', params: {} },
          { id: 'echo', type: 'transform', params: { expression: '{ "order": input.body.order }' } },
        ],
        edges: [{ source: 'hook', target: 'echo' }],
      },
    });
    expect(created.statusCode, created.body).toBe(201);
    const workflow = created.json<{ id: string; webhook: { hookId: string } }>();

    // No engine in the first server: what runs the execution can only be the second.
    const doomed = await start({ ENABLE_TEST_ROUTES: 'true', ENGINE_ENABLED: 'false' });
    const sent = await fetch(`${doomed.baseUrl}/api/hooks/${workflow.webhook.hookId}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [CRASH_AFTER_COMMIT_HEADER]: '1', 'webhook-id': 'evt_crash' },
      body: JSON.stringify({ order: 7 }),
    }).then(
      (response) => `answered ${response.status}`,
      () => 'connection dropped',
    );
    expect(sent).toBe('connection dropped');
    expect(await doomed.exited).toBe('SIGKILL');

    const stored = await app.database.sql<{ status: string; executionId: string; executionStatus: string; input: { body: unknown } }[]>`
      select d.status, d.execution_id as "executionId", e.status as "executionStatus", e.input
        from webhook_deliveries d join executions e on e.id = d.execution_id
       where d.workflow_id = ${workflow.id}::uuid`;
    expect(stored).toEqual([{ status: 'accepted', executionId: expect.any(String), executionStatus: 'pending', input: expect.objectContaining({ body: { order: 7 } }) }]);
    const executionId = stored[0]?.executionId as string;

    // Restarted (the crash header means nothing without ENABLE_TEST_ROUTES): it runs what was stored.
    const restarted = await start({ ENGINE_ENABLED: 'true' });
    const run = await waitForStatus(app, user, executionId, ['completed', 'failed'], 30_000);
    expect(run).toMatchObject({ status: 'completed', output: { echo: { order: 7 } } });

    // The sender retries the delivery it got no answer for: the same answer, nothing new started.
    const retried = await fetch(`${restarted.baseUrl}/api/hooks/${workflow.webhook.hookId}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [CRASH_AFTER_COMMIT_HEADER]: '1', 'webhook-id': 'evt_crash' },
      body: JSON.stringify({ order: 7 }),
    });
    expect(retried.status).toBe(202);
    expect((await retried.json()) as unknown).toMatchObject({ executionId });
    const [count] = await app.database.sql<{ executions: number }[]>`select count(*)::int as executions from executions where workflow_id = ${workflow.id}::uuid`;
    expect(count?.executions).toBe(1);
  }, 120_000);
});
