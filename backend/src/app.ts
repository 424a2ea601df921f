import rateLimit from '@fastify/rate-limit';
import Fastify, { type onRequestHookHandler, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type RawReplyDefaultExpression, type RawRequestDefaultExpression, type RawServerDefault } from 'fastify';
import { validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import type { Auth } from './auth/auth.js';
import authPlugin, { requireUser } from './auth/plugin.js';
import type { Config } from './config.js';
import type { DbClient } from './db/client.js';
import type { EventBus } from './engine/events.js';
import dbPlugin from './db/plugin.js';
import { Admission } from './lib/admission.js';
import { exceedsDepth } from './lib/json-depth.js';
import { ProblemError, serviceUnavailable } from './lib/problem.js';
import { requestIdFrom } from './lib/request-id.js';
import { responseSerializerCompiler } from './lib/serializer.js';
import docsPlugin from './plugins/docs.js';
import errorsPlugin, { problem, sendProblem } from './plugins/errors.js';
import securityPlugin from './plugins/security.js';
import { healthRoutes } from './routes/health.js';
import { apiKeyRoutes } from './routes/api-keys/index.js';
import { executionRoutes } from './routes/executions/index.js';
import { jobRoutes } from './routes/jobs/index.js';
import { meRoutes } from './routes/me/index.js';
import { workflowRoutes } from './routes/workflows/index.js';
import { testSupportRoutes } from './routes/test-support.js';

export interface AppDeps {
  readonly config: Config;
  readonly database: DbClient;
  readonly auth: Auth;
  readonly logger: Logger;
  /** Engine notifications: announces new work, carries live execution events (SSE) and cancels. */
  readonly bus: EventBus;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Gives back this request's database permit (also done when the response is sent). */
    releaseAdmission: (() => void) | null;
    /** The HANDLER_TIMEOUT_MS timer of this request. */
    deadline: NodeJS.Timeout | null;
  }
  interface FastifyInstance {
    config: Config;
    bus: EventBus;
    /** Open server-sent event streams, ended when the server closes (they would hold it open). */
    eventStreams: Set<() => void>;
  }
}

export type App = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  ZodTypeProvider
>;

/** 1 MiB: a large workflow graph fits many times over; anything bigger is a mistake or an attack. */
export const BODY_LIMIT_BYTES = 1024 * 1024;
/** Deeper JSON bodies are refused (400): no legitimate workflow or input needs more. */
export const MAX_JSON_DEPTH = 64;
/**
 * Requests admitted to the database per pooled connection. Above 1, postgres.js pipelines: up to
 * this many queries share a connection's writes and reads (fewer system calls under load); the price
 * is that a query may wait behind at most this many minus one on its connection, each bounded by
 * DB_STATEMENT_TIMEOUT and the request by HANDLER_TIMEOUT_MS.
 */
export const QUERIES_PER_CONNECTION = 4;

/** A hop count becomes the equivalent function (Fastify's types take booleans, lists and functions). */
function toFastifyTrustProxy(setting: Config['trustProxy']): boolean | string[] | ((address: string, hop: number) => boolean) {
  if (typeof setting === 'number') return (_address, hop) => hop < setting;
  if (typeof setting === 'boolean') return setting;
  return [...setting];
}

/**
 * Builds the whole HTTP application from injected parts. It never listens and never opens a
 * pool: the entry (server.ts) or a test owns those. Closing the app ends the injected pool.
 */
export async function buildApp({ config, database, auth, logger, bus }: AppDeps): Promise<App> {
  const loggerInstance: FastifyBaseLogger = logger;
  const app = Fastify({
    loggerInstance,
    trustProxy: toFastifyTrustProxy(config.trustProxy),
    genReqId: requestIdFrom,
    bodyLimit: BODY_LIMIT_BYTES,
    // Stop route handlers that never answer; the client gets a 503 instead of waiting forever.
    requestTimeout: 60_000,
    // Our own onRequest hook answers during shutdown, in problem+json like every other error.
    return503OnClosing: false,
    routerOptions: { ignoreTrailingSlash: true },
    // Errors Fastify raises before routing (a malformed URL, an over-long parameter) get the same
    // problem+json shape as all others.
    frameworkErrors: (error, request, reply) => {
      const status = error.statusCode ?? 400;
      reply.header('x-request-id', request.id);
      return sendProblem(reply, problem(request, status, error.code === 'FST_ERR_BAD_URL' ? 'BAD_URL' : (error.code ?? 'BAD_REQUEST'), error.message));
    },
  }).withTypeProvider<ZodTypeProvider>();

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(responseSerializerCompiler);

  // Fastify's own JSON parser (prototype poisoning refused), plus a depth bound: nothing downstream
  // (hashing for idempotency, jsonb, expressions) should meet a body nested a million levels deep.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    parseJson(request, body.toString(), (error, value) => {
      if (error) return done(error, undefined);
      if (exceedsDepth(value, MAX_JSON_DEPTH)) {
        return done(new ProblemError(400, 'JSON_TOO_DEEP', `The body is nested deeper than ${MAX_JSON_DEPTH} levels.`), undefined);
      }
      done(null, value);
    });
  });

  // While closing, a response that finishes must also end its keep-alive connection; otherwise
  // the server waits for the client's idle timeout before it can close.
  let closing = false;
  app.decorate('config', config);
  app.decorate('bus', bus);
  app.decorate('eventStreams', new Set<() => void>());
  app.addHook('preClose', async () => {
    closing = true;
    for (const end of [...app.eventStreams]) end();
  });

  // The hooks every request runs are callback-style: an async hook costs promises and microtask
  // turns on each request, and these do nothing asynchronous.
  app.decorateRequest('deadline', null);
  app.decorateRequest('releaseAdmission', null);
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    if (closing) {
      reply.header('connection', 'close');
      return done(serviceUnavailable('The server is shutting down; try again (another replica may answer).', 5, 'SHUTTING_DOWN'));
    }
    // Every request is answered within HANDLER_TIMEOUT_MS, whatever it waits on (a database that
    // vanished mid-query can leave a driver call pending): 503 problem+json, and its permit is freed.
    // A timer per request, not a shared Map of deadlines: a Map that every request enters and
    // leaves made V8 keep finished requests through scavenges (bench/README.md), and cost more
    // CPU than the timers.
    const deadline = setTimeout(() => {
      // A hijacked reply (an event stream) counts as sent and is left alone.
      if (reply.sent) return;
      request.log.warn({ timeoutMs: config.handlerTimeoutMs }, 'request timed out');
      void sendProblem(reply, problem(request, 503, 'TIMEOUT', 'The request took too long; try again.'), { 'retry-after': '5' });
    }, config.handlerTimeoutMs);
    deadline.unref();
    request.deadline = deadline;
    done();
  });
  const settle = (request: FastifyRequest) => {
    if (request.deadline) clearTimeout(request.deadline);
    request.releaseAdmission?.();
  };
  app.addHook('onResponse', (request, _reply, done) => {
    settle(request);
    done();
  });
  app.addHook('onRequestAbort', (request, done) => {
    settle(request);
    done();
  });
  app.addHook('onSend', (_request, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });

  // A bounded wait for the database (see Admission): a request holds a permit from onRequest to its
  // response. The response's 'close' fires however the exchange ends (answered, timed out, or the
  // client went away, possibly while the request was still waiting): the permit always returns.
  // There are QUERIES_PER_CONNECTION permits per pooled connection, so under load postgres.js
  // pipelines several queries on a connection in one write and reads their results in one read:
  // with one permit per connection it never did (one write and one read per query, bench/).
  const admission = new Admission(database.poolSize * QUERIES_PER_CONNECTION, config.db.acquireTimeoutMs);
  const hold = (request: FastifyRequest, reply: FastifyReply, release: () => void) => {
    request.releaseAdmission = release;
    if (reply.raw.closed || request.raw.destroyed) release();
    else reply.raw.once('close', release);
  };
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

  // Order matters: errors first (every later failure uses it), the docs before any route so they
  // see them all, then the shared decorators, then the routes.
  await app.register(errorsPlugin);
  await app.register(securityPlugin, { corsOrigins: config.corsOrigins, apiBaseUrl: config.auth.apiBaseUrl });
  await app.register(docsPlugin, { apiBaseUrl: config.auth.apiBaseUrl });
  await app.register(dbPlugin, { database });
  await app.register(authPlugin, {
    auth,
    apiBaseUrl: config.auth.apiBaseUrl,
    bus,
    callerCacheTtlMs: config.auth.callerCacheTtlMs,
    failureLimitPerMinute: config.auth.failureLimitPerMinute,
    admit,
  });

  await app.register(healthRoutes);
  if (config.enableTestRoutes) {
    await app.register(async (testScope) => {
      testScope.addHook('onRequest', admit);
      await testScope.register(testSupportRoutes);
    });
  }

  // Everything under /api/v1 needs a caller; it is resolved once, here, for the whole scope, before
  // the body is read: a caller without credentials learns nothing, not even what the schema wants.
  await app.register(
    async (v1) => {
      v1.addHook('onRequest', admit);
      v1.addHook('onRequest', (request, _reply, done) => {
        requireUser(request, (error) => done(error ?? app.csrfViolation(request)));
      });
      // Per caller, after authentication: one user cannot starve the others.
      await v1.register(rateLimit, {
        hook: 'preHandler',
        max: config.rateLimit.max,
        timeWindow: config.rateLimit.windowMs,
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
    },
    { prefix: '/api/v1' },
  );

  return app;
}
