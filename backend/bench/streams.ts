import { readFileSync } from 'node:fs';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { signUp, type SignedUpUser } from './seed.js';
import {
  TRUSTED_ORIGIN,
  autonodeEnv,
  databaseTransactions,
  generateSecret,
  log,
  median,
  percentile,
  readRssMiB,
  sleep,
  startAutonodeServer,
  withBenchDatabase,
  type HttpServer,
} from './support.js';

/** The issue's figure: idle event streams held open by one server process (BENCH_STREAMS: fewer, to try the benchmark out). */
const STREAMS = Number(process.env.BENCH_STREAMS ?? 5_000);
/** Each user watches one execution of theirs with this many streams: the fan-out of one event. */
const STREAMS_PER_USER = Math.min(1_000, STREAMS);
const USERS = Math.ceil(STREAMS / STREAMS_PER_USER);
/** Streams being opened at once (each open reads the execution once). */
const OPENING_CONCURRENCY = 100;
/**
 * Longer than the server pool's idle timeout (DB_IDLE_TIMEOUT, 20 s): a connection that closes then
 * reports counts of earlier work as it exits, which would land in a window if it began sooner.
 */
const STATS_SETTLE_MS = 25_000;
/** Each idle window: the issue asks for at least 10 s. */
const IDLE_WINDOW_MS = 20_000;
/** How long one event may take to reach every stream before the round fails. */
const FAN_OUT_TIMEOUT_MS = 30_000;

/** An execution that waits for ever: only a cancel changes it (no engine runs in this benchmark). */
const waitingGraph = { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] };

// ---------------------------------------------------------------------------------------------
// A text/event-stream client (also used by the replicas benchmark)
// ---------------------------------------------------------------------------------------------

export interface StreamEvent {
  readonly event: string;
  readonly id: string | undefined;
  readonly data: string;
  /** performance.now() when the chunk that completed it arrived. */
  readonly receivedAt: number;
}

export interface ClientStream {
  readonly events: readonly StreamEvent[];
  /** Bytes received so far, comments (keep-alives) included. */
  bytes(): number;
  /** The first event so far or to come that `matches`; rejects after `timeoutMs` or if the stream ends first. */
  next(matches: (event: StreamEvent) => boolean, timeoutMs: number): Promise<StreamEvent>;
  /** False once the server ended the stream (or the connection dropped). */
  isOpen(): boolean;
  /** Resolves when the server ends the stream (or the connection drops). */
  readonly ended: Promise<void>;
  close(): void;
}

interface Waiter {
  readonly matches: (event: StreamEvent) => boolean;
  readonly resolve: (event: StreamEvent) => void;
  readonly reject: (error: Error) => void;
}

/**
 * Opens GET `url` as an event stream on a connection of its own (no agent: thousands of them
 * must not queue behind a socket limit). Resolves once the 200 headers arrived; any other status
 * rejects with the body.
 */
export function openClientStream(url: string, headers: Record<string, string>): Promise<ClientStream> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent: false, headers: { accept: 'text/event-stream', ...headers } }, (response) => {
      if (response.statusCode !== 200) {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () => reject(new Error(`GET ${url} answered ${response.statusCode}: ${body.slice(0, 300)}`)));
        return;
      }
      const events: StreamEvent[] = [];
      const waiters = new Set<Waiter>();
      let pending = '';
      let received = 0;
      let hasEnded = false;
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        const receivedAt = performance.now();
        received += Buffer.byteLength(chunk);
        pending += chunk;
        let boundary: number;
        while ((boundary = pending.indexOf('\n\n')) !== -1) {
          const block = pending.slice(0, boundary);
          pending = pending.slice(boundary + 2);
          let event = 'message';
          let id: string | undefined;
          const data: string[] = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice('event: '.length);
            else if (line.startsWith('id: ')) id = line.slice('id: '.length);
            else if (line.startsWith('data: ')) data.push(line.slice('data: '.length));
          }
          // A comment-only block (keep-alive) is no event.
          if (data.length === 0) continue;
          const parsed: StreamEvent = { event, id, data: data.join('\n'), receivedAt };
          events.push(parsed);
          for (const waiter of waiters) {
            if (waiter.matches(parsed)) {
              waiters.delete(waiter);
              waiter.resolve(parsed);
            }
          }
        }
      });
      const ended = new Promise<void>((resolveEnded) => {
        const finish = () => {
          if (hasEnded) return;
          hasEnded = true;
          for (const waiter of waiters) waiter.reject(new Error(`the stream ${url} ended before the awaited event`));
          waiters.clear();
          resolveEnded();
        };
        response.on('end', finish);
        response.on('close', finish);
        response.on('error', finish);
      });
      resolve({
        events,
        bytes: () => received,
        isOpen: () => !hasEnded,
        next(matches, timeoutMs) {
          const found = events.find(matches);
          if (found) return Promise.resolve(found);
          if (hasEnded) return Promise.reject(new Error(`the stream ${url} ended before the awaited event`));
          return new Promise<StreamEvent>((resolveNext, rejectNext) => {
            const timer = setTimeout(() => {
              waiters.delete(waiter);
              rejectNext(new Error(`no matching event on ${url} within ${timeoutMs} ms`));
            }, timeoutMs);
            const waiter: Waiter = {
              matches,
              resolve: (event) => {
                clearTimeout(timer);
                resolveNext(event);
              },
              reject: (error) => {
                clearTimeout(timer);
                rejectNext(error);
              },
            };
            waiters.add(waiter);
          });
        },
        ended,
        close: () => request.destroy(),
      });
    });
    request.on('error', reject);
  });
}

/** The execution status an `execution` event carries. */
export function executionStatusOf(event: StreamEvent): string | undefined {
  if (event.event !== 'execution') return undefined;
  const data: unknown = JSON.parse(event.data);
  return typeof data === 'object' && data !== null && 'status' in data && typeof data.status === 'string' ? data.status : undefined;
}

// ---------------------------------------------------------------------------------------------
// Helpers of this benchmark
// ---------------------------------------------------------------------------------------------

async function postJson(url: string, headers: Record<string, string>, body: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', origin: TRUSTED_ORIGIN, ...headers }, body: JSON.stringify(body) });
  const text = await response.text();
  if (!response.ok) throw new Error(`POST ${url} answered ${response.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** A waiting execution of `user`'s, made through the API (a workflow, then a manual run). */
export async function startWaitingExecution(baseUrl: string, cookie: string, graph: { nodes: unknown[]; edges: unknown[] } = waitingGraph): Promise<string> {
  const workflow = await postJson(`${baseUrl}/api/v1/workflows`, { cookie }, { name: 'streams bench', ...graph });
  const run = await postJson(`${baseUrl}/api/v1/workflows/${String(workflow.id)}/run`, { cookie }, {});
  if (typeof run.id !== 'string') throw new Error('a run answered no execution id');
  return run.id;
}

/** The soft limit on open files of a process (/proc/<pid>/limits). */
function openFilesLimit(pid: number | 'self'): number {
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
  if (!match?.[1]) throw new Error(`cannot read the open files limit of ${pid}`);
  return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
}

/** Runs `work` on every item, at most `concurrency` at a time. */
async function forEachLimited<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runners = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await work(item);
    }
  });
  await Promise.all(runners);
}

/** After the streams end, the server's RSS is read this many times, SAMPLE_MS apart, after RSS_SETTLE_MS. */
const RSS_SAMPLES = 10;
const RSS_SETTLE_MS = 5_000;
/** A reading of the database's transaction count every this often during an idle window: when they happen is in the log. */
const SAMPLE_MS = 1_000;

interface IdleWindow {
  readonly perSecond: number;
  readonly transactions: number;
  readonly seconds: number;
  /** "+n@s": the transactions counted in each sample that had any, by second into the window. */
  readonly timeline: string;
  readonly keepAliveBytes: number;
  /** The server's RSS, median of the readings taken with each sample (one reading swings with the GC). */
  readonly rssMiB: number;
}

/** Database transactions per second over an idle window (after the stats of earlier work have settled). */
async function idleWindow(databaseName: string, serverPid: number, streams: readonly ClientStream[]): Promise<IdleWindow> {
  await sleep(STATS_SETTLE_MS);
  const bytesBefore = streams.reduce((sum, stream) => sum + stream.bytes(), 0);
  const before = await databaseTransactions(databaseName);
  const started = performance.now();
  const timeline: string[] = [];
  const rss: number[] = [];
  let previous = before;
  while (performance.now() - started < IDLE_WINDOW_MS) {
    await sleep(SAMPLE_MS);
    const reading = await databaseTransactions(databaseName);
    if (reading !== previous) timeline.push(`+${reading - previous}@${((performance.now() - started) / 1000).toFixed(0)}s`);
    previous = reading;
    rss.push(readRssMiB(serverPid) ?? Number.NaN);
  }
  const seconds = (performance.now() - started) / 1000;
  const keepAliveBytes = streams.reduce((sum, stream) => sum + stream.bytes(), 0) - bytesBefore;
  return { perSecond: (previous - before) / seconds, transactions: previous - before, seconds, timeline: timeline.join(' ') || 'none', keepAliveBytes, rssMiB: median(rss) };
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

export interface FanOutRound {
  readonly streams: number;
  readonly p50Ms: number;
  readonly p100Ms: number;
}

export interface StreamsResults {
  readonly streams: number;
  readonly users: number;
  /** Database transactions per second with the server idle and no stream open (its own timers). */
  readonly idleWithoutStreamsPerSecond: number;
  /** The same with every stream open: the difference is what idle streams cost. */
  readonly idleWithStreamsPerSecond: number;
  readonly idleWindowSeconds: number;
  readonly rssBeforeMiB: number;
  readonly rssAfterMiB: number;
  readonly rssPerStreamKiB: number;
  /** The server's RSS once every stream ended: the RSS a stream gives back is the other estimate. */
  readonly rssClosedMiB: number;
  /** One event (a cancel) reaching every stream that watches the execution, per round. */
  readonly fanOut: readonly FanOutRound[];
  /** Transactions of one `callers-changed` (another credential of the user revoked) with STREAMS_PER_USER streams of that user open. */
  readonly revocationTransactions: number;
  readonly streamsPerUser: number;
  readonly fanOutP50Ms: number;
  readonly fanOutP100Ms: number;
}

/**
 * Benchmark 9: event streams at scale. One server process (engine off: nothing happens unless the
 * bench does it) holds STREAMS idle streams of USERS users; the database's transaction count over
 * an idle window with them open is compared with one with none open, the server's RSS before and
 * after opening them gives the memory per stream, and then each user's execution is cancelled in
 * turn: the time from the cancel to the event's arrival on each of its STREAMS_PER_USER streams.
 */
export async function runStreams(): Promise<StreamsResults> {
  const ownLimit = openFilesLimit('self');
  // Node raises its soft limit to the hard one at start-up; the server inherits it from here.
  if (ownLimit < STREAMS + 1_000) throw new Error(`${STREAMS} streams need ${STREAMS + 1_000} open files in this process and the server; the limit is ${ownLimit}: raise it (ulimit -n ${STREAMS * 2}) and run again`);
  return withBenchDatabase('autonode_bench_streams', async (database) => {
    const env = {
      ...autonodeEnv(database.url, generateSecret()),
      ENGINE_ENABLED: 'false',
      // The caps are policies: this benchmark raises them for itself (defaults: 20 streams, 1,200 requests a minute per user).
      EVENT_STREAMS_PER_USER: String(STREAMS_PER_USER),
      RATE_LIMIT_MAX: '10000000',
    };
    const server: HttpServer = await startAutonodeServer('autonode-streams', env);
    const streams: ClientStream[] = [];
    try {
      const serverLimit = openFilesLimit(server.process.pid);
      if (serverLimit < STREAMS + 500) throw new Error(`the server may open ${serverLimit} files; ${STREAMS} streams need more (ulimit -n)`);
      const users: { user: SignedUpUser; executionId: string }[] = [];
      for (let index = 0; index < USERS; index += 1) {
        const user = await signUp(server.baseUrl, `streams-${index}@bench.test`, 'bench-password-1234');
        users.push({ user, executionId: await startWaitingExecution(server.baseUrl, user.cookie) });
      }

      const without = await idleWindow(database.name, server.process.pid, []);
      const rssBeforeMiB = without.rssMiB;
      log(`streams: idle without streams ${without.transactions} transactions in ${without.seconds.toFixed(1)} s (${without.perSecond.toFixed(2)}/s: ${without.timeline}); server RSS ${rssBeforeMiB.toFixed(1)} MiB (median over the window)`);

      const opening = performance.now();
      const plan = users.flatMap((entry) => Array.from({ length: STREAMS_PER_USER }, () => entry));
      const byExecution = new Map<string, ClientStream[]>();
      await forEachLimited(plan, OPENING_CONCURRENCY, async ({ user, executionId }) => {
        const stream = await openClientStream(`${server.baseUrl}/api/v1/executions/${executionId}/events`, { cookie: user.cookie });
        streams.push(stream);
        let watching = byExecution.get(executionId);
        if (!watching) byExecution.set(executionId, (watching = []));
        watching.push(stream);
        // Open means subscribed: the opening state has arrived.
        await stream.next((event) => event.event === 'execution', FAN_OUT_TIMEOUT_MS);
      });
      log(`streams: ${streams.length} streams open in ${((performance.now() - opening) / 1000).toFixed(1)} s`);

      const withStreams = await idleWindow(database.name, server.process.pid, streams);
      const rssAfterMiB = withStreams.rssMiB;
      const rssPerStreamKiB = ((rssAfterMiB - rssBeforeMiB) * 1024) / STREAMS;
      log(
        `streams: idle with ${streams.length} streams ${withStreams.transactions} transactions in ${withStreams.seconds.toFixed(1)} s (${withStreams.perSecond.toFixed(2)}/s: ${withStreams.timeline}); ` +
          `${withStreams.keepAliveBytes} bytes of keep-alives; server RSS ${rssAfterMiB.toFixed(1)} MiB (${rssPerStreamKiB.toFixed(1)} KiB per stream)`,
      );
      const ended = streams.filter((stream) => stream.events.length === 0);
      if (ended.length > 0) throw new Error(`${ended.length} streams received nothing`);

      // A revoked API key of the first user: every replica hears `callers-changed` for that user,
      // and each of the user's open streams checks that its own credential still holds.
      const [first] = users;
      if (!first) throw new Error('no user');
      const keyId = (await postJson(`${server.baseUrl}/api/v1/api-keys`, { cookie: first.user.cookie }, { name: 'revoked by the bench' })).id;
      await sleep(STATS_SETTLE_MS);
      const beforeRevocation = await databaseTransactions(database.name);
      const revocation = await fetch(`${server.baseUrl}/api/v1/api-keys/${String(keyId)}`, { method: 'DELETE', headers: { cookie: first.user.cookie, origin: TRUSTED_ORIGIN } });
      if (revocation.status !== 204) throw new Error(`revoking an API key answered ${revocation.status}`);
      await sleep(STATS_SETTLE_MS);
      const revocationTransactions = (await databaseTransactions(database.name)) - beforeRevocation;
      const stillOpen = (byExecution.get(first.executionId) ?? []).filter((stream) => stream.isOpen()).length;
      log(`streams: a revocation of another credential of a user with ${STREAMS_PER_USER} streams cost ${revocationTransactions} transactions; ${stillOpen} of its streams still open`);
      if (stillOpen !== STREAMS_PER_USER) throw new Error(`${STREAMS_PER_USER - stillOpen} streams ended although their own session still holds`);

      const fanOut: FanOutRound[] = [];
      for (const { user, executionId } of users) {
        const watching = byExecution.get(executionId) ?? [];
        const arrivals = watching.map((stream) => stream.next((event) => executionStatusOf(event) === 'cancelled', FAN_OUT_TIMEOUT_MS));
        const cancelledAt = performance.now();
        await postJson(`${server.baseUrl}/api/v1/executions/${executionId}/cancel`, { cookie: user.cookie }, {});
        const delays = (await Promise.all(arrivals)).map((event) => event.receivedAt - cancelledAt);
        const round = { streams: watching.length, p50Ms: percentile(delays, 50), p100Ms: percentile(delays, 100) };
        fanOut.push(round);
        log(`streams: cancel reached ${round.streams} streams: p50 ${round.p50Ms.toFixed(1)} ms, p100 ${round.p100Ms.toFixed(1)} ms`);
        await Promise.all(watching.map((stream) => stream.ended));
      }

      // Every stream has ended with its execution: what the server gives back is another estimate.
      await sleep(RSS_SETTLE_MS);
      const rssClosed: number[] = [];
      for (let sample = 0; sample < RSS_SAMPLES; sample += 1) {
        await sleep(SAMPLE_MS);
        rssClosed.push(readRssMiB(server.process.pid) ?? Number.NaN);
      }
      const rssClosedMiB = median(rssClosed);
      log(`streams: server RSS ${rssClosedMiB.toFixed(1)} MiB once every stream ended (${(((rssAfterMiB - rssClosedMiB) * 1024) / STREAMS).toFixed(1)} KiB per stream given back)`);

      return {
        streams: streams.length,
        users: USERS,
        idleWithoutStreamsPerSecond: without.perSecond,
        idleWithStreamsPerSecond: withStreams.perSecond,
        idleWindowSeconds: withStreams.seconds,
        rssBeforeMiB,
        rssAfterMiB,
        rssPerStreamKiB,
        rssClosedMiB,
        fanOut,
        revocationTransactions,
        streamsPerUser: STREAMS_PER_USER,
        fanOutP50Ms: median(fanOut.map((round) => round.p50Ms)),
        fanOutP100Ms: median(fanOut.map((round) => round.p100Ms)),
      };
    } finally {
      for (const stream of streams) stream.close();
      await server.process.stop();
    }
  });
}

/** The benchmark's section of the report. */
export function renderStreams(results: StreamsResults): string {
  const perStream = results.idleWithStreamsPerSecond - results.idleWithoutStreamsPerSecond;
  return [
    `### 9. Event streams at scale (${results.streams.toLocaleString('en-US')} streams of ${results.users} users, one server process)`,
    '',
    `- Idle database transactions/s over ${results.idleWindowSeconds.toFixed(0)} s: ${results.idleWithStreamsPerSecond.toFixed(2)} with the streams open, ${results.idleWithoutStreamsPerSecond.toFixed(2)} with none; difference ${perStream.toFixed(2)}/s. An idle server's only statement is the bus's LISTEN self-check (one NOTIFY per 10 s per process, streams or not); a pool connection it reopens counts one more (its start-up transaction).`,
    `- Server RSS ${results.rssBeforeMiB.toFixed(1)} MiB before opening, ${results.rssAfterMiB.toFixed(1)} MiB with them open: ${results.rssPerStreamKiB.toFixed(1)} KiB per stream; ${results.rssClosedMiB.toFixed(1)} MiB once they ended (${(((results.rssAfterMiB - results.rssClosedMiB) * 1024) / results.streams).toFixed(1)} KiB per stream given back). Medians of 1 s readings; the GC moves them.`,
    `- Revoking another credential of a user with ${results.streamsPerUser.toLocaleString('en-US')} streams open (each re-checks its own): ${results.revocationTransactions} database transactions.`,
    `- One cancel to its ${results.fanOut[0]?.streams ?? 0} streams (median of ${results.fanOut.length} rounds): p50 ${results.fanOutP50Ms.toFixed(1)} ms, p100 ${results.fanOutP100Ms.toFixed(1)} ms (rounds: ${results.fanOut.map((round) => `${round.p50Ms.toFixed(0)}/${round.p100Ms.toFixed(0)}`).join(', ')} ms).`,
  ].join('\n');
}
