import type { Db } from './client.js';
import { isTransientConflict } from './errors.js';

/** Attempts in all of a transaction PostgreSQL aborted to break a deadlock (isTransientConflict). */
const ATTEMPTS = 3;

/**
 * Runs `work` again (up to ATTEMPTS in all, after a short random pause) when PostgreSQL aborts it
 * for a deadlock or a serialization failure (isTransientConflict): such an abort stores nothing,
 * so `work` must be one transaction or one statement, safe to repeat once it stored nothing.
 */
export async function retryingConflicts<T>(work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= ATTEMPTS || !isTransientConflict(error)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20 * attempt));
    }
  }
}

/**
 * Runs `work` in a transaction, again when PostgreSQL aborts it to break a deadlock
 * (retryingConflicts). Writes that share rows take them in one order where that order is known (a
 * workflow's delete locks its executions before the cascade takes the usage row, as the engine's
 * ends do); this is the net for orders no one foresaw. What `work` does outside the database (none
 * of the API's writes does anything) would be repeated.
 */
export function transaction<T>(db: Db, work: (tx: Db) => Promise<T>): Promise<T> {
  return retryingConflicts(() => db.transaction(work));
}
