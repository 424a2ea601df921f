import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { variables } from '../../db/schema/index.js';
import { removeIfMatch, updateIfMatch } from '../../lib/conditional-update.js';
import { iso } from '../../lib/http.js';
import { columnSortKeys, getOwned, isOwned, listOwned, type ListParams, type Page } from '../../lib/pagination.js';
import { createWithinLimit, nameTakenOr, type UniqueName } from '../../lib/per-user-limit.js';
import { invalidBody } from '../../lib/problem.js';
import { variableSecretBinding } from '../../secrets/bindings.js';
import type { Keyring } from '../../secrets/keyring.js';
import { valueProblem, type CreateVariableInput, type UpdateVariableInput, type VariableDto } from './schemas.js';

/** A variable's row; `value` reads back exactly as stored (src/db/schema/exact-jsonb.ts), SQL NULL as null. */
export type VariableRow = typeof variables.$inferSelect;

/** The bounds a variable's creation enforces (config.variablesPerUser). */
export interface VariableLimits {
  readonly maxPerUser: number;
}

/** What a new row's `version` column starts at (its default): the ETag a creation answers with. */
export const CREATED_VERSION = 1;

const sortKeys = columnSortKeys(variables, { createdAt: 'timestamp', updatedAt: 'timestamp', key: 'text' });

/** The API shape: a secret variable has no `value` at all (write-only), a plain one always has one. */
export function present(row: VariableRow): VariableDto {
  return {
    id: row.id,
    key: row.key,
    ...(row.secret ? {} : { value: row.value }),
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
function valueColumns(keyring: Keyring, row: { id: string; userId: string }, secret: boolean, value: unknown) {
  if (secret) {
    // valueProblem has refused anything else before a value gets here.
    if (typeof value !== 'string') throw new TypeError('a secret value must be a string');
    const sealed = keyring.seal(value, variableSecretBinding(row));
    return { secret, value: null, secretKeyId: sealed.keyId, secretCiphertext: sealed.ciphertext };
  }
  return { secret, value: sql`${JSON.stringify(value)}::jsonb`, secretKeyId: null, secretCiphertext: null };
}

/** A key another of the user's variables has: 409 NAME_TAKEN (the code connections use for a taken name). */
const uniqueKey = (key: string): UniqueName => ({ index: 'variables_user_key_idx', detail: `You already have a variable with the key '${key}'.` });

export async function list(db: Db, userId: string, params: ListParams): Promise<Page<VariableDto>> {
  return listOwned(db, variables, userId, params, { sortKeys, searchColumns: [variables.key] }, present);
}

/** One of the caller's variables, or null (another user's is as missing). */
export async function get(db: Db, userId: string, id: string): Promise<VariableRow | null> {
  return getOwned(db, variables, userId, id);
}

/** Whether the caller has this variable (reads its id alone). */
export async function owns(db: Db, userId: string, id: string): Promise<boolean> {
  return isOwned(db, variables, userId, id);
}

/**
 * Creates a variable, within the user's limit (createWithinLimit). Its id is chosen here, before
 * the insert, because a secret is sealed to its row.
 */
export async function create(db: Db, keyring: Keyring, userId: string, input: CreateVariableInput, limits: VariableLimits): Promise<VariableRow> {
  const id = randomUUID();
  const stored = valueColumns(keyring, { id, userId }, input.secret, input.value);
  return createWithinLimit(
    db,
    variables,
    userId,
    { maxPerUser: limits.maxPerUser, noun: 'variables', code: 'VARIABLE_LIMIT_REACHED' },
    async (tx) => (await tx.insert(variables).values({ id, userId, key: input.key, ...stored }).returning())[0],
    { uniqueName: uniqueKey(input.key) },
  );
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
  try {
    return await updateIfMatch(db, variables, userId, id, ifMatch, (_tx, current) => {
      const secret = input.secret ?? current.secret;
      if (input.value === undefined) {
        if (secret !== current.secret) {
          throw invalidBody('secret', 'changes only together with a new value: a secret’s value is never revealed, a plain value never relabelled secret');
        }
        return { key: input.key ?? current.key };
      }
      const problem = valueProblem(input.value, secret);
      if (problem) throw invalidBody('value', problem);
      return { key: input.key ?? current.key, ...valueColumns(keyring, current, secret, input.value) };
    });
  } catch (error) {
    throw input.key === undefined ? error : nameTakenOr(error, uniqueKey(input.key));
  }
}

/** Deletes a variable. A workflow that refers to it is not checked: its step fails when it runs (SECRET_NOT_FOUND). */
export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  return removeIfMatch(db, variables, userId, id, ifMatch);
}
