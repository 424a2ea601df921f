import { randomInt } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { createDbClient, type Db, type DbClient } from '../src/db/client.js';
import { transaction } from '../src/db/transaction.js';
import { eventually } from './engine-helpers.js';
import { buildTestApp, databaseUrl, expectProblem, lacksConcurrentConnections } from './helpers.js';

/**
 * Real deadlocks between two connections: `first` takes lock A; the other connection takes B and
 * waits for A; then `first` asks for B. `first` runs with a short deadlock_timeout, so PostgreSQL
 * finds the cycle from its side and aborts it (the other keeps its 1 s default and goes on).
 */
describe.skipIf(lacksConcurrentConnections())('deadlocks (skipped on the embedded database: needs two connections)', () => {
  let app: App;
  let other: DbClient;
  beforeAll(async () => {
    app = await buildTestApp();
    other = createDbClient({ url: databaseUrl(), poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 });
  });
  afterAll(async () => {
    await other.close();
    await app.close();
  });

  /** The other side of each collision: it commits once the first transaction has let go. */
  const otherSides: Promise<unknown>[] = [];

  /** Runs the first transaction's half of the cycle on `tx`, which PostgreSQL then aborts. */
  async function collide(tx: Db): Promise<void> {
    const [lockA, lockB] = [randomInt(1, 2 ** 31), randomInt(1, 2 ** 31)];
    await tx.execute(sql`set local deadlock_timeout = '20ms'`);
    await tx.execute(sql`select pg_advisory_xact_lock(${lockA})`);
    let holdsB!: () => void;
    const otherHoldsB = new Promise<void>((resolve) => (holdsB = resolve));
    otherSides.push(
      other.sql.begin(async (otherTx) => {
        await otherTx`select pg_advisory_xact_lock(${lockB})`;
        holdsB();
        await otherTx`select pg_advisory_xact_lock(${lockA})`;
      }),
    );
    await otherHoldsB;
    await eventually(
      async () => {
        const [row] = await app.database.sql<{ waiting: number }[]>`
          select count(*)::int as waiting from pg_locks where locktype = 'advisory' and not granted and objid = ${lockA}`;
        return (row?.waiting ?? 0) > 0;
      },
      5_000,
      'the other connection waiting for lock A',
    );
    await tx.execute(sql`select pg_advisory_xact_lock(${lockB})`);
  }

  it('runs a transaction again when PostgreSQL aborts it to break a deadlock, and answers what the attempt that committed did', async () => {
    let attempts = 0;
    const answer = await transaction(app.database.db, async (tx) => {
      attempts++;
      if (attempts === 1) await collide(tx);
      return `attempt ${attempts}`;
    });
    expect(answer).toBe('attempt 2');
    expect(attempts).toBe(2);
    await Promise.all(otherSides);
  });

  it('answers 503 CONCURRENT_WRITE with Retry-After when a write still meets a deadlock, never a 500', async () => {
    app.get('/test/deadlocked-write', async () => {
      // No retry here, as if every attempt had collided.
      await app.database.db.transaction((tx) => collide(tx));
      return { written: true };
    });
    const response = await app.inject({ url: '/test/deadlocked-write' });
    const problem = expectProblem(response, 503);
    expect(problem.code).toBe('CONCURRENT_WRITE');
    expect(Number(response.headers['retry-after'])).toBeGreaterThan(0);
    expect(JSON.stringify(problem)).not.toMatch(/deadlock|advisory|pg_/i);
    await Promise.all(otherSides);
  });
});
