/**
 * `npm run bench`: the performance suite (not part of `npm test`). Each benchmark works in a
 * database of its own on the local PostgreSQL (BENCH_DATABASE_URL, else DATABASE_URL, else
 * postgres://postgres@127.0.0.1:5432/postgres is the admin connection), dropped at the end.
 *
 *   npm run bench                          all of it, table in bench/results/latest.md (a subset or a
 *                                          run with a failed benchmark writes results/partial.md)
 *   BENCH_ONLY=list,engine npm run bench   some of it (list = list + depth; engine; signin; expressions;
 *                                          scheduler; caller-cache; retention; bigtables; streams; replicas; startup; latency)
 *   BENCH_CPU_PROFILE=1 BENCH_ONLY=list npm run bench
 *                                          the Autonode server under --cpu-prof (profiles in
 *                                          bench/results/profiles/, table in results/profiled.md)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { renderBigTables, runBigTables, type BigTablesResults } from './big-tables.js';
import { renderEngineReferences, runEngine, type EngineResults } from './engine.js';
import { runCallerCache, type CallerCacheResults } from './caller-cache.js';
import { runExpressions, type ExpressionResults } from './expressions.js';
import { renderLatency, runLatency, type LatencyResults } from './latency.js';
import { runListAndDepth, type ListAndDepthResults } from './list.js';
import { BUSY_MACHINE, renderReport } from './report.js';
import { runRetention, type RetentionResults } from './retention.js';
import { runScheduler, type SchedulerResults } from './scheduler.js';
import { renderReplicas, runReplicas, type ReplicasResults } from './replicas.js';
import { runSignIn, type SignInResults } from './signin.js';
import { renderStartup, runStartup, type StartupResults } from './startup.js';
import { renderStreams, runStreams, type StreamsResults } from './streams.js';
import { benchRoot, closeAdmin, cpuBusyFraction, installSignalHandlers, isAborting, lockBenchRun, log, postgresVersion } from './support.js';

const BENCHMARKS = ['list', 'engine', 'signin', 'expressions', 'scheduler', 'caller-cache', 'retention', 'bigtables', 'streams', 'replicas', 'startup', 'latency'] as const;
type Benchmark = (typeof BENCHMARKS)[number];

/** `--only=a,b` or BENCH_ONLY=a,b (from the root, npm would take `--only` as its own option). */
function selectedBenchmarks(argv: readonly string[]): Set<Benchmark> {
  const only = argv.find((argument) => argument.startsWith('--only='))?.slice('--only='.length) ?? process.env.BENCH_ONLY;
  if (!only) return new Set(BENCHMARKS);
  const names = only.split(',').filter(Boolean);
  const unknown = names.filter((name) => !(BENCHMARKS as readonly string[]).includes(name));
  if (unknown.length > 0) throw new Error(`unknown benchmark(s) ${unknown.join(', ')}; choose from ${BENCHMARKS.join(', ')}`);
  return new Set(BENCHMARKS.filter((name) => names.includes(name)));
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const started = performance.now();
  const cpuBusyBeforeStart = await cpuBusyFraction(2_000);
  if (cpuBusyBeforeStart !== undefined && cpuBusyBeforeStart > BUSY_MACHINE) {
    log(`WARNING: the machine is busy (${(cpuBusyBeforeStart * 100).toFixed(0)}% CPU before the start): expect skewed, noisy figures`);
  }
  installSignalHandlers(closeAdmin);
  const selected = selectedBenchmarks(process.argv.slice(2));
  const profiled = process.env.BENCH_CPU_PROFILE === '1';
  const resultsDir = path.join(benchRoot, 'results');
  const profileDir = path.join(resultsDir, 'profiles');
  if (profiled) await mkdir(profileDir, { recursive: true });

  const failures: string[] = [];
  /** One benchmark failing must not hide the others' results. */
  async function attempt<T>(name: string, run: () => Promise<T>): Promise<T | undefined> {
    log(`${name}: starting`);
    const benchmarkStarted = performance.now();
    try {
      const result = await run();
      log(`${name}: done in ${((performance.now() - benchmarkStarted) / 1000).toFixed(0)} s`);
      return result;
    } catch (error) {
      // Ctrl-C: the signal handler is cleaning up and exiting; these are its echoes, not results.
      if (isAborting()) return undefined;
      const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
      log(`${name} FAILED: ${message}`);
      failures.push(`${name}: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
      return undefined;
    }
  }

  let listAndDepth: ListAndDepthResults | undefined;
  let engine: EngineResults | undefined;
  let signIn: SignInResults | undefined;
  let expressions: ExpressionResults | undefined;
  let scheduler: SchedulerResults | undefined;
  let callerCache: CallerCacheResults | undefined;
  let retention: RetentionResults | undefined;
  let bigTables: BigTablesResults | undefined;
  let streams: StreamsResults | undefined;
  let replicas: ReplicasResults | undefined;
  let startup: StartupResults | undefined;
  let latency: LatencyResults | undefined;
  let pgVersion = '?';
  try {
    await lockBenchRun();
    pgVersion = await postgresVersion();
    if (selected.has('list') && !isAborting()) {
      listAndDepth = await attempt('list + depth', () => runListAndDepth(profiled ? { profileDir } : {}));
    }
    if (selected.has('engine') && !isAborting()) engine = await attempt('engine', runEngine);
    if (selected.has('signin') && !isAborting()) signIn = await attempt('sign-in', runSignIn);
    if (selected.has('expressions') && !isAborting()) expressions = await attempt('expressions', runExpressions);
    if (selected.has('scheduler') && !isAborting()) scheduler = await attempt('scheduler', runScheduler);
    if (selected.has('caller-cache') && !isAborting()) callerCache = await attempt('caller cache', runCallerCache);
    if (selected.has('retention') && !isAborting()) retention = await attempt('retention', runRetention);
    if (selected.has('bigtables') && !isAborting()) bigTables = await attempt('big tables', runBigTables);
    if (selected.has('streams') && !isAborting()) streams = await attempt('streams', runStreams);
    if (selected.has('replicas') && !isAborting()) replicas = await attempt('replicas', runReplicas);
    if (selected.has('startup') && !isAborting()) startup = await attempt('startup', runStartup);
    if (selected.has('latency') && !isAborting()) latency = await attempt('latency', runLatency);
    const failedChecks = replicas?.checks.filter((check) => !check.passed) ?? [];
    if (failedChecks.length > 0) failures.push(`replicas: FAIL ${failedChecks.map((check) => check.name).join('; ')}`);
  } finally {
    await closeAdmin();
  }

  const suiteReport = renderReport({
    startedAt,
    durationMs: performance.now() - started,
    nodeVersion: process.version,
    cpuCores: os.cpus().length,
    postgresVersion: pgVersion,
    cpuBusyBeforeStart,
    ...(listAndDepth ? { listAndDepth } : {}),
    ...(engine ? { engine } : {}),
    ...(signIn ? { signIn } : {}),
    ...(expressions ? { expressions } : {}),
    ...(scheduler ? { scheduler } : {}),
    ...(callerCache ? { callerCache } : {}),
    ...(retention ? { retention } : {}),
    failures,
    profiled,
  });
  const sections = [suiteReport, ...(bigTables ? [renderBigTables(bigTables)] : []), ...(streams ? [renderStreams(streams)] : []), ...(replicas ? [renderReplicas(replicas)] : []), ...(startup ? [renderStartup(startup)] : []), ...(engine ? [renderEngineReferences(engine)] : []), ...(latency ? [renderLatency(latency)] : [])];
  const report = sections.join('\n\n');
  await mkdir(resultsDir, { recursive: true });
  // Only a complete, unprofiled run replaces latest.md: a profiled one is slower by design, and a
  // partial or failed one must not overwrite the last full set of figures.
  const complete = failures.length === 0 && selected.size === BENCHMARKS.length;
  const reportFile = path.join(resultsDir, profiled ? 'profiled.md' : complete ? 'latest.md' : 'partial.md');
  await writeFile(reportFile, report);
  process.stdout.write(`\n${report}\n(written to ${path.relative(process.cwd(), reportFile)})\n`);
  return failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    void closeAdmin().finally(() => process.exit(1));
  },
);
