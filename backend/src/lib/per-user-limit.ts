import { count, eq, getTableName, sql } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import type { Db } from '../db/client.js';
import { transaction } from '../db/transaction.js';
import { isUniqueViolation } from '../db/errors.js';
import { conflict } from './problem.js';

/** How many rows of a resource one user may have, and what a creation beyond that answers. */
export interface PerUserLimit {
  readonly maxPerUser: number;
  /** The resource in the plural, as the 409 names it: `connections`. */
  readonly noun: string;
  /** The 409's code: CONNECTION_LIMIT_REACHED. */
  readonly code: string;
}

/** A unique index on what the user names a row by, and the 409 NAME_TAKEN detail when a name is taken. */
export interface UniqueName {
  readonly index: string;
  readonly detail: string;
}

/** `error` as 409 NAME_TAKEN when it is a violation of `name.index`; otherwise `error` itself. */
export function nameTakenOr(error: unknown, name: UniqueName): unknown {
  return isUniqueViolation(error, name.index) ? conflict(name.detail, 'NAME_TAKEN') : error;
}

/**
 * Creates a row of a resource limited per user (409 `limit.code` beyond `limit.maxPerUser`). The
 * count of the user's rows and the insert happen under a lock per user and table (a
 * transaction-scoped advisory lock), so concurrent creations cannot pass the limit together;
 * `underLock` runs first under that lock, for checks that must hold until the insert. A taken
 * name is the unique index's verdict (409 NAME_TAKEN), so it holds against concurrent creations too.
 */
export async function createWithinLimit<Row>(
  db: Db,
  table: PgTable & { userId: PgColumn },
  userId: string,
  limit: PerUserLimit,
  insert: (tx: Db) => Promise<Row | undefined>,
  options: { readonly uniqueName?: UniqueName; readonly underLock?: (tx: Db) => Promise<void> } = {},
): Promise<Row> {
  try {
    return await transaction(db, async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`${getTableName(table)}-per-user:${userId}`}, 0))`);
      await options.underLock?.(tx);
      const [owned] = await tx.select({ rows: count() }).from(table).where(eq(table.userId, userId));
      if ((owned?.rows ?? 0) >= limit.maxPerUser) {
        throw conflict(`You have ${limit.maxPerUser} ${limit.noun}, the most allowed; delete one to create another.`, limit.code);
      }
      const row = await insert(tx);
      if (row === undefined) throw new Error('insert returned no row');
      return row;
    });
  } catch (error) {
    throw options.uniqueName ? nameTakenOr(error, options.uniqueName) : error;
  }
}
