import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createDbClient } from '../src/db/client.js';
import { startEmbeddedPostgres } from '../src/db/embedded.js';
import { migrationsFolder } from '../src/db/migrate.js';

/** The journal's entries, oldest first: what drizzle.__drizzle_migrations holds once all are applied. */
async function journalTimes(): Promise<number[]> {
  const journal = JSON.parse(await readFile(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as { entries: { when: number }[] };
  return journal.entries.map((entry) => entry.when);
}

/** Opens a new embedded data directory and reads which migrations it holds (none: no drizzle schema). */
async function appliedMigrationsOfNewDirectory(seedFromImage: boolean): Promise<number[]> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'autonode-image-'));
  const embedded = await startEmbeddedPostgres(dataDir, { seedFromImage });
  const client = createDbClient({ url: embedded.url, poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 }, 'embedded', () => embedded.stop());
  try {
    const [schema] = await client.sql<{ present: boolean }[]>`select exists (select 1 from pg_namespace where nspname = 'drizzle') as present`;
    if (!schema?.present) return [];
    const rows = await client.sql<{ createdAt: string }[]>`select created_at::text as "createdAt" from drizzle.__drizzle_migrations order by created_at`;
    return rows.map((row) => Number(row.createdAt));
  } finally {
    await client.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

// The global setup runs the build, which prepares the image for this PGlite and these migrations.
describe('the embedded database image', () => {
  it('starts a new data directory the service opens already migrated, and leaves others empty', async () => {
    expect(await appliedMigrationsOfNewDirectory(true)).toEqual(await journalTimes());
    expect(await appliedMigrationsOfNewDirectory(false)).toEqual([]);
  }, 120_000);
});
