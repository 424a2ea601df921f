import { fork, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { someString } from '../lib/json-walk.js';
import { StepError } from './errors.js';
import { defaultExpressionLimits, type ExpressionBindings, type ExpressionLimits, type ExpressionScope } from './expressions.js';
import { InlineExpressions } from './inline-expression.js';
import type { ExpressionTask, FailedEvaluation, NeededParts, SentPart, SentScope, SuppliedParts, WorkerReply } from './expression-worker.js';
import { readsVars } from './vars-references.js';

/** Whose a task is, and when it is no longer wanted. */
export interface TaskContext {
  /** Tasks wait for a worker in turns by owner (the run's user): see FairQueue. */
  readonly owner: string;
  /** Aborted (the run was cancelled or its lease lost): a task still waiting is dropped. */
  readonly signal?: AbortSignal;
}

/** How nodes evaluate expressions: never in the engine's process (see ExpressionPool). */
export interface ExpressionEvaluator {
  /** One JSONata expression (transform, condition); JSONata's "nothing" is null. */
  evaluate(expression: string, scope: ExpressionScope, bindings?: ExpressionBindings, context?: TaskContext): Promise<unknown>;
  /** Every `{{ }}` template in one node's params, under one budget of time and count. */
  resolveTemplates(value: unknown, scope: ExpressionScope, bindings?: ExpressionBindings, context?: TaskContext): Promise<unknown>;
}

/**
 * The evaluator of one step: every call gets the step's bindings (`$vars`) and context (its run's
 * user and signal), so nodes evaluate as they always do. What a call passes itself takes precedence.
 */
export function bindExpressions(evaluator: ExpressionEvaluator, bindings: ExpressionBindings, context?: TaskContext): ExpressionEvaluator {
  return {
    evaluate: (expression, scope, own, ownContext) => evaluator.evaluate(expression, scope, { ...bindings, ...own }, ownContext ?? context),
    resolveTemplates: (value, scope, own, ownContext) => evaluator.resolveTemplates(value, scope, { ...bindings, ...own }, ownContext ?? context),
  };
}

/**
 * Tasks waiting for a worker, served in turns by owner: each owner's oldest task, then the next
 * owner's, round and round (an owner with more waiting goes to the back of the turns after each).
 * One user's run of 200 slow expressions then holds back another user's next task by at most one
 * task of each owner ahead of it, not by all 200 (one FIFO did: a minute for everyone).
 */
export class FairQueue<T> {
  /** Map order is the turn order. */
  private readonly byOwner = new Map<string, T[]>();
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(owner: string, item: T): void {
    const waiting = this.byOwner.get(owner);
    if (waiting) waiting.push(item);
    else this.byOwner.set(owner, [item]);
    this.count++;
  }

  shift(): T | undefined {
    const next = this.byOwner.entries().next();
    if (next.done) return undefined;
    const [owner, waiting] = next.value;
    const item = waiting.shift() as T;
    this.byOwner.delete(owner);
    if (waiting.length > 0) this.byOwner.set(owner, waiting);
    this.count--;
    return item;
  }

  /** Takes `item` out if it still waits; true if it did. */
  remove(owner: string, item: T): boolean {
    const waiting = this.byOwner.get(owner);
    const index = waiting?.indexOf(item) ?? -1;
    if (!waiting || index === -1) return false;
    waiting.splice(index, 1);
    if (waiting.length === 0) this.byOwner.delete(owner);
    this.count--;
    return true;
  }

  /** Empties the queue; answers what waited. */
  drain(): T[] {
    const all = [...this.byOwner.values()].flat();
    this.byOwner.clear();
    this.count = 0;
    return all;
  }
}

/** The owner of tasks submitted without a context. */
const NO_OWNER = '';

export interface ExpressionPoolOptions {
  /** Worker processes at most (started when first needed). */
  readonly workers: number;
  /** Budget of one task: one node's expression, or all of its templates together. */
  readonly timeoutMs: number;
  /** Old-generation heap of each worker process; one that outgrows it dies and is replaced. */
  readonly maxHeapMb: number;
  /** Most templates in one node's params. */
  readonly maxTemplates: number;
  readonly logger: Logger;
}

/**
 * After the budget, the worker's own check (JSONata's timeout, between sub-expressions) usually
 * stops the task; the process is killed only if it has not answered this much later (one
 * synchronous built-in call, such as a backtracking regular expression, cannot be interrupted).
 */
const KILL_GRACE_MS = 100;
/** Workers that fail to start this many times in a row: the pool gives up on the queued tasks. */
const MAX_FAILED_STARTS = 3;
/**
 * Workers run at a lower CPU priority (nice 10) than the service: on a busy machine, a heavy
 * expression waits for the CPU, not health checks, requests or lease heartbeats.
 */
const WORKER_NICENESS = 10;
/**
 * Parts of the scope (the input, each step's output) larger than this, or past the total, are
 * withheld from a task's first message and sent only if the evaluation reads them: copying a
 * part to a worker costs the service's thread about 5 ms per MB, and a run may hold 200 outputs
 * of up to ENGINE_MAX_PAYLOAD_BYTES.
 */
const PART_INLINE_BYTES = 16 * 1024;
const TOTAL_INLINE_BYTES = 256 * 1024;
/** The end of a worker's stderr kept for the log when it dies unexpectedly. */
const STDERR_TAIL_CHARS = 2_000;

/**
 * The worker process's entry: beside this module, the built JavaScript when this is the build
 * (dist/, plain node), else the shim that loads the TypeScript source through tsx (src/: tsx, vitest).
 */
const workerEntry = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './expression-worker.mjs' : './expression-worker.js', import.meta.url));

/** A task as submitted: the whole scope, which stays here until the task ends. */
type Request = { readonly kind: 'evaluate'; readonly expression: string } | { readonly kind: 'resolve'; readonly value: unknown };

interface QueuedTask {
  readonly owner: string;
  readonly request: Request;
  readonly scope: ExpressionScope;
  /** Only those the request's text mentions (see boundIn): the rest are never copied to a worker. */
  readonly bindings: ExpressionBindings | undefined;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

interface PoolWorker {
  readonly child: ChildProcess;
  state: 'starting' | 'idle' | 'busy' | 'gone';
  current: QueuedTask | undefined;
  timer: NodeJS.Timeout | undefined;
  stderr: string;
}

/**
 * Evaluates expressions and templates in worker processes, so no expression can stall the event
 * loop (health, other users' runs, lease heartbeats) or exhaust the service's memory: a task that
 * outlives its budget has its process killed (EXPRESSION_TIMEOUT), a process that outgrows its
 * heap dies alone (EXPRESSION_TOO_LARGE), and a lost process is replaced.
 *
 * Processes, not worker threads: a thread's `resourceLimits` are best effort, and one large
 * allocation at the limit aborts the whole process (nodejs/node#47224; reproduced here with
 * `$count($append([1..9000000], [1..9000000]))` at 128 MB). A process's own heap limit only ever
 * ends that process. Workers start with an empty environment: the service's secrets are not theirs.
 *
 * The exception: a plain field path, literal, or one operator between two of those (`input.n + 1`),
 * whose evaluation is bounded by its text and gives JSONata's answer, is answered on this thread
 * (inline-expression.ts); anything else, or any doubt, goes to a worker.
 *
 * Tasks wait for a free worker in turns by owner (FairQueue), and leave the queue when their run
 * stops; the budget's clock starts when a worker takes the task, so waiting costs no budget. Idle workers do not keep the service alive; close() ends them.
 */
export class ExpressionPool implements ExpressionEvaluator {
  private readonly workers = new Set<PoolWorker>();
  private readonly queue = new FairQueue<QueuedTask>();
  private readonly limits: ExpressionLimits;
  /** Plain paths and one-operator expressions, answered here at once (bounded work: see inline-expression.ts). */
  private readonly inline = new InlineExpressions();
  private readonly log: Logger;
  private failedStarts = 0;
  private closed = false;

  /** However this process exits (a forced exit in the shutdown grace, an uncaught error), its workers go with it. */
  private readonly killWorkers = () => {
    for (const worker of this.workers) worker.child.kill('SIGKILL');
  };

  constructor(private readonly options: ExpressionPoolOptions) {
    this.limits = { ...defaultExpressionLimits, timeoutMs: options.timeoutMs, maxTemplates: options.maxTemplates };
    this.log = options.logger.child({ module: 'expressions' });
    process.on('exit', this.killWorkers);
  }

  evaluate(expression: string, scope: ExpressionScope, bindings?: ExpressionBindings, context?: TaskContext): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the expression pool is closed'));
    const answered = this.inline.evaluate(expression, scope);
    if (answered) return Promise.resolve(answered.value);
    const request: Request = { kind: 'evaluate', expression };
    return this.submit(request, scope, boundIn(request, bindings), context);
  }

  resolveTemplates(value: unknown, scope: ExpressionScope, bindings?: ExpressionBindings, context?: TaskContext): Promise<unknown> {
    // Params without a template come back as they are: one linear scan, no evaluation at all.
    if (!someString(value, (text) => text.includes('{{'))) return Promise.resolve(value);
    const request: Request = { kind: 'resolve', value };
    return this.submit(request, scope, boundIn(request, bindings), context);
  }

  /** Ends every worker; tasks still queued or running are rejected. */
  async close(): Promise<void> {
    this.closed = true;
    process.off('exit', this.killWorkers);
    for (const queued of this.queue.drain()) queued.reject(new Error('the expression pool is closed'));
    const exits = [...this.workers].map((worker) => {
      const exited = new Promise<void>((resolve) => {
        if (worker.child.exitCode !== null || worker.child.signalCode !== null) return resolve();
        // Referenced until it has exited, so that awaiting close() keeps the event loop alive.
        worker.child.ref();
        worker.child.once('exit', () => resolve());
      });
      worker.current?.reject(new Error('the expression pool is closed'));
      worker.current = undefined;
      this.retire(worker);
      return exited;
    });
    await Promise.all(exits);
  }

  private submit(request: Request, scope: ExpressionScope, bindings: ExpressionBindings | undefined, context: TaskContext | undefined): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the expression pool is closed'));
    const { owner = NO_OWNER, signal } = context ?? {};
    if (signal?.aborted) return Promise.reject(abandonedError());
    return new Promise((resolve, reject) => {
      // A task no longer wanted leaves the queue at once; one a worker has taken runs to its end.
      const abandon = () => {
        if (this.queue.remove(owner, queued)) reject(abandonedError());
      };
      const settled = <A extends unknown[]>(then: (...args: A) => void) => (...args: A) => {
        signal?.removeEventListener('abort', abandon);
        then(...args);
      };
      const queued: QueuedTask = { owner, request, scope, bindings, resolve: settled(resolve), reject: settled(reject) };
      signal?.addEventListener('abort', abandon, { once: true });
      this.queue.push(owner, queued);
      this.pump();
    });
  }

  /** Hands queued tasks to idle workers, and starts workers (up to the size) for the rest. */
  private pump(): void {
    if (this.closed) return;
    for (const worker of this.workers) {
      if (this.queue.length === 0) return;
      if (worker.state === 'idle') this.dispatch(worker, this.queue.shift() as QueuedTask);
    }
    let starting = 0;
    for (const worker of this.workers) if (worker.state === 'starting') starting++;
    const wanted = Math.min(this.queue.length - starting, this.options.workers - this.workers.size);
    for (let index = 0; index < wanted; index++) this.spawn();
  }

  private spawn(): void {
    const child = fork(workerEntry, [], {
      // Not the parent's flags (inspector ports, loaders, heap sizes): the worker's own heap limit.
      execArgv: [`--max-old-space-size=${this.options.maxHeapMb}`],
      env: {},
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    const worker: PoolWorker = { child, state: 'starting', current: undefined, timer: undefined, stderr: '' };
    this.workers.add(worker);
    if (child.pid !== undefined) {
      try {
        setPriority(child.pid, WORKER_NICENESS);
      } catch (error) {
        // Not allowed on some systems (Windows without the right): the worker runs at normal priority.
        this.log.debug({ err: error }, 'could not lower the expression worker priority');
      }
    }
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      worker.stderr = (worker.stderr + chunk).slice(-STDERR_TAIL_CHARS);
    });
    child.on('message', (reply: WorkerReply) => this.onReply(worker, reply));
    child.on('error', (error) => this.onLost(worker, { error }));
    child.on('exit', (code, signal) => this.onLost(worker, { code, signal }));
  }

  private dispatch(worker: PoolWorker, queued: QueuedTask): void {
    worker.state = 'busy';
    worker.current = queued;
    this.hold(worker, true);
    worker.timer = setTimeout(() => this.killOverBudget(worker), this.options.timeoutMs + KILL_GRACE_MS);
    const task: ExpressionTask = { ...queued.request, scope: sendable(queued.scope), limits: this.limits, ...(queued.bindings ? { bindings: queued.bindings } : {}) };
    this.send(worker, queued, task);
  }

  private send(worker: PoolWorker, queued: QueuedTask, message: ExpressionTask | SuppliedParts): void {
    worker.child.send(message, (error) => {
      if (!error || worker.state !== 'busy' || worker.current !== queued) return;
      // Not sent (the channel closed, or a value that cannot be serialised): the task fails, not the worker.
      this.settle(worker);
      queued.reject(error);
      this.pump();
    });
  }

  private onReply(worker: PoolWorker, reply: WorkerReply): void {
    if (worker.state === 'gone') return;
    if (reply.kind === 'ready') {
      this.failedStarts = 0;
      worker.state = 'idle';
      this.hold(worker, false);
      this.pump();
      return;
    }
    const queued = worker.current;
    if (reply.kind === 'need') {
      if (queued) this.send(worker, queued, supplied(queued.scope, reply.parts));
      return;
    }
    this.settle(worker);
    if (queued) {
      if (reply.kind === 'done') queued.resolve(reply.value);
      else queued.reject(toError(reply.error));
    }
    this.pump();
  }

  /** The task ends without an answer: its budget is over, the worker is replaced. */
  private killOverBudget(worker: PoolWorker): void {
    if (worker.state !== 'busy') return;
    const queued = worker.current;
    this.retire(worker);
    if (queued) queued.reject(timeoutError(queued.request, this.limits.timeoutMs));
    this.log.info({ timeoutMs: this.options.timeoutMs }, 'expression over its budget: worker process killed');
    this.pump();
  }

  /** The worker died (out of memory, crash) or could not start: its task fails, it is replaced. */
  private onLost(worker: PoolWorker, how: { error?: Error; code?: number | null; signal?: NodeJS.Signals | null }): void {
    if (worker.state === 'gone') return;
    const wasStarting = worker.state === 'starting';
    const queued = worker.current;
    this.retire(worker);
    // V8 aborts a process that reaches its heap limit.
    const outOfMemory = how.signal === 'SIGABRT' || how.code === 134;
    if (queued) {
      if (outOfMemory) {
        queued.reject(tooLargeError(queued.request, this.options.maxHeapMb));
      } else {
        queued.reject(new StepError('expression evaluation failed unexpectedly', { retryable: false }));
      }
    }
    if (!outOfMemory) {
      this.log.error({ err: how.error, exitCode: how.code, signal: how.signal, stderr: worker.stderr }, 'expression worker process died');
    }
    if (wasStarting) {
      this.failedStarts++;
      if (this.failedStarts >= MAX_FAILED_STARTS) {
        this.failedStarts = 0;
        for (const waiting of this.queue.drain()) waiting.reject(new Error('expression worker processes fail to start'));
        return;
      }
    }
    this.pump();
  }

  private settle(worker: PoolWorker): void {
    clearTimeout(worker.timer);
    worker.timer = undefined;
    worker.current = undefined;
    worker.state = 'idle';
    this.hold(worker, false);
  }

  /** Removes the worker from the pool and kills it (a no-op if it has already exited). */
  private retire(worker: PoolWorker): void {
    clearTimeout(worker.timer);
    worker.timer = undefined;
    worker.current = undefined;
    worker.state = 'gone';
    this.workers.delete(worker);
    worker.child.kill('SIGKILL');
  }

  /** A busy (or starting) worker keeps the service's event loop alive; an idle one does not. */
  private hold(worker: PoolWorker, busy: boolean): void {
    if (busy) {
      worker.child.ref();
      worker.child.channel?.ref();
    } else {
      worker.child.unref();
      worker.child.channel?.unref();
    }
  }
}

function toError(failed: FailedEvaluation): Error {
  if (!failed.stepError) return new StepError(`expression evaluation failed: ${failed.message}`, { retryable: false });
  return new StepError(failed.message, {
    retryable: failed.retryable,
    ...(failed.details ? { details: failed.details } : {}),
    ...(failed.code ? { code: failed.code } : {}),
  });
}

/** Worded as the worker's own timeout errors (expressions.ts), which usually come first. */
function timeoutError(request: Request, timeoutMs: number): StepError {
  if (request.kind === 'evaluate') {
    return new StepError(`expression took longer than ${timeoutMs} ms`, { retryable: false, code: 'EXPRESSION_TIMEOUT', details: { expression: request.expression } });
  }
  return new StepError(`templates took longer than ${timeoutMs} ms in all`, { retryable: false, code: 'EXPRESSION_TIMEOUT' });
}

function tooLargeError(request: Request, maxHeapMb: number): StepError {
  const message = `expression evaluation needed more than the ${maxHeapMb} MB of memory allowed`;
  return new StepError(message, { retryable: false, code: 'EXPRESSION_TOO_LARGE', details: request.kind === 'evaluate' ? { expression: request.expression } : {} });
}

/**
 * The bindings sent with a request: `$vars` only when its text reads it (vars-references.ts, the
 * rule that also decides which variables the step read; a template's text is in the value's
 * strings), so most tasks copy no variables to the worker. JSONata cannot list its bindings, so
 * only a name built at run time (`$eval("$" & "vars")`) could miss them: it finds nothing, as it
 * would for any unknown name. Undefined when none is sent.
 */
function boundIn(request: Request, bindings: ExpressionBindings | undefined): ExpressionBindings | undefined {
  if (bindings?.vars === undefined) return undefined;
  const mentionsVars = request.kind === 'evaluate' ? readsVars(request.expression) : someString(request.value, readsVars);
  return mentionsVars ? { vars: bindings.vars } : undefined;
}

/** Why a task was dropped before it ran: its run no longer wants it (the runner stops on its own signal). */
function abandonedError(): Error {
  return new Error('the expression task was abandoned: its run was stopped');
}

/** The scope's first message: small parts as they are, the rest withheld (sent if read). */
function sendable(scope: ExpressionScope): SentScope {
  let budget = TOTAL_INLINE_BYTES;
  const part = (value: unknown): SentPart => {
    const size = sizeAtMost(value, Math.min(PART_INLINE_BYTES, budget));
    if (size === undefined) return { withheld: true };
    budget -= size;
    return { value };
  };
  const input = part(scope.input);
  const steps = Object.entries(scope.steps).map(([id, value]) => ({ id, ...part(value) }));
  return { input, steps };
}

function supplied(scope: ExpressionScope, parts: NeededParts): SuppliedParts {
  const steps: Record<string, unknown> = {};
  for (const id of parts.steps) {
    if (Object.hasOwn(scope.steps, id)) Object.defineProperty(steps, id, { value: scope.steps[id], enumerable: true, writable: true, configurable: true });
  }
  return { kind: 'parts', ...(parts.input ? { input: scope.input } : {}), steps };
}

/**
 * About how many bytes `value` takes as JSON, or undefined as soon as that is over `limit`: the
 * walk stops there, so sizing a large output costs no more than sizing `limit` bytes of it. Its
 * own walk, not json-walk's: that one lists all of an object's keys before visiting any, and this
 * one must stop inside an object of a million keys after `limit` bytes of them.
 */
function sizeAtMost(value: unknown, limit: number): number | undefined {
  let size = 0;
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const item = pending.pop();
    if (typeof item === 'string') size += item.length + 2;
    else if (Array.isArray(item)) {
      size += 2 + item.length;
      if (size > limit) return undefined;
      for (const element of item) pending.push(element);
    } else if (typeof item === 'object' && item !== null) {
      size += 2;
      for (const key in item) {
        if (!Object.hasOwn(item, key)) continue;
        size += key.length + 4;
        if (size > limit) return undefined;
        pending.push((item as Record<string, unknown>)[key]);
      }
    } else size += 8;
    if (size > limit) return undefined;
  }
  return size;
}
