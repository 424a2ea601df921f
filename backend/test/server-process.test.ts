import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { databaseUrl, isEmbeddedDatabase } from './helpers.js';
import { eventually } from './engine-helpers.js';
import { backendRoot, startServerProcess } from './process.js';

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

describe('the server on a database that is down at start-up', () => {
  it('starts anyway and answers /api/ready 503 (the schema check waits for another start)', async () => {
    const server = await startServerProcess({ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/autonode', DB_CONNECT_TIMEOUT: '1' });
    try {
      expect((await fetch(`${server.baseUrl}/api/ready`)).status).toBe(503);
      expect(server.output()).toMatch(/the database schema could not be checked/);
    } finally {
      await server.stop();
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

describe('npm start and a signal to npm alone', () => {
  // A supervisor (systemd, pm2, `kill $!`) signals the process it started: npm, not the server under
  // its shell. The scripts exec, so the signal reaches the server and nothing is left holding the port.
  it('stops the server when npm start gets SIGTERM', async () => {
    const dataDir = isEmbeddedDatabase() ? await mkdtemp(path.join(tmpdir(), 'autonode-npm-start-')) : undefined;
    const database = dataDir ? { EMBEDDED_DATA_DIR: dataDir } : { DATABASE_URL: databaseUrl() };
    const npm = spawn('npm', ['start'], {
      cwd: path.resolve(backendRoot, '..'),
      env: { PATH: process.env.PATH, HOME: process.env.HOME, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...database },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    npm.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    npm.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | string>((resolve) => npm.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
    try {
      const baseUrl = await eventually(async () => /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1], 60_000, `the server listening:\n${output}`);
      expect((await fetch(`${baseUrl}/api/health`)).status).toBe(200);
      npm.kill('SIGTERM');
      await exited;
      await eventually(async () => (await fetch(`${baseUrl}/api/health`).then(() => false, () => true)), 15_000, 'the server gone');
      expect(output).toMatch(/"signal":"SIGTERM".*shutting down/);
    } finally {
      if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL');
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});
