import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { createWorkflow, eventually, getExecution, runWorkflow, startTestHttpServer, stepsOf, type ExecutionView, type StepView } from './engine-helpers.js';
import { runMigrations } from '../src/db/migrate.js';
import { buildTestApp, isEmbeddedDatabase, signUp, type SignedInUser } from './helpers.js';
import { runScript } from './process.js';
import { createScratchDatabase, type ScratchDatabase } from './scratch.js';

/**
 * The engine as it is deployed: separate `src/worker.ts` processes sharing one PostgreSQL. The test
 * process runs no engine of its own, so every step here is run by a spawned worker, and what the
 * test sees (rows, HTTP calls, live events) crossed a process boundary.
 */

type WorkerProcess = ReturnType<typeof runScript>;

/**
 * A database of its own: spawned workers claim every runnable execution they see, so on the shared
 * test database they would run (and disturb) the in-process engine tests of other files.
 */
let scratch: ScratchDatabase | undefined;
const scratchUrl = () => {
  if (!scratch) throw new Error('the scratch database is not ready');
  return scratch.url;
};
const buildScratchApp = () => buildTestApp({ DATABASE_URL: scratchUrl() });

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function startWorker(env: Record<string, string> = {}): WorkerProcess {
  return runScript('src/worker.ts', [], {
    DATABASE_URL: scratchUrl(),
    NODE_ENV: 'test',
    LOG_LEVEL: 'warn',
    ENGINE_HTTP_ALLOW: '127.0.0.1',
    ENGINE_POLL_MS: '50',
    // Several workers and test files share the server's connection limit; a worker of 4 needs few.
    DB_POOL_SIZE: '5',
    // A stopped worker hands its executions back quickly.
    SHUTDOWN_GRACE_MS: '3000',
    ...env,
  });
}

const isRunning = (worker: WorkerProcess) => worker.child.exitCode === null && worker.child.signalCode === null;

/** A worker that died on its own makes every later wait pointless: fail at once, with what it said. */
function assertAlive(workers: readonly WorkerProcess[]): void {
  for (const worker of workers) {
    if (!isRunning(worker)) throw new Error(`worker ${worker.child.pid} exited (${worker.child.exitCode ?? worker.child.signalCode}):\n${worker.output()}`);
  }
}

/**
 * SIGTERM first: the worker hands back whatever it holds instead of leaving it locked until its
 * lease expires; SIGKILL if it lingers.
 */
async function stopWorkers(workers: readonly WorkerProcess[]): Promise<void> {
  await Promise.all(
    workers.map(async (worker) => {
      if (!isRunning(worker)) return;
      worker.child.kill('SIGTERM');
      const ended = await Promise.race([worker.exited.then(() => true), sleep(8_000).then(() => false)]);
      if (!ended) {
        worker.child.kill('SIGKILL');
        await worker.exited;
      }
    }),
  );
}

/** The process id inside an engine's worker id (`host:pid:random`), to tell which process holds a lease. */
function pidOfWorkerId(workerId: string): number {
  const parts = workerId.split(':');
  return Number(parts[parts.length - 2]);
}

async function listExecutions(app: App, user: SignedInUser, workflowId: string): Promise<(ExecutionView & { input: unknown })[]> {
  const all: (ExecutionView & { input: unknown })[] = [];
  let cursor: string | null = null;
  do {
    const query: URLSearchParams = new URLSearchParams({ workflowId, includeData: 'true', pageSize: '20', ...(cursor ? { cursor } : {}) });
    const response = await app.inject({ url: `/api/v1/executions?${query.toString()}`, headers: { cookie: user.cookie } });
    if (response.statusCode !== 200) throw new Error(`listing executions failed: ${response.statusCode} ${response.body}`);
    const page: { items: (ExecutionView & { input: unknown })[]; nextCursor: string | null } = response.json();
    all.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return all;
}

/** When a step finished: the steps route has it, the shared StepView type leaves it out. */
function finishedAt(step: StepView | undefined): unknown {
  return (step as (StepView & { finishedAt?: unknown }) | undefined)?.finishedAt;
}

/** The `query.key` the test server echoed back in an http.request step's output, if that is what it is. */
function echoedKey(output: unknown): unknown {
  const body = (output as { body?: { query?: { key?: unknown } } } | null)?.body;
  return body?.query?.key;
}

interface StreamEvent {
  readonly event: string;
  readonly id: number;
  readonly data: { status: string; nodeId?: string; attempt?: number; output?: unknown };
}

/** Server-sent events as they arrive: blocks separated by a blank line; comments (keep-alives) skipped. */
async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<StreamEvent> {
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const chunk of body) {
    buffered += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffered.indexOf('\n\n')) !== -1) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const fields = new Map<string, string>();
      for (const line of block.split('\n')) {
        if (line.startsWith(':') || line === '') continue;
        const colon = line.indexOf(':');
        fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
      }
      if (!fields.has('event')) continue;
      yield { event: fields.get('event') ?? '', id: Number(fields.get('id')), data: JSON.parse(fields.get('data') ?? 'null') as StreamEvent['data'] };
    }
  }
  if (buffered.trim() !== '' && !buffered.trim().startsWith(':')) throw new Error(`the stream ended inside an event: ${JSON.stringify(buffered)}`);
}

describe.skipIf(isEmbeddedDatabase())('the engine across worker processes (skipped on the embedded database: needs several connections and processes)', () => {
  beforeAll(async () => {
    scratch = await createScratchDatabase();
    await scratch.use((client) => runMigrations(client.db));
  });
  afterAll(async () => {
    await scratch?.drop();
  });

  it('runs each of 300 executions exactly once with three competing worker processes', async () => {
    const app = await buildScratchApp();
    const server = await startTestHttpServer();
    const workers: WorkerProcess[] = [];
    let sampling = true;
    let sampler: Promise<void> = Promise.resolve();
    try {
      const user = await signUp(app);
      // Spawned before the runs are created, so all three are competing while the queue fills.
      for (let index = 0; index < 3; index++) workers.push(startWorker({ ENGINE_CONCURRENCY: '4' }));
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual', params: {} },
          { id: 'call', type: 'http.request', params: { method: 'GET', url: `${server.url}/hit?key={{ input.key }}` } },
        ],
        edges: [{ source: 'start', target: 'call' }],
      });

      // There is no worker id in the API and leases are cleared when a run ends, so the lease
      // owners are sampled while the runs are in flight, to learn which processes took part.
      const owners = new Set<string>();
      sampler = (async () => {
        while (sampling) {
          const rows = await app.database.sql<{ lease_owner: string }[]>`
            select distinct lease_owner from executions where workflow_id = ${workflowId} and lease_owner is not null`;
          for (const row of rows) owners.add(row.lease_owner);
          await sleep(20);
        }
      })();

      const total = 300;
      const keyOf = new Map<string, string>();
      const started = Date.now();
      for (let batch = 0; batch < total; batch += 25) {
        const created = await Promise.all(
          Array.from({ length: 25 }, (_, offset) => {
            const key = `k${batch + offset}`;
            return runWorkflow(app, user, workflowId, { key }).then((execution) => keyOf.set(execution.id, key));
          }),
        );
        expect(created).toHaveLength(25);
      }
      expect(keyOf.size).toBe(total);

      const executions = await eventually(
        async () => {
          assertAlive(workers);
          const all = await listExecutions(app, user, workflowId);
          const broken = all.filter((execution) => execution.status === 'failed' || execution.status === 'cancelled');
          if (broken.length > 0) throw new Error(`${broken.length} executions ended ${broken[0]?.status}: ${JSON.stringify(broken[0]?.error)}`);
          return all.length === total && all.every((execution) => execution.status === 'completed') && all;
        },
        75_000,
        `${total} executions completed`,
      );
      const elapsed = Date.now() - started;
      sampling = false;
      await sampler;

      // Every run called the server once, with its own input: none lost, none run twice.
      const keys = [...keyOf.values()];
      for (const key of keys) expect(server.countFor(key), `calls for ${key}`).toBe(1);
      expect(server.requests).toHaveLength(total);
      for (const execution of executions) {
        expect(echoedKey((execution.output as { call?: unknown } | null)?.call), `output of ${execution.id}`).toBe(keyOf.get(execution.id));
      }
      // And every recorded step is a first attempt: no worker ever took over a run another one held.
      const steps = await app.database.sql<{ node_id: string; status: string; attempt: number; count: number }[]>`
        select node_id, status::text as status, attempt, count(*)::int as count
          from execution_steps where execution_id in (select id from executions where workflow_id = ${workflowId})
         group by 1, 2, 3 order by 1`;
      expect(steps.map((row) => ({ ...row }))).toEqual([
        { node_id: 'call', status: 'completed', attempt: 1, count: total },
        { node_id: 'start', status: 'completed', attempt: 1, count: total },
      ]);

      const ourPids = new Set(workers.map((worker) => worker.child.pid));
      const participants = new Set([...owners].map(pidOfWorkerId).filter((pid) => ourPids.has(pid)));
      console.info(`engine-processes: ${total} executions completed in ${elapsed} ms by ${participants.size} of 3 worker processes`);
      expect(participants.size, `lease owners seen: ${[...owners].join(', ')}`).toBeGreaterThanOrEqual(2);
    } finally {
      sampling = false;
      await sampler.catch(() => undefined);
      await stopWorkers(workers);
      await server.close();
      await app.close();
    }
  }, 120_000);

  it('takes over a crashed worker’s execution: completed steps stay, the interrupted one runs again', async () => {
    const app = await buildScratchApp();
    const server = await startTestHttpServer();
    const workers: WorkerProcess[] = [];
    try {
      const user = await signUp(app);
      // A short lease, so the takeover comes soon after the crash.
      const env = { ENGINE_LEASE_MS: '2000' };
      const workerA = startWorker(env);
      workers.push(workerA);
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual', params: {} },
          { id: 'first', type: 'transform', params: { expression: '{ "n": 1 }' } },
          { id: 'slow', type: 'http.request', params: { method: 'GET', url: `${server.url}/slow?delay=4000&key={{ input.key }}` } },
          { id: 'last', type: 'transform', params: { expression: '{ "key": steps.slow.body.query.key, "n": steps.first.n }' } },
        ],
        edges: [
          { source: 'start', target: 'first' },
          { source: 'first', target: 'slow' },
          { source: 'slow', target: 'last' },
        ],
      });

      // Worker B of an earlier test may still be stopping and claim the run before worker A does; a
      // run A does not hold cannot be crashed here, so it is left alone and a new one started.
      let crash: { key: string; execution: ExecutionView } | undefined;
      const heldElsewhere: string[] = [];
      while (!crash && heldElsewhere.length < 10) {
        const key = `crash-${randomUUID()}`;
        const execution = await runWorkflow(app, user, workflowId, { key });
        // The slow call is in flight: its runner has recorded `first` and holds the run.
        await eventually(
          async () => {
            assertAlive(workers);
            return server.countFor(key) === 1;
          },
          30_000,
          'the slow request reached the test server',
        );
        const [held] = await app.database.sql<{ lease_owner: string | null }[]>`select lease_owner from executions where id = ${execution.id}`;
        if (pidOfWorkerId(held?.lease_owner ?? '') === workerA.child.pid) crash = { key, execution };
        else heldElsewhere.push(held?.lease_owner ?? 'nobody');
      }
      if (!crash) throw new Error(`worker A never held the run; other engines did: ${heldElsewhere.join(', ')}`);
      const { key, execution } = crash;
      const before = await stepsOf(app, user, execution.id);
      expect(before.first).toMatchObject({ status: 'completed', attempt: 1 });
      expect(finishedAt(before.first)).toEqual(expect.any(String));
      expect(before.slow).toMatchObject({ status: 'running', attempt: 1 });

      const crashedAt = Date.now();
      workerA.child.kill('SIGKILL');
      expect(await workerA.exited).toBe('SIGKILL');

      const workerB = startWorker(env);
      workers.push(workerB);
      const ended = await eventually(
        async () => {
          assertAlive([workerB]);
          const current = await getExecution(app, user, execution.id);
          return ['completed', 'failed', 'cancelled'].includes(current.status) && current;
        },
        45_000,
        'the execution ended after the takeover',
      );
      console.info(`engine-processes: crashed execution completed ${Date.now() - crashedAt} ms after the crash`);
      expect(ended.status, JSON.stringify(ended.error)).toBe('completed');
      expect(ended.output).toEqual({ last: { key, n: 1 } });

      const steps = await stepsOf(app, user, execution.id);
      expect(steps.start).toMatchObject({ status: 'completed', attempt: 1 });
      // Recorded before the crash: never run again (a re-run would also say attempt 1, but finish later).
      expect(steps.first).toMatchObject({ status: 'completed', attempt: 1 });
      expect(finishedAt(steps.first)).toBe(finishedAt(before.first));
      // The interrupted attempt counts; the takeover is the second.
      expect(steps.slow).toMatchObject({ status: 'completed', attempt: 2 });
      expect(steps.last).toMatchObject({ status: 'completed', attempt: 1 });
      // The crash lost the first answer, so the side effect happened twice (at least once); the step is recorded once.
      expect(server.countFor(key)).toBe(2);
      expect(server.aborted.filter((request) => request.path.includes(key))).toHaveLength(1);
    } finally {
      await stopWorkers(workers);
      await server.close();
      await app.close();
    }
  }, 120_000);

  it('streams a worker process’s steps over server-sent events, in revision order, until the end', async () => {
    const app = await buildScratchApp();
    const abort = new AbortController();
    const workers: WorkerProcess[] = [];
    try {
      const user = await signUp(app);
      await app.listen({ port: 0, host: '127.0.0.1' });
      const { port } = app.server.address() as AddressInfo;
      const workflowId = await createWorkflow(app, user, {
        nodes: [
          { id: 'start', type: 'trigger.manual', params: {} },
          { id: 'a', type: 'transform', params: { expression: '{ "x": input.x + 1 }' } },
          { id: 'wait', type: 'delay', params: { ms: 300 } },
          { id: 'b', type: 'transform', params: { expression: '{ "y": steps.a.x * 2 }' } },
        ],
        edges: [
          { source: 'start', target: 'a' },
          { source: 'a', target: 'wait' },
          { source: 'wait', target: 'b' },
        ],
      });
      const execution = await runWorkflow(app, user, workflowId, { x: 1 });

      const opened = Date.now();
      const timeout = setTimeout(() => abort.abort(new Error('the event stream did not end within 45 s')), 45_000);
      const response = await fetch(`http://127.0.0.1:${port}/api/v1/executions/${execution.id}/events`, { headers: { cookie: user.cookie }, signal: abort.signal });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
      if (!response.body) throw new Error('the event stream has no body');

      const events: StreamEvent[] = [];
      try {
        for await (const event of readEvents(response.body)) {
          events.push(event);
          // The worker starts once the stream has shown the opening state, so everything after it
          // arrives live over LISTEN/NOTIFY from the other process, not from the opening re-read.
          if (events.length === 1) workers.push(startWorker());
        }
      } finally {
        clearTimeout(timeout);
      }
      // Reaching here means the server ended the stream (the timeout would have thrown instead).
      console.info(`engine-processes: event stream of ${events.length} events ended ${Date.now() - opened} ms after it opened`);

      // The opening state is one block (steps, then the execution) whose last event alone carries
      // the current revision, so a client cut off inside it is not told it has it all; after it,
      // every event carries a revision of its own, strictly increasing.
      const openingLength = events.findIndex((event) => event.event === 'execution') + 1;
      expect(openingLength).toBeGreaterThan(0);
      const opening = events.slice(0, openingLength);
      expect(opening.slice(0, -1).every((event) => Number.isNaN(event.id)), JSON.stringify(opening)).toBe(true);
      expect(Number.isInteger(opening[openingLength - 1]?.id)).toBe(true);
      const ids = events.slice(openingLength - 1).map((event) => event.id);
      for (let index = 1; index < ids.length; index++) {
        expect(ids[index], `revisions ${ids.join(', ')}`).toBeGreaterThan(ids[index - 1] as number);
      }

      const last = events[events.length - 1];
      expect(last?.event).toBe('execution');
      expect(last?.data).toMatchObject({ status: 'completed', output: { b: { y: 4 } } });

      const indexOf = (event: string, status: string, nodeId?: string) =>
        events.findIndex((candidate) => candidate.event === event && candidate.data.status === status && candidate.data.nodeId === nodeId);
      for (const nodeId of ['start', 'a', 'wait', 'b']) expect(indexOf('step', 'completed', nodeId), `completed event of ${nodeId}`).toBeGreaterThanOrEqual(0);
      const waitCompleted = indexOf('step', 'completed', 'wait');
      expect(indexOf('step', 'completed', 'b')).toBeGreaterThan(waitCompleted);
      // The delay released the worker (paused) and was picked up again before it completed.
      const paused = indexOf('execution', 'paused');
      expect(paused).toBeGreaterThanOrEqual(0);
      expect(paused).toBeLessThan(waitCompleted);
      expect(indexOf('step', 'completed', 'a')).toBeLessThan(paused);
    } finally {
      abort.abort();
      await stopWorkers(workers);
      await app.close();
    }
  }, 120_000);
});
