import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ExecutionUpdate } from '../executions/events.js';
import type { ExecutionStatus } from '../executions/reads.js';
import { readOutcome, type ExecutionOutcome } from './repository.js';

const ENDED: ReadonlySet<string> = new Set<ExecutionStatus>(['completed', 'failed', 'cancelled']);

/**
 * Takes a database permit again for a request that gave its own back, through the admission
 * plugin's own onRequest hook (it holds the new permit until the response ends); false when none
 * came within DB_ACQUIRE_TIMEOUT_MS.
 */
function readmit(request: FastifyRequest, reply: FastifyReply): Promise<boolean> {
  const app = request.server;
  return new Promise((resolve) => {
    void app.admit.call(app, request, reply, (error?: Error) => resolve(error === undefined || error === null));
  });
}

/**
 * The outcome (status and output) of an execution once it has ended, or null when it does not end within `waitMs`,
 * `stop` fires (the server is closing) or the client goes away. For `respond: "completed"`.
 *
 * The end comes over the bus, on whichever replica runs the execution, to this one's event hub. It
 * subscribes before it reads the row once, so an end announced in between is in the row. Then it
 * gives its database permit back and holds no connection while it waits; it takes one again only
 * to read the row: when the end's event left out a large output (`truncated`), or the bus says it
 * may have lost events (`resync`).
 */
export async function waitForEnd(request: FastifyRequest, reply: FastifyReply, executionId: string, waitMs: number, stop: AbortSignal): Promise<ExecutionOutcome | null> {
  const app = request.server;
  const sql = app.database.sql;
  const updates: ExecutionUpdate[] = [];
  let wake: (() => void) | undefined;
  const unsubscribe = app.executionEvents.subscribe(executionId, (update) => {
    if (update !== 'resync' && (update.kind !== 'execution' || !ENDED.has(update.status))) return;
    updates.push(update);
    wake?.();
  });
  try {
    const current = await readOutcome(sql, executionId);
    if (current && ENDED.has(current.status)) return current;
    app.releaseAdmission(request);
    const deadline = Date.now() + waitMs;
    for (;;) {
      const update = updates.shift() ?? (await next(deadline - Date.now()));
      if (update === undefined) return null;
      if (update !== 'resync' && !update.truncated) {
        return { status: update.status as ExecutionStatus, output: update.output ?? null };
      }
      if (!(await readmit(request, reply))) return null;
      const state = await readOutcome(sql, executionId);
      if (state && ENDED.has(state.status)) return state;
      app.releaseAdmission(request);
    }
  } finally {
    unsubscribe();
  }

  /** The next update, or undefined when the time is up, `stop` fires or the client has gone. */
  function next(remainingMs: number): Promise<ExecutionUpdate | undefined> {
    if (remainingMs <= 0 || stop.aborted || reply.raw.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        wake = undefined;
        stop.removeEventListener('abort', done);
        reply.raw.off('close', done);
        resolve(updates.shift());
      };
      const timer = setTimeout(done, remainingMs);
      wake = done;
      stop.addEventListener('abort', done);
      reply.raw.once('close', done);
    });
  }
}
