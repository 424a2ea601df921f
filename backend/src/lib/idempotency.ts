import { and, eq, isNull, lt, or, sql } from 'drizzle-orm';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Db } from '../db/client.js';
import { idempotencyKeys } from '../db/schema/index.js';
import { canonicalJson, sha256 } from './http.js';
import { conflict, ProblemError } from './problem.js';

/** How long a key answers with its first result. */
export const IDEMPOTENCY_TTL_HOURS = 24;
/** A reservation with no result after this long belongs to a request that died (crash, timeout): it may be taken over. */
const ABANDONED_AFTER_SECONDS = 120;

export interface StoredResponse<Body> {
  status: number;
  body: Body;
  location?: string;
}

/**
 * Deletes keys past their 24 h, whoever they belong to, `batchSize` at a time (a short statement
 * each, skipping rows another replica is deleting); returns how many went. Each user's own expired
 * keys also go when that user next sends one (withIdempotency): this keeps the table bounded for
 * users who never come back.
 */
export async function purgeExpiredIdempotencyKeys(db: Db, batchSize = 5_000): Promise<number> {
  let purged = 0;
  for (;;) {
    const deleted = await db.execute<{ count: number }>(sql`
      with expired as (
        select ctid from ${idempotencyKeys}
         where ${idempotencyKeys.createdAt} < now() - make_interval(hours => ${IDEMPOTENCY_TTL_HOURS})
         limit ${batchSize}
         for update skip locked),
      gone as (delete from ${idempotencyKeys} where ctid in (select ctid from expired) returning 1)
      select count(*)::int as count from gone`);
    const count = deleted[0]?.count ?? 0;
    purged += count;
    if (count < batchSize) return purged;
  }
}

/**
 * Runs `execute` at most once per (user, operation, key) within 24 h: the same key with the same
 * body returns the first result again; the same key with another body is a 409. The key is
 * reserved before the work starts, so two concurrent requests cannot both run it; if the work
 * fails, the reservation is released and the key can be tried again.
 */
export async function withIdempotency<Body>(
  db: Db,
  options: { userId: string; scope: string; key: string | undefined; request: unknown },
  execute: () => Promise<StoredResponse<Body>>,
): Promise<StoredResponse<Body> & { replayed: boolean }> {
  const { userId, scope, key } = options;
  if (key === undefined) return { ...(await execute()), replayed: false };
  const requestHash = sha256(canonicalJson(options.request));
  const identity = and(eq(idempotencyKeys.userId, userId), eq(idempotencyKeys.scope, scope), eq(idempotencyKeys.key, key));

  // Expired keys of this user, and reservations whose request died, are dropped first.
  await db
    .delete(idempotencyKeys)
    .where(
      and(
        eq(idempotencyKeys.userId, userId),
        or(
          lt(idempotencyKeys.createdAt, sql`now() - make_interval(hours => ${IDEMPOTENCY_TTL_HOURS})`),
          and(isNull(idempotencyKeys.responseStatus), lt(idempotencyKeys.createdAt, sql`now() - make_interval(secs => ${ABANDONED_AFTER_SECONDS})`)),
        ),
      ),
    );
  const reserved = await db
    .insert(idempotencyKeys)
    .values({ userId, scope, key, requestHash })
    .onConflictDoNothing()
    .returning({ key: idempotencyKeys.key });

  if (reserved.length === 0) {
    const [existing] = await db.select().from(idempotencyKeys).where(identity);
    if (!existing) throw conflict('The Idempotency-Key was released while this request arrived; send it again.', 'IDEMPOTENCY_KEY_IN_PROGRESS');
    if (existing.requestHash !== requestHash) {
      throw conflict('This Idempotency-Key was already used with a different request body.', 'IDEMPOTENCY_KEY_REUSED');
    }
    if (existing.responseStatus === null) {
      throw new ProblemError(409, 'IDEMPOTENCY_KEY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed.', {
        headers: { 'retry-after': '1' },
      });
    }
    return {
      status: existing.responseStatus,
      body: existing.responseBody as Body,
      ...(existing.responseLocation ? { location: existing.responseLocation } : {}),
      replayed: true,
    };
  }

  let response: StoredResponse<Body>;
  try {
    response = await execute();
  } catch (error) {
    await db.delete(idempotencyKeys).where(identity).catch(() => undefined);
    throw error;
  }
  await db
    .update(idempotencyKeys)
    .set({ responseStatus: response.status, responseBody: response.body, responseLocation: response.location ?? null })
    .where(identity);
  return { ...response, replayed: false };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * What a key is scoped to: the method, the route (its pattern, not the URL as written) and its
 * parameters as the route understood them. So `/workflows/ABC…/run`, `/workflows/abc…/run` and a
 * percent-encoded spelling of the same id are one scope: PostgreSQL reads them as one workflow.
 */
function idempotencyScope(request: FastifyRequest): string {
  const params = Object.entries((request.params ?? {}) as Record<string, unknown>)
    .map(([name, value]) => [name, typeof value === 'string' && UUID.test(value) ? value.toLowerCase() : value] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `${request.method} ${request.routeOptions.url ?? ''} ${canonicalJson(Object.fromEntries(params))}`;
}

/**
 * The route side of an Idempotency-Key: runs `execute` through withIdempotency, scoped to this
 * method, route and parameters for the caller, keyed on the request's body and query, and answers with the
 * stored status, Location and body. `respond` may add to what is sent (the first answer of an
 * API-key creation carries the secret, which is never stored for a replay). `fingerprint` is what
 * identifies the request instead of its body and query: a body that carries a secret passes one
 * with a keyed digest of the secret, so the stored hash cannot confirm a guess of it.
 */
export async function replyIdempotently<Body>(
  db: Db,
  request: FastifyRequest & { headers: { 'idempotency-key'?: string | undefined } },
  reply: FastifyReply,
  execute: () => Promise<StoredResponse<Body>>,
  respond: (body: Body, replayed: boolean) => unknown = (body) => body,
  fingerprint: unknown = { body: request.body ?? null, query: request.query ?? null },
): Promise<FastifyReply> {
  const result = await withIdempotency(
    db,
    {
      userId: request.user.id,
      scope: idempotencyScope(request),
      key: request.headers['idempotency-key'],
      request: fingerprint,
    },
    execute,
  );
  if (result.location) reply.header('location', result.location);
  return reply.code(result.status).send(respond(result.body, result.replayed));
}
