import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import type { Logger } from 'pino';
import type { Db } from './client.js';

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
  } catch {
    return false;
  }
}
