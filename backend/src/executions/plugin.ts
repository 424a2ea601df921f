import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { ExecutionEventHub } from './events.js';
import { ExecutionLifecycle, type LifecycleLimits } from './lifecycle.js';
import { ExecutionReads } from './reads.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Every state change of an execution (runs, retries, cancels; the engine's too). */
    executions: ExecutionLifecycle;
    /** The reads of executions and their steps. */
    executionReads: ExecutionReads;
    /** Live events of one execution at a time (event streams). */
    executionEvents: ExecutionEventHub;
  }
}

async function executionsPlugin(app: FastifyInstance, limits: LifecycleLimits & { maxPageDataBytes: number }) {
  const reads = new ExecutionReads(app.database.sql, limits.maxPageDataBytes);
  app.decorate('executionReads', reads);
  app.decorate('executions', new ExecutionLifecycle(app.database.sql, app.bus, reads, limits));
  const events = new ExecutionEventHub(app.bus);
  app.decorate('executionEvents', events);
  app.addHook('onClose', async () => events.close());
}

export default fp(executionsPlugin, { name: 'autonode-executions', fastify: '5.x', dependencies: ['autonode-db', 'autonode-bus'] });
