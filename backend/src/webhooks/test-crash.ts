import type { FastifyReply, FastifyRequest } from 'fastify';

/** The header that asks a test server to die right after a delivery commits (crashAfterCommit). */
export const CRASH_AFTER_COMMIT_HEADER = 'x-autonode-test-crash-after-commit';

/**
 * An onSend hook of the hook route for the crash test (test/webhooks-crash.test.ts), registered
 * only with ENABLE_TEST_ROUTES, which the config refuses in production. A 2xx answer is sent only
 * once the delivery's transaction has committed, and onSend runs before any of it is written: a
 * request with CRASH_AFTER_COMMIT_HEADER: 1 kills the process there, between the commit and the
 * answer.
 */
export async function crashAfterCommit(request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> {
  if (request.headers[CRASH_AFTER_COMMIT_HEADER] === '1' && reply.statusCode < 300) process.kill(process.pid, 'SIGKILL');
  return payload;
}
