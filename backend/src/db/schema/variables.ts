import { sql } from 'drizzle-orm';
import { boolean, index, integer, pgTable, text, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { createdAt, ownerId, payloadBytes, updatedAt } from './columns.js';
import { exactJsonb } from './exact-jsonb.js';
import { sealedSecretColumns } from './secrets.js';

/**
 * The user's variables (API.md, Variables): a plain one holds any JSON in `value`; a secret one
 * holds a string sealed to this row and its owner, and `value` is null.
 */
export const variables = pgTable(
  'variables',
  {
    /** Chosen by the service before the insert: the sealed secret is bound to it. */
    id: uuid('id').primaryKey(),
    userId: ownerId(),
    key: text('key').notNull(),
    value: exactJsonb('value'),
    secret: boolean('secret').notNull().default(false),
    ...sealedSecretColumns(),
    /** Bumped on every change a caller makes; the ETag. */
    version: integer('version').notNull().default(1),
    /** Bytes it stores as text, kept by PostgreSQL: what it adds to its user's usage. */
    payloadBytes: payloadBytes(sql`octet_length(key) + coalesce(octet_length(value::text), 0) + coalesce(octet_length(secret_ciphertext), 0)`),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (table) => [
    uniqueIndex('variables_user_key_idx').on(table.userId, table.key),
    index('variables_user_created_idx').on(table.userId, table.createdAt, table.id),
    index('variables_user_updated_idx').on(table.userId, table.updatedAt, table.id),
    index('variables_secret_key_idx').on(table.secretKeyId),
  ],
);
