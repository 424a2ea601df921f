import { performance } from 'node:perf_hooks';
import { createDbClient, type Sql } from '../src/db/client.js';
import { ExecutionReads, type ExecutionRecord } from '../src/executions/reads.js';
import { pageAfter, sequentialLatencies } from './list.js';
import { RETENTION_DAYS, latencyOf, listDuringPurge, planNodes, type ListLatency, type PlanNode } from './retention.js';
import { insertBulkUsers, insertFinishedExecutions, insertStepsOfEndedExecutions, insertWorkflowsForEveryUser, signUp, type SignedUpUser } from './seed.js';
import { autonodeEnv, elapsedMs, generateSecret, log, median, percentile, startAutonodeServer, withBenchDatabase, type BenchDatabase, type HttpServer } from './support.js';

/** Rows of the big table (BENCH_BIG_ROWS to develop with fewer: the 1,000,000 seed takes minutes on two cores). */
const BIG_ROWS = Number(process.env.BENCH_BIG_ROWS ?? 1_000_000);
/** The share of the big table past its retention, deleted by the purge at the end. */
const EXPIRED_SHARE = 0.4;
/** The reference table: its rows are all the caller's, so a page 500 rows deep exists in it. */
const SMALL_ROWS = 1_000;
/** The caller and 9 others; the caller owns every tenth row of the big table. */
const OTHER_USERS = 9;
const WORKFLOWS_PER_USER = 3;
const PAGE_SIZE = 20;
/** "A cursor page 500 rows deep": the page after following nextCursor 25 times (500 rows). */
const ROWS_DEEP = 500;
const ROUNDS = 9;
const SEQUENTIAL_REQUESTS = 200;
const WARM_UP_REQUESTS = 300;
/** EXPLAIN ANALYZE runs of each list statement on each table: PostgreSQL's own execution time, free of HTTP and of the load generator. */
const EXPLAIN_RUNS = 31;

export const BIG_TABLE_TARGET = 1.3;

export interface PageLatency {
  /** Medians over the rounds of each round's p50 and p99 (sequential requests, one connection). */
  readonly p50Ms: number;
  readonly p99Ms: number;
}

export interface ComparedPage {
  readonly label: string;
  readonly big: PageLatency;
  readonly small: PageLatency;
  /** Big / small, on the p50s: the target is <= 1.3. */
  readonly p50Ratio: number;
  readonly p99Ratio: number;
}

export interface StatementPlan {
  readonly label: string;
  /** Plan node types with their relation and index, custom plan (EXPLAIN ANALYZE with the parameters sent). */
  readonly custom: string[];
  /** The generic plan a prepared statement may settle on (plan_cache_mode = force_generic_plan). */
  readonly generic: string[];
  readonly seqScan: boolean;
  /** Median execution time of the statement (EXPLAIN ANALYZE) on the big and on the small table. */
  readonly bigMs: number;
  readonly smallMs: number;
}

interface ExplainedStatement {
  readonly label: string;
  readonly custom: PlanNode[];
  readonly generic: PlanNode[];
  readonly executionMs: number;
}

export interface BigTablesResults {
  readonly bigRows: number;
  readonly smallRows: number;
  readonly callerRows: number;
  readonly seedSeconds: number;
  readonly pages: ComparedPage[];
  readonly plans: StatementPlan[];
  readonly purge: {
    readonly executions: number;
    readonly steps: number;
    readonly seconds: number;
    readonly rowsPerSecond: number;
    readonly executionsPerSecond: number;
    readonly before: ListLatency;
    readonly during: ListLatency;
    readonly overlap: number;
  };
}

interface Table {
  readonly database: BenchDatabase;
  readonly server: HttpServer;
  readonly caller: SignedUpUser;
  readonly firstPage: string;
  readonly deepPage: string;
}

async function openTable(database: BenchDatabase, seed: (sql: Sql, caller: SignedUpUser) => Promise<void>, body: (table: Table) => Promise<BigTablesResults>): Promise<BigTablesResults> {
  const { sql } = database.client;
  await insertBulkUsers(sql, OTHER_USERS);
  const env = { ...autonodeEnv(database.url, generateSecret()), ENGINE_ENABLED: 'false', RATE_LIMIT_MAX: '10000000' };
  const server = await startAutonodeServer(`autonode-server (${database.name})`, env);
  try {
    const caller = await signUp(server.baseUrl, 'bench-caller@bench.test', 'bench-password-1234');
    await insertWorkflowsForEveryUser(sql, WORKFLOWS_PER_USER);
    await seed(sql, caller);
    const headers = { cookie: caller.cookie };
    const firstPage = `${server.baseUrl}/api/v1/executions?pageSize=${PAGE_SIZE}`;
    const deepPage = await pageAfter(firstPage, headers, ROWS_DEEP / PAGE_SIZE);
    return await body({ database, server, caller, firstPage, deepPage });
  } finally {
    await server.process.stop();
  }
}

const describeNode = (node: PlanNode): string => [node['Node Type'], node['Relation Name'], node['Index Name']].filter(Boolean).join(' ');

/**
 * The list statements exactly as the route sends them (ExecutionReads on a pool that records each
 * statement): the custom plan with its execution time (median of EXPLAIN_RUNS EXPLAIN ANALYZE),
 * and the generic plan a prepared statement may switch to after five runs.
 */
async function explainListStatements(table: Table): Promise<ExplainedStatement[]> {
  const sent: { query: string; parameters: readonly unknown[] }[] = [];
  const client = createDbClient({
    url: table.database.url,
    poolSize: 1,
    idleTimeoutSeconds: 5,
    connectTimeoutSeconds: 10,
    statementTimeoutMs: 0,
    applicationName: 'autonode-bench-explain',
    onQuery: (query, parameters) => sent.push({ query, parameters }),
  });
  try {
    const reads = new ExecutionReads(client.sql);
    const cursor = new URL(table.deepPage).searchParams.get('cursor') ?? undefined;
    const asRecord = (row: ExecutionRecord) => row;
    const explained: ExplainedStatement[] = [];
    for (const [label, params] of [
      ['first page', { pageSize: PAGE_SIZE, sortBy: 'createdAt', sortDirection: 'desc' as const }],
      [`cursor page ${ROWS_DEEP} rows deep`, { pageSize: PAGE_SIZE, sortBy: 'createdAt', sortDirection: 'desc' as const, cursor }],
    ] as const) {
      sent.length = 0;
      await reads.list(table.caller.id, params, asRecord);
      const statement = sent.at(-1);
      if (!statement) throw new Error(`no statement recorded for the ${label}`);
      let custom: PlanNode[] = [];
      const executionMs: number[] = [];
      for (let run = 0; run < EXPLAIN_RUNS; run += 1) {
        const [analyzed] = await client.sql.unsafe<{ 'QUERY PLAN': { Plan: PlanNode; 'Execution Time': number }[] }[]>(
          `explain (analyze, format json) ${statement.query}`,
          statement.parameters as never[],
        );
        custom = planNodes(analyzed?.['QUERY PLAN'][0]?.Plan ?? { 'Node Type': 'none' });
        executionMs.push(analyzed?.['QUERY PLAN'][0]?.['Execution Time'] ?? Number.NaN);
      }
      const generic = await client.sql.begin(async (transaction) => {
        await transaction`set local plan_cache_mode = force_generic_plan`;
        await transaction.unsafe(`prepare bench_list_statement as ${statement.query}`);
        // EXECUTE's arguments as literals: the prepared statement's parameter types apply to them.
        const literals = statement.parameters.map((value) => `'${String(value).replaceAll("'", "''")}'`).join(', ');
        const [plan] = await transaction.unsafe<{ 'QUERY PLAN': { Plan: PlanNode }[] }[]>(`explain (format json) execute bench_list_statement(${literals})`);
        await transaction`deallocate bench_list_statement`;
        return planNodes(plan?.['QUERY PLAN'][0]?.Plan ?? { 'Node Type': 'none' });
      });
      explained.push({ label, custom, generic, executionMs: median(executionMs) });
    }
    return explained;
  } finally {
    await client.close();
  }
}

/** The big table's plans, with each statement's execution time on both tables. */
async function comparePlans(big: Table, small: Table): Promise<StatementPlan[]> {
  const onBig = await explainListStatements(big);
  const onSmall = await explainListStatements(small);
  return onBig.map((statement, index) => ({
    label: statement.label,
    custom: statement.custom.map(describeNode),
    generic: statement.generic.map(describeNode),
    seqScan: [...statement.custom, ...statement.generic].some((node) => node['Node Type'] === 'Seq Scan'),
    bigMs: statement.executionMs,
    smallMs: onSmall[index]?.executionMs ?? Number.NaN,
  }));
}

/** p50 and p99 of each page on each table, in alternating blocks of sequential requests after a warm-up of each. */
async function comparePages(big: Table, small: Table): Promise<ComparedPage[]> {
  const pages = [
    { label: 'first page', url: (table: Table) => table.firstPage },
    { label: `cursor page ${ROWS_DEEP} rows deep`, url: (table: Table) => table.deepPage },
  ];
  const headersOf = (table: Table) => ({ cookie: table.caller.cookie });
  for (const page of pages) {
    for (const table of [big, small]) await sequentialLatencies(page.url(table), headersOf(table), WARM_UP_REQUESTS);
  }
  const blocks = new Map<string, { p50: number[]; p99: number[] }>();
  for (let round = 0; round < ROUNDS; round += 1) {
    // Alternating which table goes first, so neither always follows the other's block.
    const order = round % 2 === 0 ? [big, small] : [small, big];
    for (const page of pages) {
      for (const table of order) {
        const latencies = await sequentialLatencies(page.url(table), headersOf(table), SEQUENTIAL_REQUESTS);
        const key = `${page.label}|${table === big ? 'big' : 'small'}`;
        const block = blocks.get(key) ?? { p50: [], p99: [] };
        block.p50.push(percentile(latencies, 50));
        block.p99.push(percentile(latencies, 99));
        blocks.set(key, block);
      }
    }
    log(
      `big tables round ${round + 1}: ` +
        pages.map((page) => `${page.label} p50 big ${blocks.get(`${page.label}|big`)?.p50.at(-1)?.toFixed(2)} / small ${blocks.get(`${page.label}|small`)?.p50.at(-1)?.toFixed(2)} ms`).join(', '),
    );
  }
  return pages.map((page) => {
    const of = (side: 'big' | 'small'): PageLatency => {
      const block = blocks.get(`${page.label}|${side}`) ?? { p50: [], p99: [] };
      return { p50Ms: median(block.p50), p99Ms: median(block.p99) };
    };
    const bigSide = of('big');
    const smallSide = of('small');
    return { label: page.label, big: bigSide, small: smallSide, p50Ratio: bigSide.p50Ms / smallSide.p50Ms, p99Ratio: bigSide.p99Ms / smallSide.p99Ms };
  });
}

/**
 * Point 4 of the performance issue: the list on a big table. BIG_ROWS executions over 10 users
 * (a share EXPIRED_SHARE past the default retention, with the two steps a one-step run leaves; the
 * list reads no steps, so the recent rows have none) and a reference database of SMALL_ROWS, each
 * behind an Autonode server of its own. The first page and the cursor page ROWS_DEEP rows deep of
 * one user are timed on both, in alternating rounds; the statements' plans are read on the big
 * table; then the retention purge deletes the expired share while the list is under load.
 */
export async function runBigTables(): Promise<BigTablesResults> {
  const expired = Math.round(BIG_ROWS * EXPIRED_SHARE);
  return withBenchDatabase('autonode_bench_bigtables_small', (smallDatabase) =>
    openTable(
      smallDatabase,
      (sql, caller) => insertFinishedExecutions(sql, caller.id, SMALL_ROWS, 0, 1),
      (small) =>
        withBenchDatabase('autonode_bench_bigtables_big', (bigDatabase) => {
          let seedSeconds = 0;
          return openTable(
            bigDatabase,
            async (sql, caller) => {
              const seeding = performance.now();
              // Past the default retention: from 35 days back. Inserted first, as the oldest rows are.
              await insertFinishedExecutions(sql, caller.id, expired, RETENTION_DAYS + 5);
              await insertFinishedExecutions(sql, caller.id, BIG_ROWS - expired);
              const afterExecutions = elapsedMs(seeding) / 1000;
              await insertStepsOfEndedExecutions(sql, RETENTION_DAYS);
              seedSeconds = elapsedMs(seeding) / 1000;
              log(`big table: seeded ${BIG_ROWS} executions in ${afterExecutions.toFixed(1)} s, their steps (expired share) by ${seedSeconds.toFixed(1)} s`);
            },
            async (big) => {
              const { sql } = big.database.client;
              const [counts] = await sql<{ executions: number; caller: number; expired: number; expiredSteps: number }[]>`
                select count(*)::int as executions, count(*) filter (where user_id = ${big.caller.id})::int as caller,
                       count(*) filter (where finished_at < now() - make_interval(days => ${RETENTION_DAYS}))::int as expired,
                       coalesce(sum(step_count) filter (where finished_at < now() - make_interval(days => ${RETENTION_DAYS})), 0)::int as "expiredSteps"
                  from executions`;
              if (counts?.executions !== BIG_ROWS || counts.expired !== expired) throw new Error(`seeded ${counts?.executions} executions (${counts?.expired} expired), expected ${BIG_ROWS} (${expired})`);

              const plans = await comparePlans(big, small);
              for (const plan of plans) {
                log(`plan of the ${plan.label} (${plan.bigMs.toFixed(3)} ms, small table ${plan.smallMs.toFixed(3)} ms): ${plan.custom.join(' > ')}; generic: ${plan.generic.join(' > ')}`);
                if (plan.seqScan) log(`WARNING: sequential scan in the ${plan.label}`);
              }
              const pages = await comparePages(big, small);

              const during = await listDuringPurge(sql, big.firstPage, { cookie: big.caller.cookie });
              if (!during.purge.finished || during.purge.executions !== expired) {
                throw new Error(`the purge deleted ${during.purge.executions} executions (finished: ${during.purge.finished}), expected ${expired}`);
              }
              return {
                bigRows: BIG_ROWS,
                smallRows: SMALL_ROWS,
                callerRows: counts.caller,
                seedSeconds,
                pages,
                plans,
                purge: {
                  executions: during.purge.executions,
                  steps: counts.expiredSteps,
                  seconds: during.purgeSeconds,
                  rowsPerSecond: (during.purge.executions + counts.expiredSteps) / during.purgeSeconds,
                  executionsPerSecond: during.purge.executions / during.purgeSeconds,
                  before: latencyOf(during.before),
                  during: latencyOf(during.during),
                  overlap: during.overlap,
                },
              };
            },
          );
        }),
    ),
  );
}

/** The section of the report for this benchmark (report.ts renders the others' rows). */
export function renderBigTables(results: BigTablesResults): string {
  const whole = (value: number) => Math.round(value).toLocaleString('en-US');
  const ms = (value: number) => value.toFixed(2);
  const lines = [
    `## 9. Big tables: ${whole(results.bigRows)} executions over 10 users vs ${whole(results.smallRows)} (one user's pages)`,
    '',
    `Seeded in ${results.seedSeconds.toFixed(0)} s (SQL, bench/seed.ts); the caller owns ${whole(results.callerRows)} rows of the big table, all ${whole(results.smallRows)} of the small one.`,
    '',
    '| Page | p50 ms big / small | Ratio | Target | p99 ms big / small | Ratio |',
    '| --- | ---: | ---: | --- | ---: | ---: |',
    ...results.pages.map(
      (page) =>
        `| ${page.label} | ${ms(page.big.p50Ms)} / ${ms(page.small.p50Ms)} | ${page.p50Ratio.toFixed(2)} | <= ${BIG_TABLE_TARGET.toFixed(2)}: ${page.p50Ratio <= BIG_TABLE_TARGET ? 'met' : 'MISSED'} | ${ms(page.big.p99Ms)} / ${ms(page.small.p99Ms)} | ${page.p99Ratio.toFixed(2)} |`,
    ),
    '',
    ...results.plans.map(
      (plan) =>
        `- ${plan.label}: the statement runs in ${plan.bigMs.toFixed(3)} ms against ${plan.smallMs.toFixed(3)} (${(plan.bigMs / plan.smallMs).toFixed(2)}x; EXPLAIN ANALYZE, median of ${EXPLAIN_RUNS}); ` +
        `plan ${plan.custom.join(' > ')} (generic: ${plan.generic.join(' > ')})${plan.seqScan ? ' **sequential scan**' : ''}`,
    ),
    `- Purge of ${whole(results.purge.executions)} expired executions and ${whole(results.purge.steps)} steps: ${results.purge.seconds.toFixed(1)} s, ` +
      `${whole(results.purge.rowsPerSecond)} rows/s (${whole(results.purge.executionsPerSecond)} executions/s).`,
    `- List (first page, 10 connections) during the purge vs before: p50 ${results.purge.during.p50Ms} / ${results.purge.before.p50Ms} ms, ` +
      `p99 ${results.purge.during.p99Ms} / ${results.purge.before.p99Ms} ms, ${whole(results.purge.during.okPerSecond)} / ${whole(results.purge.before.okPerSecond)} req/s ` +
      `(the purge ran for ${Math.round(results.purge.overlap * 100)}% of the load run).`,
  ];
  return lines.join('\n');
}
