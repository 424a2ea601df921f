import type { z } from 'zod';
import type { ExpressionScope } from '../expressions.js';
import type { ExpressionEvaluator } from '../expression-pool.js';
import type { HttpGuard } from '../http-request.js';
import type { StepResources } from '../run-resources.js';
import type { StepState } from '../../executions/lifecycle.js';

export interface NodeContext {
  /** `{ input, steps }`: what expressions see. */
  readonly scope: ExpressionScope;
  /** Aborted when the execution is cancelled or this worker loses it. */
  readonly signal: AbortSignal;
  /** The node's row so far (a delay reads the time it chose before a restart). */
  readonly step: StepState | undefined;
  readonly http: HttpGuard;
  readonly now: () => Date;
  /** Evaluates the node's expressions and templates, off the main thread and within their budget; `$vars` is bound. */
  readonly expressions: ExpressionEvaluator;
  /** The connection and secrets the node's params name, read for this step (API.md, Connections and Variables). */
  readonly resources: StepResources;
}

/** A finished step, with the input it ran with (resolved params) for the step row. */
export interface Completed {
  readonly output: unknown;
  readonly input?: unknown;
}

/** The step waits (a delay) without holding a worker: the execution is paused until then. */
export interface Waiting {
  readonly waitUntil: Date;
  readonly input: unknown;
}

export type NodeResult = Completed | Waiting;

/** A refused param, in the shape of a zod issue (path relative to the node's params). */
export interface ParamIssue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
}

export interface NodeDefinition<Params> {
  /** Shape of the node's params, checked when a workflow is saved. */
  readonly params: z.ZodType<Params>;
  /**
   * Checks that depend on the clock, made when a workflow is saved only (paths are relative to
   * params). A run must not rely on them: it checks again, as the values may come from templates.
   */
  readonly checkAtSave?: (params: Params, now: Date) => readonly ParamIssue[];
  execute(params: Params, context: NodeContext): Promise<NodeResult>;
}

export const defineNode = <Params>(definition: NodeDefinition<Params>) => definition;
