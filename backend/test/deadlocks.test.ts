import { randomInt } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { createDbClient, type Db, type DbClient } from '../src/db/client.js';
import { transaction } from '../src/db/transaction.js';
import { createWorkflow, eventually, runWorkflow, sessionsWaitForALock } from './engine-helpers.js';
import { fireJobExecution } from './fixtures.js';
import { buildTestApp, databaseUrl, expectProblem, lacksConcurrentConnections, sampleGraph, signUp } from './helpers.js';

/**
 * Real deadlocks between two connections: `first` takes lock A; the other connection takes B and
 * waits for A; then `first` asks for B. `first` runs with a short deadlock_timeout and the other
 * with a long one, so PostgreSQL finds the cycle from `first`'s side and aborts it, however slow the
 * machine. Setting deadlock_timeout needs a superuser: the tests skip themselves for another role.
 */
describe.skipIf(lacksConcurrentConnections())('deadlocks (skipped on the embedded database: needs two connections)', () => {
  let app: App;
  let other: DbClient;
  let superuser = false;
  beforeAll(async () => {
    app = await buildTestApp();
    other = createDbClient({ url: databaseUrl(), poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 });
    const [row] = await app.database.sql<{ superuser: boolean }[]>`select current_setting('is_superuser') = 'on' as superuser`;
    superuser = row?.superuser ?? false;
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
    const otherSide = other.sql.begin(async (otherTx) => {
      await otherTx`set local deadlock_timeout = '1min'`;
      await otherTx`select pg_advisory_xact_lock(${lockB})`;
      holdsB();
      await otherTx`select pg_advisory_xact_lock(${lockA})`;
    });
    // Awaited by the test; a rejection must not go unhandled before it is.
    otherSide.catch(() => undefined);
    otherSides.push(otherSide);
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

  it('runs a transaction again when PostgreSQL aborts it to break a deadlock, and answers what the attempt that committed did', async (context) => {
    if (!superuser) context.skip();
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

  it('answers 503 CONCURRENT_WRITE with Retry-After when a write still meets a deadlock, never a 500', async (context) => {
    if (!superuser) context.skip();
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

  it('deletes a workflow while runs of it are being ended, locking their rows in the order the engine does', async () => {
    const owner = await signUp(app);
    const workflowId = await createWorkflow(app, owner, sampleGraph);
    const job = await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { cookie: owner.cookie }, payload: { name: 'nightly', workflowId, cron: '0 3 * * *', status: 'ACTIVE' } });
    expect(job.statusCode, job.body).toBe(201);
    const runs: string[] = [];
    for (let run = 0; run < 16; run++) runs.push((await runWorkflow(app, owner, workflowId)).id);
    // Random ids: the order they sort in is not the order the delete's cascade meets the rows.
    const [lowest, ...rest] = [...runs].sort();
    // The other connection plays a batch of ends: its executions' rows in id order, then the usage row.
    const ending = await other.sql.reserve();
    try {
      await ending`begin`;
      await ending`select 1 from executions where id = ${lowest ?? ''} for update`;
      const deleted = app.inject({ method: 'DELETE', url: `/api/v1/workflows/${workflowId}`, headers: { cookie: owner.cookie } });
      await sessionsWaitForALock(app, 'the delete waiting for the first execution');
      // Had the delete taken any of the others (or the usage row) before waiting, these would wait
      // for it, and fail at the timeout instead of the deadlock.
      await ending`set local lock_timeout = '500ms'`;
      await ending`select 1 from executions where id = any(${rest}::uuid[]) order by id for update`;
      await ending`update user_usage set payload_bytes = payload_bytes where user_id = ${owner.id}`;
      await ending`commit`;
      expect((await deleted).statusCode).toBe(204);
    } finally {
      await ending`rollback`.catch(() => undefined);
      ending.release();
    }
    for (const id of runs) expectProblem(await app.inject({ url: `/api/v1/executions/${id}`, headers: { cookie: owner.cookie } }), 404);
  });

  // A run's write holds its execution's row, then checks the foreign keys of the row it wrote
  // (KEY SHARE on its workflow and job); a delete of either waits for that execution. Had the
  // delete taken the parent FOR UPDATE first, each would wait for the other: PostgreSQL aborted the
  // run's write, and the run was taken over and its step run again.
  it.each(['workflow', 'job'] as const)('deletes a %s while a run of it is being written, without taking what the write checks its keys against', async (parent) => {
    const owner = await signUp(app);
    const workflowId = await createWorkflow(app, owner, sampleGraph);
    const job = await app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { cookie: owner.cookie }, payload: { name: 'nightly', workflowId, cron: '0 3 * * *', status: 'ACTIVE' } });
    expect(job.statusCode, job.body).toBe(201);
    const jobId = job.json<{ id: string }>().id;
    const executionId = await fireJobExecution(app, owner, jobId);
    const ending = await other.sql.reserve();
    try {
      await ending`begin`;
      // The write's fence: the execution's row.
      await ending`select 1 from executions where id = ${executionId} for no key update`;
      const deleted = app.inject({ method: 'DELETE', url: parent === 'workflow' ? `/api/v1/workflows/${workflowId}` : `/api/v1/jobs/${jobId}`, headers: { cookie: owner.cookie } });
      await sessionsWaitForALock(app, 'the delete waiting for the execution');
      // The write's foreign-key checks, while the delete waits: granted at once, not after a lock timeout.
      await ending`set local lock_timeout = '500ms'`;
      await ending`select 1 from workflows where id = ${workflowId} for key share`;
      await ending`select 1 from jobs where id = ${jobId} for key share`;
      await ending`commit`;
      expect((await deleted).statusCode).toBe(204);
    } finally {
      await ending`rollback`.catch(() => undefined);
      ending.release();
    }
  });
});
