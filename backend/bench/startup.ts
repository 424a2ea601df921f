/**
 * Embedded cold start (BENCH_ONLY=startup): the built server (`npm start` without its prestart
 * build) from spawn to the first 200 on /api/ready with no DATABASE_URL, on a new data directory
 * and on reopening it, against PGlite alone (bench/startup-pglite.mjs: plain node, one query)
 * opening the same kinds of directory. Rounds alternate which goes first; medians and ratios.
 *
 *   BENCH_STARTUP_ROUNDS=5 (default)
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { generateKeyEntry } from '../src/secrets/keyring.js';
import { backendRoot, generateSecret, log, median, sleep, spawnNode, startScriptNodeFlags, type NodeProcess } from './support.js';

/** The goals for the embedded start, in ms. */
export const STARTUP_GOALS = { newDataDir: 4_000, reopen: 1_500 } as const;

const POLL_MS = 10;
const START_TIMEOUT_MS = 120_000;

export interface StartupResults {
  readonly rounds: number;
  /** `npm run build` when nothing changed (what `npm start` adds before the server starts). */
  readonly buildUpToDateMs: number;
  readonly serverNewMs: readonly number[];
  readonly serverReopenMs: readonly number[];
  readonly pgliteNewMs: readonly number[];
  readonly pgliteReopenMs: readonly number[];
}

/** Runs the build as `npm start`'s prestart does; resolves with its duration. */
function runBuild(): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['scripts/build.mjs'], { cwd: backendRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`the build failed (${String(code)}):\n${output}`))));
  });
}

/** Polls until `found` says the process got there; fails early if it exits. */
async function waitFor(process: NodeProcess, found: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await found())) {
    if (!process.isRunning()) throw new Error(`${process.name} exited (${String(await process.exited)}) before it was ready:\n${process.output()}`);
    if (Date.now() > deadline) throw new Error(`${process.name} was not ready within ${START_TIMEOUT_MS} ms:\n${process.output()}`);
    await sleep(POLL_MS);
  }
}

/** The built server on `dataDir`: ms from spawn to the first 200 on /api/ready; then stopped. */
async function timeServer(dataDir: string): Promise<number> {
  const nodeFlags = startScriptNodeFlags();
  const started = performance.now();
  // PORT=0 and info logs: the address comes from Fastify's "Server listening at" line.
  const server = spawnNode('autonode (embedded)', 'dist/server.js', {
    EMBEDDED_DATA_DIR: dataDir,
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    NODE_ENV: 'development',
    SECRETS_KEYS: generateKeyEntry('bench'),
    BETTER_AUTH_SECRET: generateSecret(),
  }, nodeFlags);
  try {
    let baseUrl: string | undefined;
    await waitFor(server, async () => {
      baseUrl ??= /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(server.output())?.[1];
      if (!baseUrl) return false;
      const response = await fetch(`${baseUrl}/api/ready`).catch(() => undefined);
      await response?.arrayBuffer();
      return response?.status === 200;
    });
    return performance.now() - started;
  } finally {
    await server.stop();
  }
}

/** PGlite alone on `dataDir`: ms from spawn to its first answered query. */
async function timePglite(dataDir: string): Promise<number> {
  const started = performance.now();
  const child = spawnNode('pglite alone', 'bench/startup-pglite.mjs', { PGLITE_DATA_DIR: dataDir });
  try {
    await waitFor(child, () => Promise.resolve(child.output().includes('open\n')));
    return performance.now() - started;
  } finally {
    await child.exited;
  }
}

export async function runStartup(): Promise<StartupResults> {
  const rounds = Number(process.env.BENCH_STARTUP_ROUNDS ?? 5);
  // The first build may create the embedded image (initdb and the migrations); the second is what
  // every `npm start` pays.
  await runBuild();
  const buildUpToDateMs = await runBuild();
  log(`startup: build when up to date ${buildUpToDateMs.toFixed(0)} ms`);

  const results = { serverNewMs: [] as number[], serverReopenMs: [] as number[], pgliteNewMs: [] as number[], pgliteReopenMs: [] as number[] };
  const scratch = await mkdtemp(path.join(tmpdir(), 'autonode-bench-startup-'));
  try {
    const measureServer = async (round: number) => {
      const dataDir = path.join(scratch, `server-${round}`);
      results.serverNewMs.push(await timeServer(dataDir));
      results.serverReopenMs.push(await timeServer(dataDir));
    };
    const measurePglite = async (round: number) => {
      const dataDir = path.join(scratch, `pglite-${round}`);
      results.pgliteNewMs.push(await timePglite(dataDir));
      results.pgliteReopenMs.push(await timePglite(dataDir));
    };
    for (let round = 0; round < rounds; round++) {
      if (round % 2 === 0) {
        await measureServer(round);
        await measurePglite(round);
      } else {
        await measurePglite(round);
        await measureServer(round);
      }
      log(
        `startup round ${round + 1}/${rounds}: server new ${results.serverNewMs.at(-1)?.toFixed(0)} ms, reopen ${results.serverReopenMs.at(-1)?.toFixed(0)} ms; ` +
          `PGlite alone new ${results.pgliteNewMs.at(-1)?.toFixed(0)} ms, reopen ${results.pgliteReopenMs.at(-1)?.toFixed(0)} ms`,
      );
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
  return { rounds, buildUpToDateMs, ...results };
}

export function renderStartup(results: StartupResults): string {
  const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  // The ratio is the median of each round's own ratio: both sides of a round ran under the same load.
  const row = (label: string, server: readonly number[], pglite: readonly number[], goalMs: number) => {
    const serverMedian = median(server);
    const ratio = median(server.map((ms, round) => ms / (pglite[round] ?? Number.NaN)));
    return `| ${label} | ${seconds(serverMedian)} | ${seconds(median(pglite))} | ${ratio.toFixed(2)}x | ${seconds(goalMs)}: ${serverMedian <= goalMs ? 'met' : 'NOT met'} |`;
  };
  return [
    `## Embedded cold start (built server, spawn to first 200 on /api/ready; medians of ${results.rounds} alternating rounds)`,
    '',
    '| data directory | server | PGlite alone | server / PGlite (per round) | goal |',
    '| --- | --- | --- | --- | --- |',
    row('new', results.serverNewMs, results.pgliteNewMs, STARTUP_GOALS.newDataDir),
    row('reopen', results.serverReopenMs, results.pgliteReopenMs, STARTUP_GOALS.reopen),
    '',
    `\`npm run build\` when nothing changed (run by \`npm start\` before the server): ${seconds(results.buildUpToDateMs)}.`,
  ].join('\n');
}
