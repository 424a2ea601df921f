import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import type { Logger } from 'pino';
import { createDbClient, type Db } from './client.js';
import { isDatabaseUnavailable, isMissingRelation } from './errors.js';

/** From src/db (tsx, tests) and from dist/db (the build) alike: backend/migrations. */
export const migrationsFolder = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations');

/** Applies the committed drizzle-kit migrations that have not run yet (drizzle's migrator, in one transaction). */
export async function runMigrations(db: Db, logger?: Logger): Promise<void> {
  const started = Date.now();
  if (await isUpToDate(db)) {
    logger?.info({ tookMs: Date.now() - started }, 'database migrations: none to apply');
    return;
  }
  await migrate(db, { migrationsFolder });
  logger?.info({ tookMs: Date.now() - started }, 'database migrations applied');
}

/**
 * Drizzle's migrator applies exactly the journal entries newer than the newest row of
 * drizzle.__drizzle_migrations; when that row is at least as new as the journal's newest entry it
 * applies nothing. This checks that one condition with one query, instead of the migrator's
 * schema and table creation, reading and hashing every file, and an empty transaction (most of a
 * restart's migration time on the embedded database). Any doubt (no table yet) runs the migrator.
 */
async function isUpToDate(db: Db): Promise<boolean> {
  const journal = JSON.parse(await readFile(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as { entries: { when: number }[] };
  const newestInJournal = Math.max(...journal.entries.map((entry) => entry.when));
  try {
    const [newestApplied] = await db.execute<{ created_at: string | number | null }>(
      sql`select created_at from drizzle.__drizzle_migrations order by created_at desc limit 1`,
    );
    return newestApplied?.created_at !== undefined && newestApplied.created_at !== null && Number(newestApplied.created_at) >= newestInJournal;
  } catch (error) {
    // Never migrated (no table yet). Anything else (the server unreachable, no permission) is not an answer.
    if (isMissingRelation(error)) return false;
    throw error;
  }
}

/** Held, for the session, by the one process applying migrations; the others wait, then find nothing to apply. */
const MIGRATION_LOCK = 'autonode:migrations';

/**
 * Applies the migrations to an external PostgreSQL on a connection of their own: with no statement
 * timeout (DB_STATEMENT_TIMEOUT is for requests; a migration rewriting or indexing a large table
 * may take minutes), and under a session advisory lock, so replicas started together with
 * MIGRATE_ON_START, or two migration containers, apply them once (drizzle's migrator creates its
 * table and applies the files without a lock of its own: two at once fail on the catalog).
 */
export async function migrateExternal(url: string, connectTimeoutSeconds: number, logger?: Logger): Promise<void> {
  const client = createDbClient({ url, poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds, statementTimeoutMs: 0, applicationName: 'autonode-migrate' });
  try {
    // One connection: the lock, the migrations and the unlock (closing the session) share it.
    // Explicitly: a timeout set on the role or the database would apply otherwise (and lock_timeout
    // to the wait for another process's migrations too).
    await client.sql`set statement_timeout = 0`;
    await client.sql`set lock_timeout = 0`;
    await client.sql`select pg_advisory_lock(hashtextextended(${MIGRATION_LOCK}, 0))`;
    await runMigrations(client.db, logger);
  } finally {
    await client.close();
  }
}

/**
 * Refuses to serve on a schema older than this code's migrations (a `git pull` without
 * `db:migrate`): every request touching what changed would fail with a 500 while /api/ready said 200.
 * A newer schema is accepted: a replica not upgraded yet during a rolling upgrade.
 */
export async function assertSchemaCurrent(db: Db, logger: Logger): Promise<void> {
  let current: boolean;
  try {
    current = await isUpToDate(db);
  } catch (error) {
    // A database down at start-up does not stop the service (it answers /api/ready 503 until the
    // database is back, and the engine waits for it): the check is skipped, and made at the next start.
    if (!isDatabaseUnavailable(error)) throw error;
    logger.warn({ err: error }, 'the database schema could not be checked: the database is unreachable; starting without the check');
    return;
  }
  if (current) return;
  throw new Error(
    'the database schema is older than this version: apply the migrations first (npm run db:migrate, or node dist/migrate.js), or set MIGRATE_ON_START=true',
  );
}
