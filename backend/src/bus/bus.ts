import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { BaseLogger } from 'pino';
import type { DbClient, Fragment, Sql } from '../db/client.js';

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

/**
 * Local to a process: messages may have been missed (the LISTEN connection was re-established),
 * so whoever keeps state from them re-reads it once.
 */
export interface MaybeMissed {
  readonly kind: 'resync';
}

export type BusMessage = ExecutionEvent | WorkAvailable | CallersChanged | MaybeMissed;

/**
 * NOTIFY payloads are limited to 8000 bytes (not characters): a message over this many bytes of
 * UTF-8 travels without its output and error, marked `truncated`.
 */
export const MAX_MESSAGE_BYTES = 7_900;

/**
 * One interface over two transports: PostgreSQL LISTEN/NOTIFY, which reaches every replica, and an
 * in-process emitter for the embedded database (one connection, one process: LISTEN would need a
 * second connection, and there is no other process to reach). Callers never know which is in use.
 *
 * Messages that announce a write travel with the write: `announce` gives the select-list
 * expression a statement includes, and `settle` is handed the rows that statement returned. On
 * PostgreSQL the expression is the NOTIFY itself, so a message is delivered exactly when its
 * write commits; in-process, the statement returns the messages and `settle` emits them.
 */
export interface EventBus {
  /**
   * A select-list expression, named `announced`, that delivers `messages`: a SQL expression of type
   * text[] whose elements are messages already encoded (see `encodeInSql`).
   */
  announce(messages: Fragment): Fragment;
  /** Delivers what the rows' `announced` column holds, if the transport did not already. */
  settle(rows: readonly { announced?: unknown }[]): void;
  /** Sends one message that announces no write of its own ("work", "callers-changed"). */
  publish(message: WorkAvailable | CallersChanged): Promise<void>;
  subscribe(listener: (message: BusMessage) => void): () => void;
  close(): Promise<void>;
}

export const CHANNEL = 'autonode_engine';

/**
 * A SQL expression (text) that encodes one message in the statement producing it: `event` is a
 * jsonb expression without `revision`, `revision` an integer expression. Measured in bytes: too
 * large, it loses its output and error and says `truncated`. Every execution event is encoded
 * here, whichever transport carries it.
 */
export function encodeInSql(sql: Sql, event: Fragment, revision: Fragment): Fragment {
  return sql`(select case when octet_length(m::text) <= ${MAX_MESSAGE_BYTES} then m::text
                          else (m - 'output' - 'error' || '{"truncated":true}'::jsonb)::text end
                from (select (${event}) || jsonb_build_object('revision', ${revision}) as m) encoded)`;
}

class InProcessEventBus implements EventBus {
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  constructor(private readonly sql: Sql) {}

  announce(messages: Fragment): Fragment {
    return this.sql`${messages} as announced`;
  }

  settle(rows: readonly { announced?: unknown }[]): void {
    for (const row of rows) {
      if (row.announced === null) continue;
      if (!Array.isArray(row.announced)) throw new Error('a statement announced messages that are not a text[]');
      for (const text of row.announced as string[]) this.emit(JSON.parse(text) as BusMessage);
    }
  }

  async publish(message: WorkAvailable | CallersChanged): Promise<void> {
    this.emit(message);
  }

  /** Delivered on a later turn, as a notification would be: a publisher never runs listeners inside its own call. */
  private emit(message: BusMessage): void {
    queueMicrotask(() => this.emitter.emit('message', message));
  }

  subscribe(listener: (message: BusMessage) => void): () => void {
    this.emitter.on('message', listener);
    return () => this.emitter.off('message', listener);
  }

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}

/** How often a replica checks that it listens and that its LISTEN connection hears its own NOTIFY. */
const LISTEN_CHECK_MS = 10_000;
/** A self-addressed NOTIFY not heard this long after it was sent means the LISTEN connection is deaf. */
const CHECK_ANSWER_MS = 5_000;

type CheckMessage = { kind: 'check'; token: string };

class PostgresEventBus implements EventBus {
  private readonly emitter = new EventEmitter().setMaxListeners(0);
  private listening: { unlisten(): Promise<void> } | undefined;
  /**
   * Bumped each time this bus listens anew. postgres.js keeps every listener it was given (and
   * re-adds them after a reconnect, under new handles that cannot be unlistened), so callbacks of
   * an earlier listen may still fire: only the current generation's are heard.
   */
  private generation = 0;
  private readonly checkTimer: NodeJS.Timeout | undefined;
  private check: { token: string; sentAt: number | undefined } | undefined;
  private closed = false;

  constructor(
    private readonly sql: Sql,
    private readonly logger: Pick<BaseLogger, 'warn'>,
    listens: boolean,
  ) {
    if (!listens) return;
    this.checkTimer = setInterval(() => void this.checkListening(), LISTEN_CHECK_MS);
    this.checkTimer.unref();
    // Not awaited: a database that is down at start-up must not stop the service.
    void this.listen();
  }

  /**
   * Listens on postgres.js's dedicated connection. If the database cannot be reached (it may be
   * down at start-up), the next check tries again; workers find work by polling meanwhile. Each
   * time listening starts, subscribers are told they may have missed messages (`resync`).
   */
  async listen(): Promise<void> {
    if (this.closed || this.listening) return;
    const generation = ++this.generation;
    const current = () => generation === this.generation && !this.closed;
    try {
      this.listening = await this.sql.listen(
        CHANNEL,
        (payload) => {
          if (current()) this.receive(payload);
        },
        () => {
          if (current()) this.emitter.emit('message', { kind: 'resync' } satisfies MaybeMissed);
        },
      );
    } catch (error) {
      if (!this.closed) this.logger.warn({ err: error, retryInMs: LISTEN_CHECK_MS }, 'cannot LISTEN for engine notifications yet');
    }
  }

  private receive(payload: string): void {
    let message: BusMessage | CheckMessage;
    try {
      message = JSON.parse(payload) as BusMessage | CheckMessage;
    } catch (error) {
      this.logger.warn({ err: error }, 'unreadable engine notification');
      return;
    }
    if (message.kind === 'check') {
      if (message.token === this.check?.token) this.check = undefined;
      return;
    }
    this.emitter.emit('message', message);
  }

  /**
   * postgres.js re-listens after its connection drops, but gives up if the database refuses that
   * one attempt. So each replica sends itself a NOTIFY now and then; if one sent more than
   * CHECK_ANSWER_MS ago was never heard, it listens anew (and subscribers resync). One query per
   * replica per LISTEN_CHECK_MS, not per stream; a check still waiting for the pool counts for nothing.
   */
  private async checkListening(): Promise<void> {
    if (this.closed) return;
    if (!this.listening) return this.listen();
    const pending = this.check;
    if (pending) {
      if (pending.sentAt === undefined || Date.now() - pending.sentAt < CHECK_ANSWER_MS) return;
      this.logger.warn('engine notifications stopped arriving; listening again');
      const deaf = this.listening;
      this.listening = undefined;
      this.check = undefined;
      await deaf.unlisten().catch(() => undefined);
      return this.listen();
    }
    const check = { token: randomUUID(), sentAt: undefined as number | undefined };
    this.check = check;
    try {
      await this.sql`select pg_notify(${CHANNEL}, ${JSON.stringify({ kind: 'check', token: check.token } satisfies CheckMessage)})`;
      check.sentAt = Date.now();
    } catch {
      // The database is unreachable: nothing was sent, so nothing is judged.
      if (this.check === check) this.check = undefined;
    }
  }

  announce(messages: Fragment): Fragment {
    return this.sql`(select count(pg_notify(${CHANNEL}, m)) from unnest(${messages}) as m) as announced`;
  }

  settle(): void {
    // Sent by the statement itself, at its commit.
  }

  async publish(message: WorkAvailable | CallersChanged): Promise<void> {
    await this.sql`select pg_notify(${CHANNEL}, ${JSON.stringify(message)})`;
  }

  subscribe(listener: (message: BusMessage) => void): () => void {
    this.emitter.on('message', listener);
    return () => this.emitter.off('message', listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.checkTimer);
    this.emitter.removeAllListeners();
    const listening = this.listening;
    this.listening = undefined;
    // A database that is down at shutdown must not make the shutdown fail.
    if (listening) await listening.unlisten().catch(() => undefined);
  }
}

/**
 * LISTEN/NOTIFY on a real server (reaches every replica); in-process on the embedded one. Close
 * the bus before the pool: unlistening needs its connection. A process that only announces (a
 * script) passes `listens: false` and opens no LISTEN connection.
 */
export function createEventBus(database: DbClient, logger: Pick<BaseLogger, 'warn'>, { listens = true } = {}): EventBus {
  if (database.kind === 'embedded') return new InProcessEventBus(database.sql);
  return new PostgresEventBus(database.sql, logger, listens);
}
