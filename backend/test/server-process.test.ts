import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { databaseUrl, isEmbeddedDatabase } from './helpers.js';
import { startServerProcess } from './process.js';

describe('the server process', () => {
  it('finishes an in-flight request on SIGTERM, refuses new work, and exits 0', async () => {
    // On the embedded suite database the server gets an embedded database of its own (one connection each).
    const dataDir = isEmbeddedDatabase() ? await mkdtemp(path.join(tmpdir(), 'autonode-shutdown-')) : undefined;
    const server = await startServerProcess(
      dataDir ? { EMBEDDED_DATA_DIR: dataDir, ENABLE_TEST_ROUTES: 'true' } : { DATABASE_URL: databaseUrl(), ENABLE_TEST_ROUTES: 'true' },
    );
    try {
      const inFlight = fetch(`${server.baseUrl}/api/test/sleep?ms=1500`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      server.child.kill('SIGTERM');
      await new Promise((resolve) => setTimeout(resolve, 200));

      // A request after the signal is refused at the socket or answered 503; never left hanging.
      const late = await fetch(`${server.baseUrl}/api/health`).then(
        (response) => response.status,
        () => 'refused',
      );
      expect([503, 'refused']).toContain(late);

      const response = await inFlight;
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ sleptMs: 1500 });
      const code = await server.exited;
      expect(code, server.output()).toBe(0);
    } finally {
      await server.stop();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('npm start on the embedded default', () => {
  // Start-up time is not asserted here (the suite loads the machine); it is measured in the README.
  it('serves /api/ready on a new data directory, with no DATABASE_URL', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'autonode-embedded-'));
    const server = await startServerProcess({ EMBEDDED_DATA_DIR: dataDir }, 60_000);
    try {
      const ready = await fetch(`${server.baseUrl}/api/ready`);
      expect(ready.status).toBe(200);
      expect(server.output()).toContain('EMBEDDED PostgreSQL');
      expect(server.output()).toMatch(/database migrations(: none to apply| applied)/);

      // A second process on the same data directory would corrupt it: it is refused, the first keeps serving.
      const second = await startServerProcess({ EMBEDDED_DATA_DIR: dataDir }, 60_000).then(
        async (unexpected) => {
          await unexpected.stop();
          return 'started';
        },
        (error: Error) => error.message,
      );
      expect(second).toMatch(/in use by process \d+/);
      expect((await fetch(`${server.baseUrl}/api/ready`)).status).toBe(200);
    } finally {
      server.child.kill('SIGTERM');
      expect(await server.exited).toBe(0);
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
