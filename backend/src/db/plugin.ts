import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { DbClient } from './client.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** The process's one database client: `db` (drizzle), `sql` (its postgres.js pool), and what it is. */
    database: DbClient;
  }
}

export interface DbPluginOptions {
  readonly database: DbClient;
}

/** Exposes the injected client; the app that owns it ends the pool when it closes. */
async function dbPlugin(app: FastifyInstance, { database }: DbPluginOptions) {
  app.decorate('database', database);
  app.addHook('onClose', async () => {
    await database.close();
  });
}

export default fp(dbPlugin, { name: 'autonode-db', fastify: '5.x' });
