import { z } from 'zod';
import type { ProblemFieldError } from '../lib/problem.js';
import { isNodeType, nodeDefinition, nodeTypes } from './registry.js';
import { secretUsage } from './secret-templates.js';

/** Bounds on a graph: a workflow is drawn by a person, and every node costs a step row per run. */
export const MAX_NODES = 200;
export const MAX_EDGES = 1000;

export const RetryPolicy = z
  .object({
    maxAttempts: z.number().int().min(1).max(10),
    backoffMs: z.number().int().min(0).max(3_600_000),
  })
  .strict();

/**
 * Ids that every plain object already answers to (`__proto__`, `constructor`, `toString`, ...) and
 * `prototype`. Node ids become keys of outputs and of the expression scope (`steps.<id>`), where
 * such a key would read or replace an inherited member instead of holding a node's value, so a
 * graph using one is refused at save (API.md).
 */
const reservedNodeIds: ReadonlySet<string> = new Set([...Object.getOwnPropertyNames(Object.prototype), 'prototype']);

export function isReservedNodeId(id: string): boolean {
  return reservedNodeIds.has(id);
}

export const WorkflowNode = z
  .object({
    id: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9_.-]+$/, 'use letters, digits, _ . -')
      .meta({ description: 'Unique in the workflow. `__proto__`, `constructor`, `prototype` and the other names of Object.prototype members are refused.' }),
    type: z.string().min(1).max(64).meta({ description: `One of: ${nodeTypes.join(', ')}` }),
    name: z.string().max(200).optional(),
    params: z.record(z.string(), z.unknown()).default({}),
    position: z.object({ x: z.number(), y: z.number() }).strict().optional(),
    retry: RetryPolicy.optional(),
  })
  .strict()
  .meta({ id: 'WorkflowNode' });

export const WorkflowEdge = z
  .object({
    source: z.string().min(1).max(64),
    target: z.string().min(1).max(64),
    when: z.boolean().optional().meta({ description: 'On edges leaving a condition node: the result that follows this edge.' }),
  })
  .strict()
  .meta({ id: 'WorkflowEdge' });

export type WorkflowNode = z.infer<typeof WorkflowNode>;
export type WorkflowEdge = z.infer<typeof WorkflowEdge>;

export const WorkflowNodes = z.array(WorkflowNode).max(MAX_NODES);
export const WorkflowEdges = z.array(WorkflowEdge).max(MAX_EDGES);

/**
 * The rules a schema cannot express: known types and their params, unique ids, edges between
 * existing nodes, `when` only after a condition, and no cycle. Paths name the offending element
 * (`nodes[2].type`, `edges[0].target`). An empty list means the graph is valid. `now` is the
 * clock of checks that depend on it (a delay's literal `until`).
 */
export function validateGraph(nodes: readonly WorkflowNode[], edges: readonly WorkflowEdge[], now = new Date()): ProblemFieldError[] {
  const errors: ProblemFieldError[] = [];
  const indexById = new Map<string, number>();
  let webhookTriggerIndex: number | undefined;

  nodes.forEach((node, index) => {
    // A workflow has one webhook URL, so one trigger.webhook node says how its deliveries are checked.
    if (node.type === 'trigger.webhook') {
      if (webhookTriggerIndex !== undefined) errors.push({ path: `nodes[${index}].type`, message: `a workflow has one trigger.webhook node (nodes[${webhookTriggerIndex}])` });
      webhookTriggerIndex ??= index;
    }
    if (isReservedNodeId(node.id)) {
      errors.push({ path: `nodes[${index}].id`, message: `'${node.id}' is reserved: every object already has a member of that name` });
    }
    if (indexById.has(node.id)) {
      errors.push({ path: `nodes[${index}].id`, message: `duplicates the id of nodes[${indexById.get(node.id)}]` });
    } else {
      indexById.set(node.id, index);
    }
    if (!isNodeType(node.type)) {
      errors.push({ path: `nodes[${index}].type`, message: `unknown node type '${node.type}' (known: ${nodeTypes.join(', ')})` });
      return;
    }
    const definition = nodeDefinition(node.type);
    const params = definition.params.safeParse(node.params);
    const paramIssues = params.success ? (definition.checkAtSave?.(params.data, now) ?? []) : params.error.issues;
    // `$secrets` only as `{{ $secrets.KEY }}` in http.request params: whether each KEY exists needs the database (the repository checks).
    for (const issue of [...paramIssues, ...secretUsage(node.type, node.params).issues]) {
      errors.push({ path: paramPath(index, issue.path), message: issue.message });
    }
  });

  const seenEdges = new Set<string>();
  edges.forEach((edge, index) => {
    const sourceIndex = indexById.get(edge.source);
    if (sourceIndex === undefined) errors.push({ path: `edges[${index}].source`, message: `no node has id '${edge.source}'` });
    if (!indexById.has(edge.target)) errors.push({ path: `edges[${index}].target`, message: `no node has id '${edge.target}'` });
    if (edge.source === edge.target) errors.push({ path: `edges[${index}]`, message: 'a node cannot lead to itself' });
    const key = `${edge.source}\u0000${edge.target}`;
    if (seenEdges.has(key)) errors.push({ path: `edges[${index}]`, message: 'duplicates an earlier edge' });
    seenEdges.add(key);
    const sourceType = sourceIndex === undefined ? undefined : nodes[sourceIndex]?.type;
    if (edge.when !== undefined && sourceType !== undefined && sourceType !== 'condition') {
      errors.push({ path: `edges[${index}].when`, message: 'only edges leaving a condition node carry when' });
    }
  });

  if (errors.length === 0) {
    const cycleEdge = findEdgeOnCycle(nodes, edges);
    if (cycleEdge !== undefined) errors.push({ path: `edges[${cycleEdge}]`, message: 'closes a cycle: a workflow graph must be acyclic' });
  }
  return errors;
}

/** `nodes[2].params.headers.Authorization`: where a param issue is, as the errors of a refused graph name it. */
export function paramPath(nodeIndex: number, path: readonly PropertyKey[]): string {
  const where = path.length > 0 ? `.${path.map(String).join('.')}` : '';
  return `nodes[${nodeIndex}].params${where}`;
}

/** Depth-first search; returns the index of an edge that closes a cycle (a back edge), if any. */
function findEdgeOnCycle(nodes: readonly WorkflowNode[], edges: readonly WorkflowEdge[]): number | undefined {
  const outgoing = new Map<string, number[]>();
  edges.forEach((edge, index) => outgoing.set(edge.source, [...(outgoing.get(edge.source) ?? []), index]));
  const state = new Map<string, 'visiting' | 'done'>();
  // Iterative, so a long chain of nodes cannot overflow the stack.
  for (const root of nodes) {
    if (state.has(root.id)) continue;
    const stack: { id: string; next: number }[] = [{ id: root.id, next: 0 }];
    state.set(root.id, 'visiting');
    while (stack.length > 0) {
      const frame = stack[stack.length - 1] as { id: string; next: number };
      const edgeIndex = outgoing.get(frame.id)?.[frame.next];
      if (edgeIndex === undefined) {
        state.set(frame.id, 'done');
        stack.pop();
        continue;
      }
      frame.next += 1;
      const target = (edges[edgeIndex] as WorkflowEdge).target;
      const targetState = state.get(target);
      if (targetState === 'visiting') return edgeIndex;
      if (targetState === undefined) {
        state.set(target, 'visiting');
        stack.push({ id: target, next: 0 });
      }
    }
  }
  return undefined;
}

/** Node ids in an order where every edge goes forwards (shorter than the node list if there is a cycle). */
export function topologicalOrder(nodes: readonly WorkflowNode[], edges: readonly WorkflowEdge[]): string[] {
  const incoming = new Map<string, number>(nodes.map((node) => [node.id, 0]));
  const outgoing = new Map<string, string[]>();
  for (const edge of edges) {
    incoming.set(edge.target, (incoming.get(edge.target) ?? 0) + 1);
    outgoing.set(edge.source, [...(outgoing.get(edge.source) ?? []), edge.target]);
  }
  const ready = nodes.filter((node) => incoming.get(node.id) === 0).map((node) => node.id);
  const order: string[] = [];
  while (ready.length > 0) {
    const id = ready.shift() as string;
    order.push(id);
    for (const next of outgoing.get(id) ?? []) {
      const remaining = (incoming.get(next) ?? 0) - 1;
      incoming.set(next, remaining);
      if (remaining === 0) ready.push(next);
    }
  }
  return order;
}
