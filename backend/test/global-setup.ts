import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { createDbClient } from '../src/db/client.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.js';
import { runMigrations } from '../src/db/migrate.js';
import { refusalToWipe } from '../src/db/safeguards.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';
import { createFileDatabaseTemplate, dropFileDatabases } from './file-database.js';
import { backendRoot } from './process.js';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    databaseKind: 'external' | 'embedded';
    /**
     * On a real server, the migrated database each test file's own database is copied from
     * (test/file-database.ts); undefined on the embedded database.
     */
    fileDatabaseTemplate: string | undefined;
    /** SECRETS_KEYS for every test app: generated for this run, never stored. */
    secretsKeys: string;
  }
}

/**
 * One database for the run: TEST_DATABASE_URL (a database the suite may wipe), or else an
 * embedded PGlite in a temporary directory, so `npm test` passes on a machine with no server.
 */
export default async function setup(project: TestProject) {
  // Tests that start the server run the build, as `npm start` does (its prestart builds too).
  await new Promise<void>((resolve, reject) => {
    execFile(process.execPath, ['scripts/build.mjs'], { cwd: backendRoot }, (error, _stdout, stderr) =>
      error ? reject(new Error(`npm run build failed: ${stderr || error.message}`)) : resolve(),
    );
  });
  let embedded: EmbeddedPostgres | undefined;
  let scratchDir: string | undefined;
  let url = process.env.TEST_DATABASE_URL;
  if (url) {
    const refusal = refusalToWipe({ nodeEnv: process.env.NODE_ENV, url, operation: 'the test suite' });
    if (refusal) throw new Error(`${refusal} Point TEST_DATABASE_URL at a throwaway database.`);
  } else {
    scratchDir = await mkdtemp(path.join(tmpdir(), 'autonode-test-db-'));
    embedded = await startEmbeddedPostgres(scratchDir);
    url = embedded.url;
    console.warn('TEST_DATABASE_URL is not set: running on the embedded database (tests needing several connections are skipped).');
  }

  const client = createDbClient({ url, poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 });
  try {
    await runMigrations(client.db);
  } finally {
    await client.close();
  }
  const template = embedded ? undefined : await createFileDatabaseTemplate(url);

  project.provide('databaseUrl', url);
  project.provide('databaseKind', embedded ? 'embedded' : 'external');
  project.provide('fileDatabaseTemplate', template);
  project.provide('secretsKeys', generateKeyEntry('test'));

  return async () => {
    if (template) await dropFileDatabases(url, template);
    await embedded?.stop();
    if (scratchDir) await rm(scratchDir, { recursive: true, force: true });
  };
}
