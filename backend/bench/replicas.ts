import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createApiKey, insertBulkUsers, insertFinishedExecutions, insertWorkflowsForEveryUser, signUp } from './seed.js';
import { executionStatusOf, openClientStream, startWaitingExecution, type ClientStream } from './streams.js';
import {
  CountedLoad,
  autonodeEnv,
  backendRoot,
  freePort,
  generateSecret,
  log,
  median,
  sleep,
  spawnProcess,
  startAutonodeServer,
  withBenchDatabase,
  type HttpServer,
  type LoadResult,
  type NodeProcess,
} from './support.js';

/** The caller's share of the seeded executions is a tenth: 2,000 rows, 100 list pages. */
const SEEDED_EXECUTIONS = 20_000;
const OTHER_USERS = 9;
const PAIRS = 3;
const LOAD_SECONDS = 5;
const WARM_UP_SECONDS = 5;
const CONNECTIONS = 20;
const LIST_PATH = '/api/v1/executions?pageSize=20';
/** Requests of each credential sent through Caddy, which spreads them over both replicas. */
const PROXIED_CHECKS = 20;
/** How long the delayed run may take to reach the streams' end. */
const STREAM_TIMEOUT_MS = 30_000;

/** A run that outlasts the opening of its streams: the delay's wake and the last step arrive live. */
const delayedGraph = {
  nodes: [
    { id: 'start', type: 'trigger.manual' },
    { id: 'wait', type: 'delay', params: { ms: 1_500 } },
  ],
  edges: [{ source: 'start', target: 'wait' }],
};

export interface ReplicaCheck {
  readonly name: string;
  readonly passed: boolean;
  readonly detail: string;
}

export interface ReplicasResults {
  /** Why nothing was measured (Caddy is missing), when it was not. */
  readonly skipped?: string;
  /** Median req/s of the list through Caddy to both replicas. */
  readonly proxiedPerSecond?: number;
  /** Median req/s of the list on replica A directly. */
  readonly directPerSecond?: number;
  /** Through Caddy / direct. */
  readonly ratio?: number;
  readonly proxiedP99Ms?: number;
  readonly directP99Ms?: number;
  /** CPU ms per list request: replica A alone when direct; both replicas, and Caddy, through Caddy. */
  readonly directServerCpuMs?: number;
  readonly proxiedServersCpuMs?: number;
  readonly proxiedCaddyCpuMs?: number;
  readonly checks: readonly ReplicaCheck[];
}

/** Whether `caddy` runs here. */
function caddyAvailable(): boolean {
  const probe = spawnSync('caddy', ['version'], { stdio: 'ignore' });
  return probe.error === undefined && probe.status === 0;
}

/**
 * The project's Caddyfile as it ships, served on `port` instead of :8100 and with its admin
 * endpoint off (another Caddy may hold :2019). The upstream stays the Caddyfile's own
 * `{$BACKEND_UPSTREAM}`: Caddy expands an environment variable before parsing, so both
 * replicas' addresses in it make `reverse_proxy` balance over both.
 */
async function derivedCaddyfile(port: number): Promise<string> {
  const shipped = await readFile(path.join(backendRoot, '..', 'Caddyfile'), 'utf8');
  const siteAddress = /^:8100 \{$/m;
  if (!siteAddress.test(shipped)) throw new Error('the Caddyfile no longer opens with the site address ":8100 {": update bench/replicas.ts');
  if (!shipped.includes('reverse_proxy {$BACKEND_UPSTREAM')) throw new Error('the Caddyfile no longer proxies to {$BACKEND_UPSTREAM}: update bench/replicas.ts');
  return `{\n\tadmin off\n}\n\n${shipped.replace(siteAddress, `:${port} {`)}`;
}

async function waitForHealth(baseUrl: string, caddy: NodeProcess, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!caddy.isRunning()) throw new Error(`caddy exited (${String(await caddy.exited)}):\n${caddy.output()}`);
    try {
      const response = await fetch(`${baseUrl}/api/health`);
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`caddy did not serve ${baseUrl}/api/health within ${timeoutMs} ms:\n${caddy.output()}`);
    await sleep(100);
  }
}

/** Statuses of `count` GETs of `url` (sequential, each on a fresh fetch). */
async function statusesOf(url: string, headers: Record<string, string>, count: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let index = 0; index < count; index += 1) {
    const response = await fetch(url, { headers });
    await response.arrayBuffer();
    statuses.push(response.status);
  }
  return statuses;
}

function statusCheck(name: string, statuses: readonly number[]): ReplicaCheck {
  const refused = statuses.filter((status) => status !== 200);
  return { name, passed: refused.length === 0, detail: refused.length === 0 ? `${statuses.length} x 200` : `answers ${statuses.join(',')}` };
}

/** What a stream heard after its opening state, and whether it heard the run complete. */
async function streamCheck(name: string, stream: ClientStream, openingEvents: number): Promise<ReplicaCheck> {
  try {
    await stream.next((event) => executionStatusOf(event) === 'completed', STREAM_TIMEOUT_MS);
    const live = stream.events.slice(openingEvents);
    const passed = live.length > 0;
    return { name, passed, detail: `${live.length} live events after the opening state (${live.map((event) => event.event + (executionStatusOf(event) ? `:${executionStatusOf(event)}` : '')).join(', ')})` };
  } catch (error) {
    return { name, passed: false, detail: error instanceof Error ? error.message : String(error) };
  } finally {
    stream.close();
  }
}

/** CPU ms (user + system) the processes used together so far. */
function cpuMsOf(processes: readonly NodeProcess[]): number {
  return processes.reduce((sum, process) => sum + (process.cpuMs() ?? Number.NaN), 0);
}

interface CpuMeasuredRun extends LoadResult {
  /** CPU ms per request of each group of processes, in the order given. */
  readonly cpuMsPerRequest: readonly number[];
}

async function runWithCpu(load: CountedLoad, groups: readonly (readonly NodeProcess[])[]): Promise<CpuMeasuredRun> {
  const before = groups.map(cpuMsOf);
  const result = await load.run();
  const after = groups.map(cpuMsOf);
  return { ...result, cpuMsPerRequest: after.map((value, index) => (value - (before[index] ?? Number.NaN)) / Math.max(1, result.requests)) };
}

async function listAnswer(url: string, headers: Record<string, string>): Promise<string> {
  const response = await fetch(url, { headers });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET ${url} answered ${response.status}: ${text.slice(0, 300)}`);
  return JSON.stringify(JSON.parse(text));
}

function describeRun(result: CpuMeasuredRun): string {
  const cpu = result.cpuMsPerRequest.map((value) => value.toFixed(3)).join(' + ');
  return `${result.okPerSecond.toFixed(0)} req/s, p99 ${result.p99Ms} ms, CPU ${cpu} ms/request${result.failures > 0 ? `, ${result.failures} failures (${result.failureDetail})` : ''}`;
}

/**
 * Benchmark 10: two server processes on one database behind the project's Caddyfile. Replica A
 * runs no engine, replica B does, so every run is claimed by B. The list's throughput through
 * Caddy is compared with replica A's directly (alternating runs, medians); the checks say whether
 * a session and an API key made on one replica hold on the other, whether an event stream on A
 * (and one through Caddy) hears a run B's engine executes, and whether any request failed.
 */
export async function runReplicas(): Promise<ReplicasResults> {
  if (!caddyAvailable()) {
    log('replicas: caddy not found: apt-get install caddy (skipped)');
    return { skipped: 'caddy not found: apt-get install caddy', checks: [] };
  }
  return withBenchDatabase('autonode_bench_replicas', async (database) => {
    // One environment for both: the same auth secret and secrets keyring, as replicas share.
    const env = { ...autonodeEnv(database.url, generateSecret()), RATE_LIMIT_MAX: '10000000' };
    const servers: HttpServer[] = [];
    let caddy: NodeProcess | undefined;
    const caddyHome = await mkdtemp(path.join(os.tmpdir(), 'autonode-bench-caddy-'));
    try {
      const replicaA = await startAutonodeServer('autonode-replica-a', { ...env, ENGINE_ENABLED: 'false' });
      servers.push(replicaA);
      const replicaB = await startAutonodeServer('autonode-replica-b', env);
      servers.push(replicaB);

      const caddyPort = await freePort();
      const caddyfile = path.join(caddyHome, 'Caddyfile');
      await writeFile(caddyfile, await derivedCaddyfile(caddyPort));
      const upstreams = [replicaA, replicaB].map((server) => new URL(server.baseUrl).host).join(' ');
      caddy = spawnProcess('caddy', 'caddy', ['run', '--adapter', 'caddyfile', '--config', caddyfile], {
        BACKEND_UPSTREAM: upstreams,
        // As compose.yml's (less its DNS lookup of the replicas, whose addresses are fixed here).
        BACKEND_PROXY_OPTIONS: 'lb_try_duration 5s',
        SPA_ROOT: caddyHome,
        HOME: caddyHome,
        XDG_DATA_HOME: caddyHome,
        XDG_CONFIG_HOME: caddyHome,
      });
      const proxied = `http://127.0.0.1:${caddyPort}`;
      await waitForHealth(proxied, caddy);
      log(`replicas: A ${replicaA.baseUrl} (no engine), B ${replicaB.baseUrl} (engine), Caddy ${proxied} -> ${upstreams}`);

      const checks: ReplicaCheck[] = [];
      // A session made on A, an API key made (with that session) on B.
      const caller = await signUp(replicaA.baseUrl, 'replicas-caller@bench.test', 'bench-password-1234');
      const apiKey = await createApiKey(replicaB.baseUrl, caller.cookie);
      checks.push(statusCheck('session cookie made on A works on B', await statusesOf(`${replicaB.baseUrl}/api/v1/me`, { cookie: caller.cookie }, 3)));
      checks.push(statusCheck('API key made on B works on A', await statusesOf(`${replicaA.baseUrl}/api/v1/me`, { authorization: `Bearer ${apiKey}` }, 3)));
      checks.push(statusCheck(`session cookie through Caddy (${PROXIED_CHECKS} requests)`, await statusesOf(`${proxied}/api/v1/me`, { cookie: caller.cookie }, PROXIED_CHECKS)));
      checks.push(statusCheck(`API key through Caddy (${PROXIED_CHECKS} requests)`, await statusesOf(`${proxied}/api/v1/me`, { authorization: `Bearer ${apiKey}` }, PROXIED_CHECKS)));

      // The run is made on A, which has no engine: only B can claim it.
      const executionId = await startWaitingExecution(replicaA.baseUrl, caller.cookie, delayedGraph);
      const onA = await openClientStream(`${replicaA.baseUrl}/api/v1/executions/${executionId}/events`, { cookie: caller.cookie });
      const throughCaddy = await openClientStream(`${proxied}/api/v1/executions/${executionId}/events`, { cookie: caller.cookie });
      const [openingOnA, openingThroughCaddy] = await Promise.all(
        [onA, throughCaddy].map(async (stream) => {
          await stream.next((event) => event.event === 'execution', STREAM_TIMEOUT_MS);
          return stream.events.length;
        }),
      );
      const [streamOnA, streamThroughCaddy] = await Promise.all([
        streamCheck('event stream on A hears the run B claimed, live, to its end', onA, openingOnA ?? 0),
        streamCheck('event stream through Caddy hears the run live, to its end', throughCaddy, openingThroughCaddy ?? 0),
      ]);
      checks.push(streamOnA, streamThroughCaddy);

      const { sql } = database.client;
      await insertBulkUsers(sql, OTHER_USERS);
      await insertWorkflowsForEveryUser(sql, 1);
      await insertFinishedExecutions(sql, caller.id, SEEDED_EXECUTIONS);
      const headers = { cookie: caller.cookie };
      const direct = new CountedLoad({ url: `${replicaA.baseUrl}${LIST_PATH}`, headers, connections: CONNECTIONS }, LOAD_SECONDS);
      const balanced = new CountedLoad({ url: `${proxied}${LIST_PATH}`, headers, connections: CONNECTIONS }, LOAD_SECONDS);
      await direct.warmUp(WARM_UP_SECONDS);
      await balanced.warmUp(WARM_UP_SECONDS);
      const expected = await listAnswer(`${replicaA.baseUrl}${LIST_PATH}`, headers);
      const proxiedAnswers = await Promise.all(Array.from({ length: PROXIED_CHECKS }, () => listAnswer(`${proxied}${LIST_PATH}`, headers)));
      const differing = proxiedAnswers.filter((answer) => answer !== expected).length;
      checks.push({ name: 'the list through Caddy answers what A answers directly', passed: differing === 0, detail: `${PROXIED_CHECKS - differing} of ${PROXIED_CHECKS} identical` });
      const replicaProcesses = [replicaA.process, replicaB.process];
      const caddyProcess = [caddy];
      const directRuns: CpuMeasuredRun[] = [];
      const proxiedRuns: CpuMeasuredRun[] = [];
      for (let pair = 0; pair < PAIRS; pair += 1) {
        // Alternating, the order swapped each pair: neither side always runs on a warmer machine.
        const order = pair % 2 === 0 ? ([direct, balanced] as const) : ([balanced, direct] as const);
        for (const load of order) {
          if (load === direct) directRuns.push(await runWithCpu(load, [[replicaA.process]]));
          else proxiedRuns.push(await runWithCpu(load, [replicaProcesses, caddyProcess]));
        }
        log(`replicas pair ${pair + 1}: A directly ${describeRun(directRuns.at(-1) as CpuMeasuredRun)}; through Caddy ${describeRun(proxiedRuns.at(-1) as CpuMeasuredRun)}`);
      }
      const failures = [...directRuns, ...proxiedRuns].reduce((sum, run) => sum + run.failures, 0);
      checks.push({ name: 'no failed request under load (direct and through Caddy)', passed: failures === 0, detail: `${failures} failures in ${directRuns.length + proxiedRuns.length} runs` });
      for (const server of servers) {
        if (!server.process.isRunning()) checks.push({ name: `${server.process.name} still running`, passed: false, detail: server.process.output().slice(-500) });
      }
      for (const check of checks) log(`replicas: ${check.passed ? 'PASS' : 'FAIL'} ${check.name}: ${check.detail}`);

      const proxiedPerSecond = median(proxiedRuns.map((run) => run.okPerSecond));
      const directPerSecond = median(directRuns.map((run) => run.okPerSecond));
      return {
        proxiedPerSecond,
        directPerSecond,
        ratio: proxiedPerSecond / directPerSecond,
        proxiedP99Ms: median(proxiedRuns.map((run) => run.p99Ms)),
        directP99Ms: median(directRuns.map((run) => run.p99Ms)),
        directServerCpuMs: median(directRuns.map((run) => run.cpuMsPerRequest[0] ?? Number.NaN)),
        proxiedServersCpuMs: median(proxiedRuns.map((run) => run.cpuMsPerRequest[0] ?? Number.NaN)),
        proxiedCaddyCpuMs: median(proxiedRuns.map((run) => run.cpuMsPerRequest[1] ?? Number.NaN)),
        checks,
      };
    } finally {
      await caddy?.stop();
      await Promise.all(servers.map((server) => server.process.stop()));
      await rm(caddyHome, { recursive: true, force: true });
    }
  });
}

/** The benchmark's section of the report. */
export function renderReplicas(results: ReplicasResults): string {
  const lines = ['### 10. Two replicas behind the Caddyfile (one database)', ''];
  if (results.skipped) return [...lines, `- SKIPPED: ${results.skipped}`].join('\n');
  const fixed = (value: number | undefined, digits = 0) => (value === undefined ? '?' : value.toFixed(digits));
  lines.push(
    `- List (session cookie): ${fixed(results.proxiedPerSecond)} req/s through Caddy to both replicas against ${fixed(results.directPerSecond)} on replica A directly: ratio ${fixed(results.ratio, 2)}; p99 ${fixed(results.proxiedP99Ms)} / ${fixed(results.directP99Ms)} ms.`,
    `- CPU per list request: ${fixed(results.directServerCpuMs, 3)} ms of replica A directly; through Caddy ${fixed(results.proxiedServersCpuMs, 3)} ms of the two replicas plus ${fixed(results.proxiedCaddyCpuMs, 3)} ms of Caddy.`,
  );
  for (const check of results.checks) lines.push(`- ${check.passed ? 'PASS' : 'FAIL'}: ${check.name} (${check.detail})`);
  return lines.join('\n');
}
