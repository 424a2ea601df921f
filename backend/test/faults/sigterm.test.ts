import { describe, expect, it } from 'vitest';
import { buildTestApp, databaseUrl, isEmbeddedDatabase, sampleGraph, signUp } from '../helpers.js';
import { createWorkflow, runWorkflow, startTestHttpServer, waitForStatus } from '../engine-helpers.js';
import { runScript, startServerProcess } from '../process.js';
import { probe, tally, type Outcome } from './cluster.js';

describe.skipIf(isEmbeddedDatabase())('SIGTERM under load (needs TEST_DATABASE_URL)', () => {
  it('fails no accepted request, refuses new ones, exits 0 in the grace period, and loses no execution', async () => {
    const app = await buildTestApp();
    const user = await signUp(app);
    const httpServer = await startTestHttpServer();
    const server = await startServerProcess({
      DATABASE_URL: databaseUrl(),
      ENGINE_HTTP_ALLOW: '127.0.0.1',
      ENGINE_POLL_MS: '50',
      SHUTDOWN_GRACE_MS: '8000',
      ENABLE_TEST_ROUTES: 'true',
      NODE_ENV: 'test',
    });
    let worker: ReturnType<typeof runScript> | undefined;
    try {
      const workflowId = await createWorkflow(app, user, {
        nodes: [...sampleGraph.nodes, { id: 'slow', type: 'http.request', params: { method: 'GET', url: `${httpServer.url}/slow?delay=1500&key={{ input.key }}` } }],
        edges: [...sampleGraph.edges, { source: 'shape', target: 'slow' }],
      });
      const executions = await Promise.all(Array.from({ length: 6 }, (_, index) => runWorkflow(app, user, workflowId, { n: index, key: `sigterm-${workflowId}-${index}` })));
      // Let the server's engine pick them up and start their slow steps.
      await new Promise((resolve) => setTimeout(resolve, 800));

      const outcomes: Outcome[] = [];
      let loading = true;
      const load = (async () => {
        while (loading) {
          outcomes.push(await probe(`${server.baseUrl}/api/v1/me`, { cookie: user.cookie }));
        }
      })();
      // A request the server is in the middle of when the signal comes: it must complete.
      const inFlight = probe(`${server.baseUrl}/api/test/sleep?ms=1500`);
      await new Promise((resolve) => setTimeout(resolve, 500));
      const signalledAt = Date.now();
      server.child.kill('SIGTERM');
      const code = await server.exited;
      const exitedAfter = Date.now() - signalledAt;
      loading = false;
      await load;
      const inFlightOutcome = await inFlight;

      const counts = tally(outcomes);
      console.info('SIGTERM under load: responses', counts, 'exit code', code, 'after', exitedAfter, 'ms');
      expect(code).toBe(0);
      expect(inFlightOutcome.status).toBe(200);
      expect(exitedAfter).toBeLessThan(8_000);
      // Requests answered before the signal succeeded. Around and after it, a request is answered (200
      // if it was already in, 503 problem+json) or its connection refused; one still waiting in the
      // kernel's accept queue when the listener closes is reset, which a client sees like a refusal.
      for (const outcome of outcomes) {
        if (outcome.at + outcome.ms < signalledAt) expect(outcome.status).toBe(200);
        else expect([200, 503, 'refused', 'reset']).toContain(outcome.status);
        if (outcome.status === 503) expect(outcome.problem).toBe(true);
      }

      // What the stopped server could not finish, another worker completes.
      worker = runScript('src/worker.ts', [], { DATABASE_URL: databaseUrl(), ENGINE_HTTP_ALLOW: '127.0.0.1', ENGINE_POLL_MS: '50', NODE_ENV: 'test', LOG_LEVEL: 'warn' });
      for (const execution of executions) {
        expect((await waitForStatus(app, user, execution.id, ['completed', 'failed'], 30_000)).status).toBe('completed');
      }
    } finally {
      worker?.child.kill('SIGKILL');
      await server.stop();
      await httpServer.close();
      await app.close();
    }
  });
});
