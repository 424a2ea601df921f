import { performance } from 'node:perf_hooks';
import { CHANNEL } from '../src/bus/bus.js';
import { oneStepGraph, signUp } from './seed.js';
import {
  autonodeEnv,
  autonodeBuild,
  generateSecret,
  log,
  percentile,
  sleep,
  spawnAutonodeWorker,
  startAutonodeServer,
  TRUSTED_ORIGIN,
  withBenchDatabase,
} from './support.js';

/** Runs measured, one at a time, after WARM_UP_RUNS that are not. */
const RUNS = Number(process.env.BENCH_LATENCY_RUNS ?? 200);
const WARM_UP_RUNS = 20;
/** The goal for the p50 on this machine. */
export const LATENCY_P50_TARGET_MS = 15;
/** A run that has not completed after this is broken: the benchmark fails rather than waits. */
const RUN_TIMEOUT_MS = 10_000;
/**
 * The worker's poll interval, well above the goal: a run that waited for a poll rather than for
 * the NOTIFY of its creation would show it in every percentile.
 */
const POLL_MS = 1_000;

export interface LatencyResults {
  readonly runs: number;
  /** POST /workflows/:id/run sent -> the execution's `completed` event heard, in ms. */
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** The POST alone (until its 202): the part of the path that is the API's. */
  readonly postP50Ms: number;
}

/**
 * Benchmark: run latency on an idle engine. The Autonode server (engine off) takes
 * `POST /workflows/:id/run` for a two-step workflow (trigger.manual, then a transform); one
 * Autonode worker process, started as `npm run worker` starts it, runs it. The clock stops when
 * this process hears the execution's `completed` event on the engine's NOTIFY channel, which the
 * statement that ends the run sends. Runs are sequential: each starts when the previous one has
 * completed.
 */
export async function runLatency(): Promise<LatencyResults> {
  return withBenchDatabase('autonode_bench_latency', async (database) => {
    const sql = database.client.sql;
    await autonodeBuild();
    const env = { ...autonodeEnv(database.url, generateSecret()), RATE_LIMIT_MAX: '10000000' };
    const server = await startAutonodeServer('autonode-server (latency)', { ...env, ENGINE_ENABLED: 'false' });
    const worker = await spawnAutonodeWorker('autonode-worker (latency)', { ...env, ENGINE_POLL_MS: String(POLL_MS) });
    /** When each execution's `completed` event was heard (it may come before the POST's answer is read). */
    const completedAt = new Map<string, number>();
    let heard: (() => void) | undefined;
    const listening = await sql.listen(CHANNEL, (payload) => {
      const message: unknown = JSON.parse(payload);
      if (typeof message !== 'object' || message === null || !('kind' in message) || message.kind !== 'execution') return;
      if (!('status' in message) || message.status !== 'completed' || !('executionId' in message) || typeof message.executionId !== 'string') return;
      completedAt.set(message.executionId, performance.now());
      heard?.();
    });
    try {
      const caller = await signUp(server.baseUrl, 'bench-latency@bench.test', 'bench-password-1234');
      const headers = { 'content-type': 'application/json', origin: TRUSTED_ORIGIN, cookie: caller.cookie };
      const created = await fetch(`${server.baseUrl}/api/v1/workflows`, { method: 'POST', headers, body: JSON.stringify({ name: 'Two steps', ...oneStepGraph }) });
      const workflow = (await created.json()) as { id?: string };
      if (created.status !== 201 || typeof workflow.id !== 'string') throw new Error(`workflow creation answered ${created.status}: ${JSON.stringify(workflow)}`);
      const runUrl = `${server.baseUrl}/api/v1/workflows/${workflow.id}/run`;

      const oneRun = async (n: number): Promise<{ totalMs: number; postMs: number }> => {
        const started = performance.now();
        const response = await fetch(runUrl, { method: 'POST', headers, body: JSON.stringify({ input: { n } }) });
        const body = (await response.json()) as { id?: string };
        const postMs = performance.now() - started;
        if (response.status !== 202 || typeof body.id !== 'string') throw new Error(`run answered ${response.status}: ${JSON.stringify(body)}`);
        const id = body.id;
        const deadline = started + RUN_TIMEOUT_MS;
        while (!completedAt.has(id)) {
          if (!worker.isRunning()) throw new Error(`the worker exited:\n${worker.output()}`);
          if (performance.now() > deadline) {
            const [row] = await sql<{ status: string; error: unknown }[]>`select status, error from executions where id = ${id}::uuid`;
            throw new Error(`run ${id} did not complete within ${RUN_TIMEOUT_MS} ms (${JSON.stringify(row)})`);
          }
          await new Promise<void>((resolve) => {
            heard = resolve;
            setTimeout(resolve, 100);
          });
        }
        const totalMs = (completedAt.get(id) as number) - started;
        completedAt.delete(id);
        return { totalMs, postMs };
      };

      for (let n = 0; n < WARM_UP_RUNS; n += 1) await oneRun(n);
      // An idle engine: nothing left over from the warm-up.
      await sleep(200);
      const totals: number[] = [];
      const posts: number[] = [];
      for (let n = 0; n < RUNS; n += 1) {
        const { totalMs, postMs } = await oneRun(n);
        totals.push(totalMs);
        posts.push(postMs);
      }
      const results = {
        runs: RUNS,
        p50Ms: percentile(totals, 50),
        p99Ms: percentile(totals, 99),
        maxMs: Math.max(...totals),
        postP50Ms: percentile(posts, 50),
      };
      log(
        `latency: ${RUNS} sequential two-step runs, POST to completed: p50 ${results.p50Ms.toFixed(1)} ms, p99 ${results.p99Ms.toFixed(1)} ms,` +
          ` max ${results.maxMs.toFixed(1)} ms (the POST alone: p50 ${results.postP50Ms.toFixed(1)} ms); goal p50 <= ${LATENCY_P50_TARGET_MS} ms:` +
          ` ${results.p50Ms <= LATENCY_P50_TARGET_MS ? 'met' : 'MISSED'}`,
      );
      return results;
    } finally {
      await listening.unlisten().catch(() => undefined);
      await worker.stop(3_000);
      await server.process.stop();
    }
  });
}

export function renderLatency(results: LatencyResults): string {
  const ms = (value: number) => `${value.toFixed(1)} ms`;
  return [
    `## Run latency (${results.runs} sequential two-step runs on an idle engine: POST /workflows/:id/run to the \`completed\` NOTIFY)`,
    '',
    '| p50 | p99 | max | the POST alone (p50) | goal |',
    '| ---: | ---: | ---: | ---: | --- |',
    `| ${ms(results.p50Ms)} | ${ms(results.p99Ms)} | ${ms(results.maxMs)} | ${ms(results.postP50Ms)} | p50 <= ${LATENCY_P50_TARGET_MS} ms: ${results.p50Ms <= LATENCY_P50_TARGET_MS ? 'met' : 'MISSED'} |`,
    '',
    `Server with the engine off, one worker process polling every ${POLL_MS} ms: only the NOTIFY of the run's creation wakes it in time.`,
  ].join('\n');
}
