import type { IncomingMessage, ServerResponse } from 'node:http';
import cors from '@fastify/cors';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import helmet, { type HelmetOptions } from 'helmet';
import { forbidden, type ProblemError } from '../lib/problem.js';

export interface SecurityPluginOptions {
  readonly corsOrigins: readonly string[];
  /** Public API root: its origin is the same-site origin (the SPA behind Caddy). */
  readonly apiBaseUrl: string;
}

const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The headers helmet sets for these options, worked out once. They do not depend on the request,
 * and helmet builds its middleware (parsing every CSP directive) each time it is called: running it
 * per request, as @fastify/helmet does, cost 5–8% of a list request's CPU.
 */
export function securityHeaders(options: Readonly<HelmetOptions>): Readonly<Record<string, string>> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  };
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, (error?: unknown) => {
    if (error) throw error;
  });
  return Object.freeze(headers);
}

/**
 * Security headers fit for a JSON API, CORS with credentials for the SPA origins only, and a
 * CSRF check on our own routes like Better Auth's on its: a state-changing request carrying a
 * cookie must come from a trusted Origin. API-key calls carry no cookie and are not affected.
 */
async function securityPlugin(app: FastifyInstance, { corsOrigins, apiBaseUrl }: SecurityPluginOptions) {
  const headers = securityHeaders({
    // Responses are JSON: nothing may be loaded, framed or run from them. The docs page sets its own CSP.
    // Only these directives (not helmet's defaults for HTML pages): default-src 'none' already covers the rest.
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"], baseUri: ["'none'"], formAction: ["'none'"] } },
    crossOriginResourcePolicy: { policy: 'same-site' },
  });
  app.addHook('onRequest', (_request, reply, done) => {
    reply.headers(headers);
    done();
  });
  await app.register(cors, {
    origin: [...corsOrigins],
    credentials: true,
    methods: ['GET', 'HEAD', 'POST', 'PATCH', 'PUT', 'DELETE', 'OPTIONS'],
    allowedHeaders: ['content-type', 'authorization', 'x-api-key', 'if-match', 'if-none-match', 'idempotency-key', 'x-request-id'],
    exposedHeaders: ['etag', 'location', 'retry-after', 'x-request-id'],
    maxAge: 600,
  });

  const trusted = new Set([...corsOrigins, new URL(apiBaseUrl).origin]);
  app.decorate('csrfViolation', (request: FastifyRequest) => {
    if (safeMethods.has(request.method) || !request.headers.cookie) return undefined;
    const origin = request.headers.origin;
    if (origin !== undefined) {
      return trusted.has(origin) ? undefined : forbidden(`Requests from ${origin} may not change data with a session cookie.`, 'CSRF_ORIGIN_REJECTED');
    }
    // No Origin: a browser tells where the request came from through Fetch Metadata.
    const site = request.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') {
      return forbidden('A cross-site request may not change data with a session cookie.', 'CSRF_ORIGIN_REJECTED');
    }
    return undefined;
  });
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The 403 for a cookie-authenticated, state-changing request from an untrusted origin; undefined when none applies. */
    csrfViolation(request: FastifyRequest): ProblemError | undefined;
  }
}

export default fp(securityPlugin, { name: 'autonode-security', fastify: '5.x' });
