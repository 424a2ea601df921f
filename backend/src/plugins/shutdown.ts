import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { serviceUnavailable } from '../lib/problem.js';

/**
 * Graceful shutdown at the HTTP edge. From the moment the app starts closing, a new request is
 * answered 503 SHUTTING_DOWN (problem+json, like every error), and every response, new or in
 * flight, ends its keep-alive connection: otherwise the server would wait for clients' idle
 * timeouts before it can close.
 */
async function shutdownPlugin(app: FastifyInstance) {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  // Callback-style hooks: they run on every request and do nothing asynchronous.
  app.addHook('onRequest', (_request, reply, done) => {
    if (!closing) return done();
    reply.header('connection', 'close');
    done(serviceUnavailable('The server is shutting down; try again (another replica may answer).', 5, 'SHUTTING_DOWN'));
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });
}

export default fp(shutdownPlugin, { name: 'autonode-shutdown', fastify: '5.x', dependencies: ['autonode-errors'] });
