import { describe, expect, it } from 'vitest';
import { databaseUrl, isEmbeddedDatabase, uniqueEmail } from '../helpers.js';
import { startServerProcess } from '../process.js';
import { localCluster, probe, tally, type Outcome } from './cluster.js';

const cluster = localCluster();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(isEmbeddedDatabase() || !cluster)('PostgreSQL restart under load (needs TEST_DATABASE_URL and a local pg_ctlcluster)', () => {
  it('answers only successes or 503 problem+json, never exits, and serves normally within 5 s of the restart', async () => {
    // A request caught by the outage is answered within HANDLER_TIMEOUT_MS, well inside the probe's 15 s.
    const server = await startServerProcess({ DATABASE_URL: databaseUrl(), DB_CONNECT_TIMEOUT: '2', HANDLER_TIMEOUT_MS: '6000' });
    const stopped = { at: 0 };
    const restarted = { at: 0 };
    try {
      const signUp = await fetch(`${server.baseUrl}/api/auth/sign-up/email`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', origin: 'http://localhost:8100' },
        body: JSON.stringify({ name: 'Load', email: uniqueEmail('restart'), password: 'correct-horse-battery' }),
      });
      expect(signUp.status).toBe(200);
      const cookie = signUp.headers.getSetCookie().map((line) => line.split(';')[0]).join('; ');

      // Work in progress across the outage: runs waiting in a delay, so the engine holds them while the database goes away.
      const headers = { 'content-type': 'application/json', cookie, origin: 'http://localhost:8100' };
      const workflow = (await (
        await fetch(`${server.baseUrl}/api/v1/workflows`, {
          method: 'POST',
          headers,
          body: JSON.stringify({
            name: 'across the outage',
            nodes: [
              { id: 'start', type: 'trigger.manual' },
              { id: 'wait', type: 'delay', params: { ms: 2500 } },
              { id: 'after', type: 'transform', params: { expression: 'input.n * 10' } },
            ],
            edges: [
              { source: 'start', target: 'wait' },
              { source: 'wait', target: 'after' },
            ],
          }),
        })
      ).json()) as { id: string };
      const runs: { id: string }[] = [];
      for (let index = 0; index < 5; index++) {
        const run = await fetch(`${server.baseUrl}/api/v1/workflows/${workflow.id}/run`, { method: 'POST', headers, body: JSON.stringify({ input: { n: index } }) });
        runs.push((await run.json()) as { id: string });
      }

      // Steady load from this (second) process while the cluster goes away and comes back.
      const outcomes: (Outcome & { path: string })[] = [];
      let loading = true;
      const load = (async () => {
        while (loading) {
          const [list, health] = await Promise.all([
            probe(`${server.baseUrl}/api/v1/workflows`, { cookie }),
            probe(`${server.baseUrl}/api/health`),
          ]);
          outcomes.push({ ...list, path: 'list' }, { ...health, path: 'health' });
          await sleep(25);
        }
      })();

      await sleep(1_500);
      stopped.at = Date.now();
      cluster?.stop();
      await sleep(2_000);
      const readyWhileDown = await probe(`${server.baseUrl}/api/ready`);
      await sleep(3_000);
      cluster?.start();
      restarted.at = Date.now();
      await sleep(8_000);
      loading = false;
      await load;

      const lists = outcomes.filter((outcome) => outcome.path === 'list');
      const counts = tally(lists);
      for (const odd of lists.filter((outcome) => outcome.status !== 200 && outcome.status !== 503)) {
        console.info('unexpected outcome', odd, 'relative to stop', odd.at - stopped.at, 'to restart', odd.at - restarted.at);
      }
      console.info('database restart: list responses by status', counts, 'health', tally(outcomes.filter((outcome) => outcome.path === 'health')));
      expect(server.child.exitCode).toBeNull();
      for (const outcome of lists) {
        expect([200, 503]).toContain(outcome.status);
        if (outcome.status === 503) expect(outcome.problem).toBe(true);
      }
      expect(counts['503'] ?? 0).toBeGreaterThan(0);
      const lastFailure = Math.max(...lists.filter((outcome) => outcome.status !== 200).map((outcome) => outcome.at));
      expect(lastFailure - restarted.at).toBeLessThan(5_000);
      expect(lists.filter((outcome) => outcome.at > restarted.at + 5_000).every((outcome) => outcome.status === 200)).toBe(true);
      // Liveness never depended on the database; readiness did.
      expect(outcomes.filter((outcome) => outcome.path === 'health').every((outcome) => outcome.status === 200)).toBe(true);
      expect(readyWhileDown.status).toBe(503);
      expect(server.output()).not.toMatch(/unhandled|UnhandledPromiseRejection/i);

      // The engine stopped claiming while the database was gone and lost nothing: every run completes.
      for (const run of runs) {
        let status = '';
        for (let attempt = 0; attempt < 150 && status !== 'completed' && status !== 'failed'; attempt++) {
          const response = await fetch(`${server.baseUrl}/api/v1/executions/${run.id}`, { headers: { cookie } });
          status = ((await response.json()) as { status: string }).status;
          if (status !== 'completed') await sleep(100);
        }
        expect(status).toBe('completed');
      }
    } finally {
      if (stopped.at && !restarted.at) cluster?.start();
      await server.stop();
    }
  });
});
