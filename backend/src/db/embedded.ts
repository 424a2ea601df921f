import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants, type Dirent } from 'node:fs';
import { access, copyFile, link, mkdir, readdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
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
  let watched: WatchedThread | undefined;
  let address: string;
  try {
    await prepareDataDir(dataDir, options.seedFromImage === true);
    const threadOptions: EmbeddedThreadOptions = { dataDir };
    // No inherited flags: under tsx they would load TypeScript hooks the thread does not need.
    thread = new Worker(threadEntry, { workerData: threadOptions, execArgv: [] });
    watched = watchThread(thread);
    address = await threadStarted(thread);
  } catch (error) {
    await thread?.terminate();
    await releaseLock();
    throw error;
  }
  const running = thread;
  const { exit, failure } = watched;
  // After the start, the thread ends only when stop() asks: anything else is the database failing
  // under the service, which must not carry on without it (the same as an in-process crash). A
  // crashing thread emits 'error' and then 'exit': the pair is reported once, at the exit, as one
  // error carrying the thread's own error (and stack), so close-with-grace sees one failure and
  // closes gracefully (its stop() below then returns at once).
  let stopping = false;
  watched.onExit((code) => {
    if (stopping) return;
    const error = failure();
    const report = error
      ? withThreadStack(new Error(`the embedded database failed: ${error.message}`, { cause: error }), error.stack)
      : new Error(`the embedded database stopped unexpectedly (thread exit code ${code})`);
    // Thrown after the 'exit' event, not inside it: a throw there would skip the event's other
    // listeners, among them the one by which terminate() resolves.
    process.nextTick(() => {
      throw report;
    });
  });
  let stopped: Promise<void> | undefined;
  const embedded: EmbeddedPostgres = {
    url: `postgres://postgres@${address}/postgres`,
    dataDir,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        let onMessage: ((message: EmbeddedThreadMessage) => void) | undefined;
        try {
          // A thread that already ended answers nothing: there is nothing left to close.
          if (watched.hasExited()) return;
          const closed = new Promise<void>((resolve, reject) => {
            onMessage = (message: EmbeddedThreadMessage) => {
              if (message.kind === 'stopped') resolve();
              else if (message.kind === 'failed') {
                reject(withThreadStack(new Error(`the embedded database did not close cleanly: ${message.message}`), message.stack));
              }
            };
            running.on('message', onMessage);
          });
          running.postMessage('stop');
          // The exit settles the wait too: a thread dying mid-stop never answers 'stopped'.
          await Promise.race([closed, exit]);
          const error = failure();
          if (error) throw withThreadStack(new Error(`the embedded database did not close cleanly: ${error.message}`, { cause: error }), error.stack);
        } finally {
          if (onMessage) running.off('message', onMessage);
          await running.terminate();
          await releaseLock();
        }
      })();
      return stopped;
    },
  };
  threads.set(embedded, running);
  return embedded;
}

/** Each running database's thread, for the tests that end it as a crash would (embeddedThreadOf). */
const threads = new WeakMap<EmbeddedPostgres, Worker>();

/** The worker thread serving an embedded database: for tests only, to end it from outside (a crash). */
export function embeddedThreadOf(embedded: EmbeddedPostgres): Worker | undefined {
  return threads.get(embedded);
}

interface WatchedThread {
  /** Resolves with the exit code: subscribed when the thread is created, as a Worker emits 'exit' once. */
  readonly exit: Promise<number>;
  hasExited(): boolean;
  /** Runs `listener` in the 'exit' event (after `exit` settles); it must not throw there. */
  onExit(listener: (code: number) => void): void;
  /** The thread's uncaught error, if it had one ('error' comes before 'exit'). */
  failure(): Error | undefined;
}

function watchThread(thread: Worker): WatchedThread {
  let exited = false;
  let error: Error | undefined;
  thread.on('error', (threadError: Error) => {
    error ??= threadError;
  });
  let exitListener: ((code: number) => void) | undefined;
  const exit = new Promise<number>((resolve) =>
    thread.once('exit', (code: number) => {
      exited = true;
      resolve(code);
      exitListener?.(code);
    }),
  );
  return {
    exit,
    hasExited: () => exited,
    onExit: (listener) => {
      exitListener = listener;
    },
    failure: () => error,
  };
}

/** The error as thrown here, with the stack it had in the database thread appended, where there is one. */
function withThreadStack(error: Error, threadStack: string | undefined): Error {
  if (threadStack) error.stack = `${error.stack ?? error.message}\n  in the database thread: ${threadStack}`;
  return error;
}

/** Resolves with the socket server's address once PGlite is open, or rejects with why it could not start. */
function threadStarted(thread: Worker): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const onMessage = (message: EmbeddedThreadMessage) => {
      if (message.kind === 'listening') settle(() => resolve(message.address));
      else if (message.kind === 'failed') settle(() => reject(withThreadStack(new Error(message.message), message.stack)));
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

const LOCK_FILE = 'autonode.lock';

/**
 * PGlite has no lock of its own, and two processes writing one data directory corrupt it. A pid
 * file refuses a second process while the first lives; a dead owner's file (kill -9) is taken over.
 */
async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const lockFile = path.join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    // The pid is written to a file of this process's own, which link() puts in place only if no lock
    // exists: the lock file never exists without its owner's pid, so another process reading it
    // never takes a live lock for a dead one (an exclusive create, then a write, would leave it empty between).
    const temporary = path.join(dataDir, `${LOCK_FILE}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
    await writeFile(temporary, String(process.pid));
    try {
      await link(temporary, lockFile);
      return () => unlink(lockFile).catch(() => undefined);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number((await readFile(lockFile, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) {
        throw new Error(`the embedded database in ${dataDir} is in use by process ${owner}; stop it first (one process at a time)`);
      }
      await unlink(lockFile).catch(() => undefined);
    } finally {
      await unlink(temporary).catch(() => undefined);
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
/**
 * Written into an image's folder last, before it is renamed into place: an image without it is
 * unfinished (or was made before this marker existed) and is never copied.
 */
const IMAGE_COMPLETE_FILE = 'autonode-image.complete';
/**
 * In a data directory while it is being seeded: written before the first file is copied, removed
 * after PG_VERSION. A directory holding it is a copy cut short, which PGlite must never open.
 */
const SEEDING_FILE = 'autonode.seeding';

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

/**
 * Before PGlite opens a data directory (under its lock). One without PG_VERSION is new: with
 * `seed`, it becomes a copy of the matching image if one was built. A copy cut short (the seeding
 * marker still there) is copied again over itself when a matching image exists, and refused
 * otherwise: PGlite would run initdb over the half-copied files. It is not wiped here, as the
 * directory may hold other files of the user's (the default one holds development-secrets-key).
 */
async function prepareDataDir(dataDir: string, seed: boolean): Promise<void> {
  const interrupted = await exists(path.join(dataDir, SEEDING_FILE));
  if (!interrupted && (!seed || (await exists(path.join(dataDir, VERSION_FILE))))) return;
  const image = seed ? path.join(imageRoot, await embeddedImageKey()) : undefined;
  if (image && (await exists(path.join(image, IMAGE_COMPLETE_FILE)))) {
    await copyImage(image, dataDir);
    return;
  }
  if (interrupted) {
    throw new Error(
      `the embedded database in ${dataDir} is an unfinished copy of the database image (a start was interrupted while copying it), ` +
        `and no image matching this PGlite and these migrations exists to finish it: delete ${dataDir} and start again ` +
        `(it holds no data yet; keep its development-secrets-key file if you keep secrets encrypted with it), or run npm run build first`,
    );
  }
}

/** Files copied at once when seeding: the copies wait on the disk, not on each other. */
const COPY_CONCURRENCY = 16;

/**
 * Copies the image into a data directory. The seeding marker goes first and leaves after
 * PG_VERSION, which is copied last: whatever point a copy is cut at, the directory either has the
 * marker or is complete. The migrations still run after opening (they find all applied), and
 * later ones apply on top. The image holds about a thousand files; copied one after another
 * (fs.cp) they take several times longer than in parallel.
 */
async function copyImage(image: string, dataDir: string): Promise<void> {
  const marker = path.join(dataDir, SEEDING_FILE);
  await writeFile(marker, `${image}\n`);
  const entries = await readdir(image, { recursive: true, withFileTypes: true });
  const relative = (entry: Dirent) => path.relative(image, path.join(entry.parentPath, entry.name));
  for (const directory of entries.filter((entry) => entry.isDirectory()).map(relative)) {
    await mkdir(path.join(dataDir, directory), { recursive: true });
  }
  const files = entries
    .filter((entry) => entry.isFile())
    .map(relative)
    .filter((file) => file !== VERSION_FILE && file !== IMAGE_COMPLETE_FILE);
  // COPYFILE_FICLONE shares the blocks on file systems that can (btrfs, xfs) and copies elsewhere.
  const copy = (file: string) => copyFile(path.join(image, file), path.join(dataDir, file), fsConstants.COPYFILE_FICLONE);
  let next = 0;
  await Promise.all(
    Array.from({ length: COPY_CONCURRENCY }, async () => {
      while (next < files.length) await copy(files[next++] as string);
    }),
  );
  await copy(VERSION_FILE);
  await unlink(marker);
}

/**
 * Creates the image for the current key unless it exists (scripts/build.mjs calls this): initdb
 * and every migration on a temporary directory, through the same code as the service's start
 * (this module's server, postgres.js, drizzle's migrator), marked complete and then renamed into
 * place whole, so a process starting meanwhile sees either no complete image or a complete one.
 * Images of other keys, and what interrupted builds left, are renamed aside and then removed.
 */
export async function prepareEmbeddedImage(): Promise<{ readonly created: boolean; readonly tookMs: number }> {
  const started = Date.now();
  const key = await embeddedImageKey();
  const image = path.join(imageRoot, key);
  await mkdir(imageRoot, { recursive: true });
  await removeLeftovers(key);
  if (await exists(path.join(image, IMAGE_COMPLETE_FILE))) return { created: false, tookMs: Date.now() - started };

  const staging = path.join(imageRoot, `${STAGING_PREFIX}${key}-${process.pid}`);
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
    await writeFile(path.join(staging, IMAGE_COMPLETE_FILE), `${new Date().toISOString()}\n`);
    // An incomplete folder under the key (an older build's, without the marker) is set aside first.
    if (await exists(image)) await discard(image);
    await rename(staging, image).catch(async (error: NodeJS.ErrnoException) => {
      // Another build finished the same image first: theirs is identical.
      if ((error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') || !(await exists(path.join(image, IMAGE_COMPLETE_FILE)))) throw error;
    });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return { created: true, tookMs: Date.now() - started };
}

const STAGING_PREFIX = '.staging-';
const TRASH_PREFIX = '.trash-';

/**
 * Moves a folder out of the way under a name no process reads (one rename, atomic), then removes
 * it: a removal cut short leaves a `.trash-` folder, never a half-removed image.
 */
async function discard(folder: string): Promise<void> {
  const trash = path.join(imageRoot, `${TRASH_PREFIX}${path.basename(folder)}-${process.pid}-${randomBytes(4).toString('hex')}`);
  await rename(folder, trash);
  await rm(trash, { recursive: true, force: true });
}

/**
 * Removes images of other keys and the staging and trash folders of builds that are no longer
 * running (Ctrl-C, kill): each such folder's name ends in its builder's pid. A live builder's are kept.
 */
async function removeLeftovers(key: string): Promise<void> {
  for (const entry of await readdir(imageRoot)) {
    const folder = path.join(imageRoot, entry);
    if (entry.startsWith(STAGING_PREFIX) || entry.startsWith(TRASH_PREFIX)) {
      // `.staging-<key>-<pid>` (prepareEmbeddedImage) and `.trash-<name>-<pid>-<random>` (discard).
      const owner = Number((/^\.staging-[0-9a-f]+-(\d+)$/.exec(entry) ?? /^\.trash-.+-(\d+)-[0-9a-f]{8}$/.exec(entry))?.[1]);
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) continue;
      if (owner === process.pid && entry.startsWith(STAGING_PREFIX)) continue;
      await rm(folder, { recursive: true, force: true });
    } else if (entry !== key) {
      await discard(folder).catch((error: NodeJS.ErrnoException) => {
        // Another build set it aside first.
        if (error.code !== 'ENOENT') throw error;
      });
    }
  }
}
