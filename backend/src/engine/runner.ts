import type { Logger } from 'pino';
import type { WorkflowNode } from './graph.js';
import { StepError } from './errors.js';
import { isDatabaseError } from '../db/errors.js';
import type { NodeResult } from './nodes/types.js';
import type { ClaimedExecution, ExecutionLifecycle, StepChange, StepState } from '../executions/lifecycle.js';
import type { HttpGuard } from './http-request.js';
import { bindExpressions, type ExpressionEvaluator } from './expression-pool.js';
import { mapAtMost } from '../lib/map-at-most.js';
import { executionOutput, planNext } from './plan.js';
import { Redactor } from './redaction.js';
import { isNodeType, nodeDefinition } from './registry.js';
import { noStepResources, type StepResources, type StepResourceSource } from './run-resources.js';

/** Node types that finish at once (no I/O): they go straight to completed, with no `running` write. */
const instantTypes = new Set(['trigger.manual', 'trigger.schedule', 'trigger.webhook', 'transform', 'condition']);

export interface RunnerSettings {
  readonly http: HttpGuard;
  readonly now: () => Date;
  readonly expressions: ExpressionEvaluator;
  /** Each step's connection, variables and secrets, read when it runs. */
  readonly resources: StepResourceSource;
}

/** Why a run stopped before its end: handed back (delay, backoff, shutdown) or taken away (cancel, lost lease). */
type Interruption = { kind: 'release'; status: 'pending' | 'paused'; wakeAt: Date | null } | { kind: 'lost' };

const MAX_BACKOFF_MS = 3_600_000;

/**
 * Takeovers (claims after an expired lease) an execution may have before a step found interrupted
 * (`running`) at a takeover fails: a worker dying mid-step costs an attempt and the step runs again,
 * but a fault that stops the run at the same place every time (a write the database refuses, a
 * bug) must not take the run up at every lease expiry for ever, sending the step's request each
 * time. A run handed back (a shutdown's grace running out, say during a rolling restart) is not
 * taken over, and does not count.
 */
export const MAX_TAKEOVERS = 3;

/**
 * Steps of one run in flight at once. A graph may hold 200 independent nodes: all at once, one run
 * would hold 200 requests' answers in memory together (parsed, many times their size on the wire)
 * and fill the expression queue, whatever its fairness between users.
 */
export const MAX_STEPS_AT_ONCE = 8;

/** Exponential backoff with full jitter between half and all of the step: retries of many executions spread out. */
export function backoffDelay(backoffMs: number, attempt: number): number {
  const exponential = Math.min(MAX_BACKOFF_MS, backoffMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exponential / 2 + Math.random() * (exponential / 2));
}

/** What a step's (and its execution's) `error` records of a failure. Exported for its tests. */
export function errorRecord(error: unknown, nodeId?: string): Record<string, unknown> {
  if (error instanceof StepError) {
    return { ...(nodeId ? { nodeId } : {}), ...(error.code ? { code: error.code } : {}), message: error.message, ...(error.details ? { details: error.details } : {}) };
  }
  // A database's message (SQL, values, constraint names) is for the log, never for the user.
  if (isDatabaseError(error)) return { ...(nodeId ? { nodeId } : {}), message: 'the step failed because of a database error' };
  return { ...(nodeId ? { nodeId } : {}), message: error instanceof Error ? error.message : String(error) };
}

/** The step's result with every secret the redactor knows masked (the same object when it knows none). */
function redactResult(result: NodeResult, redactor: Redactor): NodeResult {
  if (!redactor.active) return result;
  if ('waitUntil' in result) return { waitUntil: result.waitUntil, input: redactor.value(result.input) };
  return { output: redactor.value(result.output), ...(result.input === undefined ? {} : { input: redactor.value(result.input) }) };
}

/**
 * Runs one claimed execution until it ends or is handed back. It holds no transaction while a step
 * runs (the embedded database has a single connection); every write is fenced by the lease.
 *
 * The rows of instant steps (no I/O, no side effect: triggers, transforms, conditions, skips) are
 * not written on their own: they go with the execution's next write (a step that starts I/O, a
 * hand-back, the end), so a one-step workflow costs its claim and one more statement. A crash in
 * between loses nothing but those pure computations, which the next worker repeats.
 */
export class ExecutionRunner {
  /** Per execution being run here: instant step rows not written yet. */
  private readonly unwritten = new Map<string, StepChange[]>();
  /** Per execution being run here: the bytes of the kept rows' outputs. */
  private readonly unwrittenBytes = new Map<string, number>();
  /** Per execution being run here: the secrets its workflow names (StepResourceSource.forRun), read at its first step. */
  private readonly runRedactors = new Map<string, Promise<Redactor>>();

  constructor(
    private readonly lifecycle: ExecutionLifecycle,
    private readonly workerId: string,
    private readonly settings: RunnerSettings,
    private readonly logger: Logger,
  ) {}

  async run(execution: ClaimedExecution, signal: AbortSignal, draining: () => boolean): Promise<void> {
    this.unwritten.set(execution.id, []);
    try {
      await this.runClaimed(execution, signal, draining);
    } finally {
      this.unwritten.delete(execution.id);
      this.unwrittenBytes.delete(execution.id);
      this.runRedactors.delete(execution.id);
    }
  }

  private async runClaimed(execution: ClaimedExecution, signal: AbortSignal, draining: () => boolean): Promise<void> {
    const log = this.logger.child({ executionId: execution.id });
    const steps = new Map(execution.steps.map((step) => [step.nodeId, step]));
    const nodes = new Map(execution.snapshot.nodes.map((node) => [node.id, node]));

    for (;;) {
      if (signal.aborted) return;
      const plan = planNext(execution.snapshot, steps);
      if (plan.failed) {
        await this.end(execution, { status: 'failed', error: plan.failed.error ?? { nodeId: plan.failed.nodeId, message: 'step failed' } });
        return;
      }
      for (const nodeId of plan.skip) {
        const skipped: StepState = { nodeId, status: 'skipped', attempt: 0, input: null, output: null, error: null };
        await this.writeStep(execution, skipped, { finished: true }, 'deferred');
        steps.set(nodeId, skipped);
      }
      if (plan.skip.length > 0) continue;
      if (plan.done) {
        await this.end(execution, { status: 'completed', output: executionOutput(execution.snapshot, steps) });
        return;
      }
      if (draining()) {
        await this.interrupt(execution, { kind: 'release', status: 'pending', wakeAt: null }, log);
        return;
      }
      // Independent ready nodes run side by side, MAX_STEPS_AT_ONCE at a time; the wave ends when all have settled.
      // A step not started yet when the run is lost or the worker drains is not started: the run is
      // handed back after the wave, and its next worker starts it.
      const outcomes = await mapAtMost(plan.ready, MAX_STEPS_AT_ONCE, (nodeId) => {
        if (signal.aborted) return Promise.resolve<Interruption>({ kind: 'lost' });
        if (draining()) return Promise.resolve<Interruption>({ kind: 'release', status: 'pending', wakeAt: null });
        return this.runStep(execution, nodes.get(nodeId) as WorkflowNode, steps, signal);
      });
      const interruption = outcomes.find((outcome): outcome is Interruption => outcome !== undefined);
      if (interruption) {
        const wakeTimes = outcomes.flatMap((outcome) => (outcome?.kind === 'release' && outcome.wakeAt ? [outcome.wakeAt.getTime()] : []));
        // A step left unstarted (the worker drains) wants the run back at once: a waiting delay pauses
        // it again from its recorded time, and nothing waits for a sibling's delay or backoff.
        const unstarted = outcomes.some((outcome) => outcome?.kind === 'release' && outcome.status === 'pending' && outcome.wakeAt === null);
        const merged: Interruption =
          interruption.kind === 'lost' || outcomes.some((outcome) => outcome?.kind === 'lost')
            ? { kind: 'lost' }
            : unstarted
              ? { kind: 'release', status: 'pending', wakeAt: null }
              : {
                  kind: 'release',
                  status: outcomes.some((outcome) => outcome?.kind === 'release' && outcome.status === 'paused') ? 'paused' : 'pending',
                  wakeAt: wakeTimes.length > 0 ? new Date(Math.min(...wakeTimes)) : null,
                };
        await this.interrupt(execution, merged, log);
        return;
      }
    }
  }

  /** Runs one attempt of one node; undefined when the step completed or failed for good. */
  private async runStep(execution: ClaimedExecution, node: WorkflowNode, steps: Map<string, StepState>, signal: AbortSignal): Promise<Interruption | undefined> {
    const previous = steps.get(node.id);
    const isWaitingDelay = node.type === 'delay' && previous?.status === 'running';
    // A step found `running` was interrupted (crash, shutdown): that attempt counts, the next one starts.
    const attempt = isWaitingDelay ? (previous?.attempt ?? 1) : (previous?.attempt ?? 0) + 1;
    const scope = {
      input: execution.input ?? null,
      steps: Object.fromEntries([...steps.values()].filter((step) => step.status === 'completed').map((step) => [step.nodeId, step.output])),
    };

    if (execution.takenOver && !isWaitingDelay && previous?.status === 'running' && execution.takeovers > MAX_TAKEOVERS) {
      const message = `the run was taken over ${execution.takeovers} times after its worker stopped without handing it back, this time while this step ran; it is not tried again`;
      return this.failAttempt(execution, node, steps, attempt - 1, new StepError(message, { retryable: false, code: 'STEP_INTERRUPTED' }));
    }

    // A step with I/O is marked running first (live progress; an interrupted attempt is counted).
    const instant = instantTypes.has(node.type);
    if (!isWaitingDelay && !instant) {
      const running: StepState = { nodeId: node.id, status: 'running', attempt, input: null, output: null, error: null };
      if (!(await this.writeStep(execution, running, { started: true }))) return { kind: 'lost' };
    }

    // The connection, variables and secrets the node names, as they are now. A delay that is only
    // waiting reads the time recorded in its row: it evaluates nothing.
    let resources: StepResources;
    try {
      const own = isWaitingDelay ? noStepResources : await this.settings.resources.forStep(execution.userId, node);
      // The step's own secrets and every other its run may have sent: a response can echo what an earlier step sent.
      resources = { ...own, redactor: Redactor.union(await this.runRedactor(execution), own.redactor) };
    } catch (error) {
      if (signal.aborted) return { kind: 'lost' };
      // As for the writes, a database error is not the step's failure: the run stops, and is taken up again once its lease expires.
      if (!(error instanceof StepError)) throw error;
      return this.failAttempt(execution, node, steps, attempt, error);
    }
    // Knows the secrets this step uses: everything recorded, streamed or logged about the step goes
    // through it, so a secret reads `[secret]` wherever it would have shown (API.md, Variables).
    const { redactor } = resources;

    let executed: NodeResult;
    try {
      if (!isNodeType(node.type)) throw new StepError(`unknown node type '${node.type}'`, { retryable: false });
      const definition = nodeDefinition(node.type);
      const params = definition.params.parse(node.params);
      // Its expressions wait for a worker in its user's turn, and are dropped if the run stops meanwhile.
      const expressions = bindExpressions(this.settings.expressions, resources.vars === undefined ? {} : { vars: resources.vars }, { owner: execution.userId, signal });
      const result = await definition.execute(params, { scope, signal, step: previous, http: this.settings.http, now: this.settings.now, expressions, resources });
      if (signal.aborted) return { kind: 'lost' };
      executed = redactResult(result, redactor);
    } catch (error) {
      if (signal.aborted) return { kind: 'lost' };
      return this.failAttempt(execution, node, steps, attempt, redactor.error(error));
    }

    // The writes stay outside the try: a database error is not the step's failure (and its message is never recorded).
    if ('waitUntil' in executed) {
      const waiting: StepState = { nodeId: node.id, status: 'running', attempt, input: executed.input, output: null, error: null };
      if (!(await this.writeStep(execution, waiting, {}))) return { kind: 'lost' };
      steps.set(node.id, waiting);
      return { kind: 'release', status: 'paused', wakeAt: executed.waitUntil };
    }
    const { bytes, problem } = this.lifecycle.checkOutput(executed.output);
    if (problem) {
      const code = problem.code === 'STEP_OUTPUT_TOO_LARGE' ? 'STEP_OUTPUT_TOO_LARGE' : 'UNSTORABLE_VALUE';
      return this.failAttempt(execution, node, steps, attempt, new StepError(problem.message, { retryable: false, code }));
    }
    const completed: StepState = { nodeId: node.id, status: 'completed', attempt, input: executed.input ?? null, output: executed.output ?? null, error: null };
    if (!(await this.writeStep(execution, completed, { finished: true, started: instant }, instant ? 'deferred' : 'now', bytes))) return { kind: 'lost' };
    steps.set(node.id, completed);
    return undefined;
  }

  private runRedactor(execution: ClaimedExecution): Promise<Redactor> {
    let redactor = this.runRedactors.get(execution.id);
    if (redactor === undefined) {
      redactor = this.settings.resources.forRun(execution.userId, execution.snapshot);
      // A failure (the database) is that step's, as forStep's is; the next step reads again.
      redactor.catch(() => this.runRedactors.delete(execution.id));
      this.runRedactors.set(execution.id, redactor);
    }
    return redactor;
  }

  /** Records a failed attempt: pending for another one (after a backoff) when the error allows it, else failed for good. */
  private async failAttempt(execution: ClaimedExecution, node: WorkflowNode, steps: Map<string, StepState>, attempt: number, error: unknown): Promise<Interruption | undefined> {
    const instant = instantTypes.has(node.type);
    const record = errorRecord(error, node.id);
    if (!(error instanceof StepError)) this.logger.warn({ err: error, executionId: execution.id, nodeId: node.id }, 'step failed with an unexpected error');
    const retryable = !(error instanceof StepError) || error.retryable;
    if (retryable && attempt < (node.retry?.maxAttempts ?? 1)) {
      const pending: StepState = { nodeId: node.id, status: 'pending', attempt, input: null, output: null, error: record };
      if (!(await this.writeStep(execution, pending, {}))) return { kind: 'lost' };
      steps.set(node.id, pending);
      const wait = backoffDelay(node.retry?.backoffMs ?? 0, attempt);
      return { kind: 'release', status: 'pending', wakeAt: new Date(this.settings.now().getTime() + wait) };
    }
    const failed: StepState = { nodeId: node.id, status: 'failed', attempt, input: null, output: null, error: record };
    if (!(await this.writeStep(execution, failed, { finished: true, started: instant }, instant ? 'deferred' : 'now'))) return { kind: 'lost' };
    steps.set(node.id, failed);
    return undefined;
  }

  private async end(execution: ClaimedExecution, outcome: { status: 'completed' | 'failed'; output?: unknown; error?: unknown }): Promise<void> {
    await this.lifecycle.finish(this.workerId, execution, outcome, this.takeUnwritten(execution));
  }

  private async interrupt(execution: ClaimedExecution, interruption: Interruption, log: Logger): Promise<void> {
    if (interruption.kind === 'lost') {
      log.info('execution taken away (cancelled or lease lost); stopping');
      return;
    }
    await this.lifecycle.release(this.workerId, execution, interruption.status, interruption.wakeAt, this.takeUnwritten(execution));
  }

  /**
   * Records a step row: `deferred` keeps it for the execution's next write; `now` writes it with
   * those kept so far. False when the execution is no longer ours.
   */
  private async writeStep(
    execution: ClaimedExecution,
    step: StepState,
    timing: { started?: boolean; finished?: boolean },
    when: 'now' | 'deferred' = 'now',
    outputBytes = 0,
  ): Promise<boolean> {
    const change: StepChange = {
      nodeId: step.nodeId,
      status: step.status,
      attempt: step.attempt,
      ...(step.input !== null ? { input: step.input } : {}),
      ...(step.output !== null ? { output: step.output } : {}),
      ...(step.error !== null ? { error: step.error } : {}),
      ...timing,
    };
    if (when === 'deferred') {
      const kept = (this.unwrittenBytes.get(execution.id) ?? 0) + outputBytes;
      // A statement carries at most about two payload bounds of outputs: a long chain of transforms is written in parts.
      if (kept <= this.lifecycle.limits.maxPayloadBytes) {
        this.unwritten.get(execution.id)?.push(change);
        this.unwrittenBytes.set(execution.id, kept);
        return true;
      }
    }
    return this.lifecycle.writeSteps(this.workerId, execution, [...this.takeUnwritten(execution), change]);
  }

  /** The kept step rows, handed to the write that takes them (taken at once: parallel steps each write their own). */
  private takeUnwritten(execution: ClaimedExecution): StepChange[] {
    const changes = this.unwritten.get(execution.id) ?? [];
    this.unwritten.set(execution.id, []);
    this.unwrittenBytes.set(execution.id, 0);
    return changes;
  }
}
