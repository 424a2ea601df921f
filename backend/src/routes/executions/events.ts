import type { FastifyReply, FastifyRequest } from 'fastify';
import type { BusMessage, ExecutionEvent } from '../../bus/bus.js';
import { notFound } from '../../lib/problem.js';

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

/**
 * Streams an execution's step and status changes as server-sent events, in revision order, until
 * it ends. It subscribes before it reads, so nothing falls between the opening state and the live
 * events. Events come over the bus (from whichever replica runs the execution); the rows are read
 * again only when one may have been missed: a revision gap, or the bus saying it may have lost
 * some. A client reconnecting with Last-Event-ID skips an opening state it already has.
 */
export async function streamExecutionEvents(request: FastifyRequest, reply: FastifyReply, executionId: string): Promise<void> {
  const app = request.server;
  const userId = request.user.id;
  const queued: ExecutionEvent[] = [];
  let lastRevision = -1;
  let opened = false;
  let ended = false;
  let rereading: Promise<void> | undefined;

  const unsubscribe = app.bus.subscribe((message: BusMessage) => {
    if (message.kind === 'resync') return rereadSoon();
    if ((message.kind !== 'step' && message.kind !== 'execution') || message.executionId !== executionId) return;
    queued.push(message);
    if (opened) drain();
  });

  let opening;
  try {
    opening = await app.executionReads.snapshot(userId, executionId);
  } catch (error) {
    unsubscribe();
    throw error;
  }
  if (!opening) {
    unsubscribe();
    throw notFound('execution', executionId);
  }

  const stream = app.openEventStream(request, reply, () => {
    ended = true;
    unsubscribe();
  });
  const seen = Number(stream.lastEventId);
  if (Number.isInteger(seen) && seen >= 0) lastRevision = seen;

  /** Sends a state read from the rows, if newer than what the client has; ends after a final one. */
  const sendState = ({ execution, steps }: NonNullable<typeof opening>) => {
    if (execution.revision > lastRevision) {
      for (const step of steps) {
        stream.send('step', execution.revision, { executionId, nodeId: step.nodeId, status: step.status, attempt: step.attempt, output: step.output, error: step.error });
      }
      stream.send('execution', execution.revision, { executionId, status: execution.status, output: execution.output ?? null, error: execution.error ?? null });
      lastRevision = execution.revision;
    }
    if (TERMINAL.has(execution.status)) stream.end();
  };

  function rereadSoon() {
    if (!opened || ended) return;
    rereading ??= app.executionReads
      .snapshot(userId, executionId)
      .then((state) => (state ? sendState(state) : stream.end()))
      .catch((error: unknown) => request.log.warn({ err: error }, 'event stream re-read failed'))
      .finally(() => {
        rereading = undefined;
        drain();
      });
  }

  /** Sends queued events in revision order while they follow on; a gap means a lost one: re-read. */
  function drain() {
    queued.sort((a, b) => a.revision - b.revision);
    while (!ended && queued.length > 0 && !rereading) {
      const next = queued[0] as ExecutionEvent;
      if (next.revision <= lastRevision) {
        queued.shift();
        continue;
      }
      if (next.revision !== lastRevision + 1) return rereadSoon();
      queued.shift();
      lastRevision = next.revision;
      // The same fields as the opening state; bulky values may be left out (truncated: read the steps route).
      const { userId: _owner, kind, revision, ...visible } = next;
      stream.send(kind, revision, visible);
      if (kind === 'execution' && TERMINAL.has(next.status)) stream.end();
    }
  }

  opened = true;
  sendState(opening);
  drain();
}
