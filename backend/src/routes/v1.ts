import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import { requireUser } from '../auth/plugin.js';
import { ProblemError } from '../lib/problem.js';
import { apiKeyRoutes } from './api-keys/index.js';
import { executionRoutes } from './executions/index.js';
import { jobRoutes } from './jobs/index.js';
import { meRoutes } from './me/index.js';
import { workflowRoutes } from './workflows/index.js';

/**
 * Everything under /api/v1: each request takes a database permit, then its caller is resolved
 * once, for the whole scope, before the body is read (a caller without credentials learns
 * nothing, not even what the schema wants); then the per-user rate limit, then the routes.
 */
export async function v1Routes(v1: FastifyInstance) {
  v1.addHook('onRequest', v1.admit);
  v1.addHook('onRequest', (request, _reply, done) => {
    requireUser(request, (error) => done(error ?? v1.csrfViolation(request)));
  });
  // Per caller, after authentication: one user cannot starve the others.
  await v1.register(rateLimit, {
    hook: 'preHandler',
    max: v1.config.rateLimit.max,
    timeWindow: v1.config.rateLimit.windowMs,
    keyGenerator: (request) => `user:${request.user.id}`,
    errorResponseBuilder: (_request, context) =>
      new ProblemError(429, 'RATE_LIMITED', `Too many requests: at most ${context.max} per ${context.after}.`, {
        headers: { 'retry-after': String(Math.max(1, Math.ceil(context.ttl / 1000))) },
      }),
  });
  await v1.register(meRoutes);
  await v1.register(workflowRoutes);
  await v1.register(jobRoutes);
  await v1.register(executionRoutes);
  await v1.register(apiKeyRoutes);
}
