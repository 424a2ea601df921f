import { index, pgTable, text, uniqueIndex, uuid, type AnyPgColumn } from 'drizzle-orm/pg-core';
import { createdAt, millisecondTimestamp, ownerId } from './columns.js';

/**
 * API keys for scripts. Only a SHA-256 of the secret is stored: keys are 256-bit random values,
 * so a fast hash cannot be brute-forced and keeps verification a single indexed lookup.
 */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    userId: ownerId(),
    name: text('name').notNull(),
    /** The first characters of the key, shown so a person can tell keys apart. */
    prefix: text('prefix').notNull(),
    keyHash: text('key_hash').notNull(),
    expiresAt: millisecondTimestamp('expires_at'),
    /**
     * The key that created this one (null: created in a session). Revoking a key revokes every key
     * it created, and a created key never expires after its creator: a key cannot outlive itself.
     */
    parentKeyId: uuid('parent_key_id').references((): AnyPgColumn => apiKeys.id, { onDelete: 'cascade' }),
    lastUsedAt: millisecondTimestamp('last_used_at'),
    createdAt: createdAt(),
  },
  (table) => [
    uniqueIndex('api_keys_key_hash_idx').on(table.keyHash),
    index('api_keys_user_created_idx').on(table.userId, table.createdAt, table.id),
    index('api_keys_user_name_idx').on(table.userId, table.name, table.id),
    index('api_keys_parent_key_idx').on(table.parentKeyId),
  ],
);
