import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { runMigrations as installGraphileWorker } from 'graphile-worker';
import PgBoss from 'pg-boss';
import type { Sql } from '../src/db/client.js';
import { insertPendingExecutions, oneStepGraph } from './seed.js';
import { autonodeBuild, autonodeEnv, elapsedMs, generateSecret, log, median, sleep, spawnAutonodeWorker, spawnNode, withBenchDatabase, type NodeProcess } from './support.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';

/** Two-step runs (trigger.manual, then a transform) on one side, no-op jobs on the others. */
const RUNS = Number(process.env.BENCH_ENGINE_RUNS ?? 3_000);
const CONCURRENCY = 4;
const POLL_MS = 50;
const PAIRS = 3;
/** How often the bench counts finished work (the brief's 100 ms; both sides alike). */
const COUNT_EVERY_MS = 100;
/** 3,000 runs slower than ~25/s means something is broken; the suite must still end in time. */
const RUN_TIMEOUT_MS = 120_000;
const PGBOSS_SCHEMA = 'pgboss_bench';
const PGBOSS_QUEUE = 'bench-noop';
const GRAPHILE_SCHEMA = 'graphile_bench';
const GRAPHILE_TASK = 'bench_noop';

export interface DrainRun {
  /** From spawning the worker process until the last of the RUNS is completed. */
  readonly totalMs: number;
  /** From spawning until the first completion was counted: start-up cost. */
  readonly firstCompletionMs: number;
  readonly perSecond: number;
  readonly peakRssMiB: number | undefined;
}

export interface EngineSide {
  readonly perSecond: number;
  readonly totalMs: number;
  readonly firstCompletionMs: number;
  /** After the first completion: the rate once started, without start-up. */
  readonly steadyPerSecond: number;
  readonly peakRssMiB: number | undefined;
}

export interface EngineResults {
  readonly runs: number;
  readonly concurrency: number;
  readonly autonode: EngineSide;
  readonly pgBoss: EngineSide;
  /** Autonode / pg-boss, on the medians of completions per second. */
  readonly ratio: number;
  readonly pgBossVersion: string;
  readonly graphileWorker: EngineSide;
  /** Autonode / graphile-worker, on the medians of completions per second (the goal: >= 0.60). */
  readonly graphileRatio: number;
  readonly graphileWorkerVersion: string;
}

interface Progress {
  readonly completed: number;
  /** Finished otherwise (failed, cancelled): the run is broken, waiting longer would not help. */
  readonly failed: number;
}

/**
 * Starts the timer, spawns the worker and counts completions every 100 ms until all `RUNS` are
 * done. The worker is stopped afterwards, whatever happened.
 */
async function drain(sql: Sql, start: () => NodeProcess | Promise<NodeProcess>, progress: () => Promise<Progress>, describeFailure: () => Promise<string>): Promise<DrainRun> {
  // The previous run's dirty pages are flushed now rather than by a checkpoint in the middle of
  // this one (needs superuser or pg_checkpoint; without it runs are just a little noisier).
  await sql`checkpoint`.catch(() => undefined);
  const started = performance.now();
  const worker = await start();
  let firstCompletionMs: number | undefined;
  try {
    for (;;) {
      await sleep(COUNT_EVERY_MS);
      const { completed, failed } = await progress();
      if (completed > 0) firstCompletionMs ??= elapsedMs(started);
      if (completed >= RUNS) {
        const totalMs = elapsedMs(started);
        return { totalMs, firstCompletionMs: firstCompletionMs ?? totalMs, perSecond: RUNS / (totalMs / 1000), peakRssMiB: worker.peakRssMiB() };
      }
      if (failed > 0) throw new Error(`${worker.name}: ${failed} runs did not complete: ${await describeFailure()}`);
      if (!worker.isRunning()) throw new Error(`${worker.name} exited (${String(await worker.exited)}) with ${completed}/${RUNS} done:\n${worker.output()}`);
      if (elapsedMs(started) > RUN_TIMEOUT_MS) throw new Error(`${worker.name}: only ${completed}/${RUNS} done after ${RUN_TIMEOUT_MS} ms:\n${worker.output()}`);
    }
  } finally {
    await worker.stop(3_000);
  }
}

async function autonodeRun(sql: Sql, url: string, secret: string, userId: string, workflowId: string): Promise<DrainRun> {
  // Each run starts from the same state: an empty history and RUNS pending runs, no engine running.
  await sql`truncate executions, execution_steps cascade`;
  await insertPendingExecutions(sql, userId, workflowId, RUNS);
  return drain(
    sql,
    () =>
      spawnAutonodeWorker('autonode-worker', {
        ...autonodeEnv(url, secret),
        ENGINE_CONCURRENCY: String(CONCURRENCY),
        // One user owns every run here; pg-boss has no per-user share: the same concurrency for both.
        ENGINE_USER_CONCURRENCY: String(CONCURRENCY),
        ENGINE_POLL_MS: String(POLL_MS),
      }),
    async () => {
      const [row] = await sql<Progress[]>`
        select count(*) filter (where status = 'completed')::int as completed,
               count(*) filter (where status in ('failed', 'cancelled'))::int as failed
          from executions`;
      return row ?? { completed: 0, failed: 0 };
    },
    async () => {
      const [row] = await sql<{ error: unknown }[]>`select error from executions where status in ('failed', 'cancelled') limit 1`;
      return JSON.stringify(row?.error);
    },
  );
}

async function pgBossRun(sql: Sql, url: string): Promise<DrainRun> {
  // A fresh schema per run, like Autonode's fresh tables; installing it and queueing the jobs is not timed.
  await sql`drop schema if exists ${sql(PGBOSS_SCHEMA)} cascade`;
  const boss = new PgBoss({ connectionString: url, schema: PGBOSS_SCHEMA, max: 2, supervise: false, schedule: false });
  boss.on('error', (error) => log(`pg-boss (setup) error: ${error.message}`));
  await boss.start();
  try {
    await boss.createQueue(PGBOSS_QUEUE);
    const jobs: PgBoss.JobInsert<{ n: number }>[] = Array.from({ length: RUNS }, (_, index) => ({ name: PGBOSS_QUEUE, data: { n: index + 1 } }));
    for (let offset = 0; offset < jobs.length; offset += 1_000) await boss.insert(jobs.slice(offset, offset + 1_000));
  } finally {
    await boss.stop({ graceful: false, wait: true });
  }
  await sql`vacuum (analyze) ${sql(PGBOSS_SCHEMA)}.job`;
  return drain(
    sql,
    () =>
      spawnNode('pgboss-worker', 'bench/pgboss-worker.ts', {
        DATABASE_URL: url,
        PGBOSS_SCHEMA,
        PGBOSS_QUEUE,
        CONCURRENCY: String(CONCURRENCY),
        POLL_MS: String(POLL_MS),
        DB_POOL_SIZE: '10',
        NODE_ENV: 'production',
        SECRETS_KEYS: generateKeyEntry('bench'),
      }),
    async () => {
      const [row] = await sql<Progress[]>`
        select count(*) filter (where state = 'completed')::int as completed,
               count(*) filter (where state in ('failed', 'cancelled'))::int as failed
          from ${sql(PGBOSS_SCHEMA)}.job where name = ${PGBOSS_QUEUE}`;
      return row ?? { completed: 0, failed: 0 };
    },
    async () => {
      const [row] = await sql<{ output: unknown }[]>`
        select output from ${sql(PGBOSS_SCHEMA)}.job where name = ${PGBOSS_QUEUE} and state in ('failed', 'cancelled') limit 1`;
      return JSON.stringify(row?.output);
    },
  );
}

async function graphileWorkerRun(sql: Sql, url: string): Promise<DrainRun> {
  // A fresh schema per run, installed by graphile-worker itself; installing it and queueing the jobs is not timed.
  await sql`drop schema if exists ${sql(GRAPHILE_SCHEMA)} cascade`;
  await installGraphileWorker({ connectionString: url, schema: GRAPHILE_SCHEMA });
  await sql`
    select ${sql(GRAPHILE_SCHEMA)}.add_jobs(array_agg((${GRAPHILE_TASK}, json_build_object('n', g), null, null, null, null, null, null)::${sql(GRAPHILE_SCHEMA)}.job_spec))
      from generate_series(1, ${RUNS}::int) g`;
  await sql`vacuum (analyze) ${sql(GRAPHILE_SCHEMA)}._private_jobs`;
  return drain(
    sql,
    () =>
      spawnNode('graphile-worker', 'bench/graphile-worker.ts', {
        DATABASE_URL: url,
        GRAPHILE_SCHEMA,
        GRAPHILE_TASK,
        CONCURRENCY: String(CONCURRENCY),
        POLL_MS: String(POLL_MS),
        DB_POOL_SIZE: '10',
        NODE_ENV: 'production',
      }),
    // A completed job is deleted; a failed one stays with its last error.
    async () => {
      const [row] = await sql<{ left: number; failed: number }[]>`
        select count(*)::int as left, count(*) filter (where last_error is not null)::int as failed from ${sql(GRAPHILE_SCHEMA)}._private_jobs`;
      return { completed: RUNS - (row?.left ?? RUNS), failed: row?.failed ?? 0 };
    },
    async () => {
      const [row] = await sql<{ last_error: string | null }[]>`select last_error from ${sql(GRAPHILE_SCHEMA)}._private_jobs where last_error is not null limit 1`;
      return row?.last_error ?? 'unknown';
    },
  );
}

/** An installed package's version, for the report (`mainToRoot`: from its main file to its package root). */
function installedVersion(packageName: string, mainToRoot: string): string {
  const main = createRequire(import.meta.url).resolve(packageName);
  const manifest: unknown = JSON.parse(readFileSync(path.join(path.dirname(main), mainToRoot, 'package.json'), 'utf8'));
  return typeof manifest === 'object' && manifest !== null && 'version' in manifest && typeof manifest.version === 'string' ? manifest.version : 'unknown';
}

function summarise(runs: readonly DrainRun[]): EngineSide {
  return {
    perSecond: median(runs.map((run) => run.perSecond)),
    totalMs: median(runs.map((run) => run.totalMs)),
    firstCompletionMs: median(runs.map((run) => run.firstCompletionMs)),
    steadyPerSecond: median(runs.map((run) => RUNS / ((run.totalMs - run.firstCompletionMs) / 1000))),
    peakRssMiB: Math.max(...runs.map((run) => run.peakRssMiB ?? 0)) || undefined,
  };
}

/**
 * Benchmark 3: RUNS two-step workflow runs on Autonode's engine against RUNS no-op pg-boss jobs and
 * RUNS no-op graphile-worker jobs, one worker process each at the same concurrency, process start
 * included, the three sides alternating within each round.
 */
export async function runEngine(): Promise<EngineResults> {
  return withBenchDatabase('autonode_bench_engine', async (database) => {
    const sql = database.client.sql;
    const secret = generateSecret();
    const [owner] = await sql<{ id: string }[]>`
      insert into "user" (id, name, email) values ('bench-engine-owner', 'Bench engine owner', 'bench-engine-owner@bench.test') returning id`;
    if (!owner) throw new Error('could not create the workflow owner');
    const [workflow] = await sql<{ id: string }[]>`
      insert into workflows (user_id, name, nodes, edges)
      values (${owner.id}, 'One step', ${JSON.stringify(oneStepGraph.nodes)}::jsonb, ${JSON.stringify(oneStepGraph.edges)}::jsonb)
      returning id`;
    if (!workflow) throw new Error('could not create the workflow');

    // The build happens once, before any timing.
    await autonodeBuild();
    const autonodeRuns: DrainRun[] = [];
    const pgBossRuns: DrainRun[] = [];
    const graphileRuns: DrainRun[] = [];
    const describe = (run: DrainRun | undefined) => `${run?.perSecond.toFixed(0)}/s (first after ${run?.firstCompletionMs.toFixed(0)} ms)`;
    for (let round = 0; round < PAIRS; round += 1) {
      // The order rotates each round, so no side always runs right after the same other one.
      const sides = [
        () => autonodeRun(sql, database.url, secret, owner.id, workflow.id).then((run) => autonodeRuns.push(run)),
        () => pgBossRun(sql, database.url).then((run) => pgBossRuns.push(run)),
        () => graphileWorkerRun(sql, database.url).then((run) => graphileRuns.push(run)),
      ];
      for (let turn = 0; turn < sides.length; turn += 1) await sides[(round + turn) % sides.length]?.();
      log(`engine round ${round + 1}: Autonode ${describe(autonodeRuns.at(-1))} | pg-boss ${describe(pgBossRuns.at(-1))} | graphile-worker ${describe(graphileRuns.at(-1))}`);
    }
    const autonode = summarise(autonodeRuns);
    const pgBoss = summarise(pgBossRuns);
    const graphileWorker = summarise(graphileRuns);
    log(
      `engine medians: Autonode ${autonode.perSecond.toFixed(0)}/s, pg-boss ${pgBoss.perSecond.toFixed(0)}/s (ratio ${(autonode.perSecond / pgBoss.perSecond).toFixed(2)}),` +
        ` graphile-worker ${graphileWorker.perSecond.toFixed(0)}/s (ratio ${(autonode.perSecond / graphileWorker.perSecond).toFixed(2)})`,
    );
    return {
      runs: RUNS,
      concurrency: CONCURRENCY,
      autonode,
      pgBoss,
      ratio: autonode.perSecond / pgBoss.perSecond,
      pgBossVersion: installedVersion('pg-boss', '..'),
      graphileWorker,
      graphileRatio: autonode.perSecond / graphileWorker.perSecond,
      graphileWorkerVersion: installedVersion('graphile-worker', '..'),
    };
  });
}

/** The goal: Autonode's two-step runs per second at least this share of graphile-worker's no-op jobs. */
export const GRAPHILE_RATIO_TARGET = 0.6;

/** The engine's three sides side by side (the suite table shows Autonode against pg-boss only). */
export function renderEngineReferences(results: EngineResults): string {
  const row = (name: string, side: EngineSide) =>
    `| ${name} | ${side.perSecond.toFixed(0)} | ${side.firstCompletionMs.toFixed(0)} | ${side.steadyPerSecond.toFixed(0)} | ${side.peakRssMiB?.toFixed(0) ?? '?'} |`;
  return [
    `## Engine against its references (${results.runs.toLocaleString('en-US')} each, concurrency ${results.concurrency}, one worker process each, process start included; medians of ${PAIRS} rounds, order rotating)`,
    '',
    '| side | completed/s | ms to first completion | completed/s after the first | peak RSS MiB |',
    '| --- | ---: | ---: | ---: | ---: |',
    row('Autonode (two-step runs)', results.autonode),
    row(`graphile-worker ${results.graphileWorkerVersion} (no-op jobs)`, results.graphileWorker),
    row(`pg-boss ${results.pgBossVersion} (no-op jobs)`, results.pgBoss),
    '',
    `Autonode / graphile-worker: ${results.graphileRatio.toFixed(2)} (goal >= ${GRAPHILE_RATIO_TARGET.toFixed(2)}: ${results.graphileRatio >= GRAPHILE_RATIO_TARGET ? 'met' : 'MISSED'}); Autonode / pg-boss: ${results.ratio.toFixed(2)}.`,
  ].join('\n');
}
