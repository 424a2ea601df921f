import { hash } from 'node:crypto';
import { z } from 'zod';
import { preconditionFailed } from './problem.js';

export const IdParams = z.object({ id: z.uuid({ message: 'must be a UUID' }) }).strict();

/** A timestamp as the API writes it (toISOString form). */
export const iso = (value: Date): string => value.toISOString();
export const isoOrNull = (value: Date | null): string | null => (value === null ? null : value.toISOString());

export const Timestamp = z.iso.datetime({ offset: true });

/**
 * A time sent by a caller: ISO-8601 with an offset, within the years PostgreSQL and JavaScript
 * share, normalised to UTC (offsets beyond PostgreSQL's ±15:59 become plain UTC instants).
 */
export const TimestampInput = z.iso
  .datetime({ offset: true })
  .refine((value) => {
    const year = new Date(value).getUTCFullYear();
    return year >= 1 && year <= 9999;
  }, { message: 'must be between the years 0001 and 9999' })
  .transform((value) => new Date(value).toISOString());

/** Conditional-request headers, documented; loose so the request's other headers stay untouched. */
export const IfMatchHeaders = z.looseObject({
  'if-match': z.string().max(512).optional().meta({ description: 'ETag from a GET; on mismatch the write is refused with 412.' }),
});
export const IdempotencyHeaders = z.looseObject({
  'idempotency-key': z
    .string()
    .min(1)
    .max(255)
    .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
    .optional()
    .meta({ description: 'Same key and body within 24 h: the first result again; same key, other body: 409.' }),
});

/** A strong ETag from a version token. */
export const etagOf = (version: string | number): string => `"${version}"`;

/**
 * If-Match (RFC 9110): absent passes; `*` passes for an existing resource; otherwise one of the
 * listed tags must equal the current one, or the write is refused with 412 and changes nothing.
 */
export function checkIfMatch(header: string | undefined, currentEtag: string): void {
  if (header === undefined) return;
  const candidates = header.split(',').map((tag) => tag.trim().replace(/^W\//, ''));
  if (candidates.includes('*') || candidates.includes(currentEtag)) return;
  throw preconditionFailed();
}

/** Hex SHA-256 of a UTF-8 text. The one-shot `hash` costs a third of a `createHash` object (it runs per request, for the caller cache). */
export function sha256(text: string): string {
  return hash('sha256', text, 'hex');
}

/** JSON with sorted keys, so two bodies that differ only in key order hash alike. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
