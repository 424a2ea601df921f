import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { createEventBus, type EventBus } from './bus.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Notifications between the engine, the event streams and the caller caches of every replica. */
    bus: EventBus;
  }
}

/**
 * The bus on the app's database. Registered after the db plugin, so its onClose runs first (Fastify
 * runs onClose hooks last-registered first): it unlistens while the pool is still open.
 */
async function busPlugin(app: FastifyInstance) {
  const bus = createEventBus(app.database, app.log);
  app.decorate('bus', bus);
  app.addHook('onClose', async () => {
    await bus.close();
  });
}

export default fp(busPlugin, { name: 'autonode-bus', fastify: '5.x', dependencies: ['autonode-db'] });
