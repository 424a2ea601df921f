import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import postgres from 'postgres';
import { createDbClient, type DbClient } from '../src/db/client.js';
import { runMigrations } from '../src/db/migrate.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';

export const backendRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const benchRoot = path.join(backendRoot, 'bench');

/** The SPA origin the servers trust: Better Auth refuses state-changing calls from any other. */
export const TRUSTED_ORIGIN = 'http://localhost:8100';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Cleanup that survives failures and Ctrl-C
// ---------------------------------------------------------------------------------------------

interface Stoppable {
  stop(): void;
}

/** Everything that must not outlive the run: child processes, load generators, bench databases. */
const liveChildren = new Set<{ kill(): void }>();
const liveLoads = new Set<Stoppable>();
const pendingCleanups = new Set<() => Promise<void>>();
let aborting = false;

/** A cleanup that runs once, whether the normal `finally` or the signal handler gets there first. */
function once(cleanup: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  return () => (running ??= cleanup());
}

export const isAborting = (): boolean => aborting;

/** Nothing new is started once the run is being aborted (the normal flow may still be moving on). */
function refuseWhenAborting(what: string): void {
  if (aborting) throw new Error(`aborted: not starting ${what}`);
}

/**
 * On SIGINT/SIGTERM the normal flow is still awaiting somewhere (a load run, a poll): rather than
 * unwinding it, the handler kills what runs, drops what was created and exits. The cleanups are
 * the same memoised functions the `finally` blocks call, so nothing runs twice.
 */
export function installSignalHandlers(closeAdmin: () => Promise<void>): void {
  const abort = (signal: NodeJS.Signals) => {
    if (aborting) return;
    aborting = true;
    process.stderr.write(`\n${signal}: stopping child processes and dropping the bench databases...\n`);
    for (const load of liveLoads) load.stop();
    for (const child of liveChildren) child.kill();
    const deadline = sleep(20_000);
    void Promise.race([Promise.allSettled([...pendingCleanups].map((cleanup) => cleanup())), deadline])
      .then(() => closeAdmin())
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', abort);
  process.on('SIGTERM', abort);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

const adminUrl = (): string =>
  process.env.BENCH_DATABASE_URL || process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';

/** A fresh Better Auth secret per run: nothing secret is ever committed or reused. */
export const generateSecret = (): string => randomBytes(32).toString('base64url');

/** The environment every Autonode child runs with (the brief's production-like settings). */
export function autonodeEnv(databaseUrl: string, secret: string): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'warn',
    NODE_ENV: 'production',
    SECRETS_KEYS: generateKeyEntry('bench'),
    BETTER_AUTH_SECRET: secret,
    AUTH_BASE_URL: 'http://127.0.0.1:3000/api',
    CORS_ORIGINS: TRUSTED_ORIGIN,
    DB_POOL_SIZE: '10',
  };
}

// ---------------------------------------------------------------------------------------------
// Bench databases
// ---------------------------------------------------------------------------------------------

let admin: postgres.Sql | undefined;

/** The one admin connection (create/drop database); ended by closeAdmin(). */
function adminSql(): postgres.Sql {
  admin ??= postgres(adminUrl(), { max: 1, onnotice: () => undefined, connection: { application_name: 'autonode-bench-admin' } });
  return admin;
}

/**
 * One bench run per PostgreSQL server at a time: two would drop each other's databases (same
 * names) and skew each other's figures. A session advisory lock on the admin connection is held
 * for the run and goes away with the process, however it ends.
 */
export async function lockBenchRun(): Promise<void> {
  const [row] = await adminSql()<{ locked: boolean }[]>`select pg_try_advisory_lock(hashtext('autonode-bench')) as locked`;
  if (!row?.locked) throw new Error('another bench run is using this PostgreSQL server; wait until it ends');
}

export async function closeAdmin(): Promise<void> {
  const closing = admin;
  admin = undefined;
  await closing?.end({ timeout: 5 });
}

/** Only these names are ever created or dropped: the dev and test databases cannot be touched. */
const BENCH_DATABASE_NAME = /^autonode_bench_[a-z0-9_]+$/;

function benchDatabaseUrl(name: string): string {
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

export interface BenchDatabase {
  readonly name: string;
  readonly url: string;
  /** A small pool of the bench's own, for seeding and polling (no statement timeout: seeding is long). */
  readonly client: DbClient;
}

async function dropDatabase(name: string): Promise<void> {
  // FORCE ends the connections a killed child may have left behind.
  await adminSql()`drop database if exists ${adminSql()(name)} with (force)`;
}

/** Creates the database, applies the migrations, runs `body`, and drops the database whatever happens. */
export async function withBenchDatabase<T>(name: string, body: (database: BenchDatabase) => Promise<T>): Promise<T> {
  if (!BENCH_DATABASE_NAME.test(name)) throw new Error(`refusing to use '${name}' as a bench database name`);
  refuseWhenAborting(`database ${name}`);
  const url = benchDatabaseUrl(name);
  // postgres.js connects lazily: creating the client before the database exists is fine.
  const client = createDbClient({ url, poolSize: 4, idleTimeoutSeconds: 20, connectTimeoutSeconds: 10, statementTimeoutMs: 0, applicationName: 'autonode-bench' });
  const cleanup = once(async () => {
    await client.close().catch(() => undefined);
    await dropDatabase(name);
  });
  // Registered before the database exists, so a signal arriving during CREATE still drops it (the
  // admin connection is a single one: the drop runs after the create).
  pendingCleanups.add(cleanup);
  try {
    // A run killed with SIGKILL may have left it behind; it is ours by its name.
    await dropDatabase(name);
    await adminSql()`create database ${adminSql()(name)}`;
    await runMigrations(client.db);
    return await body({ name, url, client });
  } finally {
    // A failed drop must not hide the benchmark's own outcome; the next run drops the leftover.
    await cleanup().catch((error: unknown) => log(`WARNING: could not drop ${name} (the next run will): ${error instanceof Error ? error.message : String(error)}`));
    pendingCleanups.delete(cleanup);
  }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

export interface NodeProcess {
  readonly name: string;
  readonly pid: number;
  /** The last part of what the process wrote to stdout and stderr. */
  output(): string;
  readonly exited: Promise<number | string>;
  isRunning(): boolean;
  /** Peak resident set (VmHWM) in MiB so far; undefined once the process has ended. */
  peakRssMiB(): number | undefined;
  /** CPU time (user + system) used so far, in ms; undefined once the process has ended. */
  cpuMs(): number | undefined;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has ended. */
  stop(graceMs?: number): Promise<void>;
}

const KEPT_OUTPUT_CHARS = 20_000;

/**
 * Runs a file of the backend with only the given environment: a TypeScript file through tsx, as
 * `npm start` does, a JavaScript one (the build's dist/) with plain node.
 */
export function spawnNode(name: string, script: string, env: Record<string, string>, nodeArgs: readonly string[] = []): NodeProcess {
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  return spawnProcess(name, process.execPath, [...nodeArgs, ...loader, script], env);
}

/** Runs `command` (a Node process or another program, such as Caddy) in backend/ with only the given environment, killed with the run. */
export function spawnProcess(name: string, command: string, args: readonly string[], env: Record<string, string>): NodeProcess {
  refuseWhenAborting(name);
  const child = spawn(command, args, {
    cwd: backendRoot,
    // PATH and HOME only: the bench's own DATABASE_URL and friends must not leak into the child.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`could not start ${name}`);
  const pid = child.pid;
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-KEPT_OUTPUT_CHARS);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const killer = { kill: () => child.kill('SIGKILL') };
  liveChildren.add(killer);
  const exited = new Promise<number | string>((resolve) => {
    child.on('exit', (code, signal) => {
      liveChildren.delete(killer);
      resolve(code ?? signal ?? 'unknown');
    });
  });
  const isRunning = () => child.exitCode === null && child.signalCode === null;
  return {
    name,
    pid,
    output: () => output,
    exited,
    isRunning,
    peakRssMiB: () => (isRunning() ? readPeakRssMiB(pid) : undefined),
    cpuMs: () => (isRunning() ? readCpuMs(pid) : undefined),
    async stop(graceMs = 5_000) {
      if (isRunning()) {
        child.kill('SIGTERM');
        const forced = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(forced);
      }
    },
  };
}

let built: Promise<void> | undefined;

/**
 * `npm run build` once per bench process, as `npm start` and `npm run worker` run it before they
 * start: every bench runs the JavaScript that ships (dist/), never the TypeScript through tsx.
 * Call it before timing anything (the first build of a tree also makes the embedded image).
 */
export function autonodeBuild(): Promise<void> {
  built ??= new Promise<void>((resolve, reject) => {
    const build = spawn('npm', ['run', '--silent', 'build'], { cwd: backendRoot, stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let output = '';
    build.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    build.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    build.on('error', reject);
    build.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`npm run build exited ${String(code)}:\n${output}`))));
  });
  return built;
}

/** Starts an Autonode worker process as `npm run worker` does (dist/worker.js, after autonodeBuild()). */
export async function spawnAutonodeWorker(name: string, env: Record<string, string>, nodeArgs: readonly string[] = []): Promise<NodeProcess> {
  await autonodeBuild();
  return spawnNode(name, 'dist/worker.js', env, nodeArgs);
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ): 100 on Linux. */
const CLOCK_TICKS_PER_SECOND = 100;

/** utime + stime from /proc/<pid>/stat (fields 14 and 15, counted after the parenthesised name). */
function readCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return Number.isFinite(ticks) ? (ticks * 1000) / CLOCK_TICKS_PER_SECOND : undefined;
  } catch {
    return undefined;
  }
}

/** VmHWM from /proc: the process's peak resident memory (Linux only; undefined elsewhere). */
function readPeakRssMiB(pid: number): number | undefined {
  try {
    const match = /^VmHWM:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match?.[1] ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** VmRSS from /proc: the process's resident memory now, in MiB (Linux only; undefined elsewhere or once it ended). */
export function readRssMiB(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match?.[1] ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A port nobody listens on now. The servers run with LOG_LEVEL=warn, so Fastify's
 * "Server listening at" (an info line) is never printed: the bench picks the port instead of
 * PORT=0 and waits for the health route.
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Waits until `url` answers 200, failing early if the process dies. */
async function waitUntilServing(server: NodeProcess, url: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!server.isRunning()) throw new Error(`${server.name} exited (${String(await server.exited)}) before serving:\n${server.output()}`);
    try {
      const response = await fetch(url);
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`${server.name} did not answer ${url} within ${timeoutMs} ms:\n${server.output()}`);
    await sleep(100);
  }
}

export interface HttpServer {
  readonly process: NodeProcess;
  readonly baseUrl: string;
}

/** Starts an HTTP entry (the Autonode server or the baseline) on a free port and waits until it serves. */
export async function startHttpServer(name: string, script: string, env: Record<string, string>, nodeArgs: readonly string[] = []): Promise<HttpServer> {
  const port = await freePort();
  const child = spawnNode(name, script, { ...env, HOST: '127.0.0.1', PORT: String(port) }, nodeArgs);
  const baseUrl = `http://127.0.0.1:${port}`;
  try {
    await waitUntilServing(child, `${baseUrl}/api/health`);
  } catch (error) {
    await child.stop(0);
    throw error;
  }
  return { process: child, baseUrl };
}

/**
 * The Node flags `npm start` runs the server with (backend/package.json), so the bench measures the
 * server as it is shipped.
 */
export function startScriptNodeFlags(): string[] {
  const manifest = JSON.parse(readFileSync(path.join(backendRoot, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
  const start = manifest.scripts?.start ?? '';
  const match = /^node((?: --[\w-]+(?:=\S+)?)*) (?:--import tsx src\/server\.ts|dist\/server\.js)$/.exec(start);
  if (!match) throw new Error(`backend/package.json: expected "start": "node [flags] dist/server.js" (or "--import tsx src/server.ts"), found "${start}"`);
  return (match[1] ?? '').split(' ').filter(Boolean);
}

/** Starts the Autonode HTTP server as `npm start` does (plus `nodeArgs`, such as a profiler's). */
export async function startAutonodeServer(name: string, env: Record<string, string>, nodeArgs: readonly string[] = []): Promise<HttpServer> {
  await autonodeBuild();
  return startHttpServer(name, 'dist/server.js', env, [...startScriptNodeFlags(), ...nodeArgs]);
}

// ---------------------------------------------------------------------------------------------
// Load runs and statistics
// ---------------------------------------------------------------------------------------------

export interface LoadResult {
  /** Successful (2xx) responses per second over the whole run. */
  readonly okPerSecond: number;
  /** Every answer per second, failures included: what sizes the next run. */
  readonly answeredPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly requests: number;
  readonly seconds: number;
  /** Non-2xx answers plus connection errors and timeouts: any of them makes a run suspect. */
  readonly failures: number;
  /** What went wrong, for the log: status codes other than 2xx, errors, timeouts. */
  readonly failureDetail: string;
}

function describeFailures(result: autocannon.Result): string {
  const statuses = Object.entries(result.statusCodeStats ?? {})
    .filter(([status]) => !status.startsWith('2'))
    .map(([status, stats]) => `${status} x${stats.count ?? 0}`);
  return [...statuses, `errors ${result.errors}`, `timeouts ${result.timeouts}`].join(', ');
}

/** One autocannon run, stopped at `deadlineMs` if it has not ended, and by the signal handler. */
function runLoad(options: autocannon.Options, deadlineMs: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let lastAnswerAt = started;
    const instance = autocannon(options, (error: Error | null, result: autocannon.Result) => {
      // Timed to the last answer: a counted run ends on autocannon's next 1 s tick, so its own
      // `duration` (whole seconds) would count up to a second of idling as part of the run.
      const seconds = Math.max((lastAnswerAt - started) / 1000, 0.001);
      clearTimeout(deadline);
      liveLoads.delete(instance);
      if (error) return reject(error);
      resolve({
        okPerSecond: result['2xx'] / seconds,
        answeredPerSecond: (result['1xx'] + result['2xx'] + result['3xx'] + result['4xx'] + result['5xx']) / seconds,
        p50Ms: result.latency.p50,
        p99Ms: result.latency.p99,
        requests: result.requests.total,
        seconds,
        failures: result.non2xx + result.errors,
        failureDetail: describeFailures(result),
      });
    });
    instance.on('response', () => {
      lastAnswerAt = performance.now();
    });
    const deadline = setTimeout(() => instance.stop(), deadlineMs);
    liveLoads.add(instance);
  });
}

/**
 * Load on one target in runs that end when a number of requests has been answered, not at a
 * deadline: autocannon stopping at a deadline abandons the requests in flight (up to one per
 * connection), so every run would also measure, and leave behind, the server's handling of
 * aborted requests. The count is sized from the previous run to last about `seconds`; a run
 * still going at three times that is stopped anyway.
 */
export class CountedLoad {
  private answeredPerSecond: number | undefined;

  constructor(
    private readonly options: Omit<autocannon.Options, 'duration' | 'amount'>,
    private readonly seconds: number,
  ) {}

  /**
   * Warms the server up (JIT, prepared statements, caches) for about `seconds`, and learns the
   * rate the measured runs are sized from: a short probe first, then a run sized from it.
   */
  async warmUp(seconds: number): Promise<void> {
    const connections = this.options.connections ?? 10;
    this.learn(await runLoad({ ...this.options, amount: connections * 4 }, seconds * 3_000));
    await this.runFor(seconds);
  }

  /** A measured run of about `seconds` (the constructor's). */
  run(): Promise<LoadResult> {
    return this.runFor(this.seconds);
  }

  private async runFor(seconds: number): Promise<LoadResult> {
    const connections = this.options.connections ?? 10;
    const amount = Math.max(connections * 2, Math.round((this.answeredPerSecond ?? 50) * seconds));
    return this.learn(await runLoad({ ...this.options, amount }, seconds * 3_000));
  }

  private learn(result: LoadResult): LoadResult {
    if (result.answeredPerSecond > 0) this.answeredPerSecond = result.answeredPerSecond;
    return result;
  }
}

/**
 * Fails when the server no longer answers a cheap authenticated request within 2 s: a server
 * that stopped serving after a load run (a leak of some kind) must fail the benchmark, not
 * quietly turn the following runs into measurements of its error path.
 */
export async function assertStillServing(name: string, url: string, headers: Record<string, string>): Promise<void> {
  let outcome: string;
  try {
    const response = await fetch(url, { headers, signal: AbortSignal.timeout(2_000) });
    const body = await response.text();
    if (response.status === 200) return;
    outcome = `${response.status} ${body.slice(0, 300)}`;
  } catch (error) {
    outcome = error instanceof Error ? error.message : String(error);
  }
  throw new Error(`${name} stopped serving after a load run: GET ${url} -> ${outcome}`);
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

function cpuTimes(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const ticks = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal: idle and iowait are the idle ones.
    const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
    const total = ticks.slice(0, 8).reduce((sum, value) => sum + value, 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/**
 * How busy all CPUs were over the next `ms` (0..1; undefined off Linux). The load average lags by
 * a minute (it still counts work that just ended); this says whether something runs right now.
 */
export async function cpuBusyFraction(ms: number): Promise<number | undefined> {
  const before = cpuTimes();
  await sleep(ms);
  const after = cpuTimes();
  if (!before || !after || after.total === before.total) return undefined;
  return (after.busy - before.busy) / (after.total - before.total);
}

/** Milliseconds since `start` (a performance.now() reading). */
export const elapsedMs = (start: number): number => performance.now() - start;

/** Prints a progress line (stderr keeps stdout for the final table). */
export function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

/**
 * Transactions committed and rolled back in a bench database so far (pg_stat_database), read over
 * the admin connection so that reading is not counted. A backend reports its counts when it goes
 * idle, at most once a second, and an idle one within PostgreSQL's idle flush interval (10 s):
 * compare readings taken longer than that after the activity to be excluded.
 */
export async function databaseTransactions(name: string): Promise<number> {
  const [row] = await adminSql()<{ transactions: string }[]>`
    select (xact_commit + xact_rollback)::text as transactions from pg_stat_database where datname = ${name}`;
  if (!row) throw new Error(`pg_stat_database has no row for ${name}`);
  return Number(row.transactions);
}

/** The server's version, for the report. */
export async function postgresVersion(): Promise<string> {
  const [row] = await adminSql()<{ server_version: string }[]>`show server_version`;
  return row?.server_version ?? '?';
}
