import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { DbClient } from '../src/db/client.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { withConnection, withDatabase } from './file-database.js';
import { databaseUrl, isEmbeddedDatabase } from './helpers.js';

export interface ScratchDatabase {
  readonly url: string;
  /** Opens a short-lived one-connection client, runs `work`, closes it (the embedded server serves one at a time). */
  use<T>(work: (client: DbClient) => Promise<T>): Promise<T>;
  drop(): Promise<void>;
}

/**
 * An empty database of its own, for tests that migrate, wipe or drop: a new database on the test
 * server, or a new embedded PGlite in a temporary directory when the suite runs embedded.
 */
export async function createScratchDatabase(): Promise<ScratchDatabase> {
  const use = (url: string) => <T>(work: (client: DbClient) => Promise<T>) => withConnection(url, work);

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
  await withConnection(databaseUrl(), (admin) => admin.sql`create database ${admin.sql(name)}`);
  const url = withDatabase(databaseUrl(), name);
  return {
    url,
    use: use(url),
    async drop() {
      await withConnection(databaseUrl(), (admin) => admin.sql`drop database if exists ${admin.sql(name)} with (force)`);
    },
  };
}
