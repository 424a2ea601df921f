import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { serviceUnavailable } from '../lib/problem.js';

/**
 * Every request's start and end at the HTTP edge. Each response names its request (`x-request-id`:
 * the caller's own if sane, else ours, see requestIdFrom), set as the request arrives so errors
 * raised in any later hook carry it too. From the moment the app starts closing, a new request is
 * answered 503 SHUTTING_DOWN (problem+json, like every error), and every response, new or in
 * flight, ends its keep-alive connection: otherwise the server would wait for clients' idle
 * timeouts before it can close.
 */
async function lifecyclePlugin(app: FastifyInstance) {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  // Callback-style hooks: they run on every request and do nothing asynchronous.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    if (!closing) return done();
    reply.header('connection', 'close');
    done(serviceUnavailable('The server is shutting down; try again (another replica may answer).', 5, 'SHUTTING_DOWN'));
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });
}

export default fp(lifecyclePlugin, { name: 'autonode-lifecycle', fastify: '5.x', dependencies: ['autonode-errors'] });
