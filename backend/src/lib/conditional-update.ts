import { and, eq } from 'drizzle-orm';
import type { PgColumn, PgTable, PgUpdateSetSource } from 'drizzle-orm/pg-core';
import type { Db } from '../db/client.js';
import { transaction } from '../db/transaction.js';
import { checkIfMatch, etagOf } from './http.js';

/** A user-owned resource whose `version` column is its ETag. */
export type VersionedTable = PgTable & {
  id: PgColumn;
  userId: PgColumn;
  version: PgColumn;
  updatedAt: PgColumn;
  $inferSelect: { id: string; version: number };
};

/** The ETag of a versioned resource: its `version` column (bumped by every change a caller makes). */
export const versionEtag = (row: { version: number }): string => etagOf(row.version);

/**
 * A write under If-Match: in one transaction, locks the caller's row, checks If-Match against its
 * version (412 and nothing changed on mismatch), then runs `write` on the locked current row. The
 * check and the write see the same version, so concurrent writes cannot overwrite each other
 * unseen. Returns null when the caller has no such row; otherwise what `write` returns.
 *
 * The lock is FOR NO KEY UPDATE (two writers still wait for each other): it leaves the row to the
 * KEY SHARE locks of foreign-key checks. The engine's writes check their execution's workflow and
 * job keys while they hold the execution's row (its second update in the statement, by the usage
 * trigger, is checked again); a delete holding the parent FOR UPDATE while its cascade waited for
 * that execution deadlocked with them. A delete still takes the full lock when it deletes the row,
 * after its guard, holding nothing any run's write waits for.
 */
async function writeIfMatch<T extends VersionedTable, R>(
  db: Db,
  table: T,
  userId: string,
  id: string,
  ifMatch: string | undefined,
  write: (tx: Db, current: T['$inferSelect']) => Promise<R>,
): Promise<R | null> {
  return transaction(db, async (tx) => {
    // drizzle cannot infer a select from a generic table; the row is the table's own row type.
    const [current] = (await tx
      .select()
      .from(table as PgTable)
      .where(and(eq(table.userId, userId), eq(table.id, id)))
      .for('no key update')) as T['$inferSelect'][];
    if (!current) return null;
    checkIfMatch(ifMatch, versionEtag(current));
    return write(tx, current);
  });
}

/**
 * Changes one of the caller's rows under If-Match: `change` (run on the locked current row, so its
 * checks see what is written) gives the new values; the version is bumped and `updatedAt` set;
 * `written` (in the same transaction) may record what the new version is. Null when the caller
 * has no such row.
 */
export async function updateIfMatch<T extends VersionedTable>(
  db: Db,
  table: T,
  userId: string,
  id: string,
  ifMatch: string | undefined,
  change: (tx: Db, current: T['$inferSelect']) => Promise<PgUpdateSetSource<T>> | PgUpdateSetSource<T>,
  written?: (tx: Db, row: T['$inferSelect']) => Promise<void>,
): Promise<T['$inferSelect'] | null> {
  return writeIfMatch(db, table, userId, id, ifMatch, async (tx, current) => {
    const values = await change(tx, current);
    const [row] = (await tx
      .update(table)
      .set({ ...values, version: current.version + 1, updatedAt: new Date() } as PgUpdateSetSource<T>)
      .where(eq(table.id, current.id))
      .returning()) as T['$inferSelect'][];
    if (row && written) await written(tx, row);
    return row ?? null;
  });
}

/**
 * Deletes one of the caller's rows under If-Match; false when the caller has no such row.
 * `guard` (in the same transaction, on the locked row, after If-Match) may refuse the delete by
 * throwing: what it checks cannot change before the row goes.
 */
export async function removeIfMatch<T extends VersionedTable>(
  db: Db,
  table: T,
  userId: string,
  id: string,
  ifMatch: string | undefined,
  guard?: (tx: Db, current: T['$inferSelect']) => Promise<void>,
): Promise<boolean> {
  const removed = await writeIfMatch(db, table, userId, id, ifMatch, async (tx, current) => {
    if (guard) await guard(tx, current);
    await tx.delete(table).where(eq(table.id, current.id));
    return true;
  });
  return removed ?? false;
}
