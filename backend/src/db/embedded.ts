import { createHash } from 'node:crypto';
import { constants as fsConstants, type Dirent } from 'node:fs';
import { access, copyFile, mkdir, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { EmbeddedThreadMessage, EmbeddedThreadOptions } from './embedded-thread.js';
import { migrationsFolder, runMigrations } from './migrate.js';

export interface EmbeddedPostgres {
  /** A postgres:// URL for the local socket server; use it with a pool of exactly one connection. */
  readonly url: string;
  readonly dataDir: string;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  /**
   * A new data directory starts as a copy of the image `npm run build` prepared (initialised and
   * migrated), when one matches this PGlite and these migrations. The service asks for it; tests
   * that need an empty database (the migrations' own) do not.
   */
  readonly seedFromImage?: boolean;
}

/**
 * The thread's entry: the built JavaScript beside this module when this is the build (dist/), else
 * the shim that loads the TypeScript source through tsx (src/: tsx, vitest), as the expression pool does.
 */
const threadEntry = new URL(import.meta.url.endsWith('.ts') ? './embedded-thread.mjs' : './embedded-thread.js', import.meta.url);

/**
 * Starts PGlite (PostgreSQL compiled to WASM) on a data directory and serves it on a random
 * loopback port, so the rest of the service talks to it through postgres.js exactly as it talks
 * to a real server: one code path. PGlite is single-connection: with more than one socket client
 * queries interleave and return wrong results, so the server accepts one connection and the
 * client pool must be `max: 1`.
 *
 * PGlite and its socket server run in a worker thread (embedded-thread.ts): its start (about a
 * second of WASM on reopen, initdb on a new directory) and every query it executes use another
 * core than the service's event loop, which meanwhile loads its modules and builds the app.
 */
export async function startEmbeddedPostgres(dataDir: string, options: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  await mkdir(dataDir, { recursive: true });
  const releaseLock = await lockDataDir(dataDir);
  let thread: Worker | undefined;
  let address: string;
  try {
    if (options.seedFromImage) await seedFromImage(dataDir);
    const threadOptions: EmbeddedThreadOptions = { dataDir };
    // No inherited flags: under tsx they would load TypeScript hooks the thread does not need.
    thread = new Worker(threadEntry, { workerData: threadOptions, execArgv: [] });
    address = await threadStarted(thread);
  } catch (error) {
    await thread?.terminate();
    await releaseLock();
    throw error;
  }
  const running = thread;
  // After the start, the thread ends only when stop() asks: anything else is the database failing
  // under the service, which must not carry on without it (the same as an in-process crash).
  let stopping = false;
  const onError = (error: Error) => {
    throw new Error(`the embedded database failed: ${error.message}`, { cause: error });
  };
  const onExit = (code: number) => {
    if (!stopping) throw new Error(`the embedded database stopped unexpectedly (thread exit code ${code})`);
  };
  running.on('error', onError);
  running.on('exit', onExit);
  let stopped: Promise<void> | undefined;
  return {
    url: `postgres://postgres@${address}/postgres`,
    dataDir,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        running.off('error', onError);
        const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
        const closed = new Promise<void>((resolve, reject) => {
          running.on('message', (message: EmbeddedThreadMessage) => {
            if (message.kind === 'stopped') resolve();
            else if (message.kind === 'failed') reject(new Error(`the embedded database did not close cleanly: ${message.message}`));
          });
          running.once('error', reject);
        });
        running.postMessage('stop');
        try {
          await Promise.race([closed, exited]);
        } finally {
          await running.terminate();
          await releaseLock();
        }
      })();
      return stopped;
    },
  };
}

/** Resolves with the socket server's address once PGlite is open, or rejects with why it could not start. */
function threadStarted(thread: Worker): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const onMessage = (message: EmbeddedThreadMessage) => {
      if (message.kind === 'listening') settle(() => resolve(message.address));
      else if (message.kind === 'failed') settle(() => reject(new Error(message.message)));
    };
    const onError = (error: Error) => settle(() => reject(error));
    const onExit = (code: number) => settle(() => reject(new Error(`the embedded database thread exited (code ${code}) before it started`)));
    const settle = (outcome: () => void) => {
      thread.off('message', onMessage);
      thread.off('error', onError);
      thread.off('exit', onExit);
      outcome();
    };
    thread.on('message', onMessage);
    thread.on('error', onError);
    thread.on('exit', onExit);
  });
}

/**
 * PGlite has no lock of its own, and two processes writing one data directory corrupt it. A pid
 * file refuses a second process while the first lives; a dead owner's file (kill -9) is taken over.
 */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const lockFile = path.join(dataDir, 'autonode.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lockFile, String(process.pid), { flag: 'wx' });
      return () => unlink(lockFile).catch(() => undefined);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number((await readFile(lockFile, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) {
        throw new Error(`the embedded database in ${dataDir} is in use by process ${owner}; stop it first (one process at a time)`);
      }
      await unlink(lockFile).catch(() => undefined);
    }
  }
  throw new Error(`could not lock the embedded database in ${dataDir}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The image a new data directory starts from: a PGlite data directory initialised and migrated by
 * `npm run build` (scripts/build.mjs), one folder per key under dist/embedded-image/. From src
 * (tsx, tests) and from dist this resolves to the same backend/dist/embedded-image.
 */
const imageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/embedded-image');
/** Written last into a data directory seeded from the image: PGlite treats a directory with it as initialised. */
const VERSION_FILE = 'PG_VERSION';
const LOCK_FILE = 'autonode.lock';

/**
 * What the image must match to be used: the installed PGlite (its on-disk format) and every
 * migration file drizzle's migrator reads. Any difference, and the image is ignored (initdb and
 * the migrations run as without it), so an image is never older or newer than the code using it.
 */
async function embeddedImageKey(): Promise<string> {
  const hash = createHash('sha256');
  const pgliteEntry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const pglitePackage = JSON.parse(await readFile(path.join(path.dirname(pgliteEntry), '..', 'package.json'), 'utf8')) as { version: string };
  hash.update(`pglite ${pglitePackage.version}\n`);
  const migrationFiles = (await readdir(migrationsFolder, { recursive: true }))
    .filter((file) => file.endsWith('.sql') || file === path.join('meta', '_journal.json'))
    .sort();
  for (const file of migrationFiles) {
    hash.update(`${file}\n`);
    hash.update(await readFile(path.join(migrationsFolder, file)));
  }
  return hash.digest('hex').slice(0, 16);
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

/** Files copied at once when seeding: the copies wait on the disk, not on each other. */
const COPY_CONCURRENCY = 16;

/**
 * A data directory without PG_VERSION is new: it becomes a copy of the matching image, if one was
 * built. PG_VERSION is copied last, so a copy cut short is still new and is copied again. The
 * migrations still run after opening (they find all applied), and later ones apply on top.
 * The image holds about a thousand files; copied one after another (fs.cp) they take several
 * times longer than in parallel.
 */
async function seedFromImage(dataDir: string): Promise<void> {
  if (await exists(path.join(dataDir, VERSION_FILE))) return;
  const image = path.join(imageRoot, await embeddedImageKey());
  if (!(await exists(path.join(image, VERSION_FILE)))) return;
  const entries = await readdir(image, { recursive: true, withFileTypes: true });
  const relative = (entry: Dirent) => path.relative(image, path.join(entry.parentPath, entry.name));
  for (const directory of entries.filter((entry) => entry.isDirectory()).map(relative)) {
    await mkdir(path.join(dataDir, directory), { recursive: true });
  }
  const files = entries.filter((entry) => entry.isFile()).map(relative).filter((file) => file !== VERSION_FILE);
  // COPYFILE_FICLONE shares the blocks on file systems that can (btrfs, xfs) and copies elsewhere.
  const copy = (file: string) => copyFile(path.join(image, file), path.join(dataDir, file), fsConstants.COPYFILE_FICLONE);
  let next = 0;
  await Promise.all(
    Array.from({ length: COPY_CONCURRENCY }, async () => {
      while (next < files.length) await copy(files[next++] as string);
    }),
  );
  await copy(VERSION_FILE);
}

/**
 * Creates the image for the current key unless it exists (scripts/build.mjs calls this): initdb
 * and every migration on a temporary directory, through the same code as the service's start
 * (this module's server, postgres.js, drizzle's migrator), then renamed into place whole, so a
 * process starting meanwhile sees either no image or a complete one. Images of other keys are removed.
 */
export async function prepareEmbeddedImage(): Promise<{ readonly created: boolean; readonly tookMs: number }> {
  const started = Date.now();
  const key = await embeddedImageKey();
  const image = path.join(imageRoot, key);
  if (await exists(path.join(image, VERSION_FILE))) return { created: false, tookMs: Date.now() - started };

  await mkdir(imageRoot, { recursive: true });
  const staging = path.join(imageRoot, `.staging-${key}-${process.pid}`);
  await rm(staging, { recursive: true, force: true });
  try {
    // client.ts loads this module on demand; imported here the same way, not at the top.
    const { createDbClient } = await import('./client.js');
    const embedded = await startEmbeddedPostgres(staging);
    const client = createDbClient({ url: embedded.url, poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 }, 'embedded', () => embedded.stop());
    try {
      await runMigrations(client.db);
    } finally {
      await client.close();
    }
    await rm(path.join(staging, LOCK_FILE), { force: true });
    await rename(staging, image).catch(async (error: NodeJS.ErrnoException) => {
      // Another build finished the same image first: theirs is identical.
      if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
    });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  for (const entry of await readdir(imageRoot)) {
    if (entry !== key && !entry.startsWith('.staging-')) await rm(path.join(imageRoot, entry), { recursive: true, force: true });
  }
  return { created: true, tookMs: Date.now() - started };
}
