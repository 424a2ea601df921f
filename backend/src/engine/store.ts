import type { Sql } from '../db/client.js';
import type { WorkflowSnapshot } from '../db/schema/index.js';
import { CHANNEL, encode, type ExecutionEvent } from './events.js';

/** An event to announce with a write; its revision is the one the write produces. */
export type PendingEvent = Omit<ExecutionEvent, 'revision'>;

/** JSON for a jsonb parameter: drizzle sets the shared client's json serializers to pass-through. */
const jsonParam = (value: unknown): string | null => (value === undefined ? null : JSON.stringify(value));

/**
 * The engine's SQL, on the service's one postgres.js pool (timestamps travel as ISO strings and
 * JSON as text: drizzle makes those serializers pass-through on the shared client). Every write of a running execution is
 * fenced by its lease (`lease_owner = me and status = 'running'`): a worker that lost its lease
 * (expired, or the execution was cancelled) changes nothing and learns it from the empty result.
 * Each write bumps `executions.revision` in the same statement, which orders the live events.
 */

export interface ClaimedExecution {
  id: string;
  userId: string;
  workflowId: string;
  jobId: string | null;
  input: unknown;
  snapshot: WorkflowSnapshot;
  revision: number;
  /** Its step rows so far (read in the claim itself: one round trip fewer per execution). */
  steps: StepState[];
}

export interface StepState {
  nodeId: string;
  status: 'pending' | 'running' | 'completed' | 'failed' | 'skipped';
  attempt: number;
  input: unknown;
  output: unknown;
  error: unknown;
}

export type Fenced<T> = T | null;

/** One write of a step row and the live event that announces it. */
export interface StepWrite {
  nodeId: string;
  status: StepState['status'];
  attempt: number;
  input?: unknown;
  output?: unknown;
  error?: unknown;
  started?: boolean;
  finished?: boolean;
}
export interface StepRecord {
  readonly step: StepWrite;
  readonly event: PendingEvent;
}

export class EngineStore {
  /**
   * @param notifyInSql on a real server, each write's NOTIFY goes in the same statement (one round
   *   trip, and sent only if the write commits); otherwise the runner publishes after the write.
   */
  constructor(
    private readonly sql: Sql,
    readonly workerId: string,
    readonly notifyInSql: boolean,
  ) {}

  /** A select-list expression that sends `event` with the statement's revision, or nothing. */
  private notify(event: PendingEvent | undefined, revisionColumn: string) {
    if (!event || !this.notifyInSql) return this.sql`null`;
    return this.sql`pg_notify(${CHANNEL}, (${encode({ ...event, revision: 0 })}::jsonb || jsonb_build_object('revision', ${this.sql.unsafe(revisionColumn)}))::text)`;
  }

  /**
   * Claims up to `limit` executions, oldest-runnable first (SKIP LOCKED: competing workers never take
   * the same one): pending or paused ones whose time has come, and running ones whose lease expired.
   * Each kind is read from the front of its own index (executions_ready_idx, executions_lease_idx):
   * one condition over both made PostgreSQL fetch and sort every waiting execution on each claim.
   */
  async claim(limit: number, leaseMs: number): Promise<ClaimedExecution[]> {
    const rows = await this.sql<
      { id: string; user_id: string; workflow_id: string; job_id: string | null; input: unknown; workflow_snapshot: WorkflowSnapshot; revision: number; steps: StepState[] }[]
    >`
      with ready as (
        select id, coalesce(wake_at, created_at) as runnable_at from executions
         where status in ('pending', 'paused') and coalesce(wake_at, created_at) <= now()
         order by coalesce(wake_at, created_at)
         limit ${limit}
         for update skip locked),
      expired as (
        select id, lease_expires_at as runnable_at from executions
         where status = 'running' and lease_expires_at < now()
         order by lease_expires_at
         limit ${limit}
         for update skip locked),
      picked as (
        select id from (select * from ready union all select * from expired) candidates
         order by runnable_at
         limit ${limit}),
      claimed as (
        update executions e
           set status = 'running', lease_owner = ${this.workerId},
               lease_expires_at = now() + make_interval(secs => ${leaseMs / 1000}),
               started_at = coalesce(e.started_at, now()), wake_at = null, revision = e.revision + 1
         where e.id in (select id from picked)
        returning e.id, e.user_id, e.workflow_id, e.job_id, e.input, e.workflow_snapshot, e.revision)
      select c.*,
             (select coalesce(json_agg(json_build_object('nodeId', s.node_id, 'status', s.status, 'attempt', s.attempt,
                                                         'input', s.input, 'output', s.output, 'error', s.error)), '[]'::json)
                from execution_steps s where s.execution_id = c.id) as steps,
             ${
               this.notifyInSql
                 ? this.sql`pg_notify(${CHANNEL}, json_build_object('kind', 'execution', 'executionId', c.id, 'userId', c.user_id, 'revision', c.revision, 'status', 'running')::text)`
                 : this.sql`null`
             } as notified
        from claimed c`;
    return rows.map((row) => ({
      id: row.id,
      userId: row.user_id,
      workflowId: row.workflow_id,
      jobId: row.job_id,
      input: row.input,
      snapshot: row.workflow_snapshot,
      revision: row.revision,
      steps: row.steps,
    }));
  }

  /** Renews the leases of the executions this worker runs; returns the ids it still holds. */
  async heartbeat(executionIds: readonly string[], leaseMs: number): Promise<Set<string>> {
    if (executionIds.length === 0) return new Set();
    const rows = await this.sql<{ id: string }[]>`
      update executions set lease_expires_at = now() + make_interval(secs => ${leaseMs / 1000})
       where id = any(${executionIds as string[]}::uuid[]) and lease_owner = ${this.workerId} and status = 'running'
      returning id`;
    return new Set(rows.map((row) => row.id));
  }

  /**
   * Writes step rows (one per node) if this worker still holds the execution, in one statement; the
   * new revision or null. Each step's event gets its own revision, in order.
   */
  async writeSteps(executionId: string, records: readonly StepRecord[]): Promise<Fenced<number>> {
    if (records.length === 0) throw new Error('writeSteps needs at least one step');
    const rows = await this.sql<{ revision: number }[]>`
      with fence as (
        update executions set revision = revision + ${records.length}
         where id = ${executionId} and lease_owner = ${this.workerId} and status = 'running'
        returning revision),
      written as (${this.insertSteps(executionId, records)})
      select revision, ${this.notifySteps(records, 0)} as notified from fence where exists (select 1 from written)`;
    return rows[0]?.revision ?? null;
  }

  /**
   * Ends the execution (completed or failed), writing the step rows not yet written in the same
   * statement, and unlocks its job; null when no longer ours.
   */
  async finish(
    executionId: string,
    outcome: { status: 'completed' | 'failed'; output?: unknown; error?: unknown },
    event?: PendingEvent,
    records: readonly StepRecord[] = [],
  ): Promise<Fenced<number>> {
    const rows = await this.sql<{ revision: number }[]>`
      with fence as (
        update executions
           set status = ${outcome.status}, output = ${jsonParam(outcome.output)}::jsonb,
               error = ${jsonParam(outcome.error)}::jsonb,
               finished_at = now(), lease_owner = null, lease_expires_at = null, revision = revision + ${records.length + 1}
         where id = ${executionId} and lease_owner = ${this.workerId} and status = 'running'
        returning revision, job_id),
      ${records.length > 0 ? this.sql`written as (${this.insertSteps(executionId, records)}),` : this.sql``}
      unlocked as (update jobs set locked = false where id = (select job_id from fence))
      select revision, ${this.notifySteps(records, 1)} as steps_notified, ${this.notify(event, 'revision')} as notified from fence`;
    return rows[0]?.revision ?? null;
  }

  /**
   * Gives the execution back: `paused` until a delay ends, or `pending` (now, or after a retry
   * backoff, or for another worker when this one shuts down). No worker is held while it waits.
   */
  async release(
    executionId: string,
    status: 'pending' | 'paused',
    wakeAt: Date | null,
    event?: PendingEvent,
    records: readonly StepRecord[] = [],
  ): Promise<Fenced<number>> {
    const rows = await this.sql<{ revision: number }[]>`
      with fence as (
        update executions
           set status = ${status}, wake_at = ${wakeAt ? wakeAt.toISOString() : null}::timestamptz, lease_owner = null, lease_expires_at = null,
               revision = revision + ${records.length + 1}
         where id = ${executionId} and lease_owner = ${this.workerId} and status = 'running'
        returning revision)
      ${records.length > 0 ? this.sql`, written as (${this.insertSteps(executionId, records)})` : this.sql``}
      select revision, ${this.notifySteps(records, 1)} as steps_notified, ${this.notify(event, 'revision')} as notified from fence`;
    return rows[0]?.revision ?? null;
  }

  /**
   * The upsert of step rows, run only when the CTE `fence` (the lease check) returned its row. A
   * step's `started_at` is set when it starts and kept after; JSON travels as text, so a JSON null
   * stays distinct from "no value" (SQL NULL).
   */
  private insertSteps(executionId: string, records: readonly StepRecord[]) {
    // One row per node: a later write of the same node in the batch replaces an earlier one.
    const latest = new Map(records.map(({ step }) => [step.nodeId, step]));
    const rows = JSON.stringify(
      [...latest.values()].map((step, position) => ({
        position,
        node_id: step.nodeId,
        status: step.status,
        attempt: step.attempt,
        input: jsonParam(step.input),
        output: jsonParam(step.output),
        error: jsonParam(step.error),
        started: step.started ?? false,
        finished: step.finished ?? false,
      })),
    );
    return this.sql`
      insert into execution_steps as s (execution_id, node_id, status, attempt, input, output, error, started_at, finished_at, created_at)
      select ${executionId}::uuid, x.node_id, x.status::step_status, x.attempt, x.input::jsonb, x.output::jsonb, x.error::jsonb,
             case when x.started then now() end, case when x.finished then now() end,
             -- Rows written together share now(): a millisecond apiece keeps steps listed in the order they ran.
             now() + x.position * interval '1 millisecond'
        from fence,
             jsonb_to_recordset(${rows}::jsonb)
               as x(position int, node_id text, status text, attempt int, input text, output text, error text, started boolean, finished boolean)
      on conflict (execution_id, node_id) do update
         set status = excluded.status, attempt = excluded.attempt,
             input = coalesce(excluded.input, s.input), output = excluded.output, error = excluded.error,
             started_at = coalesce(excluded.started_at, s.started_at), finished_at = excluded.finished_at
      returning 1`;
  }

  /**
   * A select-list expression that sends each step's event, numbered up to the statement's revision
   * less `after` (the execution's own event, if any, takes the last revision), or nothing.
   */
  private notifySteps(records: readonly StepRecord[], after: number) {
    if (records.length === 0 || !this.notifyInSql) return this.sql`null`;
    const events = `[${records.map(({ event }) => encode({ ...event, revision: 0 })).join(',')}]`;
    return this.sql`(select count(pg_notify(${CHANNEL}, (e.value || jsonb_build_object('revision', revision - ${records.length + after} + e.ordinality::int))::text))
       from jsonb_array_elements(${events}::jsonb) with ordinality as e)`;
  }
}
