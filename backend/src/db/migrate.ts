import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import type { Logger } from 'pino';
import type { Db } from './client.js';

export const migrationsFolder = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations');

/** Applies the committed drizzle-kit migrations that have not run yet (drizzle's migrator, in one transaction). */
export async function runMigrations(db: Db, logger?: Logger): Promise<void> {
  const started = Date.now();
  await migrate(db, { migrationsFolder });
  logger?.info({ tookMs: Date.now() - started }, 'database migrations applied');
}
