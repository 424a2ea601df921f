import { randomBytes } from 'node:crypto';
import { and, eq, gt, isNull, lt, or, sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { apiKeys, user } from '../db/schema/index.js';
import { sha256 } from '../lib/http.js';
import type { RequestUser } from './caller.js';

/*
 * API keys are our own table rather than Better Auth's API-key plugin: @better-auth/api-key (1.7.5,
 * its latest) pins @better-auth/utils 0.4.2 and better-call 1.4.0 as exact peers, which conflict
 * with better-auth 1.7.25. A key is 256 random bits, stored as its SHA-256 (a fast hash is right for
 * a high-entropy secret: nothing to brute-force), with name, prefix, expiry and lastUsedAt.
 * Revisit when the plugin's peers catch up.
 */

/** Recognisable in logs and secret scanners; the rest is 256 random bits. */
export const API_KEY_PREFIX = 'ank_';
const SHOWN_PREFIX_LENGTH = API_KEY_PREFIX.length + 8;
/** lastUsedAt is written at most this often per key, so verification is a read on the hot path. */
const LAST_USED_RESOLUTION_SECONDS = 60;

export interface GeneratedApiKey {
  readonly secret: string;
  readonly prefix: string;
  readonly hash: string;
}

export function generateApiKey(): GeneratedApiKey {
  const secret = `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
  return { secret, prefix: secret.slice(0, SHOWN_PREFIX_LENGTH), hash: hashApiKey(secret) };
}

export const hashApiKey = (secret: string): string => sha256(secret);

/** The key a request presents, from `Authorization: Bearer <key>` or `x-api-key`. */
export function presentedApiKey(headers: Record<string, string | string[] | undefined>): string | undefined {
  const header = headers['x-api-key'];
  if (typeof header === 'string' && header.length > 0) return header.trim();
  const authorization = headers.authorization;
  if (typeof authorization === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match?.[1]) return match[1];
  }
  return undefined;
}

/** The user behind a live (unexpired, undeleted) key, or null. One indexed lookup by hash. */
export async function verifyApiKey(db: Db, secret: string): Promise<(RequestUser & { keyId: string; expiresAt: Date | null }) | null> {
  if (!secret.startsWith(API_KEY_PREFIX) || secret.length > 128) return null;
  const [row] = await db
    .select({ keyId: apiKeys.id, expiresAt: apiKeys.expiresAt, lastUsedAt: apiKeys.lastUsedAt, id: user.id, name: user.name, email: user.email })
    .from(apiKeys)
    .innerJoin(user, eq(user.id, apiKeys.userId))
    .where(and(eq(apiKeys.keyHash, hashApiKey(secret)), or(isNull(apiKeys.expiresAt), gt(apiKeys.expiresAt, sql`now()`))));
  if (!row) return null;
  if (!row.lastUsedAt || Date.now() - row.lastUsedAt.getTime() > LAST_USED_RESOLUTION_SECONDS * 1000) {
    await db
      .update(apiKeys)
      .set({ lastUsedAt: sql`now()` })
      .where(
        and(
          eq(apiKeys.id, row.keyId),
          or(isNull(apiKeys.lastUsedAt), lt(apiKeys.lastUsedAt, sql`now() - make_interval(secs => ${LAST_USED_RESOLUTION_SECONDS})`)),
        ),
      );
  }
  return { keyId: row.keyId, expiresAt: row.expiresAt, id: row.id, name: row.name, email: row.email };
}
