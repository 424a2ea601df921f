import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createDbClient } from '../src/db/client.js';
import { prepareEmbeddedImage, startEmbeddedPostgres } from '../src/db/embedded.js';
import { migrationsFolder } from '../src/db/migrate.js';
import { backendRoot, runScript } from './process.js';

const imageRoot = path.join(backendRoot, 'dist', 'embedded-image');

/** The journal's entries, oldest first: what drizzle.__drizzle_migrations holds once all are applied. */
async function journalTimes(): Promise<number[]> {
  const journal = JSON.parse(await readFile(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as { entries: { when: number }[] };
  return journal.entries.map((entry) => entry.when);
}

/** Opens an embedded data directory and reads which migrations it holds (none: no drizzle schema). */
async function appliedMigrations(dataDir: string, seedFromImage: boolean): Promise<number[]> {
  const embedded = await startEmbeddedPostgres(dataDir, { seedFromImage });
  const client = createDbClient({ url: embedded.url, poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 }, 'embedded', () => embedded.stop());
  try {
    const [schema] = await client.sql<{ present: boolean }[]>`select exists (select 1 from pg_namespace where nspname = 'drizzle') as present`;
    if (!schema?.present) return [];
    const rows = await client.sql<{ createdAt: string }[]>`select created_at::text as "createdAt" from drizzle.__drizzle_migrations order by created_at`;
    return rows.map((row) => Number(row.createdAt));
  } finally {
    await client.close();
  }
}

/** The same, on a new temporary directory removed afterwards. */
async function appliedMigrationsOfNewDirectory(seedFromImage: boolean): Promise<number[]> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'autonode-image-'));
  try {
    return await appliedMigrations(dataDir, seedFromImage);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** A pid no process has now: one of a process that already exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(child.stdout);
}

/** Runs scripts/build.mjs with these variables and returns what it printed. */
async function build(env: Record<string, string>): Promise<string> {
  const run = runScript('scripts/build.mjs', [], env);
  const code = await run.exited;
  expect(code, run.output()).toBe(0);
  return run.output();
}

// The global setup runs the build, which prepares the image for this PGlite and these migrations.
describe('the embedded database image', () => {
  it('starts a new data directory the service opens already migrated, and leaves others empty', async () => {
    expect(await appliedMigrationsOfNewDirectory(true)).toEqual(await journalTimes());
    expect(await appliedMigrationsOfNewDirectory(false)).toEqual([]);
  }, 120_000);

  it('copies the image again over a copy cut short, and refuses to open one when it cannot, keeping the other files', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'autonode-seeding-'));
    try {
      // What a start killed mid-copy leaves: the marker, some of the image's files, no PG_VERSION.
      await writeFile(path.join(dataDir, 'autonode.seeding'), 'interrupted\n');
      await mkdir(path.join(dataDir, 'global'), { recursive: true });
      await writeFile(path.join(dataDir, 'global', 'pg_control'), 'half a file');
      await writeFile(path.join(dataDir, 'development-secrets-key'), 'kept\n');

      // No image to finish it with (a start that does not seed): refused, nothing removed or initialised.
      await expect(startEmbeddedPostgres(dataDir)).rejects.toThrow(/unfinished copy of the database image.*delete/);
      expect(existsSync(path.join(dataDir, 'PG_VERSION'))).toBe(false);
      expect(existsSync(path.join(dataDir, 'autonode.lock'))).toBe(false);

      // With the matching image: copied again, opened migrated, the user's file untouched.
      expect(await appliedMigrations(dataDir, true)).toEqual(await journalTimes());
      expect(existsSync(path.join(dataDir, 'autonode.seeding'))).toBe(false);
      expect(await readFile(path.join(dataDir, 'development-secrets-key'), 'utf8')).toBe('kept\n');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('stop() returns at once and releases the lock when the database thread has died, which is reported once', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'autonode-thread-exit-'));
    const scriptDir = await mkdtemp(path.join(tmpdir(), 'autonode-thread-exit-script-'));
    try {
      // A process of its own: the death is an uncaught exception there, as in the service.
      const script = path.join(scriptDir, 'crash.mjs');
      await writeFile(
        script,
        `const { startEmbeddedPostgres, embeddedThreadOf } = await import(${JSON.stringify(pathToFileURL(path.join(backendRoot, 'src/db/embedded.ts')).href)});
const reports = [];
process.on('uncaughtException', (error) => reports.push(error.message));
const embedded = await startEmbeddedPostgres(${JSON.stringify(dataDir)}, { seedFromImage: true });
await embeddedThreadOf(embedded).terminate();
await new Promise((resolve) => setTimeout(resolve, 300));
const started = Date.now();
await embedded.stop();
console.log('RESULT ' + JSON.stringify({ reports, stopMs: Date.now() - started }));
process.exit(0);
`,
      );
      const run = runScript(script, [], {}, ['--import', 'tsx']);
      const timer = setTimeout(() => run.child.kill('SIGKILL'), 60_000);
      const code = await run.exited.finally(() => clearTimeout(timer));
      expect(code, run.output()).toBe(0);
      const result = JSON.parse(/RESULT (.*)/.exec(run.output())?.[1] ?? 'null') as { reports: string[]; stopMs: number } | null;
      expect(result?.reports).toEqual([expect.stringMatching(/stopped unexpectedly \(thread exit code 1\)/)]);
      expect(result?.stopMs).toBeLessThan(5_000);
      expect(existsSync(path.join(dataDir, 'autonode.lock'))).toBe(false);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
      await rm(scriptDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('removes other keys` images and what dead builds left, and keeps a running build`s staging folder', async () => {
    const [key] = (await readdir(imageRoot)).filter((entry) => existsSync(path.join(imageRoot, entry, 'autonode-image.complete')));
    expect(key).toBeDefined();
    const dead = deadPid();
    const leftovers = [`.staging-${key}-${dead}`, `.trash-0123456789abcdef-${dead}-0badf00d`, '0123456789abcdef'];
    const running = `.staging-${key}-${process.ppid}`;
    for (const folder of [...leftovers, running]) {
      await mkdir(path.join(imageRoot, folder, 'base'), { recursive: true });
      await writeFile(path.join(imageRoot, folder, 'base', 'file'), 'x');
    }
    try {
      expect((await prepareEmbeddedImage()).created).toBe(false);
      for (const folder of leftovers) expect(existsSync(path.join(imageRoot, folder)), folder).toBe(false);
      expect(existsSync(path.join(imageRoot, running))).toBe(true);
      expect((await readdir(imageRoot)).filter((entry) => entry.startsWith('.trash-'))).toEqual([]);
    } finally {
      for (const folder of [...leftovers, running]) await rm(path.join(imageRoot, folder), { recursive: true, force: true });
    }
  }, 60_000);
});

describe('npm run build', () => {
  it('skips the image when AUTONODE_BUILD_EMBEDDED_IMAGE=false or DATABASE_URL is set', async () => {
    expect(await build({ AUTONODE_BUILD_EMBEDDED_IMAGE: 'false' })).toContain('embedded image skipped (AUTONODE_BUILD_EMBEDDED_IMAGE=false)');
    expect(await build({ DATABASE_URL: 'postgres://nobody@127.0.0.1:9/none' })).toContain('embedded image skipped (DATABASE_URL is set)');
  }, 60_000);
});
