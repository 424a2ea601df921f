import fp from 'fastify-plugin';
import type { Keyring } from './keyring.js';
import { loadKeyring } from './load.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Seals and opens stored secrets (connections, secret variables). */
    keyring: Keyring;
  }
}

export default fp(
  async (app) => {
    app.decorate('keyring', await loadKeyring(app.config, app.log));
  },
  { name: 'autonode-secrets', fastify: '5.x' },
);
