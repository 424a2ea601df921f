import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { DbClient, Sql } from '../db/client.js';

/**
 * What changed in an execution. `revision` orders the events of one execution (it is bumped in
 * the same statement as the change), so a listener can drop stale ones and notice gaps.
 */
export interface ExecutionEvent {
  readonly kind: 'execution' | 'step';
  readonly executionId: string;
  readonly userId: string;
  readonly revision: number;
  readonly status: string;
  readonly nodeId?: string;
  readonly attempt?: number;
  readonly output?: unknown;
  readonly error?: unknown;
  /** True when output/error were left out to keep the notification small (read them from the steps route). */
  readonly truncated?: boolean;
}

/** "There may be work": new or woken executions, so idle workers claim now rather than at their next poll. */
export interface WorkAvailable {
  readonly kind: 'work';
}

/** A user's sessions or API keys changed (sign-out, revocation): every replica drops its cached callers for them. */
export interface CallersChanged {
  readonly kind: 'callers-changed';
  readonly userId: string;
}

export type BusMessage = ExecutionEvent | WorkAvailable | CallersChanged;

/**
 * One small interface over two transports: PostgreSQL LISTEN/NOTIFY, which reaches every replica,
 * and an in-process emitter for the embedded database (one connection, one process: LISTEN would
 * need a second connection, and there is no other process to reach).
 */
export interface EventBus {
  publish(message: BusMessage): Promise<void>;
  subscribe(listener: (message: BusMessage) => void): () => void;
  close(): Promise<void>;
}

export const CHANNEL = 'autonode_engine';
/** NOTIFY payloads are limited to 8000 bytes; bulky outputs are left for the steps route. */
const MAX_PAYLOAD_CHARS = 7_000;

/** The notification text: the message, without bulky output/error if it would not fit. */
export function encode(message: BusMessage): string {
  const full = JSON.stringify(message);
  if (full.length <= MAX_PAYLOAD_CHARS || message.kind === 'work' || message.kind === 'callers-changed') return full;
  const { output: _output, error: _error, ...rest } = message;
  return JSON.stringify({ ...rest, truncated: true });
}

export class InProcessEventBus implements EventBus {
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  async publish(message: BusMessage): Promise<void> {
    // Same shape as over NOTIFY, so both transports deliver the same thing.
    const delivered = JSON.parse(encode(message)) as BusMessage;
    queueMicrotask(() => this.emitter.emit('message', delivered));
  }

  subscribe(listener: (message: BusMessage) => void): () => void {
    this.emitter.on('message', listener);
    return () => this.emitter.off('message', listener);
  }

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}

export class PostgresEventBus implements EventBus {
  private readonly emitter = new EventEmitter().setMaxListeners(0);
  private listening: { unlisten(): Promise<void> } | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly sql: Sql,
    private readonly logger: Logger,
  ) {}

  /**
   * Starts listening: postgres.js keeps one dedicated connection for it and re-listens after a
   * reconnect. If the database cannot be reached yet, it keeps trying in the background: until
   * then workers find work by polling and event streams by re-reading, so nothing is lost.
   */
  async start(): Promise<void> {
    await this.listen();
  }

  private async listen(): Promise<void> {
    if (this.closed || this.listening) return;
    try {
      this.listening = await this.sql.listen(CHANNEL, (payload) => {
        try {
          this.emitter.emit('message', JSON.parse(payload) as BusMessage);
        } catch (error) {
          this.logger.warn({ err: error }, 'unreadable engine notification');
        }
      });
    } catch (error) {
      this.logger.warn({ err: error }, 'cannot LISTEN for engine notifications yet; retrying');
      this.retryTimer = setTimeout(() => void this.listen(), 2_000);
      this.retryTimer.unref();
    }
  }

  async publish(message: BusMessage): Promise<void> {
    await this.sql`select pg_notify(${CHANNEL}, ${encode(message)})`;
  }

  subscribe(listener: (message: BusMessage) => void): () => void {
    this.emitter.on('message', listener);
    return () => this.emitter.off('message', listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.emitter.removeAllListeners();
    const listening = this.listening;
    this.listening = undefined;
    if (listening) await listening.unlisten().catch(() => undefined);
  }
}

/** LISTEN/NOTIFY on a real server (reaches every replica); in-process on the embedded one (one connection, one process). */
export async function createEventBus(database: DbClient, logger: Logger): Promise<EventBus> {
  if (database.kind === 'embedded') return new InProcessEventBus();
  const bus = new PostgresEventBus(database.sql, logger);
  // Not awaited past the first attempt: a database that is down at start-up must not stop the service.
  void bus.start();
  return bus;
}
