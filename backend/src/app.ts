import Fastify, { type FastifyBaseLogger, type FastifyInstance, type RawReplyDefaultExpression, type RawRequestDefaultExpression, type RawServerDefault } from 'fastify';
import { validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import type { Auth } from './auth/auth.js';
import authPlugin from './auth/plugin.js';
import busPlugin from './bus/plugin.js';
import type { Config } from './config.js';
import type { DbClient } from './db/client.js';
import dbPlugin from './db/plugin.js';
import executionsPlugin from './executions/plugin.js';
import { requestIdFrom } from './lib/request-id.js';
import { responseSerializerCompiler } from './lib/serializer.js';
import admissionPlugin from './plugins/admission.js';
import deadlinePlugin from './plugins/deadline.js';
import docsPlugin from './plugins/docs.js';
import errorsPlugin, { answerFrameworkError } from './plugins/errors.js';
import eventStreamsPlugin from './plugins/event-streams.js';
import jsonBodyPlugin from './plugins/json-body.js';
import securityPlugin from './plugins/security.js';
import secretsPlugin from './secrets/plugin.js';
import lifecyclePlugin from './plugins/lifecycle.js';
import rateLimitPlugin from './plugins/rate-limit.js';
import { healthRoutes } from './routes/health.js';
import { testSupportRoutes } from './routes/test-support.js';
import { v1Routes } from './routes/v1.js';
import { hookRoutes } from './webhooks/hooks.js';

export interface AppDeps {
  readonly config: Config;
  readonly database: DbClient;
  readonly auth: Auth;
  readonly logger: Logger;
}

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
  }
}

export type App = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, ZodTypeProvider>;

/** 1 MiB: a large workflow graph fits many times over; anything bigger is a mistake or an attack. */
export const BODY_LIMIT_BYTES = 1024 * 1024;

/** A hop count becomes the equivalent function (Fastify's types take booleans, lists and functions). */
function toFastifyTrustProxy(setting: Config['trustProxy']): boolean | string[] | ((address: string, hop: number) => boolean) {
  if (typeof setting === 'number') return (_address, hop) => hop < setting;
  if (typeof setting === 'boolean') return setting;
  return [...setting];
}

/**
 * Builds the whole HTTP application from injected parts. It never listens and never opens a pool:
 * the entry (server.ts) or a test owns those. Closing the app closes the bus, then the pool.
 * Order matters: errors first (every later failure uses them), docs before any route (they see
 * them all), the database before what uses it, routes last.
 */
export async function buildApp({ config, database, auth, logger }: AppDeps): Promise<App> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    trustProxy: toFastifyTrustProxy(config.trustProxy),
    genReqId: requestIdFrom,
    bodyLimit: BODY_LIMIT_BYTES,
    // Node's limit on receiving a whole request (headers and body) from a slow client; the
    // handler's own limit is HANDLER_TIMEOUT_MS (the deadline plugin).
    requestTimeout: 60_000,
    // The lifecycle plugin answers during shutdown, in problem+json like every other error.
    return503OnClosing: false,
    routerOptions: { ignoreTrailingSlash: true },
    frameworkErrors: answerFrameworkError,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(responseSerializerCompiler);
  app.decorate('config', config);

  await app.register(errorsPlugin);
  await app.register(lifecyclePlugin);
  await app.register(deadlinePlugin, { timeoutMs: config.handlerTimeoutMs });
  await app.register(jsonBodyPlugin);
  await app.register(securityPlugin, { corsOrigins: config.corsOrigins, apiBaseUrl: config.auth.apiBaseUrl });
  await app.register(docsPlugin, { apiBaseUrl: config.auth.apiBaseUrl });
  await app.register(dbPlugin, { database });
  await app.register(secretsPlugin);
  await app.register(busPlugin);
  await app.register(admissionPlugin, { acquireTimeoutMs: config.db.acquireTimeoutMs });
  await app.register(executionsPlugin, {
    maxPayloadBytes: config.engine.maxPayloadBytes,
    maxStorageBytes: config.storageMaxBytes,
    maxWaitingPerUser: config.engine.userWaitingMax,
    maxPageDataBytes: config.maxPageDataBytes,
  });
  await app.register(authPlugin, {
    auth,
    apiBaseUrl: config.auth.apiBaseUrl,
    callerCacheTtlMs: config.auth.callerCacheTtlMs,
    callerCacheMaxBytes: config.auth.callerCacheMaxBytes,
    failureLimitPerMinute: config.auth.failureLimitPerMinute,
  });
  await app.register(eventStreamsPlugin, { maxPerUser: config.eventStreamsPerUser });
  await app.register(rateLimitPlugin, config.rateLimit);
  await app.register(healthRoutes);
  if (config.enableTestRoutes) await app.register(testSupportRoutes);
  await app.register(v1Routes, { prefix: '/api/v1' });
  // Outside /api/v1: no caller; its own body parsers (raw bytes of JSON, forms and text).
  await app.register(hookRoutes);
  return app;
}
