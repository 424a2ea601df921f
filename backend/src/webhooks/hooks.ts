import { setMaxListeners } from 'node:events';
import type { FastifyError } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { SharedRateLimiter } from '../lib/rate-limiter.js';
import { exceedsDepth } from '../lib/json-depth.js';
import { notFound, ProblemError } from '../lib/problem.js';
import { MAX_JSON_DEPTH } from '../plugins/json-body.js';
import { waitForEnd } from './completion.js';
import { bodyKindOf, triggerInputOf, visibleHeaders, type DeliveryRequest, type WebhookTriggerInput } from './delivery-input.js';
import { hookDeliveryCounts } from './rate-limit.js';
import { findHook, readHookSecret, recordRejected } from './repository.js';
import { HookAccepted, HookCompleted, HookHeaders, HookParams } from './schemas.js';
import { verifyDelivery } from './verify.js';

/** 1 MiB of raw body: the signature is over these bytes, so they are kept exactly as received. */
export const HOOK_BODY_LIMIT_BYTES = 1024 * 1024;
/** How long `respond: "completed"` waits when the node sets no timeoutMs. */
export const DEFAULT_RESPOND_TIMEOUT_MS = 10_000;
/** Left of the request's deadline (HANDLER_TIMEOUT_MS) after a wait: to read the outcome and answer before it. */
const DEADLINE_MARGIN_MS = 1_000;
/** With ENABLE_TEST_ROUTES only: the process kills itself once the delivery is committed, before it answers (the crash test). */
export const CRASH_AFTER_COMMIT_HEADER = 'x-autonode-test-crash-after-commit';

/** The shape of a hook id (base64url, see workflows/repository.ts): anything else is unknown without a query. */
const HOOK_ID = /^[A-Za-z0-9_-]{1,64}$/;
const EMPTY_BODY = Buffer.alloc(0);

/** The one answer to a delivery that fails its check, whatever failed: the sender learns nothing that helps it guess. */
const signatureInvalid = () => new ProblemError(401, 'WEBHOOK_SIGNATURE_INVALID', 'The delivery could not be verified.');
const unsupportedMediaType = () =>
  new ProblemError(415, 'UNSUPPORTED_MEDIA_TYPE', 'Send the body as JSON (application/json or application/*+json), a form (application/x-www-form-urlencoded) or text (text/*).');

/**
 * POST /api/hooks/:hookId (API.md, Inbound webhooks): workflows started by the outside world. No
 * caller and no Origin check (the hook id, 128 random bits, is the capability; `verify` can demand
 * a signature too), but a database permit like every route that uses the database.
 *
 * In order: the body is read raw (415 for a type other than JSON, form or text; 413 over 1 MiB);
 * the hook is looked up (404); the per-hook rate limit is counted (429); the body is parsed as the
 * workflow will see it (400 for JSON that does not parse); the delivery is checked (401 and a
 * `rejected` row with the reason); then one transaction stores the execution and its `accepted`
 * delivery, or, for a repeated webhook-id or Idempotency-Key, a `duplicate` and the first
 * delivery's answer (lifecycle.acceptDelivery). 202 `{ executionId, deliveryId }`; with
 * `respond: "completed"`, 200 with the outcome if the run ends within timeoutMs (waitForEnd).
 *
 * This scope has its own body parsers (the app's JSON-only parser would refuse forms and text and
 * keeps no raw bytes) and its own wording for a refused media type.
 */
export const hookRoutes: FastifyPluginAsyncZod = async (app) => {
  const { sql } = app.database;
  const limits = app.config.webhookRateLimit;
  const limiter = new SharedRateLimiter(hookDeliveryCounts(sql, limits.max), limits, app.log);
  // Requests waiting for a run to end stop waiting as the server starts closing: their deliveries
  // are stored, so they answer 202. Each waiting request listens to the signal, however many wait.
  const closing = new AbortController();
  setMaxListeners(0, closing.signal);
  app.addHook('preClose', async () => closing.abort());
  app.addHook('onClose', () => limiter.stop());

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: HOOK_BODY_LIMIT_BYTES }, (request, body, done) => {
    if (bodyKindOf(request.headers['content-type']) === undefined) return done(unsupportedMediaType(), undefined);
    done(null, body);
  });
  // Fastify refuses a content type it cannot parse at all before any parser runs; the rest goes to the app's handler.
  app.setErrorHandler((error: FastifyError) => {
    throw error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? unsupportedMediaType() : error;
  });
  app.addHook('onRequest', app.admit);

  app.post(
    '/api/hooks/:hookId',
    {
      bodyLimit: HOOK_BODY_LIMIT_BYTES,
      schema: {
        tags: ['webhooks'],
        summary: 'Deliver a webhook: starts the workflow',
        description:
          'No caller needed: the URL is the workflow\'s `webhook.url`. The body (up to 1 MiB of JSON, a form or text; or none) is checked as the ' +
          'trigger.webhook node\'s `verify` says (401 WEBHOOK_SIGNATURE_INVALID otherwise), stored, and its execution created before the answer: ' +
          '202 `{ executionId, deliveryId }`. A repeated webhook-id (or Idempotency-Key) within 24 h answers with the first delivery and starts ' +
          'nothing. With `respond: "completed"` the answer waits up to timeoutMs (and within HANDLER_TIMEOUT_MS) for the run to end: 200 with its ' +
          'status and output (and error), else 202 as usual; a repeat waits on the first delivery\'s run. Per-hook rate limit: 429 with Retry-After.',
        params: HookParams,
        headers: HookHeaders,
        body: z.unknown().optional().meta({ description: 'JSON, application/x-www-form-urlencoded or text/*, as the sender signed it; or none.' }),
        consumes: ['application/json', 'application/x-www-form-urlencoded', 'text/plain'],
        response: { 200: HookCompleted, 202: HookAccepted },
      },
    },
    async (request, reply) => {
      const receivedAt = new Date();
      const hookId = request.params.hookId;
      const hook = HOOK_ID.test(hookId) ? await findHook(sql, hookId) : null;
      if (!hook) throw notFound('webhook');
      if (!limiter.take(hook.workflowId)) {
        throw new ProblemError(429, 'RATE_LIMITED', `Too many deliveries to this webhook: at most ${limits.max} per ${limits.windowMs / 1000} s.`, {
          headers: { 'retry-after': String(limiter.retryAfterSeconds()) },
        });
      }

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
      let input: WebhookTriggerInput;
      try {
        input = triggerInputOf(delivery);
      } catch (error) {
        if (error instanceof SyntaxError) throw new ProblemError(400, 'MALFORMED_JSON', 'The body is not valid JSON.');
        throw error;
      }
      if (exceedsDepth(input.body, MAX_JSON_DEPTH)) throw new ProblemError(400, 'JSON_TOO_DEEP', `The body is nested deeper than ${MAX_JSON_DEPTH} levels.`);

      const dedupKey = request.headers['webhook-id'] ?? request.headers['idempotency-key'] ?? null;
      const secret = verify && verify.scheme !== 'none' ? await readHookSecret(sql, app.keyring, request.log, hook.userId, verify.secretVariable) : undefined;
      const verification = verifyDelivery(verify, secret, body, request.headers);
      if (!verification.ok) {
        await recordRejected(sql, hook, delivery, dedupKey, verification.reason);
        throw signatureInvalid();
      }

      const accepted = await app.executions.acceptDelivery({
        userId: hook.userId,
        workflowId: hook.workflowId,
        workflowVersion: hook.version,
        hookId,
        dedupKey,
        request: delivery,
        input,
      });
      if (!accepted) throw notFound('webhook');
      if (app.config.enableTestRoutes && request.headers[CRASH_AFTER_COMMIT_HEADER] === '1') process.kill(process.pid, 'SIGKILL');

      const answer = { executionId: accepted.executionId, deliveryId: accepted.deliveryId };
      if (respond === 'completed') {
        const waitMs = Math.min(timeoutMs ?? DEFAULT_RESPOND_TIMEOUT_MS, app.config.handlerTimeoutMs - (Date.now() - receivedAt.getTime()) - DEADLINE_MARGIN_MS);
        // The delivery is stored: whatever goes wrong while waiting, the sender is told so (202), not
        // asked to send it again (a 5xx), which would start a second run of a delivery without an id.
        const outcome = await waitForEnd(request, reply, accepted.executionId, waitMs, closing.signal).catch((error: unknown) => {
          request.log.warn({ err: error, executionId: accepted.executionId }, 'could not wait for a webhook run to end; answering 202');
          return null;
        });
        if (outcome) {
          const ended: HookCompleted = { executionId: accepted.executionId, status: outcome.status, output: outcome.output };
          return reply.code(200).send(outcome.status === 'completed' ? ended : { ...ended, error: outcome.error });
        }
      }
      return reply.code(202).send(answer);
    },
  );
};
