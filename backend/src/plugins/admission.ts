import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import fp from 'fastify-plugin';
import { Admission } from '../lib/admission.js';
import { serviceUnavailable } from '../lib/problem.js';

/**
 * Requests admitted to the database per pooled connection. Above 1, postgres.js pipelines: up to
 * this many queries share a connection's writes and reads (fewer system calls under load); the price
 * is that a query may wait behind at most this many minus one on its connection, each bounded by
 * DB_STATEMENT_TIMEOUT and the request by HANDLER_TIMEOUT_MS.
 */
export const QUERIES_PER_CONNECTION = 4;

export interface AdmissionPluginOptions {
  /** DB_ACQUIRE_TIMEOUT_MS: the longest a request waits for a permit before 503 OVERLOADED. */
  readonly acquireTimeoutMs: number;
}

const permitOf = Symbol('admission permit');
declare module 'fastify' {
  interface FastifyInstance {
    /** An onRequest hook: the request waits (boundedly) for a database permit, held until its response. */
    admit: onRequestHookHandler;
    /** Gives the request's permit back early: a long-lived response (an event stream) holds no permit. */
    releaseAdmission(request: FastifyRequest): void;
  }
  interface FastifyRequest {
    [permitOf]: (() => void) | null;
  }
}

/**
 * A bounded wait for the database (see Admission). The scopes that use the database add `admit`
 * as an onRequest hook. The permit returns on the response's 'close', which fires however the
 * exchange ends (answered, timed out, or the client went away, even while the request still
 * waited), or earlier through releaseAdmission; a permit is released once whatever the path.
 */
async function admissionPlugin(app: FastifyInstance, { acquireTimeoutMs }: AdmissionPluginOptions) {
  const admission = new Admission(app.database.poolSize * QUERIES_PER_CONNECTION, acquireTimeoutMs);
  app.decorateRequest(permitOf, null);
  const hold = (request: FastifyRequest, reply: FastifyReply, release: () => void) => {
    request[permitOf] = release;
    if (reply.raw.closed || request.raw.destroyed) release();
    else reply.raw.once('close', release);
  };
  // Callback-style: a free permit, the common case, costs no promise.
  const admit: onRequestHookHandler = (request, reply, done) => {
    const free = admission.tryAcquire();
    if (free) {
      hold(request, reply, free);
      return done();
    }
    void admission.acquire().then((release) => {
      if (!release) return done(serviceUnavailable('The service is at capacity; try again shortly.', 1, 'OVERLOADED'));
      hold(request, reply, release);
      done();
    });
  };
  app.decorate('admit', admit);
  app.decorate('releaseAdmission', (request: FastifyRequest) => request[permitOf]?.());
}

export default fp(admissionPlugin, { name: 'autonode-admission', fastify: '5.x', dependencies: ['autonode-db'] });
