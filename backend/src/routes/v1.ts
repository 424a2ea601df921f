import type { FastifyInstance } from 'fastify';
import { requireUser } from '../auth/plugin.js';
import { apiKeyRoutes } from './api-keys/index.js';
import { connectionRoutes } from './connections/index.js';
import { deliveryRoutes } from './deliveries/index.js';
import { eventSubscriptionRoutes } from './event-subscriptions/index.js';
import { executionRoutes } from './executions/index.js';
import { jobRoutes } from './jobs/index.js';
import { meRoutes } from './me/index.js';
import { usageRoutes } from './usage/index.js';
import { variableRoutes } from './variables/index.js';
import { workflowRoutes } from './workflows/index.js';

/**
 * Everything under /api/v1: each request takes a database permit, then its caller is resolved
 * once, for the whole scope, before the body is read (a caller without credentials learns
 * nothing, not even what the schema wants), and counted against its user's rate limit (one user
 * cannot starve the others); then the routes.
 */
export async function v1Routes(v1: FastifyInstance) {
  v1.addHook('onRequest', v1.admit);
  v1.addHook('onRequest', (request, reply, done) => {
    requireUser(request, reply, (error) => done(error ?? v1.csrfViolation(request) ?? v1.rateLimitViolation(request)));
  });
  await v1.register(meRoutes);
  await v1.register(usageRoutes);
  await v1.register(workflowRoutes);
  await v1.register(jobRoutes);
  await v1.register(executionRoutes);
  await v1.register(apiKeyRoutes);
  await v1.register(connectionRoutes);
  await v1.register(variableRoutes);
  await v1.register(deliveryRoutes);
  await v1.register(eventSubscriptionRoutes);
}
