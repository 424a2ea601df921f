import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createDbClient, type DbClient } from '../src/db/client.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { databaseUrl, isEmbeddedDatabase } from './helpers.js';

export interface ScratchDatabase {
  readonly url: string;
  /** Opens a short-lived one-connection client, runs `work`, closes it (the embedded server serves one at a time). */
  use<T>(work: (client: DbClient) => Promise<T>): Promise<T>;
  drop(): Promise<void>;
}

function connect(url: string): DbClient {
  return createDbClient({ url, poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 });
}

/**
 * An empty database of its own, for tests that migrate, wipe or drop: a new database on the test
 * server, or a new embedded PGlite in a temporary directory when the suite runs embedded.
 */
export async function createScratchDatabase(): Promise<ScratchDatabase> {
  const use = (url: string) => async <T>(work: (client: DbClient) => Promise<T>) => {
    const client = connect(url);
    try {
      return await work(client);
    } finally {
      await client.close();
    }
  };

  if (isEmbeddedDatabase()) {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'autonode-scratch-'));
    const embedded = await startEmbeddedPostgres(dataDir);
    return {
      url: embedded.url,
      use: use(embedded.url),
      async drop() {
        await embedded.stop();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  }

  const name = `autonode_scratch_${randomUUID().replaceAll('-', '')}`;
  const admin = connect(databaseUrl());
  await admin.sql.unsafe(`create database ${name}`);
  await admin.close();
  const url = new URL(databaseUrl());
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    use: use(url.toString()),
    async drop() {
      const cleanup = connect(databaseUrl());
      try {
        await cleanup.sql.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await cleanup.close();
      }
    },
  };
}
