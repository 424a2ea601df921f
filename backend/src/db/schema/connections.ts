import { sql } from 'drizzle-orm';
import { index, integer, jsonb, pgTable, text, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { createdAt, millisecondTimestamp, ownerId, payloadBytes, updatedAt } from './columns.js';
import { sealedSecretColumns } from './secrets.js';

export const connectionAuthTypes = ['none', 'bearer', 'basic', 'header', 'query'] as const;
export type ConnectionAuthType = (typeof connectionAuthTypes)[number];

/**
 * How to reach an outside service (API.md, Connections): workflows name it in `http.request`, so
 * they never carry its credentials. The secret (token, password, header or query value) is sealed
 * to this row and its owner; `authUsername` (basic) and `authName` (header, query) are not secret.
 */
export const connections = pgTable(
  'connections',
  {
    /** Chosen by the service before the insert: the sealed secret is bound to it. */
    id: uuid('id').primaryKey(),
    userId: ownerId(),
    name: text('name').notNull(),
    description: text('description').notNull().default(''),
    baseUrl: text('base_url').notNull(),
    headers: jsonb('headers').$type<Record<string, string>>().notNull().default({}),
    authType: text('auth_type').$type<ConnectionAuthType>().notNull().default('none'),
    authUsername: text('auth_username'),
    authName: text('auth_name'),
    ...sealedSecretColumns(),
    /** Bumped on every change a caller makes; the ETag. */
    version: integer('version').notNull().default(1),
    /** When a run last used it, to the minute (see engine/run-resources.ts). */
    lastUsedAt: millisecondTimestamp('last_used_at'),
    /** Bytes it stores as text, kept by PostgreSQL: what it adds to its user's usage. */
    payloadBytes: payloadBytes(
      sql`octet_length(name) + octet_length(description) + octet_length(base_url) + octet_length(headers::text) + coalesce(octet_length(secret_ciphertext), 0)`,
    ),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (table) => [
    // Names are unique per user (409 NAME_TAKEN), and the index serves the name sort.
    uniqueIndex('connections_user_name_idx').on(table.userId, table.name),
    index('connections_user_created_idx').on(table.userId, table.createdAt, table.id),
    index('connections_user_updated_idx').on(table.userId, table.updatedAt, table.id),
    // Rotation finds the secrets that are not under the first key yet.
    index('connections_secret_key_idx').on(table.secretKeyId),
  ],
);
