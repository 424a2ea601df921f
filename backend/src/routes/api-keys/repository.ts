import { and, eq } from 'drizzle-orm';
import type { RequestCaller } from '../../auth/caller.js';
import { generateApiKey } from '../../auth/api-keys.js';
import type { Db } from '../../db/client.js';
import { isForeignKeyViolation } from '../../db/errors.js';
import { apiKeys } from '../../db/schema/index.js';
import { iso, isoOrNull } from '../../lib/http.js';
import { badRequest, unauthorized } from '../../lib/problem.js';
import { columnSortKeys, listOwned, type ListParams, type Page } from '../../lib/pagination.js';
import { createWithinLimit } from '../../lib/per-user-limit.js';
import type { ApiKeyDto, CreateApiKeyInput, CreatedApiKeyDto } from './schemas.js';

type ApiKeyRow = typeof apiKeys.$inferSelect;

const sortKeys = columnSortKeys(apiKeys, { createdAt: 'timestamp', name: 'text' });

/** Never the hash, never the owner. */
export function present(row: ApiKeyRow): ApiKeyDto {
  return {
    id: row.id,
    name: row.name,
    prefix: row.prefix,
    expiresAt: isoOrNull(row.expiresAt),
    lastUsedAt: isoOrNull(row.lastUsedAt),
    createdAt: iso(row.createdAt),
  };
}

export async function list(db: Db, userId: string, params: ListParams): Promise<Page<ApiKeyDto>> {
  return listOwned(db, apiKeys, userId, params, { sortKeys, searchColumns: [apiKeys.name] }, present);
}

/**
 * When a key created by `creator` expires. A key cannot outlive the key that creates it: without
 * an `expiresAt` it gets its creator's, and a later one is refused. (Revocation is covered by the
 * foreign key: revoking a key deletes the keys it created.) A session creates keys freely.
 */
function expiryFor(creator: RequestCaller, requested: string | undefined): { expiresAt: Date | null; parentKeyId: string | null } {
  const expiresAt = requested === undefined ? null : new Date(requested);
  if (creator.via === 'session') return { expiresAt, parentKeyId: null };
  if (creator.expiresAt === null) return { expiresAt, parentKeyId: creator.keyId };
  if (expiresAt !== null && expiresAt > creator.expiresAt) {
    throw badRequest('A key cannot outlive the API key that creates it.', [
      { path: 'expiresAt', message: `must not be later than ${creator.expiresAt.toISOString()}, when the calling key expires` },
    ]);
  }
  return { expiresAt: expiresAt ?? creator.expiresAt, parentKeyId: creator.keyId };
}

/**
 * Creates a key; the secret exists only in the returned value (the table keeps its hash). A user
 * holds at most `maxPerUser` keys, expired ones included (they stay listed until deleted): the
 * count and the insert happen under a lock per user, so concurrent creations cannot pass it together.
 */
export async function create(
  db: Db,
  creator: RequestCaller,
  input: CreateApiKeyInput,
  maxPerUser: number,
): Promise<{ created: CreatedApiKeyDto; stored: ApiKeyDto }> {
  const generated = generateApiKey();
  const { expiresAt, parentKeyId } = expiryFor(creator, input.expiresAt);
  const userId = creator.user.id;
  let row: ApiKeyRow;
  try {
    row = await createWithinLimit(db, apiKeys, userId, { maxPerUser, noun: 'API keys (expired ones included)', code: 'API_KEY_LIMIT_REACHED' }, async (tx) => {
      const [inserted] = await tx
        .insert(apiKeys)
        .values({ userId, name: input.name, prefix: generated.prefix, keyHash: generated.hash, expiresAt, parentKeyId })
        .returning();
      return inserted;
    });
  } catch (error) {
    // The calling key was revoked since the request was authenticated: the foreign key refuses
    // its child, and the caller is as unauthenticated as its key.
    if (isForeignKeyViolation(error)) throw unauthorized('The API key was revoked.');
    throw error;
  }
  const stored = present(row);
  return { created: { ...stored, key: generated.secret }, stored };
}

/** Revokes a key by deleting it: the next request that presents it gets 401. */
export async function remove(db: Db, userId: string, id: string): Promise<boolean> {
  const deleted = await db.delete(apiKeys).where(and(eq(apiKeys.userId, userId), eq(apiKeys.id, id))).returning({ id: apiKeys.id });
  return deleted.length > 0;
}
