import { MAX_MESSAGE_BYTES } from '../bus/bus.js';
import type { Fragment, Sql } from '../db/client.js';
import { stepStatuses, type executionStatuses, type executionTriggers } from '../db/schema/index.js';
import { keysetPosition, toPage, type ListParams, type Page, type SortKeys } from '../lib/pagination.js';
import { badRequest } from '../lib/problem.js';

/**
 * The reads of executions and steps: the API's hot path, in raw postgres.js with one row shape
 * each (drizzle's per-column row mapping was 14% of a list request's CPU, bench/README.md).
 * Columns come back under the API's names, and timestamps as PostgreSQL writes them in
 * toISOString() form, so a row is presented without parsing or formatting a Date.
 */

export type ExecutionStatus = (typeof executionStatuses)[number];
export type StepStatus = (typeof stepStatuses)[number];

export interface ExecutionRecord {
  id: string;
  workflowId: string;
  workflowVersion: number;
  jobId: string | null;
  trigger: (typeof executionTriggers)[number];
  status: ExecutionStatus;
  /** Absent in list rows read without `includeData`. */
  input?: unknown;
  output?: unknown;
  error: unknown;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
  retryOfId: string | null;
  /** Orders the execution's live events; never shown. */
  revision: number;
}

export interface StepRecord {
  id: string;
  nodeId: string;
  status: StepStatus;
  attempt: number;
  input: unknown;
  output: unknown;
  error: unknown;
  startedAt: string | null;
  finishedAt: string | null;
  createdAt: string;
}

/** An execution as an event stream opens on it: outputs and errors too large for an event are left out (`truncated`). */
export interface SnapshotExecution {
  status: ExecutionStatus;
  revision: number;
  output: unknown;
  error: unknown;
  truncated: boolean;
}
export type SnapshotStep = Pick<StepRecord, 'id' | 'nodeId' | 'status' | 'attempt' | 'output' | 'error' | 'createdAt'> & { truncated: boolean };
export interface ExecutionSnapshot {
  execution: SnapshotExecution;
  steps: SnapshotStep[];
}

export interface ExecutionFilters {
  status?: ExecutionStatus[] | undefined;
  workflowId?: string | undefined;
  jobId?: string | undefined;
  createdAfter?: string | undefined;
  createdBefore?: string | undefined;
  includeData?: boolean | undefined;
}

/** toISOString()'s format (the columns hold milliseconds, years 0001 to 9999). */
const ISO_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"';
const stepStatusesAll: StepStatus[] = [...stepStatuses];

const executionSortKeys: SortKeys<ExecutionRecord> = { createdAt: { kind: 'timestamp', valueOf: (row) => row.createdAt } };
const stepSortKeys: SortKeys<StepRecord> = { createdAt: { kind: 'timestamp', valueOf: (row) => row.createdAt } };

/**
 * Before every row in either direction: a first page is a cursor page from here, so each
 * direction has one statement. Timestamps are bound as text: 'infinity' is a timestamptz.
 */
const START = {
  desc: { value: 'infinity', id: 'ffffffff-ffff-ffff-ffff-ffffffffffff' },
  asc: { value: '-infinity', id: '00000000-0000-0000-0000-000000000000' },
} as const;

/** API_MAX_PAGE_DATA_BYTES's default, for processes that serve no lists (the worker, scripts). */
export const DEFAULT_MAX_PAGE_DATA_BYTES = 8 * 1024 * 1024;

/** A row read with the page's byte budget: whether its data is within it (and so was sent). */
type Budgeted<Row> = Row & { fits: boolean };

/**
 * The rows of a budgeted page that are shown: the prefix whose data fits (at least the first row),
 * with the first row cut off as the extra row that makes toPage set hasNext and the cursor. A
 * numbered page cannot be cut (the next number would skip the rows left out): it is refused, and
 * the client pages with the cursor or a smaller pageSize.
 */
function withinBudget<Row extends { fits: boolean }>(rows: Row[], params: ListParams, maxPageDataBytes: number): { rows: Row[]; params: ListParams } {
  const cut = rows.findIndex((row, index) => index > 0 && index < params.pageSize && !row.fits);
  if (cut < 0) return { rows, params };
  if (params.page !== undefined) {
    throw badRequest(`The data of this page is more than ${maxPageDataBytes} bytes; page with the cursor (nextCursor), or a smaller pageSize.`, [
      { path: 'page', message: `cannot hold this page's data (API_MAX_PAGE_DATA_BYTES); follow nextCursor instead` },
    ]);
  }
  return { rows: rows.slice(0, cut + 1), params: { ...params, pageSize: cut } };
}

/**
 * Built once per pool (a fragment belongs to the pool that made it) and nested in its statements.
 *
 * Every stored payload is bounded (ENGINE_MAX_PAYLOAD_BYTES), so one execution read is at most
 * three of them. A page of items that carry payloads (executions with includeData, steps) is
 * bounded by `maxPageDataBytes`: PostgreSQL sums the JSON of the page's rows in order and sends
 * the data of those within the budget only; the page ends before the first row past it (the first
 * row always comes), with hasNext and a cursor to the rest. The event stream's opening state
 * leaves out, as live events do, an output and error larger than one notification (`truncated`).
 */
export class ExecutionReads {
  /** The select list of an execution record, for reads and for the lifecycle's `returning`. */
  readonly columns: Fragment;
  private readonly columnsWithoutData: Fragment;
  private readonly stepColumns: Fragment;
  private readonly budgetedColumns: Fragment;
  private readonly budgetedStepColumns: Fragment;
  private readonly snapshotStepColumns: Fragment;

  constructor(
    private readonly sql: Sql,
    private readonly maxPageDataBytes = DEFAULT_MAX_PAGE_DATA_BYTES,
  ) {
    const iso = sql.unsafe(`'${ISO_FORMAT}'`);
    // Nested fragments here are never empty: a statement nesting an empty one put every server
    // process into V8's promoting GC state (bench/README.md).
    const identity = sql`id, workflow_id as "workflowId", workflow_version as "workflowVersion", job_id as "jobId", trigger, status`;
    const outcome = sql`error,
      to_char(started_at at time zone 'UTC', ${iso}) as "startedAt",
      to_char(finished_at at time zone 'UTC', ${iso}) as "finishedAt",
      to_char(created_at at time zone 'UTC', ${iso}) as "createdAt",
      retry_of_id as "retryOfId", revision`;
    this.columns = sql`${identity}, input, output, ${outcome}`;
    this.columnsWithoutData = sql`${identity}, ${outcome}`;
    this.stepColumns = sql`id, node_id as "nodeId", status, attempt, input, output, error,
      to_char(started_at at time zone 'UTC', ${iso}) as "startedAt",
      to_char(finished_at at time zone 'UTC', ${iso}) as "finishedAt",
      to_char(created_at at time zone 'UTC', ${iso}) as "createdAt"`;
    // Over the subquery `p` of budgeted(): its rows' `ordinal` and `running` total of bytes, in page order.
    const fits = sql`(p.ordinal = 1 or p.running <= ${maxPageDataBytes})`;
    this.budgetedColumns = sql`p.id, p."workflowId", p."workflowVersion", p."jobId", p.trigger, p.status,
      case when ${fits} then p.input end as input, case when ${fits} then p.output end as output, case when ${fits} then p.error end as error,
      p."startedAt", p."finishedAt", p."createdAt", p."retryOfId", p.revision, ${fits} as fits`;
    this.budgetedStepColumns = sql`p.id, p."nodeId", p.status, p.attempt,
      case when ${fits} then p.input end as input, case when ${fits} then p.output end as output, case when ${fits} then p.error end as error,
      p."startedAt", p."finishedAt", p."createdAt", ${fits} as fits`;
    const small = sql`coalesce(octet_length(output::text), 0) + coalesce(octet_length(error::text), 0) <= ${MAX_MESSAGE_BYTES}`;
    this.snapshotStepColumns = sql`id, node_id as "nodeId", status, attempt,
      case when ${small} then output end as output, case when ${small} then error end as error, not (${small}) as truncated,
      to_char(created_at at time zone 'UTC', ${iso}) as "createdAt"`;
  }

  /** The bytes of JSON a row carries, summed for the budget (read only for pages that send data). */
  private dataBytes(): Fragment {
    return this.sql`coalesce(octet_length(input::text), 0) + coalesce(octet_length(output::text), 0) + coalesce(octet_length(error::text), 0) as bytes`;
  }

  /** `page` (a limited, ordered select with `bytes`), numbered and totalled in its order, its data kept only within the budget. */
  private budgeted(page: Fragment, columns: Fragment, direction: 'asc' | 'desc'): Fragment {
    const sql = this.sql;
    const order = direction === 'desc' ? sql`p."createdAt" desc, p.id desc` : sql`p."createdAt" asc, p.id asc`;
    const windowOrder = direction === 'desc' ? sql`page."createdAt" desc, page.id desc` : sql`page."createdAt" asc, page.id asc`;
    return sql`select ${columns} from (
        select page.*, row_number() over w as ordinal, sum(page.bytes) over w as running
          from (${page}) page
        window w as (order by ${windowOrder} rows unbounded preceding)) p
      order by ${order}`;
  }

  async get(userId: string, id: string): Promise<ExecutionRecord | null> {
    const [row] = await this.sql<ExecutionRecord[]>`select ${this.columns} from executions where user_id = ${userId} and id = ${id}::uuid`;
    return row ?? null;
  }

  /**
   * A page of the caller's executions. Unfiltered pages (what every client walks) are one
   * statement per direction; filters are nested only when in use (bench/README.md: per-request
   * fragments cost the hot path).
   */
  async list<Item>(userId: string, params: ListParams & ExecutionFilters, present: (row: ExecutionRecord) => Item): Promise<Page<Item>> {
    const sql = this.sql;
    const { cursor, limit, offset } = keysetPosition(params, executionSortKeys);
    if (params.includeData) return this.listWithData(userId, params, present);
    const columns = this.columnsWithoutData;
    const from = cursor ?? START[params.sortDirection];
    const filtered = params.status || params.workflowId || params.jobId || params.createdAfter || params.createdBefore;
    let rows: ExecutionRecord[];
    if (!filtered) {
      rows =
        params.sortDirection === 'desc'
          ? await sql<ExecutionRecord[]>`select ${columns} from executions
              where user_id = ${userId} and (created_at, id) < (${from.value}::timestamptz, ${from.id}::uuid)
              order by created_at desc, id desc limit ${limit} offset ${offset}`
          : await sql<ExecutionRecord[]>`select ${columns} from executions
              where user_id = ${userId} and (created_at, id) > (${from.value}::timestamptz, ${from.id}::uuid)
              order by created_at asc, id asc limit ${limit} offset ${offset}`;
    } else {
      const conditions: Fragment[] = [];
      if (params.status) conditions.push(sql`and status = any(${params.status}::execution_status[])`);
      if (params.workflowId) conditions.push(sql`and workflow_id = ${params.workflowId}::uuid`);
      if (params.jobId) conditions.push(sql`and job_id = ${params.jobId}::uuid`);
      if (params.createdAfter) conditions.push(sql`and created_at >= ${params.createdAfter}::timestamptz`);
      if (params.createdBefore) conditions.push(sql`and created_at < ${params.createdBefore}::timestamptz`);
      rows =
        params.sortDirection === 'desc'
          ? await sql<ExecutionRecord[]>`select ${columns} from executions
              where user_id = ${userId} and (created_at, id) < (${from.value}::timestamptz, ${from.id}::uuid) ${conditions}
              order by created_at desc, id desc limit ${limit} offset ${offset}`
          : await sql<ExecutionRecord[]>`select ${columns} from executions
              where user_id = ${userId} and (created_at, id) > (${from.value}::timestamptz, ${from.id}::uuid) ${conditions}
              order by created_at asc, id asc limit ${limit} offset ${offset}`;
    }
    return toPage(rows, params, executionSortKeys, present);
  }

  /** A page of executions with their input and output, within the page's byte budget (off the hot list's path). */
  private async listWithData<Item>(userId: string, params: ListParams & ExecutionFilters, present: (row: ExecutionRecord) => Item): Promise<Page<Item>> {
    const sql = this.sql;
    const { cursor, limit, offset } = keysetPosition(params, executionSortKeys);
    const from = cursor ?? START[params.sortDirection];
    const conditions: Fragment[] = [sql`user_id = ${userId}`];
    if (params.status) conditions.push(sql`and status = any(${params.status}::execution_status[])`);
    if (params.workflowId) conditions.push(sql`and workflow_id = ${params.workflowId}::uuid`);
    if (params.jobId) conditions.push(sql`and job_id = ${params.jobId}::uuid`);
    if (params.createdAfter) conditions.push(sql`and created_at >= ${params.createdAfter}::timestamptz`);
    if (params.createdBefore) conditions.push(sql`and created_at < ${params.createdBefore}::timestamptz`);
    const page =
      params.sortDirection === 'desc'
        ? sql`select ${this.columns}, ${this.dataBytes()} from executions
              where ${conditions} and (created_at, id) < (${from.value}::timestamptz, ${from.id}::uuid)
              order by created_at desc, id desc limit ${limit} offset ${offset}`
        : sql`select ${this.columns}, ${this.dataBytes()} from executions
              where ${conditions} and (created_at, id) > (${from.value}::timestamptz, ${from.id}::uuid)
              order by created_at asc, id asc limit ${limit} offset ${offset}`;
    const rows = await sql<Budgeted<ExecutionRecord>[]>`${this.budgeted(page, this.budgetedColumns, params.sortDirection)}`;
    const shown = withinBudget(rows, params, this.maxPageDataBytes);
    return toPage(shown.rows, shown.params, executionSortKeys, present);
  }

  /** A page of the steps of one of the caller's executions; null when the execution is not the caller's. */
  async listSteps<Item>(
    userId: string,
    executionId: string,
    params: ListParams & { status?: StepStatus[] | undefined },
    present: (row: StepRecord) => Item,
  ): Promise<Page<Item> | null> {
    const sql = this.sql;
    const { cursor, limit, offset } = keysetPosition(params, stepSortKeys);
    const from = cursor ?? START[params.sortDirection];
    const position =
      params.sortDirection === 'desc'
        ? sql`(s.created_at, s.id) < (${from.value}::timestamptz, ${from.id}::uuid) order by s.created_at desc, s.id desc`
        : sql`(s.created_at, s.id) > (${from.value}::timestamptz, ${from.id}::uuid) order by s.created_at asc, s.id asc`;
    const statuses = params.status ?? stepStatusesAll;
    // The owner check rides along: an execution of the caller with no matching step still answers (an empty page).
    const page = sql`
      select ${this.stepColumns}, ${this.dataBytes()} from execution_steps s
       where o.owned and s.execution_id = ${executionId}::uuid
         and s.status = any(${statuses}::step_status[])
         and ${position}
       limit ${limit} offset ${offset}`;
    const rows = await sql<(Budgeted<StepRecord> & { owned: boolean })[]>`
      select o.owned, s.* from (select exists (select 1 from executions where id = ${executionId}::uuid and user_id = ${userId}) as owned) o
        left join lateral (${this.budgeted(page, this.budgetedStepColumns, params.sortDirection)}) s on true`;
    if (!rows[0]?.owned) return null;
    const shown = withinBudget(rows[0].id === null ? [] : rows, params, this.maxPageDataBytes);
    return toPage(shown.rows, shown.params, stepSortKeys, present);
  }

  /**
   * One of the caller's executions with every step, in the order they ran, read in one statement
   * (one consistent state at its revision): an event stream's opening state. Null when not the caller's.
   */
  async snapshot(userId: string, id: string): Promise<ExecutionSnapshot | null> {
    const small = this.sql`coalesce(octet_length(output::text), 0) + coalesce(octet_length(error::text), 0) <= ${MAX_MESSAGE_BYTES}`;
    const [row] = await this.sql<(SnapshotExecution & { steps: SnapshotStep[] })[]>`
      select status, revision, case when ${small} then output end as output, case when ${small} then error end as error, not (${small}) as truncated,
             (select coalesce(json_agg(s order by s."createdAt", s.id), '[]'::json)
                from (select ${this.snapshotStepColumns} from execution_steps where execution_id = e.id) s) as steps
        from executions e where user_id = ${userId} and id = ${id}::uuid`;
    if (!row) return null;
    const { steps, ...execution } = row;
    return { execution, steps };
  }
}
