import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';

/**
 * Every response names its request (`x-request-id`: the caller's own if sane, else ours, see
 * requestIdFrom), set as the request arrives so errors raised in any later hook carry it too.
 */
async function requestIdPlugin(app: FastifyInstance) {
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    done();
  });
}

export default fp(requestIdPlugin, { name: 'autonode-request-id', fastify: '5.x' });
