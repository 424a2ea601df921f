import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { problem, sendProblem } from './errors.js';

export interface DeadlinePluginOptions {
  /** HANDLER_TIMEOUT_MS: the longest any request may take. */
  readonly timeoutMs: number;
}

const deadlineOf = Symbol('deadline');
declare module 'fastify' {
  interface FastifyRequest {
    [deadlineOf]: NodeJS.Timeout | null;
  }
}

/**
 * Every request is answered within `timeoutMs`, whatever it waits on (a database that vanished
 * mid-query can leave a driver call pending): 503 TIMEOUT problem+json, after which its response
 * hooks run and its database permit returns. A hijacked reply (an event stream) counts as sent and
 * is left alone. One timer per request (bench/README.md: a shared map of deadlines cost more).
 */
async function deadlinePlugin(app: FastifyInstance, { timeoutMs }: DeadlinePluginOptions) {
  app.decorateRequest(deadlineOf, null);
  app.addHook('onRequest', (request, reply, done) => {
    const timer = setTimeout(() => {
      if (reply.sent) return;
      request.log.warn({ timeoutMs }, 'request timed out');
      void sendProblem(reply, problem(request, 503, 'TIMEOUT', 'The request took too long; try again.'), { 'retry-after': '5' });
    }, timeoutMs);
    timer.unref();
    request[deadlineOf] = timer;
    done();
  });
  const disarm = (request: { [deadlineOf]: NodeJS.Timeout | null }, done: () => void) => {
    if (request[deadlineOf]) clearTimeout(request[deadlineOf]);
    done();
  };
  app.addHook('onResponse', (request, _reply, done) => disarm(request, done));
  app.addHook('onRequestAbort', (request, done) => disarm(request, done));
}

export default fp(deadlinePlugin, { name: 'autonode-deadline', fastify: '5.x', dependencies: ['autonode-errors'] });
