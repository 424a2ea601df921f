import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ExecutionEvent } from '../../bus/bus.js';
import type { ExecutionSnapshot } from '../../executions/reads.js';
import { notFound } from '../../lib/problem.js';
import type { EventStream } from '../../plugins/event-streams.js';

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

/** The revision a reconnecting client says it has (Last-Event-ID), if it is one. */
function lastEventIdOf(request: FastifyRequest): number | undefined {
  const header = request.headers['last-event-id'];
  return typeof header === 'string' && /^\d{1,9}$/.test(header) ? Number(header) : undefined;
}

/**
 * Streams an execution's step and status changes as server-sent events, in revision order, until
 * it ends. It subscribes before it reads, so nothing falls between the opening state and the live
 * events. Events come over the bus (from whichever replica runs the execution); the rows are read
 * again only when one may have been missed: a revision gap, or the bus saying it may have lost
 * some (`resync`). A state read from the rows carries its revision as the id of its last event
 * only, so a client cut off inside it does not skip the rest. A client reconnecting with the
 * Last-Event-ID of the current state gets no opening state; of an ended execution's final state,
 * 204 (an EventSource then stops reconnecting).
 */
export async function streamExecutionEvents(request: FastifyRequest, reply: FastifyReply, executionId: string): Promise<FastifyReply | void> {
  const app = request.server;
  const userId = request.user.id;
  const queued: ExecutionEvent[] = [];
  let lastRevision = -1;
  let opened = false;
  let ended = false;
  /** A resync arrived that the rows read so far may not reflect. */
  let missed = false;
  let rereading: Promise<void> | undefined;

  const unsubscribe = app.executionEvents.subscribe(executionId, (update) => {
    if (update === 'resync') {
      missed = true;
      return rereadSoon();
    }
    queued.push(update);
    if (opened) drain();
  });

  type State = ExecutionSnapshot;
  let opening: State | null;
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
  // The client left, or the deadline answered, while the rows were read.
  if (reply.sent || request.raw.destroyed) {
    unsubscribe();
    return;
  }
  const seen = lastEventIdOf(request);
  // An id past the current revision was not issued for this execution: the client gets everything.
  if (seen !== undefined && seen <= opening.execution.revision) {
    if (seen === opening.execution.revision && TERMINAL.has(opening.execution.status)) {
      unsubscribe();
      return reply.code(204).send();
    }
    lastRevision = seen;
  }

  let stream: EventStream;
  try {
    stream = app.openEventStream(request, reply, () => {
      ended = true;
      unsubscribe();
    });
  } catch (error) {
    unsubscribe(); // Too many streams: nothing was opened.
    throw error;
  }

  /** Sends a state read from the rows, if newer than what the client has; ends after a final one. */
  function sendState({ execution, steps }: State) {
    if (execution.revision > lastRevision) {
      for (const step of steps) {
        // As live events: an output or error too large for one is left out (truncated: read it from the steps route).
        const bulky = step.truncated ? { truncated: true } : {};
        stream.send('step', undefined, { executionId, nodeId: step.nodeId, status: step.status, attempt: step.attempt, output: step.output, error: step.error, ...bulky });
      }
      const bulky = execution.truncated ? { truncated: true } : {};
      stream.send('execution', execution.revision, { executionId, status: execution.status, output: execution.output ?? null, error: execution.error ?? null, ...bulky });
      lastRevision = execution.revision;
    }
    if (TERMINAL.has(execution.status)) stream.end();
  }

  function rereadSoon() {
    // A resync during a re-read leaves `missed` set: the rows are read again after it.
    if (!opened || ended || rereading) return;
    missed = false;
    rereading = app.executionReads
      .snapshot(userId, executionId)
      .then((state) => (state ? sendState(state) : stream.end()))
      .catch((error: unknown) => request.log.warn({ err: error }, 'event stream re-read failed'))
      .finally(() => {
        rereading = undefined;
        if (missed) rereadSoon();
        else drain();
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
  if (missed) rereadSoon();
  else drain();
}
