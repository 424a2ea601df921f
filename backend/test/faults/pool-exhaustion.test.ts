import { describe, expect, it } from 'vitest';
import { QUERIES_PER_CONNECTION } from '../../src/plugins/admission.js';
import { databaseUrl, isEmbeddedDatabase } from '../helpers.js';
import { startServerProcess } from '../process.js';
import { probe, tally } from './cluster.js';

describe.skipIf(isEmbeddedDatabase())('pool exhaustion (needs TEST_DATABASE_URL)', () => {
  it('answers the excess 503 within the bound, keeps /api/health fast, and recovers', async () => {
    const acquireTimeoutMs = 1_000;
    const server = await startServerProcess({
      DATABASE_URL: databaseUrl(),
      DB_POOL_SIZE: '10',
      DB_ACQUIRE_TIMEOUT_MS: String(acquireTimeoutMs),
      ENABLE_TEST_ROUTES: 'true',
      ENGINE_ENABLED: 'false',
      NODE_ENV: 'test',
    });
    try {
      // 200 requests that each hold a connection for 2 s, against a pool of 10: 10 run, and
      // QUERIES_PER_CONNECTION - 1 more per connection are admitted to wait in its pipeline.
      const admitted = 10 * QUERIES_PER_CONNECTION;
      const holding = Array.from({ length: 200 }, () => probe(`${server.baseUrl}/api/test/sleep?ms=2000`));
      await new Promise((resolve) => setTimeout(resolve, 300));
      const health = await probe(`${server.baseUrl}/api/health`);
      const outcomes = await Promise.all(holding);
      const counts = tally(outcomes);
      console.info('pool exhaustion: responses by status', counts, 'health during the load took', health.ms, 'ms');

      expect(health.status).toBe(200);
      expect(health.ms).toBeLessThan(500);
      expect(counts['200']).toBe(admitted);
      expect(counts['503']).toBe(200 - admitted);
      for (const outcome of outcomes.filter((entry) => entry.status === 503)) {
        expect(outcome.problem).toBe(true);
        // Refused after waiting about the bound, not after queueing behind the sleepers.
        expect(outcome.ms).toBeLessThan(acquireTimeoutMs + 1_500);
      }
      const after = await probe(`${server.baseUrl}/api/test/sleep?ms=10`);
      expect(after.status).toBe(200);
    } finally {
      await server.stop();
    }
  });
});
