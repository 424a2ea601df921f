import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { DbClient, PooledDb } from './client.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The service's drizzle database (one pool per process, created at the entry). */
    db: PooledDb;
    /** The same client with its raw postgres.js pool and lifecycle. */
    database: DbClient;
  }
}

export interface DbPluginOptions {
  readonly database: DbClient;
}

/** Exposes the injected client; the app that owns it ends the pool when it closes. */
async function dbPlugin(app: FastifyInstance, { database }: DbPluginOptions) {
  app.decorate('db', database.db);
  app.decorate('database', database);
  app.addHook('onClose', async () => {
    await database.close();
  });
}

export default fp(dbPlugin, { name: 'autonode-db', fastify: '5.x' });
