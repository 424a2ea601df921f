import { setMaxListeners } from 'node:events';
import type { FastifyError, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { serialize } from '../executions/payloads.js';
import { exceedsDepth } from '../lib/json-depth.js';
import { notFound, ProblemError, serviceUnavailable } from '../lib/problem.js';
import { SharedRateLimiter } from '../lib/rate-limiter.js';
import { MAX_JSON_DEPTH } from '../plugins/json-body.js';
import { waitForEnd } from './completion.js';
import { bodyKindOf, triggerInputOf, visibleHeaders, type DeliveryRequest, type WebhookTriggerInput } from './delivery-input.js';
import { hookDeliveryCounts } from './rate-limit.js';
import { findHook, readHookSecret, recordRejected, type Hook } from './repository.js';
import { HOOK_ID, HOOK_ROUTE, HookAccepted, HookCompleted, HookHeaders, HookParams } from './schemas.js';
import { crashAfterCommit } from './test-crash.js';
import { sentHeaders, verifyDelivery } from './verify.js';

/** 1 MiB of raw body: the signature is over these bytes, so they are kept exactly as received. */
const HOOK_BODY_LIMIT_BYTES = 1024 * 1024;
/** How long `respond: "completed"` waits when the node sets no timeoutMs. */
const DEFAULT_RESPOND_TIMEOUT_MS = 10_000;
/** Left of the request's deadline (HANDLER_TIMEOUT_MS) after a wait: to read the outcome and answer before it. */
const DEADLINE_MARGIN_MS = 1_000;
/** Retry-After of a delivery refused for its owner's storage: space is freed by the owner, not by a moment's wait. */
const STORAGE_RETRY_AFTER_S = 60;
/** Retry-After of a delivery refused because its owner's runs are waiting: they run within seconds. */
const BACKLOG_RETRY_AFTER_S = 5;
/** Retry-After of a delivery checked against a version of the workflow saved over since: it is checked again at once. */
const CHANGED_RETRY_AFTER_S = 1;
const EMPTY_BODY = Buffer.alloc(0);

/** The one answer to a delivery that fails its check, whatever failed: the sender learns nothing that helps it guess. */
const signatureInvalid = () => new ProblemError(401, 'WEBHOOK_SIGNATURE_INVALID', 'The delivery could not be verified.');
const unsupportedMediaType = () =>
  new ProblemError(415, 'UNSUPPORTED_MEDIA_TYPE', 'Send the body as JSON (application/json or application/*+json), a form (application/x-www-form-urlencoded) or text (text/*).');
const inputTooLarge = (bytes: number, maxBytes: number) =>
  new ProblemError(
    413,
    'PAYLOAD_TOO_LARGE',
    `The delivery makes a run input of ${bytes} bytes of JSON (its method, headers, query and body, text escaped); at most ${maxBytes} are taken.`,
  );
/**
 * The answers to a delivery its owner's limits refuse, or that must be checked again: they say
 * nothing of the owner (their usage, their runs) to an anonymous sender. The owner reads why in
 * the `rejected` delivery recorded for it.
 */
const notNow = (retryAfterSeconds: number) => serviceUnavailable('The webhook cannot take this delivery right now; send it again later.', retryAfterSeconds);
const tooManyWaiting = () =>
  new ProblemError(429, 'RATE_LIMITED', 'The webhook cannot take more deliveries right now; send it again later.', {
    headers: { 'retry-after': String(BACKLOG_RETRY_AFTER_S) },
  });

/**
 * POST /api/hooks/:hookId (API.md, Inbound webhooks): workflows started by the outside world. No
 * caller and no Origin check (the hook id, 128 random bits, is the capability; `verify` can demand
 * a signature too), but a database permit like every route that uses the database.
 *
 * In order:
 *  1. onRequest: an id that cannot be a hook id (HOOK_ID) is 404 at once, with no query.
 *  2. the body is read raw (415 for a type other than JSON, form or text; 413 over 1 MiB). No
 *     database permit is held yet: a sender that uploads slowly holds none.
 *  3. preValidation: the permit is taken (503 OVERLOADED when none comes), the hook looked up (404)
 *     and the per-hook rate limit counted (429); so an unknown hook is 404 whatever its headers.
 *  4. the headers are validated (400 for a malformed webhook-id or Idempotency-Key).
 *  5. the body is parsed as the workflow will see it (400 for JSON that does not parse, or too
 *     deep), and the run input measured: over ENGINE_MAX_PAYLOAD_BYTES it is 413 and a `rejected`
 *     delivery with the reason, before any verification work.
 *  6. the delivery is checked (401 and a `rejected` delivery with the reason).
 *  7. one transaction stores the execution and its `accepted` delivery, or, for a repeated
 *     webhook-id or Idempotency-Key, a `duplicate` and the first delivery's answer
 *     (lifecycle.acceptDelivery). When the owner may start no run, the sender gets a generic 503
 *     (storage) or 429 (runs waiting) and the owner a `rejected` delivery saying which; when the
 *     workflow was saved since the hook was looked up, 503 with Retry-After: 1, to be checked again.
 * 202 `{ executionId, deliveryId }`; with `respond: "completed"`, 200 `{ executionId, status,
 * output }` if the run ends within timeoutMs (waitForEnd).
 *
 * A `rejected` delivery keeps no body (insertDelivery), so forged deliveries cannot fill the
 * owner's storage. This scope has its own body parsers (the app's JSON-only parser would refuse
 * forms and text and keeps no raw bytes) and its own wording for a refused media type.
 */
export const hookRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sql } = app.database;
  const limits = app.config.webhookRateLimit;
  const maxInputBytes = app.config.engine.maxPayloadBytes;
  const limiter = new SharedRateLimiter(hookDeliveryCounts(sql, limits.max), limits, app.log);
  // Requests waiting for a run to end stop waiting as the server starts closing: their deliveries
  // are stored, so they answer 202. Each waiting request listens to the signal, however many wait.
  const closing = new AbortController();
  setMaxListeners(0, closing.signal);
  app.addHook('preClose', async () => closing.abort());
  app.addHook('onClose', () => limiter.stop());
  if (app.config.enableTestRoutes) app.addHook('onSend', crashAfterCommit);

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: HOOK_BODY_LIMIT_BYTES }, (request, body, done) => {
    if (bodyKindOf(request.headers['content-type']) === undefined) return done(unsupportedMediaType(), undefined);
    done(null, body);
  });
  // Fastify refuses a content type it cannot parse at all before any parser runs; the rest goes to the app's handler.
  app.setErrorHandler((error: FastifyError) => {
    throw error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? unsupportedMediaType() : error;
  });

  /** Each request's hook, from its lookup (preValidation) to its handler. */
  const hooks = new WeakMap<FastifyRequest, Hook>();

  app.post(
    HOOK_ROUTE,
    {
      bodyLimit: HOOK_BODY_LIMIT_BYTES,
      schema: {
        tags: ['webhooks'],
        summary: 'Deliver a webhook: starts the workflow (answers, in order: 404 not a hook id, 415/413 body, 404 unknown hook, 429 rate limit, 400 headers, 400 body, 413 run input, 401 check)',
        description:
          'No caller needed: the URL is the workflow\'s `webhook.url`. The body (up to 1 MiB of JSON, a form or text; or none) is checked as the ' +
          'trigger.webhook node\'s `verify` says (401 WEBHOOK_SIGNATURE_INVALID otherwise), stored, and its execution created before the answer: ' +
          '202 `{ executionId, deliveryId }`. The run input `{ method, headers, query, body, receivedAt }` as JSON must fit ENGINE_MAX_PAYLOAD_BYTES ' +
          '(413 otherwise). A refused delivery (401, 413 run input, or a 503/429 below) is kept as `rejected`, without its body, with the reason ' +
          'for the owner. A repeated webhook-id (or Idempotency-Key) within 24 h answers with the first accepted delivery and starts nothing. ' +
          'With `respond: "completed"` the answer waits up to timeoutMs (and within HANDLER_TIMEOUT_MS) for the run to end: 200 with its status ' +
          'and output, else 202 as usual; a repeat waits on the first delivery\'s run. Per-hook rate limit: 429 with Retry-After. When the ' +
          'workflow cannot take the delivery now: 503 or 429 with Retry-After (send it again then).',
        params: HookParams,
        headers: HookHeaders,
        body: z.unknown().optional().meta({ description: 'JSON, application/x-www-form-urlencoded or text/*, as the sender signed it; or none.' }),
        consumes: ['application/json', 'application/x-www-form-urlencoded', 'text/plain'],
        response: { 200: HookCompleted, 202: HookAccepted },
      },
      onRequest: (request, _reply, done) => done(HOOK_ID.test(request.params.hookId) ? undefined : notFound('webhook')),
      preValidation: [
        app.admit,
        async (request) => {
          const hook = await findHook(sql, request.params.hookId);
          if (!hook) throw notFound('webhook');
          if (!limiter.take(hook.workflowId)) {
            throw new ProblemError(429, 'RATE_LIMITED', `Too many deliveries to this webhook: at most ${limits.max} per ${limits.windowMs / 1000} s.`, {
              headers: { 'retry-after': String(limiter.retryAfterSeconds()) },
            });
          }
          hooks.set(request, hook);
        },
      ],
    },
    async (request, reply) => {
      const hook = hooks.get(request);
      if (!hook) throw new Error('the hook route ran without its lookup');
      // When its headers came: the deadline (HANDLER_TIMEOUT_MS) counts from then too.
      const receivedAt = new Date(Date.now() - reply.elapsedTime);
      const { verify, respond, timeoutMs } = hook.params;
      const body = Buffer.isBuffer(request.body) ? request.body : EMPTY_BODY;
      const delivery: DeliveryRequest = {
        method: request.method,
        headers: visibleHeaders(request.headers, verify),
        query: request.query as Record<string, unknown>,
        contentType: request.headers['content-type'] ?? null,
        body,
        receivedAt,
      };
      const dedupKey = request.headers['webhook-id'] ?? request.headers['idempotency-key'] ?? null;

      let parsed: WebhookTriggerInput;
      try {
        parsed = triggerInputOf(delivery);
      } catch (error) {
        if (error instanceof SyntaxError) throw new ProblemError(400, 'MALFORMED_JSON', 'The body is not valid JSON.');
        throw error;
      }
      if (exceedsDepth(parsed.body, MAX_JSON_DEPTH)) throw new ProblemError(400, 'JSON_TOO_DEEP', `The body is nested deeper than ${MAX_JSON_DEPTH} levels.`);
      // Serialized once, here: measured now, and written as is by acceptDelivery.
      const input = serialize(parsed);
      if (input === undefined) throw new TypeError('a delivery input serialized to nothing');
      if (input.bytes > maxInputBytes) {
        const reason = `its run input (method, headers, query and body as JSON) is ${input.bytes} bytes, more than ENGINE_MAX_PAYLOAD_BYTES (${maxInputBytes}); the sender was answered 413`;
        await recordRejected(sql, hook, delivery, dedupKey, reason);
        throw inputTooLarge(input.bytes, maxInputBytes);
      }

      const secret = verify && verify.scheme !== 'none' ? await readHookSecret(sql, app.keyring, request.log, hook.userId, verify.secretVariable) : undefined;
      const verification = verifyDelivery(verify, secret, body, sentHeaders(request.raw.rawHeaders));
      if (!verification.ok) {
        await recordRejected(sql, hook, delivery, dedupKey, verification.reason);
        throw signatureInvalid();
      }

      const outcome = await app.executions.acceptDelivery({
        userId: hook.userId,
        workflowId: hook.workflowId,
        workflowVersion: hook.version,
        hookId: hook.hookId,
        dedupKey,
        request: delivery,
        input,
      });
      switch (outcome.kind) {
        case 'gone':
          throw notFound('webhook');
        case 'changed':
          throw notNow(CHANGED_RETRY_AFTER_S);
        case 'refused': {
          const answer = outcome.limit === 'storage' ? notNow(STORAGE_RETRY_AFTER_S) : tooManyWaiting();
          await recordRejected(sql, hook, delivery, dedupKey, `no run could start: ${outcome.reason} The sender was answered ${answer.status} and may send it again.`);
          throw answer;
        }
        case 'stored':
          break;
      }

      const { executionId, deliveryId } = outcome;
      if (respond === 'completed') {
        const waitMs = Math.min(timeoutMs ?? DEFAULT_RESPOND_TIMEOUT_MS, app.config.handlerTimeoutMs - reply.elapsedTime - DEADLINE_MARGIN_MS);
        // The delivery is stored: whatever goes wrong while waiting, the sender is told so (202), not
        // asked to send it again (a 5xx), which would start a second run of a delivery without an id.
        const ended = await waitForEnd(request, reply, executionId, waitMs, closing.signal).catch((error: unknown) => {
          request.log.warn({ err: error, executionId }, 'could not wait for a webhook run to end; answering 202');
          return null;
        });
        // The run's error is not the sender's to read: the owner reads it through the API.
        if (ended) return reply.code(200).send({ executionId, status: ended.status, output: ended.output } satisfies HookCompleted);
      }
      return reply.code(202).send({ executionId, deliveryId });
    },
  );
};
