import type { FastifyReply, FastifyRequest } from 'fastify';
import type { PooledDb } from '../../db/client.js';
import type { BusMessage, EventBus, ExecutionEvent } from '../../engine/events.js';
import * as executions from './repository.js';

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
/** Catches any notification lost on the way (a reconnect): the stream re-reads the rows this often. */
const RESYNC_MS = 2_000;
const KEEPALIVE_MS = 15_000;

/**
 * Streams an execution's step and status changes as server-sent events, in revision order, until
 * it ends. Events come over the bus (LISTEN/NOTIFY, so from whichever replica runs it); a gap in
 * revisions or a quiet period triggers a re-read of the rows, so nothing is missed or reordered.
 */
export async function streamExecutionEvents(
  request: FastifyRequest,
  reply: FastifyReply,
  db: PooledDb,
  bus: EventBus,
  openStreams: Set<() => void>,
  execution: executions.ExecutionRecord,
): Promise<void> {
  const userId = request.user.id;
  let lastRevision = -1;
  let ended = false;
  let syncing: Promise<void> | undefined;
  const pending: ExecutionEvent[] = [];

  // A stream may stay open for as long as the execution runs: it gives its database permit back.
  request.releaseAdmission?.();
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-request-id': String(request.id),
    ...corsHeaders(reply),
  });

  const send = (event: string, revision: number, data: unknown) => {
    raw.write(`event: ${event}\nid: ${revision}\ndata: ${JSON.stringify(data)}\n\n`);
  };

  const finish = () => {
    if (ended) return;
    ended = true;
    unsubscribe();
    clearInterval(resync);
    clearInterval(keepalive);
    openStreams.delete(finish);
    raw.end();
  };

  /** Sends the current rows as events: the opening state, or the repair after a gap. */
  const sync = async () => {
    const current = await executions.get(db, userId, execution.id);
    if (!current) return finish();
    if (current.revision <= lastRevision) return;
    const steps = await executions.listSteps(db, userId, execution.id, { pageSize: 100, sortBy: 'createdAt', sortDirection: 'asc' });
    for (const step of steps?.items ?? []) {
      send('step', current.revision, { executionId: current.id, nodeId: step.nodeId, status: step.status, attempt: step.attempt, output: step.output, error: step.error });
    }
    send('execution', current.revision, { executionId: current.id, status: current.status, output: current.output ?? null, error: current.error ?? null });
    lastRevision = current.revision;
    if (TERMINAL.has(current.status)) finish();
  };

  const resyncSoon = () => {
    syncing ??= sync()
      .catch((error: unknown) => request.log.warn({ err: error }, 'event stream resync failed'))
      .finally(() => {
        syncing = undefined;
        drain();
      });
  };

  /** Sends queued events in revision order while they follow on; a gap means a lost one: re-read. */
  const drain = () => {
    pending.sort((a, b) => a.revision - b.revision);
    while (!ended && pending.length > 0 && !syncing) {
      const next = pending[0] as ExecutionEvent;
      if (next.revision <= lastRevision) {
        pending.shift();
        continue;
      }
      if (next.revision !== lastRevision + 1) {
        resyncSoon();
        return;
      }
      pending.shift();
      lastRevision = next.revision;
      // The same fields as the opening state; bulky values may be left out (truncated: read the steps route).
      const { userId: _owner, kind: _kind, revision: _revision, ...visible } = next;
      send(next.kind, next.revision, visible);
      if (next.kind === 'execution' && TERMINAL.has(next.status)) finish();
    }
  };

  const unsubscribe = bus.subscribe((message: BusMessage) => {
    if ((message.kind !== 'step' && message.kind !== 'execution') || message.executionId !== execution.id) return;
    pending.push(message);
    drain();
  });
  const resync = setInterval(resyncSoon, RESYNC_MS);
  const keepalive = setInterval(() => raw.write(': keep-alive\n\n'), KEEPALIVE_MS);
  openStreams.add(finish);
  raw.on('close', finish);

  resyncSoon();
}

/** A hijacked reply skips Fastify's hooks, so the CORS headers @fastify/cors already set are copied over. */
function corsHeaders(reply: FastifyReply): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (name.startsWith('access-control-') || name === 'vary') headers[name] = String(value);
  }
  return headers;
}
