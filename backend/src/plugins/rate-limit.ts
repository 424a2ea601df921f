import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ProblemError } from '../lib/problem.js';
import { requestCounts, SharedRateLimiter, type RateLimiterOptions } from '../lib/rate-limiter.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Counts the request against its user's limit (all replicas); the 429 to answer when it is over. */
    rateLimitViolation(request: FastifyRequest): ProblemError | undefined;
  }
}

/**
 * The per-user request limit of /api/v1 (RATE_LIMIT_MAX per RATE_LIMIT_WINDOW_MS), shared by every
 * replica through the database (SharedRateLimiter). The scope that uses it calls
 * `rateLimitViolation` once the caller is known.
 */
async function rateLimitPlugin(app: FastifyInstance, options: RateLimiterOptions) {
  const limiter = new SharedRateLimiter(requestCounts(app.database.sql), options, app.log);
  app.addHook('onClose', () => limiter.stop());
  const detail = `Too many requests: at most ${options.max} per ${options.windowMs / 1000} s.`;
  app.decorate('rateLimitViolation', (request: FastifyRequest) => {
    if (limiter.take(request.user.id)) return undefined;
    return new ProblemError(429, 'RATE_LIMITED', detail, { headers: { 'retry-after': String(limiter.retryAfterSeconds()) } });
  });
}

export default fp(rateLimitPlugin, { name: 'autonode-rate-limit', fastify: '5.x', dependencies: ['autonode-db'] });
