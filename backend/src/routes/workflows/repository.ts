import { and, eq, ilike, or, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { workflows } from '../../db/schema/index.js';
import { validateGraph } from '../../engine/graph.js';
import { checkIfMatch, etagOf, iso } from '../../lib/http.js';
import { keysetPlan, likePattern, toPage, type ListParams, type Page, type SortKey } from '../../lib/pagination.js';
import { ProblemError } from '../../lib/problem.js';
import type { CreateWorkflowInput, UpdateWorkflowInput, WorkflowDto } from './schemas.js';

type WorkflowRow = typeof workflows.$inferSelect;

const sortKeys: Record<string, SortKey> = {
  createdAt: { column: workflows.createdAt, kind: 'timestamp' },
  updatedAt: { column: workflows.updatedAt, kind: 'timestamp' },
  name: { column: workflows.name, kind: 'text' },
};

/** The API shape: everything but the owner. */
export function present(row: WorkflowRow): WorkflowDto {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    nodes: row.nodes,
    edges: row.edges,
    version: row.version,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}

export const workflowEtag = (row: { version: number }) => etagOf(row.version);

function assertValidGraph(nodes: WorkflowRow['nodes'], edges: WorkflowRow['edges']): void {
  const errors = validateGraph(nodes, edges);
  if (errors.length > 0) throw new ProblemError(400, 'INVALID_GRAPH', 'The workflow graph is invalid.', { errors });
}

export async function list(db: Db, userId: string, params: ListParams): Promise<Page<WorkflowDto>> {
  const plan = keysetPlan(params, sortKeys, workflows.id);
  const conditions: (SQL | undefined)[] = [eq(workflows.userId, userId), plan.after];
  if (params.searchQuery) {
    const pattern = likePattern(params.searchQuery);
    conditions.push(or(ilike(workflows.name, pattern), ilike(workflows.description, pattern)));
  }
  const rows = await db
    .select()
    .from(workflows)
    .where(and(...conditions))
    .orderBy(...plan.orderBy)
    .limit(plan.limit)
    .offset(plan.offset);
  return toPage(rows, params, (row) => (params.sortBy === 'name' ? row.name : row[params.sortBy as 'createdAt' | 'updatedAt']), present);
}

export async function get(db: Db, userId: string, id: string): Promise<WorkflowRow | null> {
  const [row] = await db.select().from(workflows).where(and(eq(workflows.userId, userId), eq(workflows.id, id)));
  return row ?? null;
}

export async function create(db: Db, userId: string, input: CreateWorkflowInput): Promise<WorkflowRow> {
  assertValidGraph(input.nodes, input.edges);
  const [row] = await db
    .insert(workflows)
    .values({ userId, name: input.name, description: input.description, nodes: input.nodes, edges: input.edges })
    .returning();
  if (!row) throw new Error('insert returned no row');
  return row;
}

/**
 * Changes a workflow under a row lock: the If-Match check, the graph check (on the merged graph)
 * and the write see the same version, so concurrent edits cannot overwrite each other unseen.
 * Returns null when the caller has no such workflow.
 */
export async function update(db: Db, userId: string, id: string, input: UpdateWorkflowInput, ifMatch: string | undefined): Promise<WorkflowRow | null> {
  return db.transaction(async (tx) => {
    const [current] = await tx
      .select()
      .from(workflows)
      .where(and(eq(workflows.userId, userId), eq(workflows.id, id)))
      .for('update');
    if (!current) return null;
    checkIfMatch(ifMatch, workflowEtag(current));
    const nodes = input.nodes ?? current.nodes;
    const edges = input.edges ?? current.edges;
    if (input.nodes !== undefined || input.edges !== undefined) assertValidGraph(nodes, edges);
    const [row] = await tx
      .update(workflows)
      .set({
        name: input.name ?? current.name,
        description: input.description ?? current.description,
        nodes,
        edges,
        version: current.version + 1,
        updatedAt: new Date(),
      })
      .where(eq(workflows.id, current.id))
      .returning();
    return row ?? null;
  });
}

/** Deletes a workflow with its jobs and executions (foreign-key cascades, one statement). */
export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [current] = await tx
      .select({ id: workflows.id, version: workflows.version })
      .from(workflows)
      .where(and(eq(workflows.userId, userId), eq(workflows.id, id)))
      .for('update');
    if (!current) return false;
    checkIfMatch(ifMatch, workflowEtag(current));
    await tx.delete(workflows).where(eq(workflows.id, current.id));
    return true;
  });
}
