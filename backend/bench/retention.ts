import { performance } from 'node:perf_hooks';
import type { Sql } from '../src/db/client.js';
import { DEFAULT_WALK_START, PURGE_DEFAULTS, purgeExpired, purgeStatements, type PurgeResult } from '../src/retention/purge.js';
import { insertBulkUsers, insertFinishedExecutions, insertStepsOfEndedExecutions, insertWorkflowsForEveryUser, signUp } from './seed.js';
import { CountedLoad, assertStillServing, autonodeEnv, elapsedMs, generateSecret, log, startAutonodeServer, withBenchDatabase, type LoadResult } from './support.js';

/** Ended executions past their retention (with two steps each): what the purge deletes. */
const EXPIRED = 100_000;
/** Recent ended executions (within the default retention): what the list pages show, and what stays. */
const KEPT = 20_000;
const OTHER_USERS = 99;
const WORKFLOWS_PER_USER = 3;
/** EXECUTION_RETENTION_DAYS's default. */
export const RETENTION_DAYS = 30;
/** A workflow in ten has a retention of its own, shorter than the default: the purge's other walk. */
const OWN_RETENTION_DAYS = 7;
const CONNECTIONS = 10;
const WARM_UP_SECONDS = 5;
const LOAD_SECONDS = 8;

export interface ListLatency {
  readonly okPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly failures: number;
}

export interface RetentionResults {
  readonly expired: number;
  readonly kept: number;
  /** Steps deleted with the executions. */
  readonly steps: number;
  readonly purgeSeconds: number;
  /** Executions deleted per second over the whole purge, pauses included (batches of PURGE_DEFAULTS.batchSize, PURGE_DEFAULTS.pauseMs apart). */
  readonly executionsPerSecond: number;
  /** Executions and their steps per second. */
  readonly rowsPerSecond: number;
  readonly batches: number;
  readonly before: ListLatency;
  readonly during: ListLatency;
  /** Share of the "during" load run that the purge was running. */
  readonly overlap: number;
  /** Per purge statement, the indexes its plan reads (the planner's own settings, on the seeded tables). */
  readonly plans: Record<string, string[]>;
  /** Plans that read executions or webhook_deliveries sequentially: none expected. */
  readonly seqScans: string[];
}

export interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}
export const planNodes = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(planNodes)];

/** EXPLAIN of each purge statement with the parameters the housekeeping sends, on the seeded, analyzed tables (nothing runs). */
export async function explainPurge(sql: Sql): Promise<{ plans: Record<string, string[]>; seqScans: string[] }> {
  const plans: Record<string, string[]> = {};
  const seqScans: string[] = [];
  const statements = {
    ownRetention: (tag: Sql) => purgeStatements.ownRetention(tag, DEFAULT_WALK_START.workflowId, PURGE_DEFAULTS.batchSize),
    defaultRetention: (tag: Sql) => purgeStatements.defaultRetention(tag, RETENTION_DAYS, DEFAULT_WALK_START, PURGE_DEFAULTS.batchSize),
    unexecutedDeliveries: (tag: Sql) => purgeStatements.unexecutedDeliveries(tag, RETENTION_DAYS, PURGE_DEFAULTS.batchSize),
  };
  for (const [name, statement] of Object.entries(statements)) {
    const [row] = await sql<{ 'QUERY PLAN': { Plan: PlanNode }[] }[]>`explain (format json) ${statement(sql)}`;
    const nodes = planNodes(row?.['QUERY PLAN'][0]?.Plan ?? { 'Node Type': 'none' });
    plans[name] = [...new Set(nodes.flatMap((node) => (node['Index Name'] ? [node['Index Name']] : [])))];
    for (const node of nodes) {
      if (node['Node Type'] === 'Seq Scan' && ['executions', 'webhook_deliveries'].includes(node['Relation Name'] ?? '')) seqScans.push(`${name}: ${node['Relation Name']}`);
    }
  }
  return { plans, seqScans };
}

export const latencyOf = (run: LoadResult): ListLatency => ({ okPerSecond: run.okPerSecond, p50Ms: run.p50Ms, p99Ms: run.p99Ms, failures: run.failures });

export interface ListDuringPurge {
  readonly before: LoadResult;
  readonly during: LoadResult;
  /** Share of the "during" load run that the purge was running. */
  readonly overlap: number;
  readonly purge: PurgeResult;
  readonly purgeSeconds: number;
}

/**
 * The list route's latency (`listUrl`, CONNECTIONS connections) just before and while one purge
 * round deletes what is past RETENTION_DAYS, with the housekeeping's batch size and pause, in this
 * process on the bench's own pool (as an engine process runs it, beside the API server).
 */
export async function listDuringPurge(sql: Sql, listUrl: string, headers: Record<string, string>): Promise<ListDuringPurge> {
  const load = new CountedLoad({ url: listUrl, headers, connections: CONNECTIONS }, LOAD_SECONDS);
  await load.warmUp(WARM_UP_SECONDS);
  const before = await load.run();
  log(`list before the purge: ${before.okPerSecond.toFixed(0)} req/s, p50 ${before.p50Ms} ms, p99 ${before.p99Ms} ms`);
  await assertStillServing('Autonode', new URL('/api/v1/me', listUrl).toString(), headers);

  let purgeEndedAt: number | undefined;
  const purgeStarted = performance.now();
  // One round without the time budget: the rate is the housekeeping's while it runs (in
  // production a round stops after PURGE_DEFAULTS.maxRunMs and the next comes a minute later).
  const purge: Promise<PurgeResult> = purgeExpired(sql, { defaultDays: RETENTION_DAYS, maxRunMs: 600_000 }).finally(() => {
    purgeEndedAt = performance.now();
  });
  const loadStarted = performance.now();
  const during = await load.run();
  const loadEnded = performance.now();
  const result = await purge;
  const purgeSeconds = (performance.now() - purgeStarted) / 1000;
  const overlap = Math.max(0, Math.min(purgeEndedAt ?? loadEnded, loadEnded) - loadStarted) / (loadEnded - loadStarted);
  log(`list during the purge: ${during.okPerSecond.toFixed(0)} req/s, p50 ${during.p50Ms} ms, p99 ${during.p99Ms} ms (the purge ran for ${(overlap * 100).toFixed(0)}% of it)`);
  log(`purge: ${result.executions} executions in ${purgeSeconds.toFixed(1)} s, ${result.batches} batches (${(result.executions / purgeSeconds).toFixed(0)} executions/s)`);

  return { before, during, overlap, purge: result, purgeSeconds };
}

/**
 * Benchmark 8: the retention purge. EXPIRED ended executions past their retention (a workflow in
 * ten with a retention of its own, the others on the default) and KEPT recent ones, each with the
 * two steps a run of the one-step graph leaves, are written by SQL (bench/seed.ts: running 120,000
 * workflows through the engine would take the whole time budget; the rows are the ones the engine
 * writes, and the usage triggers count them as they count the engine's). Then the list route's
 * latency (GET /executions, first page, 10 connections) is measured before and while one purge
 * round deletes the expired ones, with the housekeeping's batch size and pause, in this process on
 * a pool of its own (as an engine process runs it, beside the API server).
 */
export async function runRetention(): Promise<RetentionResults> {
  return withBenchDatabase('autonode_bench_retention', async (database) => {
    const { sql } = database.client;
    const seeding = performance.now();
    await insertBulkUsers(sql, OTHER_USERS);
    const env = { ...autonodeEnv(database.url, generateSecret()), ENGINE_ENABLED: 'false', RATE_LIMIT_MAX: '10000000' };
    const server = await startAutonodeServer('autonode-server', env);
    try {
      const caller = await signUp(server.baseUrl, 'bench-caller@bench.test', 'bench-password-1234');
      await insertWorkflowsForEveryUser(sql, WORKFLOWS_PER_USER);
      await sql`
        with numbered as (select id, row_number() over (order by id) as n from workflows)
        update workflows w set retention_days = ${OWN_RETENTION_DAYS} from numbered where numbered.id = w.id and numbered.n % 10 = 0`;
      // Past every retention: from 35 days back (the oldest about 3.5 days before that).
      await insertFinishedExecutions(sql, caller.id, EXPIRED, RETENTION_DAYS + 5);
      await insertFinishedExecutions(sql, caller.id, KEPT);
      await insertStepsOfEndedExecutions(sql);
      const [counts] = await sql<{ executions: number; steps: number; expired: number; expiredSteps: number }[]>`
        select (select count(*)::int from executions) as executions,
               (select count(*)::int from execution_steps) as steps,
               (select count(*)::int from executions where finished_at < now() - make_interval(days => ${RETENTION_DAYS})) as expired,
               (select coalesce(sum(step_count), 0)::int from executions where finished_at < now() - make_interval(days => ${RETENTION_DAYS})) as "expiredSteps"`;
      if (counts?.expired !== EXPIRED) throw new Error(`seeded ${counts?.expired} expired executions, expected ${EXPIRED}`);
      log(`seeded ${counts.executions} executions (${counts.expired} past retention) and ${counts.steps} steps in ${(elapsedMs(seeding) / 1000).toFixed(1)} s`);

      const { plans, seqScans } = await explainPurge(sql);
      for (const [name, indexes] of Object.entries(plans)) log(`plan of ${name}: ${indexes.join(', ') || 'no index'}`);
      for (const scan of seqScans) log(`WARNING: sequential scan in the purge: ${scan}`);

      const { before, during, overlap, purge: result, purgeSeconds } = await listDuringPurge(sql, `${server.baseUrl}/api/v1/executions?pageSize=20`, {
        cookie: caller.cookie,
      });
      const [after] = await sql<{ executions: number; steps: number; counted: number }[]>`
        select (select count(*)::int from executions) as executions, (select count(*)::int from execution_steps) as steps,
               (select coalesce(sum(executions), 0)::int from user_usage) as counted`;
      if (!result.finished || result.executions !== EXPIRED || after?.executions !== KEPT || after.steps !== counts.steps - counts.expiredSteps) {
        throw new Error(`the purge left ${after?.executions} executions and ${after?.steps} steps (deleted ${result.executions}, finished: ${result.finished})`);
      }
      if (after.counted !== after.executions) throw new Error(`user_usage counts ${after.counted} executions, the table has ${after.executions}`);
      return {
        expired: EXPIRED,
        kept: KEPT,
        steps: counts.expiredSteps,
        purgeSeconds,
        executionsPerSecond: result.executions / purgeSeconds,
        rowsPerSecond: (result.executions + counts.expiredSteps) / purgeSeconds,
        batches: result.batches,
        before: latencyOf(before),
        during: latencyOf(during),
        overlap,
        plans,
        seqScans,
      };
    } finally {
      await server.process.stop();
    }
  });
}
