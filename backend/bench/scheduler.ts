import { performance } from 'node:perf_hooks';
import { createEventBus } from '../src/bus/bus.js';
import { ExecutionLifecycle } from '../src/executions/lifecycle.js';
import { ExecutionReads } from '../src/executions/reads.js';
import { insertBulkUsers, insertWorkflowsForEveryUser } from './seed.js';
import { log, median, withBenchDatabase } from './support.js';

/** The shape issue 19 names: many users at the per-user job cap, every job every minute. */
const USERS = 50;
const JOBS_PER_USER = 100;
const RUNS = 3;
/** The engine's batch (engine.ts, SCHEDULER_BATCH). */
const BATCH = 500;

export interface SchedulerResults {
  readonly jobs: number;
  readonly users: number;
  /** Median over the runs of jobs fired per second, firing everything due at one minute's turn. */
  readonly jobsPerSecond: number;
  /** Median time from the first batch to the last job fired: how late the last job of the minute is. */
  readonly lastJobAfterMs: number;
  /** Median time until every user's first job had fired: how late a small user's job can be. */
  readonly everyUserServedAfterMs: number;
}

/**
 * Benchmark 6: the scheduler's throughput. USERS × JOBS_PER_USER every-minute jobs all fall due at
 * once (the minute's turn); the lifecycle fires them batch after batch, as the engine's scheduler
 * does, and the figures say how late the last one and each user's first one fire.
 */
export async function runScheduler(): Promise<SchedulerResults> {
  return withBenchDatabase('autonode_bench_scheduler', async (database) => {
    const { sql } = database.client;
    await insertBulkUsers(sql, USERS);
    await insertWorkflowsForEveryUser(sql, 1);
    const bus = createEventBus(database.client, { warn: () => undefined }, { listens: false });
    const lifecycle = new ExecutionLifecycle(sql, bus, new ExecutionReads(sql), { maxPayloadBytes: 1024 * 1024, maxStorageBytes: Number.MAX_SAFE_INTEGER, maxWaitingPerUser: Number.MAX_SAFE_INTEGER });
    const rates: number[] = [];
    const lastJob: number[] = [];
    const everyUser: number[] = [];
    try {
      for (let run = 0; run < RUNS; run++) {
        await sql`truncate executions, jobs cascade`;
        await sql`
          insert into jobs (user_id, workflow_id, name, cron, status, next_run_at)
          select w.user_id, w.id, 'every minute ' || g, '* * * * *', 'ACTIVE', now() - make_interval(secs => g)
            from workflows w cross join generate_series(1, ${JOBS_PER_USER}::int) g`;
        await sql`vacuum (analyze) jobs`;
        const served = new Set<string>();
        let servedAfter = 0;
        let fired = 0;
        const started = performance.now();
        for (;;) {
          const batch = await lifecycle.fireDueJobs(BATCH);
          fired += batch.length;
          for (const job of batch) served.add(job.userId);
          if (servedAfter === 0 && served.size === USERS) servedAfter = performance.now() - started;
          if (batch.length < BATCH) break;
        }
        const elapsed = performance.now() - started;
        if (fired !== USERS * JOBS_PER_USER) throw new Error(`fired ${fired} of ${USERS * JOBS_PER_USER} due jobs`);
        rates.push(fired / (elapsed / 1000));
        lastJob.push(elapsed);
        everyUser.push(servedAfter);
        log(`scheduler run ${run + 1}: ${fired} jobs in ${elapsed.toFixed(0)} ms (${(fired / (elapsed / 1000)).toFixed(0)} jobs/s), every user served after ${servedAfter.toFixed(0)} ms`);
      }
    } finally {
      await bus.close();
    }
    return {
      jobs: USERS * JOBS_PER_USER,
      users: USERS,
      jobsPerSecond: median(rates),
      lastJobAfterMs: median(lastJob),
      everyUserServedAfterMs: median(everyUser),
    };
  });
}
