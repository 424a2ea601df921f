import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { EngineConfig } from '../config.js';
import type { EventBus } from '../bus/bus.js';
import type { PooledDb } from '../db/client.js';
import { isDatabaseUnavailable } from '../db/errors.js';
import { purgeExpiredIdempotencyKeys } from '../lib/idempotency.js';
import { WakeablePause } from '../lib/wakeable-pause.js';
import { EventDeliveryWorker } from '../events/delivery-worker.js';
import type { ClaimedExecution, ExecutionLifecycle } from '../executions/lifecycle.js';
import type { Keyring } from '../secrets/keyring.js';
import { purgeExpired } from '../retention/purge.js';
import { ExpressionPool } from './expression-pool.js';
import { RunResources } from './run-resources.js';
import { ExecutionRunner } from './runner.js';

/** How often expired rows are deleted (housekeeping: idempotency keys, executions past their retention). */
const HOUSEKEEPING_MS = 60_000;

/** Due jobs fired per scheduler transaction (two statements however many). */
const SCHEDULER_BATCH = 500;

export interface EngineDeps {
  /** Every state change of an execution goes through it. */
  readonly lifecycle: ExecutionLifecycle;
  /** Brings "work" nudges and cancellations from every replica. */
  readonly bus: EventBus;
  readonly config: EngineConfig;
  readonly logger: Logger;
  /** The service's database: housekeeping that belongs to no execution, and the connections and variables steps read. */
  readonly db: PooledDb;
  /** Opens the stored secrets (connections, secret variables) that steps use, and the event subscriptions' signing secrets. */
  readonly keyring: Keyring;
}

/**
 * The workers and the scheduler of one process. PostgreSQL is the queue: executions are claimed
 * with SKIP LOCKED and held by a lease renewed by heartbeat, so any number of processes can run
 * side by side on one database, and a crashed one's work is taken over when its lease expires.
 * The event subscriptions' messages are sent by the delivery workers it starts and stops with
 * itself (events/delivery-worker.ts), queued the same way.
 */
export class Engine {
  readonly workerId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private readonly runner: ExecutionRunner;
  /** Every expression and template of this engine's runs is evaluated here, off the main thread. */
  private readonly expressions: ExpressionPool;
  private readonly delivery: EventDeliveryWorker;
  private readonly running = new Map<string, { controller: AbortController; done: Promise<void>; userId: string }>();
  private readonly log: Logger;
  private state: 'idle' | 'running' | 'draining' | 'stopped' = 'idle';
  private readonly pause = new WakeablePause();
  private loop: Promise<void> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private schedulerTimer: NodeJS.Timeout | undefined;
  private housekeepingTimer: NodeJS.Timeout | undefined;
  /** The housekeeping round under way: one at a time, and stop() waits for it. */
  private housekeeping: Promise<void> | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly deps: EngineDeps) {
    this.log = deps.logger.child({ module: 'engine', workerId: this.workerId });
    this.expressions = new ExpressionPool({ ...deps.config.expressions, logger: this.log });
    this.runner = new ExecutionRunner(
      deps.lifecycle,
      this.workerId,
      {
        http: { allow: deps.config.http.allow, maxResponseBytes: deps.config.http.maxResponseBytes, defaultTimeoutMs: deps.config.http.timeoutMs },
        now: () => new Date(),
        expressions: this.expressions,
        resources: new RunResources(deps.db, deps.keyring, this.log),
      },
      this.log,
    );
    this.delivery = new EventDeliveryWorker({
      sql: deps.db.$client,
      bus: deps.bus,
      keyring: deps.keyring,
      logger: this.log,
      settings: { ...deps.config.events, pollMs: deps.config.pollMs, allow: deps.config.http.allow },
    });
  }

  start(): void {
    if (this.state !== 'idle') return;
    this.state = 'running';
    this.unsubscribe = this.deps.bus.subscribe((message) => {
      if (message.kind === 'work') this.wake();
      // A cancel (from any replica) reaches the worker running it at once: its step is aborted.
      else if (message.kind === 'execution' && message.status === 'cancelled') this.running.get(message.executionId)?.controller.abort();
    });
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), Math.max(100, Math.floor(this.deps.config.leaseMs / 3)));
    this.heartbeatTimer.unref();
    // Cron has minute resolution: looking for due jobs every second (or every poll, if slower) is enough.
    this.schedulerTimer = setInterval(() => void this.fireSchedules(), Math.max(1_000, this.deps.config.pollMs));
    this.schedulerTimer.unref();
    this.housekeepingTimer = setInterval(() => void this.keepHouse(), HOUSEKEEPING_MS);
    this.housekeepingTimer.unref();
    void this.fireSchedules();
    this.loop = this.claimLoop();
    this.delivery.start();
    this.log.info({ concurrency: this.deps.config.concurrency }, 'engine started');
  }

  /** Nudges the claim loop (new work was announced). */
  wake(): void {
    this.pause.wake();
  }

  private async claimLoop(): Promise<void> {
    let backoffMs = this.deps.config.pollMs;
    while (this.state === 'running') {
      this.pause.beginTurn();
      try {
        const free = this.deps.config.concurrency - this.running.size;
        const claimed = free > 0 ? await this.deps.lifecycle.claim(this.workerId, free, this.deps.config.leaseMs, this.deps.config.userConcurrency) : [];
        for (const execution of claimed) this.launch(execution);
        backoffMs = this.deps.config.pollMs;
        // A full batch suggests more work waiting: look again at once.
        if (claimed.length > 0 && claimed.length === free) continue;
      } catch (error) {
        // The database is down or refusing: stop claiming, back off, try again (nothing is lost: the rows wait).
        backoffMs = Math.min(backoffMs * 2, 5_000);
        if (this.state === 'running') this.pause.forgetWakeUps();
        if (isDatabaseUnavailable(error)) this.log.warn({ err: error, retryInMs: backoffMs }, 'engine cannot reach the database');
        else this.log.error({ err: error, retryInMs: backoffMs }, 'engine loop failed');
      }
      await this.pause.pause(backoffMs);
    }
  }

  /**
   * Deletes what has outlived its use and that no request would otherwise remove: expired
   * idempotency keys, and executions (with their steps and deliveries) past their retention, in a
   * bounded round that one process at a time runs (src/retention/purge.ts). A round still under
   * way when the timer fires again is not doubled. Public for the tests, which run a round at once.
   */
  keepHouse(): Promise<void> {
    if (this.state !== 'running') return Promise.resolve();
    this.housekeeping ??= this.keepHouseOnce().finally(() => {
      this.housekeeping = undefined;
    });
    return this.housekeeping;
  }

  private async keepHouseOnce(): Promise<void> {
    try {
      const purged = await purgeExpiredIdempotencyKeys(this.deps.db);
      if (purged > 0) this.log.info({ purged }, 'expired idempotency keys deleted');
      const retention = await purgeExpired(this.deps.db.$client, { defaultDays: this.deps.config.retentionDays, shouldStop: () => this.state !== 'running' });
      if (retention.ran && (retention.executions > 0 || retention.deliveries > 0 || retention.messages > 0 || !retention.finished)) {
        this.log.info(retention, retention.finished ? 'executions past their retention deleted' : 'executions past their retention deleted; the rest waits for the next round');
      }
    } catch (error) {
      if (isDatabaseUnavailable(error)) this.log.warn({ err: error }, 'housekeeping cannot reach the database');
      else this.log.error({ err: error }, 'housekeeping failed');
    }
  }

  /** The scheduler runs on its own timer, so a busy claim loop does not pay a transaction per turn. */
  private async fireSchedules(): Promise<void> {
    if (this.state !== 'running') return;
    try {
      // A full batch means more jobs may be due: fire again at once rather than a tick later.
      for (let full = true; full && this.state === 'running'; ) {
        const fired = await this.deps.lifecycle.fireDueJobs(SCHEDULER_BATCH);
        for (const job of fired) this.log.info({ jobId: job.jobId, executionId: job.executionId, scheduledAt: job.scheduledAt }, 'job fired');
        if (fired.length > 0) this.wake();
        full = fired.length === SCHEDULER_BATCH;
      }
    } catch (error) {
      if (isDatabaseUnavailable(error)) this.log.warn({ err: error }, 'scheduler cannot reach the database');
      else this.log.error({ err: error }, 'scheduler failed');
    }
  }

  private launch(execution: ClaimedExecution): void {
    const controller = new AbortController();
    const done = this.runner
      .run(execution, controller.signal, () => this.state !== 'running')
      .catch((error: unknown) => {
        // The lease stays: when it expires another worker (or this one) takes the execution over.
        this.log.error({ err: error, executionId: execution.id }, 'execution run failed; it will be retried after its lease expires');
      })
      .finally(() => {
        this.running.delete(execution.id);
        this.wake();
      });
    this.running.set(execution.id, { controller, done, userId: execution.userId });
  }

  private async heartbeat(): Promise<void> {
    const ids = [...this.running.keys()];
    if (ids.length === 0) return;
    try {
      const held = await this.deps.lifecycle.heartbeat(this.workerId, ids, this.deps.config.leaseMs);
      for (const id of ids) if (!held.has(id)) this.running.get(id)?.controller.abort();
    } catch (error) {
      this.log.warn({ err: error }, 'heartbeat failed');
    }
  }

  /**
   * Stops claiming; running executions finish their current steps and hand themselves back
   * (another worker continues them) within `graceMs`; after that they are aborted, and their
   * leases expire for another worker to take over.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.state === 'stopped' || this.state === 'idle') {
      this.state = 'stopped';
      await this.expressions.close();
      return;
    }
    this.state = 'draining';
    clearInterval(this.schedulerTimer);
    clearInterval(this.housekeepingTimer);
    // Alongside the executions, within the same grace: its attempts are at most DELIVERY_TIMEOUT_MS.
    const deliveryStopped = this.delivery.stop(graceMs);
    this.wake();
    await this.loop;
    // A housekeeping round sees the draining state before its next batch and ends.
    await this.housekeeping;
    const all = Promise.all([...this.running.values()].map((entry) => entry.done));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs);
    });
    if ((await Promise.race([all.then(() => 'done' as const), graceOver])) === 'timeout') {
      this.log.warn({ unfinished: this.running.size }, 'grace period over: aborting the remaining executions');
      const unfinished = [...this.running.entries()].map(([id, entry]) => ({ id, userId: entry.userId }));
      for (const entry of this.running.values()) entry.controller.abort();
      await all;
      // Hand them back at once rather than at lease expiry: another worker continues them.
      for (const execution of unfinished) {
        await this.deps.lifecycle.release(this.workerId, execution, 'pending', null).catch(() => false);
      }
    }
    clearTimeout(timer);
    await deliveryStopped;
    clearInterval(this.heartbeatTimer);
    clearInterval(this.schedulerTimer);
    this.unsubscribe?.();
    // After the runs: a step still evaluating when they were aborted has settled by now.
    await this.expressions.close();
    this.state = 'stopped';
    this.log.info('engine stopped');
  }
}
