import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { performance } from 'node:perf_hooks';
import { insertBulkUsers, insertFinishedExecutions, insertWorkflowsForEveryUser, createApiKey, signUp, type SignedUpUser } from './seed.js';
import {
  CountedLoad,
  assertStillServing,
  autonodeEnv,
  benchRoot,
  elapsedMs,
  generateSecret,
  log,
  median,
  percentile,
  startAutonodeServer,
  startHttpServer,
  withBenchDatabase,
  type HttpServer,
  type LoadResult,
} from './support.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';

const TOTAL_EXECUTIONS = 200_000;
/** The caller plus 99 others: every tenth execution is the caller's (20k). */
const OTHER_USERS = 99;
const WORKFLOWS_PER_USER = 3;
const PAIRS = 3;
const LOAD_SECONDS = 8;
const CONNECTIONS = 50;
/**
 * Warm-up of each side of each variant before anything is counted. Long enough for the steady
 * state: after 5 s Autonode's CPU per request was still falling from pair to pair (its JIT and
 * young generation were still settling), which measured start-up rather than the routes.
 */
export const WARM_UP_SECONDS = 10;
const PAGES_TO_WALK = 500;
const SEQUENTIAL_REQUESTS = 200;

export interface Side {
  readonly okPerSecond: number;
  readonly p99Ms: number;
  /**
   * Server CPU time per request (ms, user + system, from /proc): what the layers cost, independent
   * of what else the machine was doing (PostgreSQL and the load generator share its cores).
   */
  readonly cpuMsPerRequest: number | undefined;
  readonly failures: number;
  readonly peakRssMiB: number | undefined;
}

export interface ComparedRoute {
  readonly label: string;
  /** Whether the target (authenticated list >= 0.80 of the baseline) applies; the single item is reported only. */
  readonly targeted: boolean;
  readonly autonode: Side;
  readonly baseline: Side;
  /** Autonode / baseline, on the medians of req/s. */
  readonly throughputRatio: number;
}

export interface DepthResult {
  readonly firstPageP50Ms: number;
  readonly deepPageP50Ms: number;
  /** Deep page p50 / first page p50. */
  readonly ratio: number;
  readonly pagesWalked: number;
}

export interface ListAndDepthResults {
  readonly routes: ComparedRoute[];
  readonly depth: DepthResult;
  /** Differences between Autonode's and the baseline's answers (the same data should give the same JSON). */
  readonly mismatches: string[];
}

interface Target {
  readonly path: string;
  readonly headers: Record<string, string>;
}

interface Variant {
  readonly label: string;
  readonly targeted: boolean;
  readonly autonode: Target;
  readonly baseline: Target;
}

function loadOn(server: HttpServer, target: Target): CountedLoad {
  return new CountedLoad({ url: `${server.baseUrl}${target.path}`, headers: target.headers, connections: CONNECTIONS }, LOAD_SECONDS);
}

interface MeasuredRun extends LoadResult {
  readonly cpuMsPerRequest: number | undefined;
}

/** One counted run, with the server's CPU time over it. */
async function measuredRun(load: CountedLoad, server: HttpServer): Promise<MeasuredRun> {
  const cpuBefore = server.process.cpuMs();
  const result = await load.run();
  const cpuAfter = server.process.cpuMs();
  const cpuMsPerRequest = cpuBefore !== undefined && cpuAfter !== undefined && result.requests > 0 ? (cpuAfter - cpuBefore) / result.requests : undefined;
  return { ...result, cpuMsPerRequest };
}

function summarise(runs: readonly MeasuredRun[], server: HttpServer): Side {
  const cpu = runs.flatMap((run) => (run.cpuMsPerRequest === undefined ? [] : [run.cpuMsPerRequest]));
  return {
    okPerSecond: median(runs.map((run) => run.okPerSecond)),
    p99Ms: median(runs.map((run) => run.p99Ms)),
    cpuMsPerRequest: cpu.length > 0 ? median(cpu) : undefined,
    failures: runs.reduce((sum, run) => sum + run.failures, 0),
    peakRssMiB: server.process.peakRssMiB(),
  };
}

export async function getJson(url: string, headers: Record<string, string>): Promise<unknown> {
  const response = await fetch(url, { headers });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET ${url} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

/** A short description of the first difference between two JSON values, or undefined when equal. */
function firstDifference(left: unknown, right: unknown, at = '$'): string | undefined {
  if (typeof left !== 'object' || left === null || typeof right !== 'object' || right === null) {
    return Object.is(left, right) ? undefined : `${at}: ${JSON.stringify(left)} vs ${JSON.stringify(right)}`;
  }
  const leftEntries = Object.entries(left);
  const rightRecord = new Map(Object.entries(right));
  if (leftEntries.length !== rightRecord.size) return `${at}: keys ${Object.keys(left).join(',')} vs ${[...rightRecord.keys()].join(',')}`;
  for (const [key, value] of leftEntries) {
    if (!rightRecord.has(key)) return `${at}.${key}: missing on the right`;
    const difference = firstDifference(value, rightRecord.get(key), `${at}.${key}`);
    if (difference) return difference;
  }
  return undefined;
}

async function compareAnswers(variant: Variant, autonode: HttpServer, baseline: HttpServer): Promise<string | undefined> {
  const [ours, theirs] = await Promise.all([
    getJson(`${autonode.baseUrl}${variant.autonode.path}`, variant.autonode.headers),
    getJson(`${baseline.baseUrl}${variant.baseline.path}`, variant.baseline.headers),
  ]);
  const difference = firstDifference(ours, theirs);
  return difference ? `${variant.label}: ${difference}` : undefined;
}

export function nextCursorOf(page: unknown): string | null {
  if (typeof page !== 'object' || page === null || !('nextCursor' in page)) throw new Error('a list page without nextCursor');
  const { nextCursor } = page;
  if (nextCursor !== null && typeof nextCursor !== 'string') throw new Error('nextCursor is neither a string nor null');
  return nextCursor;
}

function firstItemId(page: unknown): string {
  if (typeof page === 'object' && page !== null && 'items' in page && Array.isArray(page.items)) {
    const [item]: unknown[] = page.items;
    if (typeof item === 'object' && item !== null && 'id' in item && typeof item.id === 'string') return item.id;
  }
  throw new Error('the first list page has no item');
}

/** Latency of `count` requests sent one after another (one connection, kept alive). */
export async function sequentialLatencies(url: string, headers: Record<string, string>, count: number): Promise<number[]> {
  const latencies: number[] = [];
  for (let index = 0; index < count; index += 1) {
    const started = performance.now();
    const response = await fetch(url, { headers });
    await response.arrayBuffer();
    latencies.push(elapsedMs(started));
    if (response.status !== 200) throw new Error(`GET ${url} answered ${response.status}`);
  }
  return latencies;
}

/** The URL of the page reached by following nextCursor `pages` times from `firstPage` (the list contract's cursor paging). */
export async function pageAfter(firstPage: string, headers: Record<string, string>, pages: number): Promise<string> {
  let cursor: string | null = null;
  for (let page = 0; page < pages; page += 1) {
    const url: string = cursor === null ? firstPage : `${firstPage}&cursor=${encodeURIComponent(cursor)}`;
    cursor = nextCursorOf(await getJson(url, headers));
    if (cursor === null) throw new Error(`the list ended after ${page + 1} pages; expected more than ${pages}`);
  }
  return `${firstPage}&cursor=${encodeURIComponent(cursor ?? '')}`;
}

/**
 * The cost of depth with keyset paging: walk 500 pages by nextCursor, then time the page reached
 * against the first page, in alternating blocks of sequential requests (no concurrency: this is
 * about the query plan, not throughput).
 */
async function measureDepth(autonode: HttpServer, caller: SignedUpUser): Promise<DepthResult> {
  const firstPage = `${autonode.baseUrl}/api/v1/executions?pageSize=20`;
  const headers = { cookie: caller.cookie };
  const deepPage = await pageAfter(firstPage, headers, PAGES_TO_WALK);
  const firstP50s: number[] = [];
  const deepP50s: number[] = [];
  for (let pair = 0; pair < PAIRS; pair += 1) {
    firstP50s.push(percentile(await sequentialLatencies(firstPage, headers, SEQUENTIAL_REQUESTS), 50));
    deepP50s.push(percentile(await sequentialLatencies(deepPage, headers, SEQUENTIAL_REQUESTS), 50));
    log(`depth pair ${pair + 1}: first page p50 ${firstP50s.at(-1)?.toFixed(2)} ms, page ${PAGES_TO_WALK + 1} p50 ${deepP50s.at(-1)?.toFixed(2)} ms`);
  }
  const firstPageP50Ms = median(firstP50s);
  const deepPageP50Ms = median(deepP50s);
  return { firstPageP50Ms, deepPageP50Ms, ratio: deepPageP50Ms / firstPageP50Ms, pagesWalked: PAGES_TO_WALK };
}

export interface ListOptions {
  /**
   * Profile the Autonode server: each variant then runs on a server of its own started with
   * --cpu-prof, so each profile holds one route's load (after start-up and a warm-up).
   */
  readonly profileDir?: string;
}

/**
 * Memory experiments on the list benchmark (bench/README.md, "Memory"): BENCH_SERVER_NODE_FLAGS adds
 * Node flags to the Autonode server after `npm start`'s (a later V8 flag wins, so
 * `--max-semi-space-size=16` replaces the start script's 64; `=0` restores V8's default), and
 * BENCH_MEMORY_SAMPLER=1 preloads bench/memory-sampler.mjs into both servers and logs what their
 * RSS was made of at its peak.
 */
const extraServerFlags = (process.env.BENCH_SERVER_NODE_FLAGS ?? '').split(' ').filter(Boolean);
const samplerFlags = process.env.BENCH_MEMORY_SAMPLER === '1' ? [`--import=${pathToFileURL(path.join(benchRoot, 'memory-sampler.mjs')).href}`] : [];

function logMemorySample(server: HttpServer): void {
  const line = server.process.output().split('\n').findLast((text) => text.startsWith('[memory-sampler] '));
  if (line) log(`${server.process.name}: ${line}`);
}

const slugOf = (label: string) => label.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');

/**
 * Benchmarks 1 and 2 on one seeded database (seeding 200k rows is the slow part, and both only
 * read): authenticated list/item routes against the baseline, then the depth of keyset paging.
 */
export async function runListAndDepth(options: ListOptions = {}): Promise<ListAndDepthResults> {
  return withBenchDatabase('autonode_bench_executions', async (database) => {
    const sql = database.client.sql;
    const seeding = performance.now();
    await insertBulkUsers(sql, OTHER_USERS);

    // One caller sends everything: the per-user limit (RATE_LIMIT_MAX, 1,200 a minute by default)
    // is a policy, not a capacity, so it is raised out of reach; the limiter itself still runs.
    const env = { ...autonodeEnv(database.url, generateSecret()), ENGINE_ENABLED: 'false', RATE_LIMIT_MAX: '10000000' };
    if (extraServerFlags.length > 0) log(`Autonode server with the extra Node flags ${extraServerFlags.join(' ')}`);
    const autonode = await startAutonodeServer('autonode-server', env, [...extraServerFlags, ...samplerFlags]);
    let baseline: HttpServer | undefined;
    try {
      const caller = await signUp(autonode.baseUrl, 'bench-caller@bench.test', 'bench-password-1234');
      const apiKey = await createApiKey(autonode.baseUrl, caller.cookie);
      await insertWorkflowsForEveryUser(sql, WORKFLOWS_PER_USER);
      await insertFinishedExecutions(sql, caller.id, TOTAL_EXECUTIONS);
      const [counts] = await sql<{ total: number; mine: number }[]>`
        select count(*)::int as total, count(*) filter (where user_id = ${caller.id})::int as mine from executions`;
      log(`seeded ${counts?.total} executions (${counts?.mine} of the caller) in ${(elapsedMs(seeding) / 1000).toFixed(1)} s`);

      baseline = await startHttpServer('baseline-server', 'bench/baseline-server.ts', {
        DATABASE_URL: database.url,
        BASELINE_USER_ID: caller.id,
        DB_POOL_SIZE: '10',
        NODE_ENV: 'production',
        SECRETS_KEYS: generateKeyEntry('bench'),
      }, samplerFlags);

      const listPath = '/api/v1/executions?pageSize=20';
      const newestId = firstItemId(await getJson(`${autonode.baseUrl}${listPath}`, { cookie: caller.cookie }));
      const variants: Variant[] = [
        { label: 'List, session cookie', targeted: true, autonode: { path: listPath, headers: { cookie: caller.cookie } }, baseline: { path: listPath, headers: {} } },
        { label: 'List, API key (Bearer)', targeted: true, autonode: { path: listPath, headers: { authorization: `Bearer ${apiKey}` } }, baseline: { path: listPath, headers: {} } },
        {
          label: 'Single item, session cookie',
          targeted: false,
          autonode: { path: `/api/v1/executions/${newestId}`, headers: { cookie: caller.cookie } },
          baseline: { path: `/api/v1/executions/${newestId}`, headers: {} },
        },
      ];

      const mismatches: string[] = [];
      for (const variant of variants) {
        const difference = await compareAnswers(variant, autonode, baseline);
        if (difference) mismatches.push(difference);
      }
      for (const mismatch of mismatches) log(`WARNING: answers differ: ${mismatch}`);

      const routes: ComparedRoute[] = [];
      for (const variant of variants) {
        const profileDir = options.profileDir ? path.join(options.profileDir, slugOf(variant.label)) : undefined;
        const server = profileDir ? await startAutonodeServer('autonode-server (profiled)', env, [...extraServerFlags, '--cpu-prof', `--cpu-prof-dir=${profileDir}`]) : autonode;
        try {
          routes.push(await compareRoute(variant, server, baseline, caller));
        } finally {
          if (server !== autonode) {
            // SIGTERM: the server exits normally, which is when Node writes the profile.
            await server.process.stop(15_000);
            log(`${variant.label}: CPU profiles in ${profileDir} (the main thread's is CPU.*.0.001.cpuprofile)`);
          }
        }
      }

      const depth = await measureDepth(autonode, caller);
      return { routes, depth, mismatches };
    } finally {
      await Promise.all([autonode.process.stop(), baseline?.process.stop()]);
      for (const server of [autonode, baseline]) if (server) logMemorySample(server);
    }
  });
}

/** Alternates Autonode and baseline runs of one variant, after a warm-up of each. */
async function compareRoute(variant: Variant, autonode: HttpServer, baseline: HttpServer, caller: SignedUpUser): Promise<ComparedRoute> {
  const stillServing = () => assertStillServing('Autonode', `${autonode.baseUrl}/api/v1/me`, { cookie: caller.cookie });
  const autonodeLoad = loadOn(autonode, variant.autonode);
  const baselineLoad = loadOn(baseline, variant.baseline);
  await autonodeLoad.warmUp(WARM_UP_SECONDS);
  await stillServing();
  await baselineLoad.warmUp(WARM_UP_SECONDS);
  const autonodeRuns: MeasuredRun[] = [];
  const baselineRuns: MeasuredRun[] = [];
  const cpuText = (run: MeasuredRun) => (run.cpuMsPerRequest === undefined ? '' : `, ${run.cpuMsPerRequest.toFixed(3)} ms CPU/req`);
  for (let pair = 0; pair < PAIRS; pair += 1) {
    const ours = await measuredRun(autonodeLoad, autonode);
    autonodeRuns.push(ours);
    await stillServing();
    const theirs = await measuredRun(baselineLoad, baseline);
    baselineRuns.push(theirs);
    log(
      `${variant.label} pair ${pair + 1}: Autonode ${ours.okPerSecond.toFixed(0)} req/s p99 ${ours.p99Ms} ms${cpuText(ours)} (${ours.seconds.toFixed(1)} s)` +
        ` | baseline ${theirs.okPerSecond.toFixed(0)} req/s p99 ${theirs.p99Ms} ms${cpuText(theirs)} (${theirs.seconds.toFixed(1)} s)`,
    );
    for (const [side, run] of [['Autonode', ours], ['baseline', theirs]] as const) {
      if (run.failures > 0) log(`WARNING: ${variant.label}, ${side}: ${run.failures} failures (${run.failureDetail})`);
    }
  }
  const ours = summarise(autonodeRuns, autonode);
  const theirs = summarise(baselineRuns, baseline);
  return { label: variant.label, targeted: variant.targeted, autonode: ours, baseline: theirs, throughputRatio: ours.okPerSecond / theirs.okPerSecond };
}
