import { and, eq } from 'drizzle-orm';
import { generateApiKey } from '../../auth/api-keys.js';
import type { Db } from '../../db/client.js';
import { apiKeys } from '../../db/schema/index.js';
import { iso, isoOrNull } from '../../lib/http.js';
import { columnSortKeys, listOwned, type ListParams, type Page } from '../../lib/pagination.js';
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

/** Creates a key; the secret exists only in the returned value (the table keeps its hash). */
export async function create(db: Db, userId: string, input: CreateApiKeyInput): Promise<{ created: CreatedApiKeyDto; stored: ApiKeyDto }> {
  const generated = generateApiKey();
  const [row] = await db
    .insert(apiKeys)
    .values({
      userId,
      name: input.name,
      prefix: generated.prefix,
      keyHash: generated.hash,
      expiresAt: input.expiresAt ? new Date(input.expiresAt) : null,
    })
    .returning();
  if (!row) throw new Error('insert returned no row');
  const stored = present(row);
  return { created: { ...stored, key: generated.secret }, stored };
}

/** Revokes a key by deleting it: the next request that presents it gets 401. */
export async function remove(db: Db, userId: string, id: string): Promise<boolean> {
  const deleted = await db.delete(apiKeys).where(and(eq(apiKeys.userId, userId), eq(apiKeys.id, id))).returning({ id: apiKeys.id });
  return deleted.length > 0;
}
