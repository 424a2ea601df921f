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
 * How writeIfMatch locks the row. `update` (FOR UPDATE) also waits for, and holds off, KEY SHARE
 * locks: a workflow save holds a connection it names that way, so a rename or delete of the
 * connection waits for the save and then sees the workflow that uses it. `no key update` leaves
 * the row to KEY SHARE locks (two writers still wait for each other): for the parents of
 * executions, whose rows a run's write checks its keys against while it holds its execution.
 */
export type RowLock = 'update' | 'no key update';

/**
 * A write under If-Match: in one transaction, locks the caller's row, checks If-Match against its
 * version (412 and nothing changed on mismatch), then runs `write` on the locked current row. The
 * check and the write see the same version, so concurrent writes cannot overwrite each other
 * unseen. Returns null when the caller has no such row; otherwise what `write` returns.
 */
async function writeIfMatch<T extends VersionedTable, R>(
  db: Db,
  table: T,
  userId: string,
  id: string,
  ifMatch: string | undefined,
  write: (tx: Db, current: T['$inferSelect']) => Promise<R>,
  lock: RowLock = 'update',
): Promise<R | null> {
  return transaction(db, async (tx) => {
    // drizzle cannot infer a select from a generic table; the row is the table's own row type.
    const [current] = (await tx
      .select()
      .from(table as PgTable)
      .where(and(eq(table.userId, userId), eq(table.id, id)))
      .for(lock)) as T['$inferSelect'][];
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
 * throwing: what it checks cannot change before the row goes. `lock`: see RowLock; the delete
 * itself takes the full lock when it deletes the row, after the guard.
 */
export async function removeIfMatch<T extends VersionedTable>(
  db: Db,
  table: T,
  userId: string,
  id: string,
  ifMatch: string | undefined,
  guard?: (tx: Db, current: T['$inferSelect']) => Promise<void>,
  lock: RowLock = 'update',
): Promise<boolean> {
  const removed = await writeIfMatch(
    db,
    table,
    userId,
    id,
    ifMatch,
    async (tx, current) => {
      if (guard) await guard(tx, current);
      await tx.delete(table).where(eq(table.id, current.id));
      return true;
    },
    lock,
  );
  return removed ?? false;
}
