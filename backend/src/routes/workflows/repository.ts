import { randomBytes } from 'node:crypto';
import { and, eq, isNotNull, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { transaction } from '../../db/transaction.js';
import { workflows, workflowVersions } from '../../db/schema/index.js';
import { validateGraph } from '../../engine/graph.js';
import { removeIfMatch, updateIfMatch, versionEtag } from '../../lib/conditional-update.js';
import { iso } from '../../lib/http.js';
import {
  columnSortKeys,
  getOwned,
  isOwned,
  keysetPlan,
  listOwned,
  toPage,
  type ColumnSortKey,
  type ListParams,
  type Page,
  type SortKeys,
} from '../../lib/pagination.js';
import { ProblemError } from '../../lib/problem.js';
import { assertGraphResources } from './graph-resources.js';
import type { CreateWorkflowInput, UpdateWorkflowInput, WorkflowDto, WorkflowVersionDto, WorkflowVersionSummaryDto } from './schemas.js';

type WorkflowRow = typeof workflows.$inferSelect;

const sortKeys = columnSortKeys(workflows, { createdAt: 'timestamp', updatedAt: 'timestamp', name: 'text' });

/**
 * The API shape: everything but the owner. `apiBaseUrl` (AUTH_BASE_URL, the public API root) makes
 * the webhook URL: `<apiBaseUrl>/hooks/<hookId>`.
 */
export function present(row: WorkflowRow, apiBaseUrl: string): WorkflowDto {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    nodes: row.nodes,
    edges: row.edges,
    version: row.version,
    retentionDays: row.retentionDays,
    webhook: row.hookId ? { url: `${apiBaseUrl}/hooks/${row.hookId}`, hookId: row.hookId } : null,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}

/** 128 random bits, URL-safe: a webhook URL cannot be guessed, and tells nothing about its workflow. */
const newHookId = (): string => randomBytes(16).toString('base64url');

/** The hook a saved graph has: its current one while it has a trigger.webhook node (a new one if it had none), else none. */
function hookIdFor(nodes: WorkflowRow['nodes'], current: string | null): string | null {
  return nodes.some((node) => node.type === 'trigger.webhook') ? (current ?? newHookId()) : null;
}


function assertValidGraph(nodes: WorkflowRow['nodes'], edges: WorkflowRow['edges']): void {
  const errors = validateGraph(nodes, edges);
  if (errors.length > 0) throw new ProblemError(400, 'INVALID_GRAPH', 'The workflow graph is invalid.', { errors });
}

export async function list(db: Db, userId: string, params: ListParams, apiBaseUrl: string): Promise<Page<WorkflowDto>> {
  return listOwned(db, workflows, userId, params, { sortKeys, searchColumns: [workflows.name, workflows.description] }, (row) => present(row, apiBaseUrl));
}

export async function get(db: Db, userId: string, id: string): Promise<WorkflowRow | null> {
  return getOwned(db, workflows, userId, id);
}

/** Keeps the graph of a workflow's new version: executions of that version run it, whatever comes after. */
async function recordVersion(db: Db, row: WorkflowRow): Promise<void> {
  await db.insert(workflowVersions).values({ workflowId: row.id, version: row.version, userId: row.userId, nodes: row.nodes, edges: row.edges });
}

export async function create(db: Db, userId: string, input: CreateWorkflowInput): Promise<WorkflowRow> {
  assertValidGraph(input.nodes, input.edges);
  return transaction(db, async (tx) => {
    await assertGraphResources(tx, userId, input.nodes);
    const [row] = await tx
      .insert(workflows)
      .values({
        userId,
        name: input.name,
        description: input.description,
        nodes: input.nodes,
        edges: input.edges,
        retentionDays: input.retentionDays,
        hookId: hookIdFor(input.nodes, null),
      })
      .returning();
    if (!row) throw new Error('insert returned no row');
    await recordVersion(tx, row);
    return row;
  });
}

/**
 * Changes a workflow under a row lock: the If-Match check, the graph check (on the merged graph)
 * and the write see the same version, so concurrent edits cannot overwrite each other unseen.
 * Returns null when the caller has no such workflow.
 */
export async function update(db: Db, userId: string, id: string, input: UpdateWorkflowInput, ifMatch: string | undefined): Promise<WorkflowRow | null> {
  return updateIfMatch(
    db,
    workflows,
    userId,
    id,
    ifMatch,
    async (tx, current) => {
      const nodes = input.nodes ?? current.nodes;
      const edges = input.edges ?? current.edges;
      if (input.nodes !== undefined || input.edges !== undefined) {
        assertValidGraph(nodes, edges);
        await assertGraphResources(tx, userId, nodes);
      }
      return {
        name: input.name ?? current.name,
        description: input.description ?? current.description,
        nodes,
        edges,
        // null is a value here (back to the server default); only an absent field keeps the current one.
        retentionDays: input.retentionDays === undefined ? current.retentionDays : input.retentionDays,
        hookId: hookIdFor(nodes, current.hookId),
      };
    },
    recordVersion,
  );
}

/**
 * Gives one of the caller's workflows a new webhook URL: the old one answers 404 from the commit
 * on. Not a change of the workflow: its version and ETag stay, because the ETag guards what a PATCH
 * changes (as for jobs), and the hook id is no field a PATCH writes; a delivery looked up under the
 * old id is refused by acceptDelivery's own hook_id check. 'no-webhook' when its graph has no
 * trigger.webhook node; null when the caller has no such workflow.
 */
export async function rotateHook(db: Db, userId: string, id: string): Promise<WorkflowRow | 'no-webhook' | null> {
  const [row] = await db
    .update(workflows)
    .set({ hookId: newHookId(), updatedAt: sql`${workflows.updatedAt}` })
    .where(and(eq(workflows.userId, userId), eq(workflows.id, id), isNotNull(workflows.hookId)))
    .returning();
  if (row) return row;
  return (await owns(db, userId, id)) ? 'no-webhook' : null;
}

/** A listed version: what a page reads of it. */
interface VersionListRow {
  id: string;
  version: number;
  createdAt: Date;
  payloadBytes: number;
}
const versionSortKeys: SortKeys<VersionListRow, ColumnSortKey<VersionListRow>> = {
  createdAt: { column: workflowVersions.createdAt, kind: 'timestamp', valueOf: (row) => row.createdAt },
};

/** Whether the caller has this workflow (one index read; nothing of it is loaded). */
export async function owns(db: Db, userId: string, id: string): Promise<boolean> {
  return isOwned(db, workflows, userId, id);
}

/**
 * A page of one of the caller's workflows' saved versions, without their graphs (each may be a
 * megabyte: a page reads only what it lists); null when the caller has no such workflow.
 */
export async function listVersions(db: Db, userId: string, workflowId: string, params: ListParams): Promise<Page<WorkflowVersionSummaryDto> | null> {
  if (!(await owns(db, userId, workflowId))) return null;
  const plan = keysetPlan(params, versionSortKeys, workflowVersions.id);
  const rows = await db
    .select({ id: workflowVersions.id, version: workflowVersions.version, createdAt: workflowVersions.createdAt, payloadBytes: workflowVersions.payloadBytes })
    .from(workflowVersions)
    .where(and(eq(workflowVersions.userId, userId), eq(workflowVersions.workflowId, workflowId), plan.after))
    .orderBy(...plan.orderBy)
    .limit(plan.limit)
    .offset(plan.offset);
  return toPage(rows, params, versionSortKeys, (row) => ({ version: row.version, createdAt: iso(row.createdAt), payloadBytes: row.payloadBytes }));
}

/** One saved version of one of the caller's workflows, or null. */
export async function getVersion(db: Db, userId: string, workflowId: string, version: number): Promise<WorkflowVersionDto | null> {
  const [row] = await db
    .select()
    .from(workflowVersions)
    .where(and(eq(workflowVersions.userId, userId), eq(workflowVersions.workflowId, workflowId), eq(workflowVersions.version, version)));
  return row ? { version: row.version, nodes: row.nodes, edges: row.edges, createdAt: iso(row.createdAt) } : null;
}

/**
 * Deletes a workflow with its jobs, executions and deliveries (foreign-key cascades, one
 * statement). The event messages still pending for them stay for their subscriptions (API.md: a
 * committed message is retried for at least 24 h), detached from the rows that go; the retention
 * purge deletes them once they have ended (retention/purge.ts, detachedMessages). Those of the
 * workflow's own subscriptions go with them.
 */
export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  // The workflow's executions are locked first, in id order, as the engine's writes lock them
  // before their user's usage row: the cascade below takes that row (with the jobs) before it
  // reaches the executions, which in the other order could deadlock with a run's end. The
  // workflow's row is locked FOR NO KEY UPDATE, as a job's (jobs/repository.ts, remove).
  return removeIfMatch(
    db,
    workflows,
    userId,
    id,
    ifMatch,
    async (tx) => {
      await tx.execute(sql`select 1 from executions where workflow_id = ${id} and user_id = ${userId} order by id for update`);
      // A job moved to another workflow while its scheduled run of this one was under way: only
      // that run's end unlocks the job (lifecycle.ts, unlockJob), and it is deleted here.
      await tx.execute(sql`
        update jobs set locked = false
         where user_id = ${userId} and locked
           and id in (select e.job_id from executions e
                       where e.workflow_id = ${id} and e.user_id = ${userId} and e.trigger = 'schedule' and e.status in ('pending', 'running', 'paused'))`);
      await tx.execute(sql`
        update event_messages set execution_id = null, webhook_delivery_id = null
         where user_id = ${userId} and status = 'pending'
           and (execution_id in (select e.id from executions e where e.workflow_id = ${id} and e.user_id = ${userId})
                or webhook_delivery_id in (select d.id from webhook_deliveries d where d.workflow_id = ${id} and d.user_id = ${userId}))`);
    },
    'no key update',
  );
}
