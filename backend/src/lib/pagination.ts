import { asc, desc, sql, type AnyColumn, type SQL } from 'drizzle-orm';
import { z } from 'zod';
import { badRequest } from './problem.js';

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

function pagingShape<const SortField extends string>(sortFields: readonly [SortField, ...SortField[]]) {
  return {
    pageSize: z.coerce.number().int().min(1).max(MAX_PAGE_SIZE).default(DEFAULT_PAGE_SIZE),
    cursor: z.string().min(1).max(1024).optional().meta({ description: 'Opaque cursor from nextCursor; not with page.' }),
    page: z.coerce.number().int().min(1).max(100_000).optional().meta({ description: '1-based page number (offset paging); not with cursor.' }),
    sortBy: z.enum(sortFields).default(sortFields[0]),
    sortDirection: z.enum(['asc', 'desc']).default('desc'),
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

/** The list query for a resource with nothing to search (executions, steps). */
export function listQuery<const SortField extends string, Filters extends z.ZodRawShape>(
  sortFields: readonly [SortField, ...SortField[]],
  filters: Filters,
) {
  return z
    .object({ ...pagingShape(sortFields), ...filters })
    .strict()
    .refine(notBothPageAndCursor.check, notBothPageAndCursor.options);
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

/** A sortable column and how its values travel inside a cursor. */
export interface SortKey {
  readonly column: AnyColumn;
  readonly kind: 'timestamp' | 'text';
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

function decodeCursor(raw: string, params: ListParams, key: SortKey): DecodedCursor {
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
export function keysetPosition(params: ListParams, sortKeys: Record<string, SortKey>) {
  const key = sortKeys[params.sortBy];
  if (!key) throw badRequest(`Cannot sort by '${params.sortBy}'.`, [{ path: 'sortBy', message: 'is not a sort field of this list' }]);
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
export function keysetPlan(params: ListParams, sortKeys: Record<string, SortKey>, idColumn: AnyColumn) {
  const position = keysetPosition(params, sortKeys);
  const { key, cursor } = position;
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
  sortValue: (row: Row) => Date | string,
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
    const value = sortValue(last);
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
