import { performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { ExpressionPool } from '../src/engine/expression-pool.js';
import { defaultExpressionLimits, evaluateExpression, resolveTemplates, type ExpressionScope } from '../src/engine/expressions.js';
import { log, median } from './support.js';

/**
 * The cost of evaluating expressions in worker processes (src/engine/expression-pool.ts), against
 * evaluating them inline on the main thread as before: the same transforms and templates, in
 * alternating runs, in this one process. No database: only the evaluation is measured.
 */

const TRANSFORMS = 2_000;
const PAIRS = 3;
const IN_FLIGHT = 4;
const WORKERS = 2;

export interface ExpressionSide {
  /** Wall time per evaluation, one at a time. */
  readonly sequentialUs: number;
  /** Wall time per evaluation with IN_FLIGHT at once (the engine's default concurrency). */
  readonly concurrentUs: number;
  /** CPU of this process (main thread and its libuv threads) per evaluation, one at a time. */
  readonly mainCpuUs: number;
}

export interface ExpressionResults {
  readonly transforms: number;
  readonly inFlight: number;
  readonly workers: number;
  readonly transform: { readonly pool: ExpressionSide; readonly inline: ExpressionSide };
  readonly templates: { readonly pool: ExpressionSide; readonly inline: ExpressionSide };
  /** From the pool's creation to its first answer (a worker process starting). */
  readonly firstAnswerMs: number;
}

/** A step output of a realistic size (~4 KB of JSON) for expressions to read. */
const scope: ExpressionScope = {
  input: { n: 21, customer: { id: 'c-42', email: 'ada@example.com', tags: ['vip', 'beta'] } },
  steps: {
    fetch: {
      status: 200,
      body: { items: Array.from({ length: 50 }, (_, index) => ({ id: index, name: `item ${index}`, price: (index * 7) % 100, inStock: index % 3 !== 0 })) },
    },
  },
};
const transformExpression = '{ "n": input.n * 2, "total": $sum(steps.fetch.body.items.price), "names": steps.fetch.body.items[price > 50].name }';
const templateParams = {
  method: 'POST',
  url: 'https://api.example.com/customers/{{ input.customer.id }}/orders',
  headers: { 'x-customer': '{{ input.customer.email }}' },
  body: { count: '{{ $count(steps.fetch.body.items) }}', first: '{{ steps.fetch.body.items[0] }}', note: 'n={{ input.n }}' },
};

type Evaluate = () => Promise<unknown>;

async function timeSequential(evaluate: Evaluate, count: number): Promise<{ wallUs: number; cpuUs: number }> {
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let index = 0; index < count; index++) await evaluate();
  const wallUs = ((performance.now() - started) * 1000) / count;
  const cpu = process.cpuUsage(cpuBefore);
  return { wallUs, cpuUs: (cpu.user + cpu.system) / count };
}

async function timeConcurrent(evaluate: Evaluate, count: number): Promise<number> {
  const started = performance.now();
  let next = 0;
  const lane = async () => {
    while (next < count) {
      next++;
      await evaluate();
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  return ((performance.now() - started) * 1000) / count;
}

async function measure(label: string, pool: Evaluate, inline: Evaluate): Promise<{ pool: ExpressionSide; inline: ExpressionSide }> {
  // Warm both paths up (JIT, the workers' own JIT) before anything counts.
  for (let index = 0; index < 500; index++) {
    await pool();
    await inline();
  }
  const samples = { pool: [] as ExpressionSide[], inline: [] as ExpressionSide[] };
  for (let pair = 0; pair < PAIRS; pair++) {
    for (const [side, evaluate] of [['pool', pool], ['inline', inline]] as const) {
      const sequential = await timeSequential(evaluate, TRANSFORMS);
      const concurrentUs = await timeConcurrent(evaluate, TRANSFORMS);
      samples[side].push({ sequentialUs: sequential.wallUs, concurrentUs, mainCpuUs: sequential.cpuUs });
    }
  }
  const summarise = (runs: ExpressionSide[]): ExpressionSide => ({
    sequentialUs: median(runs.map((run) => run.sequentialUs)),
    concurrentUs: median(runs.map((run) => run.concurrentUs)),
    mainCpuUs: median(runs.map((run) => run.mainCpuUs)),
  });
  const result = { pool: summarise(samples.pool), inline: summarise(samples.inline) };
  log(
    `expressions: ${label}: ${result.pool.sequentialUs.toFixed(0)} µs per evaluation through the pool, ${result.inline.sequentialUs.toFixed(0)} inline ` +
      `(${(result.pool.sequentialUs / result.inline.sequentialUs).toFixed(2)}x); ${IN_FLIGHT} in flight: ${result.pool.concurrentUs.toFixed(0)} / ${result.inline.concurrentUs.toFixed(0)} µs; ` +
      `main-process CPU ${result.pool.mainCpuUs.toFixed(0)} / ${result.inline.mainCpuUs.toFixed(0)} µs`,
  );
  return result;
}

export async function runExpressions(): Promise<ExpressionResults> {
  const created = performance.now();
  const pool = new ExpressionPool({ workers: WORKERS, timeoutMs: defaultExpressionLimits.timeoutMs, maxHeapMb: 128, maxTemplates: 1000, logger: pino({ level: 'warn' }) });
  try {
    await pool.evaluate('1', scope);
    const firstAnswerMs = performance.now() - created;
    const transform = await measure(
      'transform',
      () => pool.evaluate(transformExpression, scope),
      () => evaluateExpression(transformExpression, scope),
    );
    const templates = await measure(
      'http.request params (6 templates)',
      () => pool.resolveTemplates(templateParams, scope),
      () => resolveTemplates(templateParams, scope),
    );
    return { transforms: TRANSFORMS, inFlight: IN_FLIGHT, workers: WORKERS, transform, templates, firstAnswerMs };
  } finally {
    await pool.close();
  }
}
