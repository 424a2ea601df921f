import { and, asc, desc, eq, ilike, or, sql, type AnyColumn, type SQL } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import type { Db } from '../db/client.js';
import { z } from 'zod';
import { badRequest } from './problem.js';

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

function pagingShape<const SortField extends string>(sortFields: readonly [SortField, ...SortField[]], defaultDirection: 'asc' | 'desc' = 'desc') {
  return {
    pageSize: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(DEFAULT_PAGE_SIZE),
    cursor: z.string().min(1).max(1024).optional().meta({ description: 'Opaque cursor from nextCursor; not with page.' }),
    page: z.coerce.number().int().min(1).max(100_000).optional().meta({ description: '1-based page number (offset paging); not with cursor.' }),
    sortBy: z.enum(sortFields).default(sortFields[0]),
    sortDirection: z.enum(['asc', 'desc']).default(defaultDirection),
  };
}

const notBothPageAndCursor = {
  check: (query: { page?: unknown; cursor?: unknown }) => !(query.page !== undefined && query.cursor !== undefined),
  options: { message: 'use either page or cursor, not both', path: ['page'] },
};

/**
 * The list query of API.md for a resource with a name/description to search, with the sort
 * fields it allows and its own filters. Strict: an unknown parameter is a 400, not ignored.
 */
export function searchableListQuery<const SortField extends string, Filters extends z.ZodRawShape>(
  sortFields: readonly [SortField, ...SortField[]],
  filters: Filters,
) {
  return z
    .object({
      ...pagingShape(sortFields),
      searchQuery: z.string().max(200).optional().meta({ description: 'Case-insensitive substring of name or description.' }),
      ...filters,
    })
    .strict()
    .refine(notBothPageAndCursor.check, notBothPageAndCursor.options);
}

/** The list query for a resource with nothing to search (executions, steps); newest first unless said otherwise. */
export function listQuery<const SortField extends string, Filters extends z.ZodRawShape>(
  sortFields: readonly [SortField, ...SortField[]],
  filters: Filters,
  defaultDirection: 'asc' | 'desc' = 'desc',
) {
  return z
    .object({ ...pagingShape(sortFields, defaultDirection), ...filters })
    .strict()
    .refine(notBothPageAndCursor.check, notBothPageAndCursor.options);
}

/**
 * A list filter of allowed values, comma-separated (`status=failed,running`): each value at most
 * once, at least one; anything else is a 400. The one parser of such filters.
 */
export function commaSeparatedList<const Value extends string>(values: readonly [Value, ...Value[]]) {
  return z
    .string()
    .max(200)
    .transform((value) => [...new Set(value.split(',').map((part) => part.trim()).filter(Boolean))])
    .pipe(z.array(z.enum(values)).min(1))
    .optional()
    .meta({ description: `Comma-separated: ${values.join(', ')}` });
}

export interface ListParams {
  pageSize: number;
  cursor?: string | undefined;
  page?: number | undefined;
  sortBy: string;
  sortDirection: 'asc' | 'desc';
  searchQuery?: string | undefined;
}

export function pageOf<Item extends z.ZodType>(item: Item, name: string) {
  return z
    .object({
      items: z.array(item),
      hasNext: z.boolean(),
      nextCursor: z.string().nullable(),
    })
    .meta({ id: name });
}

export interface Page<Item> {
  items: Item[];
  hasNext: boolean;
  nextCursor: string | null;
}

/** A sort field: how its values travel inside a cursor, and how to read one from a row. */
export interface SortKey<Row> {
  readonly kind: 'timestamp' | 'text';
  readonly valueOf: (row: Row) => Date | string;
}
/** A sort field of a drizzle query: the column it orders by, too. */
export interface ColumnSortKey<Row> extends SortKey<Row> {
  readonly column: AnyColumn;
}
export type SortKeys<Row, Key extends SortKey<Row> = SortKey<Row>> = Readonly<Record<string, Key>>;

/**
 * The sort keys of a drizzle table, from the fields it may be sorted by and their kinds: each
 * orders by the field's column and reads the cursor value from the row's field of the same name.
 */
export function columnSortKeys<T extends PgTable & { $inferSelect: object }, Field extends keyof T['$inferSelect'] & keyof T & string>(
  table: T,
  fields: Readonly<Record<Field, SortKey<never>['kind']>>,
): SortKeys<T['$inferSelect'], ColumnSortKey<T['$inferSelect']>> {
  return Object.fromEntries(
    (Object.entries(fields) as [Field, SortKey<never>['kind']][]).map(([field, kind]) => [
      field,
      { column: table[field] as AnyColumn, kind, valueOf: (row: T['$inferSelect']) => row[field] as Date | string },
    ]),
  );
}

interface DecodedCursor {
  sortBy: string;
  direction: 'asc' | 'desc';
  value: string;
  id: string;
}

function encodeCursor(cursor: DecodedCursor): string {
  return Buffer.from(JSON.stringify([cursor.sortBy, cursor.direction, cursor.value, cursor.id])).toString('base64url');
}

const invalidCursor = (reason: string) => badRequest('The cursor is not valid for this list.', [{ path: 'cursor', message: reason }]);
const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function decodeCursor(raw: string, params: ListParams, key: SortKey<never>): DecodedCursor {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw invalidCursor('is not a cursor this API issued');
  }
  if (!Array.isArray(parsed) || parsed.length !== 4 || !parsed.every((part) => typeof part === 'string')) {
    throw invalidCursor('is not a cursor this API issued');
  }
  const [sortBy, direction, value, id] = parsed as [string, string, string, string];
  // A cursor continues the walk it came from: changing the sort mid-walk would skip or repeat rows.
  if (sortBy !== params.sortBy || direction !== params.sortDirection) {
    throw invalidCursor('was issued for another sortBy/sortDirection; start again without a cursor');
  }
  // The API issues timestamps in toISOString() form only: anything else (a bare year, year 0000,
  // an extended year PostgreSQL cannot hold) is forged; text values never hold a NUL.
  const issuedTimestamp = (text: string) => {
    const date = new Date(text);
    return !Number.isNaN(date.getTime()) && date.toISOString() === text && date.getUTCFullYear() >= 1;
  };
  if (!uuidPattern.test(id) || (key.kind === 'timestamp' ? !issuedTimestamp(value) : value.includes('\u0000'))) {
    throw invalidCursor('is not a cursor this API issued');
  }
  return { sortBy, direction, value, id };
}

/**
 * Where a page starts: the sort key, the decoded cursor (if any), and the limit and offset. For
 * queries that bind the position as parameters themselves (the hand-written hot reads).
 */
function sortKeyOf<Key>(params: ListParams, sortKeys: Readonly<Record<string, Key>>): Key {
  const key = sortKeys[params.sortBy];
  if (!key) throw badRequest(`Cannot sort by '${params.sortBy}'.`, [{ path: 'sortBy', message: 'is not a sort field of this list' }]);
  return key;
}

export function keysetPosition<Row>(params: ListParams, sortKeys: SortKeys<Row>) {
  const key = sortKeyOf(params, sortKeys);
  return {
    key,
    cursor: params.cursor ? decodeCursor(params.cursor, params, key) : undefined,
    // One row more than asked tells whether another page exists without a count.
    limit: params.pageSize + 1,
    offset: params.page !== undefined && !params.cursor ? (params.page - 1) * params.pageSize : 0,
  };
}

/**
 * Keyset paging on (sort column, id), for drizzle queries: each page starts strictly after the
 * previous page's last row, so rows inserted meanwhile cause no gap or repeat, and the cost does
 * not grow with depth (an index on (owner, column, id) serves it in both directions).
 */
export function keysetPlan<Row>(params: ListParams, sortKeys: SortKeys<Row, ColumnSortKey<Row>>, idColumn: AnyColumn) {
  const position = keysetPosition(params, sortKeys);
  const { cursor } = position;
  const key = sortKeyOf(params, sortKeys);
  const order = params.sortDirection === 'desc' ? desc : asc;
  let after: SQL | undefined;
  if (cursor) {
    const value = key.kind === 'timestamp' ? sql`${cursor.value}::timestamptz` : sql`${cursor.value}::text`;
    after =
      params.sortDirection === 'desc'
        ? sql`(${key.column}, ${idColumn}) < (${value}, ${cursor.id}::uuid)`
        : sql`(${key.column}, ${idColumn}) > (${value}, ${cursor.id}::uuid)`;
  }
  return { ...position, after, orderBy: [order(key.column), order(idColumn)] };
}

/** Cuts the extra row off and builds the cursor from the last row shown. */
export function toPage<Row extends { id: string }, Item>(
  rows: Row[],
  params: ListParams,
  sortKeys: SortKeys<Row>,
  present: (row: Row) => Item,
): Page<Item> {
  const hasNext = rows.length > params.pageSize;
  const shownCount = hasNext ? params.pageSize : rows.length;
  // A plain loop: the driver's result array is a subclass of Array, so slice() and map() on it
  // construct further instances of the subclass, V8's slow path (1–2% of a list request's CPU).
  const items: Item[] = new Array<Item>(shownCount);
  for (let index = 0; index < shownCount; index++) items[index] = present(rows[index] as Row);
  const last = rows[shownCount - 1];
  let nextCursor: string | null = null;
  if (hasNext && last) {
    const value = sortKeyOf(params, sortKeys).valueOf(last);
    nextCursor = encodeCursor({
      sortBy: params.sortBy,
      direction: params.sortDirection,
      value: value instanceof Date ? value.toISOString() : value,
      id: last.id,
    });
  }
  return { items, hasNext, nextCursor };
}

/** `%` and `_` (and the escape character) are data in a search, not LIKE syntax. */
export function likePattern(search: string): string {
  return `%${search.replace(/[\\%_]/g, (character) => `\\${character}`)}%`;
}

/** A user-owned table that drizzle lists (its `id` and `userId` columns). */
type OwnedTable = PgTable & { id: PgColumn; userId: PgColumn; $inferSelect: { id: string } };

/**
 * A page of the caller's rows of a drizzle table: owner first, then the keyset position, the
 * resource's own filters and, when `searchQuery` is given, a case-insensitive substring match on
 * any of `searchColumns`.
 */
export async function listOwned<T extends OwnedTable, Item>(
  db: Db,
  table: T,
  userId: string,
  params: ListParams,
  options: {
    readonly sortKeys: SortKeys<T['$inferSelect'], ColumnSortKey<T['$inferSelect']>>;
    readonly searchColumns: readonly AnyColumn[];
    readonly filters?: readonly (SQL | undefined)[];
  },
  present: (row: T['$inferSelect']) => Item,
): Promise<Page<Item>> {
  const plan = keysetPlan(params, options.sortKeys, table.id);
  const conditions: (SQL | undefined)[] = [eq(table.userId, userId), plan.after, ...(options.filters ?? [])];
  if (params.searchQuery) {
    const pattern = likePattern(params.searchQuery);
    conditions.push(or(...options.searchColumns.map((column) => ilike(column, pattern))));
  }
  // drizzle cannot infer a select from a generic table; the rows are the table's own row type.
  const rows = (await db
    .select()
    .from(table as PgTable)
    .where(and(...conditions))
    .orderBy(...plan.orderBy)
    .limit(plan.limit)
    .offset(plan.offset)) as T['$inferSelect'][];
  return toPage(rows, params, options.sortKeys, present);
}

/** Whether the caller has a row of a drizzle table with this id (another user's row is as missing); reads the id alone. */
export async function isOwned(db: Db, table: OwnedTable, userId: string, id: string): Promise<boolean> {
  const [row] = await db.select({ id: table.id }).from(table).where(and(eq(table.userId, userId), eq(table.id, id)));
  return row !== undefined;
}

/** One of the caller's rows of a drizzle table, or null (another user's row is as missing). */
export async function getOwned<T extends OwnedTable>(db: Db, table: T, userId: string, id: string): Promise<T['$inferSelect'] | null> {
  const [row] = (await db.select().from(table as PgTable).where(and(eq(table.userId, userId), eq(table.id, id)))) as T['$inferSelect'][];
  return row ?? null;
}
