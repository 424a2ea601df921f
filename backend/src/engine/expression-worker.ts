import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { StepError, type StepErrorCode } from './errors.js';
import { evaluateExpression, resolveTemplates, type ExpressionBindings, type ExpressionLimits, type ExpressionScope } from './expressions.js';

/**
 * The child-process side of the expression pool (expression-pool.ts): one task at a time, each a
 * whole node's evaluation (one expression, or every template of its params under one budget).
 *
 * Large parts of the scope (the input, earlier steps' outputs) are withheld from the first message:
 * copying them costs the service's thread time, and most expressions read one or two steps. A
 * withheld part is a getter that records the read and throws; if anything was read, the worker
 * asks for those parts and evaluates again from the start, within the same budget. Every read
 * path (a path, `$lookup`, `$each`, `$string`, `$$`, `$eval`...) ends in that getter.
 */

/** The scope as sent: each part's value, or a mark that it was withheld. In the scope's order. */
export interface SentScope {
  readonly input: SentPart;
  readonly steps: readonly (SentPart & { readonly id: string })[];
}
export type SentPart = { readonly value: unknown } | { readonly withheld: true };

/** `bindings` is present only when the task's text mentions one of them (`$vars`). */
export type ExpressionTask =
  | { readonly kind: 'evaluate'; readonly expression: string; readonly scope: SentScope; readonly limits: ExpressionLimits; readonly bindings?: ExpressionBindings }
  | { readonly kind: 'resolve'; readonly value: unknown; readonly scope: SentScope; readonly limits: ExpressionLimits; readonly bindings?: ExpressionBindings };

/** The withheld parts the evaluation read, and then their values. */
export interface NeededParts {
  readonly input: boolean;
  readonly steps: readonly string[];
}
export interface SuppliedParts {
  readonly kind: 'parts';
  readonly input?: unknown;
  readonly steps: Readonly<Record<string, unknown>>;
}

/** A StepError as plain data (errors cross the process boundary as data, which drops their class). */
export interface FailedEvaluation {
  readonly message: string;
  /** False for a bug or anything else that is not the expression's own fault. */
  readonly stepError: boolean;
  readonly retryable: boolean;
  readonly details?: Record<string, unknown>;
  readonly code?: StepErrorCode;
}

export type WorkerReply =
  | { readonly kind: 'ready' }
  | { readonly kind: 'need'; readonly parts: NeededParts }
  | { readonly kind: 'done'; readonly value: unknown }
  | { readonly kind: 'failed'; readonly error: FailedEvaluation };

class WithheldRead extends Error {}

interface Reads {
  input: boolean;
  readonly steps: Set<string>;
}

/** The scope an evaluation sees; withheld parts are getters that record the read and throw. */
function scopeOf(sent: SentScope, supplied: SuppliedParts | undefined, reads: Reads): ExpressionScope {
  const steps: Record<string, unknown> = {};
  for (const part of sent.steps) {
    if ('value' in part) {
      Object.defineProperty(steps, part.id, { value: part.value, enumerable: true, writable: true, configurable: true });
    } else if (supplied && Object.hasOwn(supplied.steps, part.id)) {
      Object.defineProperty(steps, part.id, { value: supplied.steps[part.id], enumerable: true, writable: true, configurable: true });
    } else {
      const get = () => {
        reads.steps.add(part.id);
        throw new WithheldRead();
      };
      Object.defineProperty(steps, part.id, { get, enumerable: true, configurable: true });
    }
  }
  // `input` first, as in the engine's scope (key order shows in `$keys($$)` and `$string($$)`).
  const scope: Record<string, unknown> = {};
  if ('value' in sent.input) scope.input = sent.input.value;
  else if (supplied && Object.hasOwn(supplied, 'input')) scope.input = supplied.input;
  else {
    const get = () => {
      reads.input = true;
      throw new WithheldRead();
    };
    Object.defineProperty(scope, 'input', { get, enumerable: true, configurable: true });
  }
  scope.steps = steps;
  return scope as unknown as ExpressionScope;
}

function evaluate(task: ExpressionTask, scope: ExpressionScope, deadline: number): Promise<unknown> {
  return task.kind === 'evaluate'
    ? evaluateExpression(task.expression, scope, task.limits, deadline, task.bindings)
    : resolveTemplates(task.value, scope, task.limits, deadline, task.bindings);
}

async function run(task: ExpressionTask, askFor: (parts: NeededParts) => Promise<SuppliedParts>): Promise<WorkerReply> {
  const deadline = performance.now() + task.limits.timeoutMs;
  try {
    // A read stops the pass at the first withheld part, so a later one shows in a later pass; each
    // pass is given at least one more part, so there are at most as many passes as parts, plus one.
    let supplied: SuppliedParts = { kind: 'parts', steps: {} };
    for (;;) {
      const reads: Reads = { input: false, steps: new Set() };
      let value: unknown;
      let failure: unknown;
      try {
        value = await evaluate(task, scopeOf(task.scope, supplied, reads), deadline);
      } catch (error) {
        failure = error;
      }
      // Whatever a pass that read a withheld part did (it may have caught the throw), it ran on incomplete data.
      if (!reads.input && reads.steps.size === 0) {
        if (failure !== undefined) throw failure;
        return { kind: 'done', value };
      }
      const more = await askFor({ input: reads.input, steps: [...reads.steps] });
      supplied = { kind: 'parts', ...(Object.hasOwn(supplied, 'input') ? { input: supplied.input } : {}), ...(Object.hasOwn(more, 'input') ? { input: more.input } : {}), steps: mergeSteps(supplied.steps, more.steps) };
    }
  } catch (error) {
    if (error instanceof StepError) {
      return {
        kind: 'failed',
        error: {
          message: error.message,
          stepError: true,
          retryable: error.retryable,
          ...(error.details ? { details: error.details } : {}),
          ...(error.code ? { code: error.code } : {}),
        },
      };
    }
    return { kind: 'failed', error: { message: error instanceof Error ? error.message : String(error), stepError: false, retryable: false } };
  }
}

function mergeSteps(first: Readonly<Record<string, unknown>>, second: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const merged: Record<string, unknown> = {};
  for (const source of [first, second]) {
    for (const [id, value] of Object.entries(source)) Object.defineProperty(merged, id, { value, enumerable: true, writable: true, configurable: true });
  }
  return merged;
}

function reply(message: WorkerReply): void {
  process.send?.(message);
}

/**
 * A worker must not outlive the service, even when the service dies while this process is inside
 * one synchronous call (a backtracking regular expression) and cannot hear the disconnect: a
 * watchdog thread, whose event loop stays free, ends the process once its parent has gone (it is
 * then re-parented, so its parent pid changes).
 */
const WATCHDOG_SOURCE = `
  const { workerData } = require('node:worker_threads');
  setInterval(() => {
    if (process.ppid !== workerData.parentPid) process.kill(process.pid, 'SIGKILL');
  }, 250);
`;

if (process.send) {
  new Worker(WATCHDOG_SOURCE, { eval: true, workerData: { parentPid: process.ppid }, resourceLimits: { maxOldGenerationSizeMb: 8 } }).unref();
  let waitingForParts: ((parts: SuppliedParts) => void) | undefined;
  const askFor = (parts: NeededParts) =>
    new Promise<SuppliedParts>((resolve) => {
      waitingForParts = resolve;
      reply({ kind: 'need', parts });
    });
  process.on('message', (message: ExpressionTask | SuppliedParts) => {
    if (message.kind === 'parts') {
      const resolve = waitingForParts;
      waitingForParts = undefined;
      resolve?.(message);
      return;
    }
    void run(message, askFor).then(reply);
  });
  // The pool is gone (it closed, or its process died): nothing is left to answer.
  process.on('disconnect', () => process.exit(0));
  reply({ kind: 'ready' });
}
