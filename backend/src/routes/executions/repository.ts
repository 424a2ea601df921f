import { and, eq, inArray, sql, type SQL } from 'drizzle-orm';
import type { Db, PooledDb, Sql } from '../../db/client.js';
import { executions, executionSteps, type WorkflowSnapshot } from '../../db/schema/index.js';
import { iso, isoOrNull } from '../../lib/http.js';
import { keysetPlan, keysetPosition, toPage, type ListParams, type Page, type SortKey } from '../../lib/pagination.js';
import type { ExecutionDto, StepDto } from './schemas.js';

/** The columns the API shows (and `revision` for live events): never the bulky workflow snapshot. */
const executionColumns = {
  id: executions.id,
  workflowId: executions.workflowId,
  workflowVersion: executions.workflowVersion,
  jobId: executions.jobId,
  trigger: executions.trigger,
  status: executions.status,
  input: executions.input,
  output: executions.output,
  error: executions.error,
  startedAt: executions.startedAt,
  finishedAt: executions.finishedAt,
  createdAt: executions.createdAt,
  retryOfId: executions.retryOfId,
  revision: executions.revision,
};

export type ExecutionRow = Pick<
  typeof executions.$inferSelect,
  keyof typeof executionColumns
>;
export type StepRow = typeof executionSteps.$inferSelect;

const executionSortKeys: Record<string, SortKey> = { createdAt: { column: executions.createdAt, kind: 'timestamp' } };
const stepSortKeys: Record<string, SortKey> = { createdAt: { column: executionSteps.createdAt, kind: 'timestamp' } };

export function present(row: ExecutionRow | ExecutionRecord): ExecutionDto {
  return {
    id: row.id,
    workflowId: row.workflowId,
    workflowVersion: row.workflowVersion,
    jobId: row.jobId,
    trigger: row.trigger,
    status: row.status,
    input: row.input ?? null,
    output: row.output ?? null,
    error: row.error ?? null,
    startedAt: isoOrNull(row.startedAt),
    finishedAt: isoOrNull(row.finishedAt),
    createdAt: iso(row.createdAt),
    retryOfId: row.retryOfId,
  };
}

export function presentStep(row: StepRow): StepDto {
  return {
    id: row.id,
    nodeId: row.nodeId,
    status: row.status,
    attempt: row.attempt,
    input: row.input ?? null,
    output: row.output ?? null,
    error: row.error ?? null,
    startedAt: isoOrNull(row.startedAt),
    finishedAt: isoOrNull(row.finishedAt),
  };
}

export interface ExecutionFilters {
  status?: ExecutionRow['status'][] | undefined;
  workflowId?: string | undefined;
  jobId?: string | undefined;
  createdAfter?: string | undefined;
  createdBefore?: string | undefined;
}

/**
 * The hot list and read are written for postgres.js directly (bench/: drizzle's per-column row
 * mapping was 14% of a list request's CPU). postgres.js prepares each statement text once per
 * connection; the filters in use pick the text, so each combination is planned once. Columns come
 * back under the API's names, and PostgreSQL writes the timestamps in toISOString() form: parsing
 * them into Dates only to format them again cost 2 µs a row.
 */
export type ExecutionRecord = Omit<ExecutionRow, 'startedAt' | 'finishedAt' | 'createdAt'> & {
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
};

/** toISOString()'s format (the columns hold milliseconds, years 0001 to 9999). */
const ISO_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"';

type Fragment = ReturnType<Sql>;
interface StatementParts {
  readonly selectExecutions: Fragment;
  readonly newestFirst: Fragment;
  readonly oldestFirst: Fragment;
}

const partsByPool = new WeakMap<Sql, StatementParts>();

/**
 * The parameterless parts of the hot statements, built once per pool (a postgres.js fragment can be
 * nested in any number of statements): building them on each request cost more than the filters.
 */
function statementParts(pool: Sql): StatementParts {
  let parts = partsByPool.get(pool);
  if (!parts) {
    const iso = pool.unsafe(`'${ISO_FORMAT}'`);
    parts = {
      selectExecutions: pool`select id, workflow_id as "workflowId", workflow_version as "workflowVersion", job_id as "jobId", trigger, status,
        input, output, error,
        to_char(started_at at time zone 'UTC', ${iso}) as "startedAt",
        to_char(finished_at at time zone 'UTC', ${iso}) as "finishedAt",
        to_char(created_at at time zone 'UTC', ${iso}) as "createdAt",
        retry_of_id as "retryOfId", revision
        from executions`,
      newestFirst: pool`order by created_at desc, id desc`,
      oldestFirst: pool`order by created_at asc, id asc`,
    };
    partsByPool.set(pool, parts);
  }
  return parts;
}

export async function list(db: PooledDb, userId: string, params: ListParams & ExecutionFilters): Promise<Page<ExecutionDto>> {
  const pool = db.$client;
  const { selectExecutions, newestFirst, oldestFirst } = statementParts(pool);
  const plan = keysetPosition(params, executionSortKeys);
  const descending = params.sortDirection === 'desc';
  const cursor = plan.cursor;
  const order = descending ? newestFirst : oldestFirst;
  const filtered = params.status || params.workflowId || params.jobId || params.createdAfter || params.createdBefore;
  let rows: ExecutionRecord[];
  if (!filtered) {
    // The pages every client walks, the first and the next ones by cursor, are written out as
    // statements of their own: a fragment built per request and nested in the statement put every
    // server process into the slow GC state (bench/README.md), and the statement without one did not.
    rows = !cursor
      ? await pool<ExecutionRecord[]>`${selectExecutions} where user_id = ${userId} ${order} limit ${plan.limit} offset ${plan.offset}`
      : descending
        ? await pool<ExecutionRecord[]>`${selectExecutions} where user_id = ${userId} and (created_at, id) < (${cursor.value}::timestamptz, ${cursor.id}::uuid) ${order} limit ${plan.limit} offset ${plan.offset}`
        : await pool<ExecutionRecord[]>`${selectExecutions} where user_id = ${userId} and (created_at, id) > (${cursor.value}::timestamptz, ${cursor.id}::uuid) ${order} limit ${plan.limit} offset ${plan.offset}`;
  } else {
    // Filtered pages nest the conditions in use (never an empty fragment for an absent one).
    const conditions: Fragment[] = [];
    if (cursor) {
      conditions.push(
        descending
          ? pool`and (created_at, id) < (${cursor.value}::timestamptz, ${cursor.id}::uuid)`
          : pool`and (created_at, id) > (${cursor.value}::timestamptz, ${cursor.id}::uuid)`,
      );
    }
    if (params.status) conditions.push(pool`and status = any(${params.status}::execution_status[])`);
    if (params.workflowId) conditions.push(pool`and workflow_id = ${params.workflowId}::uuid`);
    if (params.jobId) conditions.push(pool`and job_id = ${params.jobId}::uuid`);
    if (params.createdAfter) conditions.push(pool`and created_at >= ${params.createdAfter}::timestamptz`);
    if (params.createdBefore) conditions.push(pool`and created_at < ${params.createdBefore}::timestamptz`);
    rows = await pool<ExecutionRecord[]>`${selectExecutions} where user_id = ${userId} ${conditions} ${order} limit ${plan.limit} offset ${plan.offset}`;
  }
  const page = toPage(rows, params, (row) => row.createdAt, present);
  // The page holds what it shows; the driver's result array is done with. Emptied, it no longer
  // carries a page of rows along if V8 keeps the finished query (which resolved to this array)
  // through scavenges, the slow state of bench/README.md. Filtered pages still nest fragments;
  // in that state, this cut promotion from 5.6 to 0.9 MB per scavenge and CPU from 170 to 137 µs
  // per list request.
  rows.length = 0;
  return page;
}

export async function get(db: PooledDb, userId: string, id: string): Promise<ExecutionRecord | null> {
  const pool = db.$client;
  const [row] = await pool<ExecutionRecord[]>`${statementParts(pool).selectExecutions} where user_id = ${userId} and id = ${id}::uuid`;
  return row ?? null;
}

/** The steps of one of the caller's executions; null when the execution is not the caller's. */
export async function listSteps(
  db: PooledDb,
  userId: string,
  executionId: string,
  params: ListParams & { status?: StepRow['status'][] | undefined },
): Promise<Page<StepDto> | null> {
  const owner = await get(db, userId, executionId);
  if (!owner) return null;
  const plan = keysetPlan(params, stepSortKeys, executionSteps.id);
  const conditions: (SQL | undefined)[] = [eq(executionSteps.executionId, executionId), plan.after];
  if (params.status) conditions.push(inArray(executionSteps.status, params.status));
  const rows = await db.select().from(executionSteps).where(and(...conditions)).orderBy(...plan.orderBy).limit(plan.limit).offset(plan.offset);
  return toPage(rows, params, (row) => row.createdAt, presentStep);
}

export interface NewExecution {
  workflowId: string;
  workflowVersion: number;
  workflowSnapshot: WorkflowSnapshot;
  jobId?: string | null;
  trigger: ExecutionRow['trigger'];
  input?: unknown;
  /** Defaults to pending (runnable); a recorded past run may be created in its final state. */
  status?: ExecutionRow['status'];
}

/** Records a new pending execution for the caller (the engine picks pending executions up). */
export async function create(db: Db, userId: string, execution: NewExecution): Promise<ExecutionRow> {
  const [row] = await db
    .insert(executions)
    .values({ userId, ...execution, input: execution.input ?? null })
    .returning();
  if (!row) throw new Error('insert returned no row');
  return row;
}

export type ExecutionChange = Partial<Pick<ExecutionRow, 'status' | 'output' | 'error' | 'startedAt' | 'finishedAt'>>;

export async function update(db: Db, userId: string, id: string, change: ExecutionChange): Promise<ExecutionRow | null> {
  const [row] = await db
    .update(executions)
    .set(change)
    .where(and(eq(executions.userId, userId), eq(executions.id, id)))
    .returning();
  return row ?? null;
}

export async function remove(db: Db, userId: string, id: string): Promise<boolean> {
  const deleted = await db.delete(executions).where(and(eq(executions.userId, userId), eq(executions.id, id))).returning({ id: executions.id });
  return deleted.length > 0;
}

export type StepWrite = Pick<StepRow, 'nodeId'> & Partial<Pick<StepRow, 'status' | 'attempt' | 'input' | 'output' | 'error' | 'startedAt' | 'finishedAt'>>;

/** Creates or changes the row of one node of one of the caller's executions (one row per node). */
export async function upsertStep(db: PooledDb, userId: string, executionId: string, step: StepWrite): Promise<StepRow | null> {
  const owner = await get(db, userId, executionId);
  if (!owner) return null;
  const { nodeId, ...change } = step;
  const [row] = await db
    .insert(executionSteps)
    .values({ executionId, nodeId, ...change })
    .onConflictDoUpdate({ target: [executionSteps.executionId, executionSteps.nodeId], set: change })
    .returning();
  return row ?? null;
}

/**
 * Cancels an execution that has not ended: its running or pending steps end failed ("cancelled"),
 * its job is unlocked, and the worker running it loses its lease (its next write is refused, and
 * the cancel event aborts its step at once). Returns 'ended' when it had already ended.
 */
export async function cancel(db: PooledDb, userId: string, id: string): Promise<{ execution: ExecutionRecord; revision: number } | 'ended' | null> {
  const cancelledMessage = JSON.stringify({ message: 'cancelled' });
  const [cancelled] = await db.execute<{ id: string; revision: number }>(sql`
    with cancelled as (
      update executions
         set status = 'cancelled', finished_at = now(), lease_owner = null, lease_expires_at = null, wake_at = null,
             error = ${cancelledMessage}::jsonb, revision = revision + 1
       where id = ${id} and user_id = ${userId} and status in ('pending', 'running', 'paused')
      returning id, revision, job_id),
    steps as (
      update execution_steps set status = 'failed', error = ${cancelledMessage}::jsonb, finished_at = now()
       where execution_id = (select id from cancelled) and status in ('running', 'pending')),
    unlocked as (update jobs set locked = false where id = (select job_id from cancelled))
    select id, revision from cancelled`);
  const row = await get(db, userId, id);
  if (!row) return null;
  if (!cancelled) return 'ended';
  return { execution: row, revision: cancelled.revision };
}

/**
 * A new execution of the same graph and input (trigger `retry`, linked to the original). From the
 * failed step: the original's completed steps are copied, so they are not run again and their
 * outputs are reused; from the start: everything runs again. Only ended, unsuccessful executions
 * can be retried ('not-retryable' otherwise).
 */
export async function retry(db: Db, userId: string, id: string, from: 'failed' | 'start'): Promise<ExecutionRow | 'not-retryable' | null> {
  return db.transaction(async (tx) => {
    const [original] = await tx.select().from(executions).where(and(eq(executions.userId, userId), eq(executions.id, id))).for('share');
    if (!original) return null;
    if (original.status !== 'failed' && original.status !== 'cancelled') return 'not-retryable';
    const [created] = await tx
      .insert(executions)
      .values({
        userId,
        workflowId: original.workflowId,
        workflowVersion: original.workflowVersion,
        workflowSnapshot: original.workflowSnapshot,
        jobId: original.jobId,
        trigger: 'retry',
        input: original.input,
        retryOfId: original.id,
      })
      .returning();
    if (!created) throw new Error('insert returned no row');
    if (from === 'failed') {
      const completed = await tx
        .select()
        .from(executionSteps)
        .where(and(eq(executionSteps.executionId, original.id), eq(executionSteps.status, 'completed')));
      if (completed.length > 0) {
        await tx.insert(executionSteps).values(
          completed.map((step) => ({
            executionId: created.id,
            nodeId: step.nodeId,
            status: step.status,
            attempt: step.attempt,
            input: step.input,
            output: step.output,
            startedAt: step.startedAt,
            finishedAt: step.finishedAt,
          })),
        );
      }
    }
    return created;
  });
}
