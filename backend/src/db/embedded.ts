import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

export interface EmbeddedPostgres {
  /** A postgres:// URL for the local socket server; use it with a pool of exactly one connection. */
  readonly url: string;
  readonly dataDir: string;
  stop(): Promise<void>;
}

/**
 * Starts PGlite (PostgreSQL compiled to WASM) on a data directory and serves it on a random
 * loopback port, so the rest of the service talks to it through postgres.js exactly as it talks
 * to a real server: one code path. PGlite is single-connection: with more than one socket client
 * queries interleave and return wrong results, so the server accepts one connection and the
 * client pool must be `max: 1`.
 */
export async function startEmbeddedPostgres(dataDir: string): Promise<EmbeddedPostgres> {
  await mkdir(dataDir, { recursive: true });
  const releaseLock = await lockDataDir(dataDir);
  let database: PGlite;
  try {
    database = await PGlite.create({ dataDir });
  } catch (error) {
    await releaseLock();
    throw error;
  }
  const server = new PGLiteSocketServer({ db: database, host: '127.0.0.1', port: 0, maxConnections: 1 });
  await server.start();
  const address = server.getServerConn();
  return {
    url: `postgres://postgres@${address}/postgres`,
    dataDir,
    async stop() {
      await server.stop();
      await database.close();
      await releaseLock();
    },
  };
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
