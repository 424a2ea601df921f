import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { EventBus } from '../bus/bus.js';
import type { Sql } from '../db/client.js';
import { isDatabaseUnavailable } from '../db/errors.js';
import { StepError } from '../engine/errors.js';
import { performHttpRequest, type HttpGuard } from '../engine/http-request.js';
import { WakeablePause } from '../lib/wakeable-pause.js';
import { eventSubscriptionSecretBinding } from '../secrets/bindings.js';
import { SecretUnreadableError, type Keyring } from '../secrets/keyring.js';
import {
  claimMessages,
  DELIVERY_TIMEOUT_MS,
  hasDueMessages,
  recordAttempt,
  releaseMessage,
  RESPONSE_HEAD_BYTES,
  RETRY_MAX_MS,
  type AttemptOutcome,
  type ClaimedMessage,
} from './delivery-store.js';
import { signMessage, type SignedHeaders } from './signing.js';

export interface DeliverySettings {
  /** Messages this process sends at once. */
  readonly concurrency: number;
  /** Attempts in flight for one subscription, over every process. */
  readonly perSubscription: number;
  /** Attempts in flight for one user's subscriptions together, over every process (EVENT_DELIVERY_PER_USER). */
  readonly perUser: number;
  /** The first retry's longest wait; doubled per failure up to RETRY_MAX_MS. */
  readonly retryBaseMs: number;
  /** How often an idle worker looks for due messages that nothing announced (retries, expired leases, webhook.rejected). */
  readonly pollMs: number;
  /** ENGINE_HTTP_ALLOW: the http.request guard's exceptions apply to receivers as well. */
  readonly allow: readonly string[];
}

export interface DeliveryWorkerDeps {
  readonly sql: Sql;
  /** "work" (an outbox write announces it, as does wakeEventDelivery) wakes the workers. */
  readonly bus: EventBus;
  /** Opens the subscriptions' signing secrets. */
  readonly keyring: Keyring;
  readonly logger: Logger;
  readonly settings: DeliverySettings;
}

const USER_AGENT = 'autonode-events';

/**
 * Wakes every process's delivery workers (over the bus) to look for due messages now rather than at
 * their next poll: for whoever makes a message due outside a lifecycle statement, such as a retry
 * that sets one back to `pending`. Call it after that change has committed.
 */
export async function wakeEventDelivery(bus: EventBus): Promise<void> {
  await bus.publish({ kind: 'work' });
}

/**
 * The retry backoff: exponential from `baseMs`, doubled per failed attempt up to RETRY_MAX_MS, with
 * full jitter (a uniformly random wait below the ceiling), so receivers that fail together are not
 * retried together.
 */
export function retryDelayMs(attempt: number, baseMs: number): number {
  const ceiling = Math.min(RETRY_MAX_MS, baseMs * 2 ** Math.min(attempt - 1, 30));
  return Math.floor(Math.random() * ceiling);
}

/**
 * Sends the outbox's messages (events/outbox.ts) to their subscriptions: one loop per process
 * claims due messages (delivery-store.ts: leases, the per-subscription cap) up to `concurrency` at
 * once, and each is signed (Standard Webhooks; the previous secret too during a rotation's
 * overlap) and POSTed through the http.request guard with a DELIVERY_TIMEOUT_MS deadline, reading
 * at most RESPONSE_HEAD_BYTES of the answer. Delivery is at least once: a message whose outcome
 * could not be recorded is sent again, with the same `webhook-id`.
 *
 * Started and stopped by the engine (engine/engine.ts), in every process that runs it.
 */
export class EventDeliveryWorker {
  private readonly log: Logger;
  private readonly guard: HttpGuard;
  private readonly inFlight = new Map<string, { controller: AbortController; done: Promise<void> }>();
  private state: 'idle' | 'running' | 'draining' | 'stopped' = 'idle';
  private loop: Promise<void> | undefined;
  private unsubscribe: (() => void) | undefined;
  private readonly pause = new WakeablePause();

  constructor(private readonly deps: DeliveryWorkerDeps) {
    this.log = deps.logger.child({ module: 'event-delivery' });
    this.guard = { allow: deps.settings.allow, maxResponseBytes: RESPONSE_HEAD_BYTES, defaultTimeoutMs: DELIVERY_TIMEOUT_MS };
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.state = 'running';
    this.unsubscribe = this.deps.bus.subscribe((message) => {
      if (message.kind === 'work' || message.kind === 'resync') this.wake();
    });
    this.loop = this.claimLoop();
  }

  wake(): void {
    this.pause.wake();
  }

  private async claimLoop(): Promise<void> {
    const { concurrency, perSubscription, perUser, pollMs } = this.deps.settings;
    let waitMs = pollMs;
    while (this.state === 'running') {
      this.pause.beginTurn();
      try {
        const free = concurrency - this.inFlight.size;
        const claimed = free > 0 && (await hasDueMessages(this.deps.sql)) ? await claimMessages(this.deps.sql, free, perSubscription, perUser) : [];
        for (const message of claimed) this.launch(message);
        waitMs = pollMs;
        // A full batch suggests more due messages: look again at once.
        if (claimed.length > 0 && claimed.length === free) continue;
      } catch (error) {
        // Nothing is lost while the database is away: the messages wait in it.
        waitMs = Math.min(waitMs * 2, 5_000);
        if (this.state === 'running') this.pause.forgetWakeUps();
        if (isDatabaseUnavailable(error)) this.log.warn({ err: error, retryInMs: waitMs }, 'event delivery cannot reach the database');
        else this.log.error({ err: error, retryInMs: waitMs }, 'event delivery loop failed');
      }
      if (this.state !== 'running') break;
      await this.pause.pause(waitMs);
    }
  }

  private launch(message: ClaimedMessage): void {
    const controller = new AbortController();
    const done = this.deliver(message, controller.signal)
      .catch((error: unknown) => {
        // Unrecorded (the database failed): its lease runs out and it is sent again, with the same webhook-id.
        this.log.error({ err: error, messageId: message.id }, 'an event message attempt failed unrecorded; it will be sent again after its lease');
      })
      .finally(() => {
        this.inFlight.delete(message.id);
        this.wake();
      });
    this.inFlight.set(message.id, { controller, done });
  }

  /** One attempt: sign, send, record. Aborted (the worker stops), it gives the message back unrecorded. */
  private async deliver(message: ClaimedMessage, signal: AbortSignal): Promise<void> {
    const secrets = this.openSecrets(message);
    const outcome = 'unsigned' in secrets ? unsent(secrets.unsigned) : await this.send(message, secrets.values, signal);
    if (outcome === 'aborted') {
      await releaseMessage(this.deps.sql, message);
      return;
    }
    const recorded = await recordAttempt(this.deps.sql, message, outcome, retryDelayMs(message.attempt, this.deps.settings.retryBaseMs));
    const details = { messageId: message.id, subscriptionId: message.subscriptionId, attempt: message.attempt, statusCode: outcome.statusCode, error: outcome.error };
    if (recorded?.disabledSubscription) this.log.warn(details, 'event subscription disabled: its messages have failed for 5 days');
    else if (!outcome.ok) this.log.debug({ ...details, next: recorded?.status }, 'event message attempt failed');
  }

  /** The subscription's signing secrets, current first; a previous one that does not open is left out (the current one still signs). */
  private openSecrets(message: ClaimedMessage): { values: string[] } | { unsigned: string } {
    const binding = eventSubscriptionSecretBinding({ id: message.subscriptionId, userId: message.userId });
    if (!message.secret) return { unsigned: 'not sent: the subscription has no signing secret; rotate it' };
    const values: string[] = [];
    for (const [which, sealed] of [['current', message.secret], ['previous', message.previousSecret]] as const) {
      if (!sealed) continue;
      try {
        values.push(this.deps.keyring.open(sealed, binding));
      } catch (error) {
        if (!(error instanceof SecretUnreadableError)) throw error;
        // The operator learns which row from the log, never a value.
        this.log.warn({ table: 'event_subscriptions', rowId: message.subscriptionId, which, keyId: sealed.keyId, reason: error.message }, 'a stored secret cannot be decrypted');
        if (which === 'current') return { unsigned: 'not sent: the signing secret cannot be decrypted (it was altered, or its key is no longer configured); rotate it' };
      }
    }
    return { values };
  }

  private async send(message: ClaimedMessage, secrets: readonly string[], signal: AbortSignal): Promise<AttemptOutcome | 'aborted'> {
    let signed: SignedHeaders;
    try {
      signed = signMessage(secrets, message.webhookId, new Date(), message.body);
    } catch {
      // Recorded like any failure (it counts toward disabling): left unrecorded, it would be claimed and fail again every lease.
      return unsent('not sent: the signing secret is not a Standard Webhooks secret (whsec_ and base64); rotate it');
    }
    const headers = { ...signed, 'content-type': 'application/json', 'user-agent': USER_AGENT };
    const started = performance.now();
    try {
      const response = await performHttpRequest({ method: 'POST', url: message.url, headers, body: message.body, timeoutMs: DELIVERY_TIMEOUT_MS }, this.guard, signal);
      return { ok: true, statusCode: response.status, latencyMs: performance.now() - started, error: null, responseHead: headOf(response.body) };
    } catch (error) {
      if (signal.aborted) return 'aborted';
      const latencyMs = performance.now() - started;
      // A non-2xx answer carries its status and body; a refused address, a timeout or a network error neither.
      const answer = error instanceof StepError ? error.details : undefined;
      const statusCode = typeof answer?.status === 'number' ? answer.status : null;
      return { ok: false, statusCode, latencyMs, error: error instanceof Error ? error.message : String(error), responseHead: answer ? headOf(answer.body) : null };
    }
  }

  /**
   * Stops claiming; attempts under way may finish within `graceMs`, then they are aborted and their
   * messages given back (due at once, for another process).
   */
  async stop(graceMs: number): Promise<void> {
    if (this.state !== 'running') {
      this.state = 'stopped';
      return;
    }
    this.state = 'draining';
    this.unsubscribe?.();
    this.wake();
    await this.loop;
    const all = Promise.all([...this.inFlight.values()].map((entry) => entry.done));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs);
    });
    if ((await Promise.race([all.then(() => 'done' as const), graceOver])) === 'timeout') {
      for (const entry of this.inFlight.values()) entry.controller.abort();
      await all;
    }
    clearTimeout(timer);
    this.state = 'stopped';
  }
}

/** An attempt that was never sent (no usable secret): recorded as a failure like any other. */
function unsent(reason: string): AttemptOutcome {
  return { ok: false, statusCode: null, latencyMs: 0, error: reason, responseHead: null };
}

/** The answer's first RESPONSE_HEAD_BYTES as text (performHttpRequest read no more, and decoded it: text, parsed JSON, or base64 of bytes). */
function headOf(body: unknown): string | null {
  if (body === undefined || body === null || body === '') return null;
  return typeof body === 'string' ? body : JSON.stringify(body);
}
