import { randomUUID } from 'node:crypto';
import { and, count, eq, ilike, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { isUniqueViolation } from '../../db/errors.js';
import { variables } from '../../db/schema/index.js';
import { removeIfMatch, updateIfMatch } from '../../lib/conditional-update.js';
import { iso } from '../../lib/http.js';
import { keysetPlan, likePattern, toPage, type ColumnSortKey, type ListParams, type Page, type SortKeys } from '../../lib/pagination.js';
import { conflict, ProblemError } from '../../lib/problem.js';
import type { Keyring } from '../../secrets/keyring.js';
import { valueProblem, type CreateVariableInput, type UpdateVariableInput, type VariableDto } from './schemas.js';

/**
 * A variable as the API reads it: never its sealed secret, and its value as JSON text. Reading the
 * jsonb column through drizzle would parse it twice (postgres.js parses jsonb, then drizzle parses
 * any string it gets): a stored string that looks like JSON, such as "42" or "{\"a\":1}", would come
 * back as a number or an object. The text is parsed once, here.
 */
const readColumns = {
  id: variables.id,
  key: variables.key,
  valueJson: sql<string | null>`${variables.value}::text`,
  secret: variables.secret,
  version: variables.version,
  createdAt: variables.createdAt,
  updatedAt: variables.updatedAt,
};
export interface VariableRow {
  id: string;
  key: string;
  /** The plain value as JSON text; null for a secret (and SQL NULL in a plain row reads as JSON null). */
  valueJson: string | null;
  secret: boolean;
  version: number;
  createdAt: Date;
  updatedAt: Date;
}

/** What a new row's `version` column starts at (its default): the ETag a creation answers with. */
export const CREATED_VERSION = 1;

const sortKeys: SortKeys<VariableRow, ColumnSortKey<VariableRow>> = {
  createdAt: { column: variables.createdAt, kind: 'timestamp', valueOf: (row) => row.createdAt },
  updatedAt: { column: variables.updatedAt, kind: 'timestamp', valueOf: (row) => row.updatedAt },
  key: { column: variables.key, kind: 'text', valueOf: (row) => row.key },
};

/** The API shape: a secret variable has no `value` at all (write-only), a plain one always has one. */
export function present(row: VariableRow): VariableDto {
  return {
    id: row.id,
    key: row.key,
    ...(row.secret ? {} : { value: JSON.parse(row.valueJson ?? 'null') as unknown }),
    secret: row.secret,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}

/**
 * The columns that hold a value: a secret is sealed to its row and owner and `value` is SQL NULL;
 * a plain value is written as JSON text cast to jsonb (so JSON null is stored as jsonb `null`, not
 * as SQL NULL) and the secret columns are null.
 */
function valueColumns(keyring: Keyring, binding: { rowId: string; userId: string }, secret: boolean, value: unknown) {
  if (secret) {
    // valueProblem has refused anything else before a value gets here.
    if (typeof value !== 'string') throw new TypeError('a secret value must be a string');
    const sealed = keyring.seal(value, { table: 'variables', ...binding });
    return { secret, value: null, secretKeyId: sealed.keyId, secretCiphertext: sealed.ciphertext };
  }
  return { secret, value: sql`${JSON.stringify(value)}::jsonb`, secretKeyId: null, secretCiphertext: null };
}

/** The same 400 a schema violation answers (VALIDATION_FAILED), for checks that need the stored row. */
const invalidBody = (path: string, message: string) => new ProblemError(400, 'VALIDATION_FAILED', 'The body is invalid.', { errors: [{ path, message }] });

/** A key another of the user's variables has: 409 NAME_TAKEN (the code connections use for a taken name). */
function keyTakenOr(error: unknown, key: string | undefined): unknown {
  if (!isUniqueViolation(error, 'variables_user_key_idx')) return error;
  return conflict(`You already have a variable with the key '${key ?? ''}'.`, 'NAME_TAKEN');
}

export async function list(db: Db, userId: string, params: ListParams): Promise<Page<VariableDto>> {
  const plan = keysetPlan(params, sortKeys, variables.id);
  const conditions: (SQL | undefined)[] = [eq(variables.userId, userId), plan.after];
  if (params.searchQuery) conditions.push(ilike(variables.key, likePattern(params.searchQuery)));
  const rows = await db
    .select(readColumns)
    .from(variables)
    .where(and(...conditions))
    .orderBy(...plan.orderBy)
    .limit(plan.limit)
    .offset(plan.offset);
  return toPage(rows, params, sortKeys, present);
}

/** One of the caller's variables, or null (another user's is as missing). */
export async function get(db: Db, userId: string, id: string): Promise<VariableRow | null> {
  const [row] = await db.select(readColumns).from(variables).where(and(eq(variables.userId, userId), eq(variables.id, id)));
  return row ?? null;
}

/**
 * Creates a variable. Its id is chosen here, before the insert, because a secret is sealed to its
 * row. The count of the user's variables and the insert happen under a lock per user (a
 * transaction-scoped advisory lock), so concurrent creations cannot pass the limit together.
 */
export async function create(db: Db, keyring: Keyring, userId: string, input: CreateVariableInput, limits: { maxPerUser: number }): Promise<VariableRow> {
  const id = randomUUID();
  const stored = valueColumns(keyring, { rowId: id, userId }, input.secret, input.value);
  try {
    return await db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`variables-per-user:${userId}`}, 0))`);
      const [owned] = await tx.select({ variables: count() }).from(variables).where(eq(variables.userId, userId));
      if ((owned?.variables ?? 0) >= limits.maxPerUser) {
        throw conflict(`You have ${limits.maxPerUser} variables, the most allowed; delete one to create another.`, 'VARIABLE_LIMIT_REACHED');
      }
      const [row] = await tx
        .insert(variables)
        .values({ id, userId, key: input.key, ...stored })
        .returning(readColumns);
      if (!row) throw new Error('insert returned no row');
      return row;
    });
  } catch (error) {
    throw keyTakenOr(error, input.key);
  }
}

/**
 * Changes a variable under a row lock (If-Match and the checks below see what is written). `secret`
 * changes only with a new value: a secret's sealed value is never revealed as plain, and a plain
 * value (readable so far, not necessarily a string) is never relabelled secret. A value sent
 * without `secret` takes the variable's current kind: for a secret variable it is sealed.
 */
export async function update(
  db: Db,
  keyring: Keyring,
  userId: string,
  id: string,
  input: UpdateVariableInput,
  ifMatch: string | undefined,
): Promise<VariableRow | null> {
  let updated: VariableRow | null = null;
  try {
    const changed = await updateIfMatch(
      db,
      variables,
      userId,
      id,
      ifMatch,
      (_tx, current) => {
        const secret = input.secret ?? current.secret;
        if (input.value === undefined) {
          if (secret !== current.secret) {
            throw invalidBody('secret', 'changes only together with a new value: a secret’s value is never revealed, a plain value never relabelled secret');
          }
          return { key: input.key ?? current.key };
        }
        const problem = valueProblem(input.value, secret);
        if (problem) throw invalidBody('value', problem);
        return { key: input.key ?? current.key, ...valueColumns(keyring, { rowId: current.id, userId }, secret, input.value) };
      },
      // The returned row went through drizzle's jsonb parsing (see readColumns): read it again as text.
      async (tx, row) => {
        updated = await get(tx, userId, row.id);
      },
    );
    return changed ? updated : null;
  } catch (error) {
    throw keyTakenOr(error, input.key);
  }
}

/** Deletes a variable. A workflow that refers to it is not checked: its step fails when it runs (SECRET_NOT_FOUND). */
export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  return removeIfMatch(db, variables, userId, id, ifMatch);
}
