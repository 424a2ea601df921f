import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ExecutionRecord } from '../../executions/reads.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { presentExecution, type ExecutionDto } from './schemas.js';

/**
 * Answers 202 with the execution `start` creates (a run, a retry), with its Location, honouring an
 * Idempotency-Key: the same key and request answer the first execution again and start nothing.
 */
export function acceptExecution(
  request: FastifyRequest & { headers: { 'idempotency-key'?: string | undefined } },
  reply: FastifyReply,
  start: () => Promise<ExecutionRecord>,
): Promise<FastifyReply> {
  return replyIdempotently<ExecutionDto>(request.server.database.db, request, reply, async () => {
    const execution = await start();
    return { status: 202, body: presentExecution(execution), location: `/api/v1/executions/${execution.id}` };
  });
}
