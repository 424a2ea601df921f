import type { WorkflowSnapshot } from '../db/schema/index.js';
import type { StepState } from '../executions/lifecycle.js';

export interface Plan {
  /** Nodes whose every predecessor finished and whose every incoming edge is inactive: they end skipped. */
  readonly skip: string[];
  /** Nodes that can run now (independent of each other). */
  readonly ready: string[];
  /** A step that failed for good: the execution fails with it. */
  readonly failed: StepState | undefined;
  /** Every node completed or skipped. */
  readonly done: boolean;
}

const finished = (step: StepState | undefined) => step?.status === 'completed' || step?.status === 'skipped';

/**
 * The next move of an execution, from its graph and its step rows alone, so a worker that takes
 * over after a crash continues exactly where the rows say: completed steps are never run again.
 * An edge is active when its source completed and, leaving a condition, its `when` equals the
 * condition's result; a node runs when any incoming edge is active, and is skipped when none is.
 */
export function planNext(snapshot: WorkflowSnapshot, steps: ReadonlyMap<string, StepState>): Plan {
  const failed = [...steps.values()].find((step) => step.status === 'failed');
  const skip: string[] = [];
  const ready: string[] = [];
  let done = true;
  for (const node of snapshot.nodes) {
    const step = steps.get(node.id);
    if (finished(step)) continue;
    done = false;
    const incoming = snapshot.edges.filter((edge) => edge.target === node.id);
    if (incoming.length === 0) {
      ready.push(node.id);
      continue;
    }
    if (!incoming.every((edge) => finished(steps.get(edge.source)))) continue;
    const active = incoming.some((edge) => {
      const source = steps.get(edge.source);
      if (source?.status !== 'completed') return false;
      if (edge.when === undefined) return true;
      return (source.output as { result?: unknown } | null)?.result === edge.when;
    });
    (active ? ready : skip).push(node.id);
  }
  return { skip, ready, failed, done };
}

/**
 * The execution's output: the outputs of its last steps (completed nodes with no outgoing edge), by
 * node id. Without a prototype, so an id such as `__proto__` is a key like any other.
 */
export function executionOutput(snapshot: WorkflowSnapshot, steps: ReadonlyMap<string, StepState>): Record<string, unknown> {
  const output = Object.create(null) as Record<string, unknown>;
  for (const node of snapshot.nodes) {
    const isLast = !snapshot.edges.some((edge) => edge.source === node.id);
    const step = steps.get(node.id);
    if (isLast && step?.status === 'completed') output[node.id] = step.output;
  }
  return output;
}
