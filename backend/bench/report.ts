import type { EngineResults } from './engine.js';
import type { CallerCacheResults } from './caller-cache.js';
import type { ExpressionResults } from './expressions.js';
import { WARM_UP_SECONDS, type ListAndDepthResults } from './list.js';
import type { RetentionResults } from './retention.js';
import type { SchedulerResults } from './scheduler.js';
import type { SignInResults } from './signin.js';
import { startScriptNodeFlags } from './support.js';

export interface SuiteResults {
  readonly startedAt: Date;
  readonly durationMs: number;
  readonly nodeVersion: string;
  readonly cpuCores: number;
  readonly postgresVersion: string;
  /** Share of all CPUs in use in the 2 s before the start (other work on the machine skews every figure). */
  readonly cpuBusyBeforeStart: number | undefined;
  readonly listAndDepth?: ListAndDepthResults;
  readonly engine?: EngineResults;
  readonly signIn?: SignInResults;
  readonly expressions?: ExpressionResults;
  readonly scheduler?: SchedulerResults;
  readonly callerCache?: CallerCacheResults;
  readonly retention?: RetentionResults;
  /** Benchmarks that failed, with the reason: the table says so rather than leaving rows out silently. */
  readonly failures: readonly string[];
  readonly profiled: boolean;
}

const LIST_TARGET = 0.8;
const DEPTH_TARGET = 1.3;
const ENGINE_TARGET = 1.0;
/** Above this share of CPU in use before the start, other work is running: the report says so. */
export const BUSY_MACHINE = 0.2;

const whole = (value: number) => Math.round(value).toLocaleString('en-US');
const oneDecimal = (value: number) => value.toFixed(1);
const ratio = (value: number) => value.toFixed(2);
const mib = (value: number | undefined) => (value === undefined ? '?' : whole(value));
const percent = (fraction: number) => `${Math.round(fraction * 100)}%`;
const verdict = (met: boolean) => (met ? 'met' : 'MISSED');

function duration(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

type Row = readonly [benchmark: string, metric: string, autonode: string, reference: string, ratio: string, target: string, rss: string];

export function renderReport(results: SuiteResults): string {
  const rows: Row[] = [];
  const { listAndDepth, engine, signIn, expressions, scheduler, callerCache, retention } = results;

  if (listAndDepth) {
    for (const route of listAndDepth.routes) {
      const rss = `${mib(route.autonode.peakRssMiB)} / ${mib(route.baseline.peakRssMiB)}`;
      rows.push([`1. ${route.label}`, 'req/s', whole(route.autonode.okPerSecond), whole(route.baseline.okPerSecond), ratio(route.throughputRatio), route.targeted ? `>= ${LIST_TARGET.toFixed(2)}: ${verdict(route.throughputRatio >= LIST_TARGET)}` : 'report only', rss]);
      rows.push([`1. ${route.label}`, 'p99 ms', whole(route.autonode.p99Ms), whole(route.baseline.p99Ms), ratio(route.autonode.p99Ms / route.baseline.p99Ms), '', '']);
      const ours = route.autonode.cpuMsPerRequest;
      const theirs = route.baseline.cpuMsPerRequest;
      if (ours !== undefined && theirs !== undefined) {
        rows.push([`1. ${route.label}`, 'server CPU ms/req', ours.toFixed(3), theirs.toFixed(3), ratio(ours / theirs), '', '']);
      }
    }
    const { depth } = listAndDepth;
    rows.push([
      `2. Depth: page ${depth.pagesWalked + 1} vs page 1`,
      'p50 ms',
      oneDecimal(depth.deepPageP50Ms),
      oneDecimal(depth.firstPageP50Ms),
      ratio(depth.ratio),
      `<= ${DEPTH_TARGET.toFixed(2)}: ${verdict(depth.ratio <= DEPTH_TARGET)}`,
      '',
    ]);
  }

  if (engine) {
    const label = `3. Engine: ${whole(engine.runs)} runs, concurrency ${engine.concurrency}`;
    rows.push([label, 'completed/s', whole(engine.autonode.perSecond), whole(engine.pgBoss.perSecond), ratio(engine.ratio), `>= ${ENGINE_TARGET.toFixed(2)}: ${verdict(engine.ratio >= ENGINE_TARGET)}`, `${mib(engine.autonode.peakRssMiB)} / ${mib(engine.pgBoss.peakRssMiB)}`]);
    rows.push([label, 'ms to first completion', whole(engine.autonode.firstCompletionMs), whole(engine.pgBoss.firstCompletionMs), '', '', '']);
    rows.push([label, 'completed/s after the first', whole(engine.autonode.steadyPerSecond), whole(engine.pgBoss.steadyPerSecond), ratio(engine.autonode.steadyPerSecond / engine.pgBoss.steadyPerSecond), '', '']);
  }

  if (signIn) {
    rows.push(['4. Sign-in, 10 clients', 'sign-ins/s', oneDecimal(signIn.okPerSecond), '', '', 'report only', mib(signIn.peakRssMiB)]);
    rows.push(['4. Sign-in, 10 clients', 'p99 ms', whole(signIn.p99Ms), '', '', '', '']);
  }

  if (expressions) {
    const micro = (value: number) => value.toFixed(0);
    for (const [what, sides] of [['transform', expressions.transform], ['http.request params, 6 templates', expressions.templates]] as const) {
      const label = `5. Expressions: ${what}, worker pool vs inline`;
      rows.push([label, 'µs per evaluation, one at a time', micro(sides.pool.sequentialUs), micro(sides.inline.sequentialUs), ratio(sides.pool.sequentialUs / sides.inline.sequentialUs), 'report only', '']);
      rows.push([label, `µs per evaluation, ${expressions.inFlight} in flight`, micro(sides.pool.concurrentUs), micro(sides.inline.concurrentUs), ratio(sides.pool.concurrentUs / sides.inline.concurrentUs), '', '']);
      rows.push([label, 'main-process CPU µs per evaluation', micro(sides.pool.mainCpuUs), micro(sides.inline.mainCpuUs), ratio(sides.pool.mainCpuUs / sides.inline.mainCpuUs), '', '']);
    }
  }

  if (scheduler) {
    const label = `6. Scheduler: ${whole(scheduler.jobs)} every-minute jobs of ${scheduler.users} users due at once`;
    rows.push([label, 'jobs fired per second', whole(scheduler.jobsPerSecond), '', '', 'report only', '']);
    rows.push([label, 'ms until the last job fired', whole(scheduler.lastJobAfterMs), '', '', 'a few seconds', '']);
    rows.push([label, "ms until every user's first job fired", whole(scheduler.everyUserServedAfterMs), '', '', '', '']);
  }
  if (callerCache) {
    const label = `7. Caller cache: ${whole(callerCache.credentials)} credentials used once, budget ${mib(callerCache.maxBytes / 2 ** 20)} MiB`;
    rows.push([label, 'MiB counted against the budget', callerCache.countedMiB.toFixed(1), '', '', '', '']);
    rows.push([label, 'MiB of heap held, full', callerCache.heapMiB.toFixed(1), '', '', '', '']);
    rows.push([label, 'MiB of heap held a TTL after the last use', callerCache.heapAfterSweepMiB.toFixed(1), '', '', '0', '']);
  }

  if (retention) {
    const purge = `8. Retention: purge of ${whole(retention.expired)} expired executions (${whole(retention.steps)} steps)`;
    rows.push([purge, 'executions deleted per second', whole(retention.executionsPerSecond), '', '', 'report only', '']);
    rows.push([purge, 'rows deleted per second, steps included', whole(retention.rowsPerSecond), '', '', '', '']);
    rows.push([purge, 's for the whole backlog', oneDecimal(retention.purgeSeconds), '', '', '', '']);
    const list = '8. Retention: list (first page) during the purge vs before';
    rows.push([list, 'p50 ms', oneDecimal(retention.during.p50Ms), oneDecimal(retention.before.p50Ms), ratio(retention.during.p50Ms / retention.before.p50Ms), 'report only', '']);
    rows.push([list, 'p99 ms', oneDecimal(retention.during.p99Ms), oneDecimal(retention.before.p99Ms), ratio(retention.during.p99Ms / retention.before.p99Ms), '', '']);
    rows.push([list, 'req/s', whole(retention.during.okPerSecond), whole(retention.before.okPerSecond), ratio(retention.during.okPerSecond / retention.before.okPerSecond), '', '']);
  }

  const header: Row = ['Benchmark', 'Metric', 'Autonode', 'Reference', 'Ratio', 'Target', 'Peak RSS MiB (Autonode / reference)'];
  const table = [header, ['---', '---', '---:', '---:', '---:', '---', '---:'] as const, ...rows].map((row) => `| ${row.join(' | ')} |`).join('\n');

  const notes: string[] = [];
  notes.push(
    'Reference: 1. a bare Fastify + postgres.js server sending the same statements without auth (bench/baseline-server.ts); ' +
      '2. the first page; 3. pg-boss' +
      (engine ? ` ${engine.pgBossVersion}` : '') +
      ' no-op jobs, same concurrency, same database server. Ratio = Autonode / reference.',
  );
  notes.push(
    `Processes: the Autonode server runs as \`npm start\` runs it (node ${startScriptNodeFlags().join(' ')}); the baseline, ` +
      'the worker and pg-boss with Node\'s defaults.',
  );
  notes.push(
    'Method: every figure is the median of 3 alternating runs (A, B, A, B, A, B; sign-in: 3 runs). HTTP runs are autocannon with 50 connections ' +
      `(sign-in: 10), after a warm-up per side (${WARM_UP_SECONDS} s; sign-in: 3 s), each sized to about 8 s and ended when its requests are answered (not at a deadline, ` +
      'which would abandon requests in flight); req/s counts 2xx answers only. Depth: 3 pairs of 200 sequential requests. ' +
      'Peak RSS is VmHWM of the server or worker process. Server CPU ms/req is the server process\'s user + system time over a run ' +
      '(/proc) divided by its requests: the cost of its layers, less sensitive than req/s to the load generator and PostgreSQL ' +
      'sharing the cores.',
  );
  if (results.cpuBusyBeforeStart !== undefined && results.cpuBusyBeforeStart > BUSY_MACHINE) {
    notes.push(
      `Something else was using ${percent(results.cpuBusyBeforeStart)} of the CPUs when the suite started: ` +
        'the figures are skewed and noisy; run again on an idle machine before drawing conclusions.',
    );
  }
  if (listAndDepth) {
    const failing = listAndDepth.routes.filter((route) => route.autonode.failures > 0 || route.baseline.failures > 0);
    for (const route of failing) notes.push(`${route.label}: non-2xx or errors: Autonode ${route.autonode.failures}, baseline ${route.baseline.failures}.`);
    for (const mismatch of listAndDepth.mismatches) notes.push(`Answers differ between Autonode and the baseline: ${mismatch}`);
  }
  if (signIn && signIn.failures > 0) notes.push(`Sign-in: ${signIn.failures} non-2xx answers or errors.`);
  if (expressions) {
    notes.push(
      `5. Expressions: ${whole(expressions.transforms)} evaluations per run, median of 3 alternating runs per side, in one process without a database: ` +
        `through the expression pool (${expressions.workers} worker processes, as in the engine) against inline on the main thread (as before the pool). ` +
        `The pool's first answer (a worker process starting) took ${whole(expressions.firstAnswerMs)} ms.`,
    );
  }
  if (scheduler) {
    notes.push('6. Scheduler: the lifecycle fires the due jobs batch after batch (500 a batch, as the engine does) in the bench process; median of 3 runs.');
  }
  if (callerCache) {
    notes.push('7. Caller cache: user fields at their bounds; heap measured after a full GC, against the heap before the cache was made.');
  }
  if (retention) {
    notes.push(
      `8. Retention: ${whole(retention.expired)} ended executions past their retention (a workflow in ten with a retention of its own) and ` +
        `${whole(retention.kept)} recent ones, two steps each, written by SQL (bench/seed.ts); one purge round with the housekeeping's batches ` +
        `(${retention.batches} of them) and pauses, in the bench process beside the API server, while autocannon (10 connections, about 8 s, after a 5 s warm-up) ` +
        `loads the list route; the reference is the same run before the purge. The purge ran for ${percent(retention.overlap)} of the "during" run. ` +
        `Plans (planner's own settings, seeded tables): ${Object.entries(retention.plans).map(([name, indexes]) => `${name}: ${indexes.join(', ')}`).join('; ')}.`,
    );
    for (const scan of retention.seqScans) notes.push(`8. Retention: SEQUENTIAL SCAN in a purge statement: ${scan}.`);
    for (const [side, latency] of [['before', retention.before], ['during', retention.during]] as const) {
      if (latency.failures > 0) notes.push(`8. Retention: ${latency.failures} failed list requests ${side} the purge.`);
    }
  }
  for (const failure of results.failures) notes.push(`FAILED: ${failure}`);
  if (results.profiled) notes.push('The Autonode server ran with --cpu-prof: its figures are lower than without the profiler.');

  return [
    '# Autonode benchmarks',
    '',
    `- Date: ${results.startedAt.toISOString()}`,
    `- Node ${results.nodeVersion}, ${results.cpuCores} CPU cores, PostgreSQL ${results.postgresVersion}`,
    `- CPU in use in the 2 s before the start: ${results.cpuBusyBeforeStart === undefined ? 'unknown' : percent(results.cpuBusyBeforeStart)}`,
    `- Total duration: ${duration(results.durationMs)}`,
    '',
    table,
    '',
    ...notes.map((note) => `- ${note}`),
    '',
  ].join('\n');
}
