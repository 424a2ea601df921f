import type { SQL } from 'drizzle-orm';
import { integer, text, timestamp } from 'drizzle-orm/pg-core';
import { user } from './auth.js';

/**
 * Millisecond timestamps: a JavaScript Date holds milliseconds, so a value read and sent back (in a
 * cursor, an ETag or an If-Match) compares equal to the stored one. Microseconds would not round-trip.
 */
export const millisecondTimestamp = (name: string) => timestamp(name, { withTimezone: true, precision: 3 });

export const createdAt = () => millisecondTimestamp('created_at').notNull().defaultNow();
export const updatedAt = () =>
  millisecondTimestamp('updated_at')
    .notNull()
    .defaultNow()
    .$onUpdate(() => new Date());

/** The owning user: every resource row has one, and goes when its user is deleted. */
export const ownerId = () =>
  text('user_id')
    .notNull()
    .references(() => user.id, { onDelete: 'cascade' });

/**
 * The bytes a row's JSON payloads take as text, computed by PostgreSQL whenever the row is
 * written (a stored generated column): the user_usage triggers add and subtract these numbers,
 * so what a row added when written is exactly what it takes away when deleted.
 */
export const payloadBytes = (expression: SQL) => integer('payload_bytes').notNull().generatedAlwaysAs(expression);
