import type { EventBus, ExecutionEvent } from '../bus/bus.js';
import { encodeInSql, MAX_MESSAGE_BYTES } from '../bus/bus.js';
import type postgres from 'postgres';
import type { Fragment, Sql } from '../db/client.js';
import { isRefusedValue } from '../db/errors.js';
import { retryingConflicts } from '../db/transaction.js';
import type { webhookDeliveryStatuses, WorkflowSnapshot } from '../db/schema/index.js';
import { parseSchedule } from '../engine/schedule.js';
import { executionEndedEvent, failedStepEvents, outbox, outboxWrote } from '../events/outbox.js';
import { badRequest, ProblemError } from '../lib/problem.js';
import { storageQuotaExceeded } from '../usage/usage.js';
import { triggerInputOf, type DeliveryRequest } from '../webhooks/delivery-input.js';
import { insertDelivery } from '../webhooks/repository.js';
import {
  boundedError,
  EXECUTION_OUTPUT_TOO_LARGE,
  payloadProblem,
  RefusedPayload,
  serialize,
  serializeOutput,
  STEP_OUTPUT_TOO_LARGE,
  UNSTORABLE_VALUE,
  type PayloadProblem,
  type Serialized,
} from './payloads.js';
import type { ExecutionReads, ExecutionRecord, StepRecord, StepStatus } from './reads.js';

/**
 * The one owner of an execution's state. Every change of `executions` and `execution_steps`
 * happens here, each in one statement or transaction that also announces it on the bus:
 *
 *   create (run, retry, schedule)  -> pending            announces "work"
 *   claim (or take over an expired lease) -> running      announces the execution `running`
 *   writeSteps                      step rows             announces each step; a failed one to subscribers
 *   release                         -> pending | paused   announces the execution
 *   finish                          -> completed | failed announces the execution (and failed steps) to subscribers too; unlocks its job
 *   cancel                          -> cancelled          announces the execution to subscribers too; unlocks its job
 *
 * Invariants:
 * - Every write of a running execution is fenced by its lease (`lease_owner = worker and status =
 *   'running'`): a worker that lost it (expired, or the execution was cancelled) changes nothing
 *   and learns it from the null result. So a write PostgreSQL aborts for a deadlock (it stored
 *   nothing) is run again (retryingConflicts) rather than failing the run, whose lease would then
 *   expire and whose step a takeover would repeat.
 * - `revision` is bumped in the statement that makes a change, by the number of events it
 *   announces; the events take the new revisions in order (announce()), so a listener can order
 *   them and notice a gap.
 * - A scheduled run locks its job (fireDueJobs) and unlocks it when it ends (finish, cancel), in
 *   the same statement.
 * - What event subscribers are told (events/outbox.ts: an execution ended or cancelled, a step
 *   written `failed`) is written to the outbox in the statement that makes the change, so a
 *   change that does not happen (rolled back, or fenced out) writes no message. A statement that
 *   wrote one also announces "work", which wakes the delivery workers.
 * - Every payload written is at most `maxPayloadBytes` of JSON: an execution's input (create: 400),
 *   its output (over it, the execution fails EXECUTION_OUTPUT_TOO_LARGE) and error, each step's
 *   input (over it, recorded as `{ omitted }`), output (the runner fails the step first, through
 *   `checkOutput`; here it is refused) and error (cut down by boundedError). An event carries
 *   output and error only when they fit a NOTIFY (measured in bytes), else `truncated`.
 * - A write the database refuses for its data (isRefusedValue: a NUL, an unpaired surrogate, a
 *   value too deep or too large) ends the execution `failed` with UNSTORABLE_VALUE, in a second
 *   statement that holds no value of the run; it is never left `running` to be taken over and
 *   run again.
 */

export interface LifecycleLimits {
  /** Largest execution input and step output, as JSON. */
  readonly maxPayloadBytes: number;
  /** The storage quota: a user whose payloads take this much starts no new execution (usage/usage.ts). */
  readonly maxStorageBytes: number;
  /** Executions one user may have waiting (pending or paused) before new ones are refused. */
  readonly maxWaitingPerUser: number;
}

/** A claimed execution, as the runner needs it. */
export interface ClaimedExecution {
  id: string;
  userId: string;
  workflowId: string;
  jobId: string | null;
  input: unknown;
  snapshot: WorkflowSnapshot;
  /** Its step rows so far (read in the claim itself: one round trip fewer per execution). */
  steps: StepState[];
  /**
   * Times it was claimed after its lease expired, this claim included: its worker stopped without
   * handing it back (a crash, a kill, a fault that stopped the run). A run handed back (a shutdown,
   * a delay) is not taken over.
   */
  takeovers: number;
  /** This claim is one of those takeovers. */
  takenOver: boolean;
}

/** What the engine knows of a step: its row without the row's own id and times. */
export type StepState = Pick<StepRecord, 'nodeId' | 'status' | 'attempt' | 'input' | 'output' | 'error'>;

/** A change of one step row; `started`/`finished` stamp the row's times. */
export interface StepChange {
  nodeId: string;
  status: StepStatus;
  attempt: number;
  input?: unknown;
  output?: unknown;
  error?: unknown;
  started?: boolean;
  finished?: boolean;
}

/** The execution a running worker changes: which, and whose (its events carry the owner). */
export interface RunningExecution {
  readonly id: string;
  readonly userId: string;
}

export interface FiredJob {
  readonly jobId: string;
  readonly executionId: string;
  readonly userId: string;
  readonly scheduledAt: Date;
}

/** A delivery to a hook that passed the hook's check (webhooks/hooks.ts), as acceptDelivery stores it. */
export interface VerifiedDelivery {
  /** The workflow's owner, as the hook's lookup read it. */
  readonly userId: string;
  readonly workflowId: string;
  /**
   * The version whose trigger.webhook params checked the delivery: it is stored only while the
   * workflow is still at that version (its `verify` may have changed since), and its execution runs that graph.
   */
  readonly workflowVersion: number;
  /** The hook it was sent to: it must still be the workflow's when the delivery is stored. */
  readonly hookId: string;
  /** The sender's webhook-id or Idempotency-Key, if it sent one. */
  readonly dedupKey: string | null;
  readonly request: DeliveryRequest;
  /** triggerInputOf(request) as JSON, serialized once by the caller, which checked that it fits maxPayloadBytes. */
  readonly input: Serialized;
}

/** What became of a verified delivery (acceptDelivery). */
export type DeliveryOutcome =
  /** Stored: the sender is told its execution and delivery, or, for a repeat, the first delivery's. */
  | { readonly kind: 'stored'; readonly executionId: string; readonly deliveryId: string }
  /** Nothing stored: the hook is no longer the workflow's (rotated, or its node removed, since it was looked up). */
  | { readonly kind: 'gone' }
  /** Nothing stored: the workflow was saved again since the delivery was checked, so it must be checked again. */
  | { readonly kind: 'changed' }
  /** Nothing stored: its owner may start no run now (assertMayStart); `reason` says which limit, for the owner alone. */
  | { readonly kind: 'refused'; readonly limit: 'storage' | 'backlog'; readonly reason: string };

/** An event without its revision, as JSON text (encodeInSql adds the revision and measures it). */
type PendingEvent = string;
type EventFields = Omit<ExecutionEvent, 'revision' | 'output' | 'error' | 'truncated'>;

/** A step change with its payloads serialized, bounded and checked: what the statement sends. */
interface PreparedChange {
  readonly change: StepChange;
  readonly input: Serialized | undefined;
  readonly output: Serialized | undefined;
  readonly error: Serialized | undefined;
}

/** How an execution ends, its output and error already serialized and bounded. */
interface Outcome {
  readonly status: 'completed' | 'failed';
  readonly output: Serialized | undefined;
  readonly error: Serialized | undefined;
}

/** An end statement (end()), run on the pool or in a transaction. */
type EndStatement = (db: postgres.ISql) => Promise<readonly { announced: unknown }[]>;

interface WaitingEnd {
  readonly executionId: string;
  readonly statement: EndStatement;
  readonly resolve: (rows: readonly { announced: unknown }[]) => void;
  readonly reject: (error: unknown) => void;
}

/** "There may be work": sent with every write that makes an execution runnable now. */
const WORK = JSON.stringify({ kind: 'work' });

/** The limits of assertMayStart by their problem's code: a hook's sender is told neither (acceptDelivery). */
const START_LIMITS: Readonly<Record<string, 'storage' | 'backlog'>> = { STORAGE_QUOTA_EXCEEDED: 'storage', TOO_MANY_WAITING: 'backlog' };

/** JSON for a jsonb parameter (the shared client passes JSON through as text); undefined is SQL NULL. */
const jsonParam = (value: unknown): string | null => (value === undefined ? null : JSON.stringify(value));

export class ExecutionLifecycle {
  private readonly work: Fragment;
  private readonly unlockJob: Fragment;
  /** Per user with an end statement being written: the ends that wait for it (writeEnd); no entry once none is written. */
  private readonly endsWaiting = new Map<string, WaitingEnd[]>();

  constructor(
    private readonly sql: Sql,
    private readonly bus: EventBus,
    private readonly reads: ExecutionReads,
    readonly limits: LifecycleLimits,
  ) {
    this.work = bus.announce(sql`array[${WORK}::text]`);
    // The job is locked by the scheduled run it started (fireDueJobs), so only that run unlocks it: a
    // retry carries the job's id too, and may end while the job's next scheduled run is under way.
    // Requires the statement's CTE `fence` to return the ended execution's `job_id` and `trigger`.
    this.unlockJob = sql`unlocked as (update jobs set locked = false where id = (select job_id from fence where trigger = 'schedule'))`;
  }

  /**
   * A step output's size, and why it cannot be stored if it cannot (over the bound, or text jsonb
   * refuses): the runner fails the step with that reason rather than hand it to a write.
   */
  checkOutput(output: unknown): { bytes: number; problem: PayloadProblem | undefined } {
    const shaped = serializeOutput(output);
    if ('problem' in shaped) return { bytes: 0, problem: shaped.problem };
    const { serialized } = shaped;
    return { bytes: serialized?.bytes ?? 0, problem: payloadProblem(serialized, this.limits.maxPayloadBytes, 'the step output', STEP_OUTPUT_TOO_LARGE) };
  }

  /**
   * Whether the user may start another execution, in one read: under the storage quota, and with
   * fewer than `maxWaitingPerUser` executions waiting. The waiting bound keeps each user's backlog,
   * and so what the claim walks past for a user at ENGINE_USER_CONCURRENCY, small. Requests in
   * flight together are checked against the same count, so each of them may pass it. Inside a
   * transaction it reads through that transaction (`db`): the embedded database has one connection,
   * which the open transaction holds.
   */
  private async assertMayStart(userId: string, db: postgres.ISql = this.sql): Promise<void> {
    const { maxStorageBytes, maxWaitingPerUser } = this.limits;
    const [row] = await db<{ payloadBytes: number; waiting: number }[]>`
      select coalesce((select payload_bytes from user_usage where user_id = ${userId}), 0)::float8 as "payloadBytes",
             (select count(*)::int from (select 1 from executions
               where user_id = ${userId} and status in ('pending', 'paused') limit ${maxWaitingPerUser}) w) as waiting`;
    if (!row) throw new Error('the admission read returned no row');
    if (row.payloadBytes >= maxStorageBytes) throw storageQuotaExceeded(row.payloadBytes, maxStorageBytes);
    if (row.waiting >= maxWaitingPerUser) {
      throw new ProblemError(429, 'TOO_MANY_WAITING', `You have ${maxWaitingPerUser} executions waiting to run; start more when some have run.`, {
        headers: { 'retry-after': '5' },
      });
    }
  }

  private assertInputFits(input: unknown): void {
    const bytes = serialize(input)?.bytes ?? 0;
    if (bytes > this.limits.maxPayloadBytes) {
      throw badRequest(`The input is ${bytes} bytes of JSON; executions accept at most ${this.limits.maxPayloadBytes}.`, [
        { path: 'input', message: `is larger than ${this.limits.maxPayloadBytes} bytes` },
      ]);
    }
  }

  /**
   * Stores a delivery that passed its hook's check (API.md, Inbound webhooks), in one transaction:
   * a pending execution (trigger `webhook`) of the version whose trigger.webhook params checked it,
   * and its `accepted` delivery row; the work is announced once that commits. With a dedup key, a
   * transaction-scoped advisory lock on (workflow, key) comes first, so repeats sent together are
   * looked at one after the other: when an accepted delivery of the key was received within 24 h,
   * a `duplicate` row pointing at its execution is recorded instead, and the answer is the first
   * delivery's, with nothing started. Every insert requires the workflow as it was checked: the
   * hook still its own ('gone' otherwise: the old URL answers 404 from a rotation's commit on) and
   * the version still the checked one ('changed' otherwise: a delivery checked against the old
   * `verify` is never stored once the owner saved a new one). A new run is refused, with nothing
   * stored, when its owner may not start more ('refused'); a duplicate starts nothing, so it is not.
   */
  async acceptDelivery(delivery: VerifiedDelivery): Promise<DeliveryOutcome> {
    const { userId, workflowId, workflowVersion, hookId, dedupKey, request, input } = delivery;
    // The caller measured the input and refused it over the bound (413, and a rejected delivery): here it is a bug.
    if (input.bytes > this.limits.maxPayloadBytes) throw new RangeError(`a delivery input of ${input.bytes} bytes, over maxPayloadBytes, reached acceptDelivery`);
    // The workflow as the delivery was checked against it: the hook still its own, at the same version.
    const checked = this.sql`workflows where id = ${workflowId}::uuid and hook_id = ${hookId} and version = ${workflowVersion}`;
    const result = await this.sql.begin(async (tx): Promise<{ outcome: DeliveryOutcome; rows: readonly { announced?: unknown }[] }> => {
      /** Why nothing was inserted: the hook moved, or the workflow was saved again. */
      const notStored = async () => {
        const [row] = await tx<{ hooked: boolean }[]>`select hook_id is not distinct from ${hookId} as hooked from workflows where id = ${workflowId}::uuid`;
        return { outcome: { kind: row?.hooked ? 'changed' : 'gone' } as const, rows: [] };
      };
      if (dedupKey !== null) {
        await tx`select pg_advisory_xact_lock(hashtextextended(${`webhook-dedup:${workflowId}:${dedupKey}`}, 0))`;
        const [first] = await tx<{ deliveryId: string; executionId: string }[]>`
          select id as "deliveryId", execution_id as "executionId" from webhook_deliveries
           where workflow_id = ${workflowId}::uuid and dedup_key = ${dedupKey} and status = 'accepted'
             and received_at > now() - interval '24 hours'
           order by received_at limit 1`;
        if (first) {
          const source = this.sql`select user_id, id as workflow_id, ${first.executionId}::uuid as execution_id from ${checked}`;
          const recorded = await tx`${insertDelivery(this.sql, { status: 'duplicate', dedupKey, reason: null, request }, source)} returning 1`;
          return recorded.length === 0 ? notStored() : { outcome: { kind: 'stored', ...first }, rows: [] };
        }
      }
      try {
        await this.assertMayStart(userId, tx);
      } catch (error) {
        // Its message is written for the owner: it goes to them (the rejected delivery), never to the sender.
        if (!(error instanceof ProblemError)) throw error;
        const limit = START_LIMITS[error.code];
        if (limit === undefined) throw error;
        return { outcome: { kind: 'refused', limit, reason: error.message }, rows: [] };
      }
      const delivered = insertDelivery(this.sql, { status: 'accepted', dedupKey, reason: null, request }, this.sql`select user_id, workflow_id, id as execution_id from created`);
      const rows = await tx<{ deliveryId: string; executionId: string; announced: unknown }[]>`
        with created as (
          insert into executions (user_id, workflow_id, workflow_version, trigger, input)
          select user_id, id, ${workflowVersion}, 'webhook', ${input.json}::jsonb from ${checked}
          returning id, user_id, workflow_id),
        delivered as (${delivered} returning id, execution_id)
        select id as "deliveryId", execution_id as "executionId", ${this.work} from delivered`;
      const [created] = rows;
      return created ? { outcome: { kind: 'stored', deliveryId: created.deliveryId, executionId: created.executionId }, rows } : notStored();
    });
    // Announced after the commit: the in-process bus would otherwise wake a worker before the row is there.
    this.bus.settle(result.rows);
    return result.outcome;
  }

  /** A new pending execution of one of the caller's workflows, frozen at its current version; null when the caller has no such workflow. */
  async create(userId: string, workflowId: string, trigger: 'manual', input: unknown): Promise<ExecutionRecord | null> {
    this.assertInputFits(input);
    await this.assertMayStart(userId);
    const rows = await this.sql<(ExecutionRecord & { announced: unknown })[]>`
      with created as (
        insert into executions (user_id, workflow_id, workflow_version, trigger, input)
        select user_id, id, version, ${trigger}::execution_trigger, ${jsonParam(input ?? null)}::jsonb
          from workflows where id = ${workflowId}::uuid and user_id = ${userId}
        returning *)
      select ${this.reads.columns}, ${this.work} from created`;
    return this.settled(rows);
  }

  /**
   * A new execution of the same graph and input (trigger `retry`, linked to the original). From the
   * failed step, the original's completed steps are copied, so they are not run again and their
   * outputs are reused; from the start, everything runs again. Only a failed or cancelled execution
   * can be retried ('not-retryable' otherwise); null when the caller has no such execution.
   */
  async retry(userId: string, id: string, from: 'failed' | 'start'): Promise<ExecutionRecord | 'not-retryable' | null> {
    await this.assertMayStart(userId);
    return this.sql.begin(async (tx) => {
      const [original] = await tx<{ status: string }[]>`
        select status from executions where id = ${id}::uuid and user_id = ${userId} for share`;
      if (!original) return null;
      if (original.status !== 'failed' && original.status !== 'cancelled') return 'not-retryable' as const;
      const rows = await tx<(ExecutionRecord & { announced: unknown })[]>`
        with created as (
          insert into executions (user_id, workflow_id, workflow_version, job_id, trigger, input, retry_of_id)
          select user_id, workflow_id, workflow_version, job_id, 'retry', input, id
            from executions where id = ${id}::uuid
          returning *),
        copied as (
          insert into execution_steps (execution_id, node_id, status, attempt, input, output, started_at, finished_at, created_at)
          select created.id, s.node_id, s.status, s.attempt, s.input, s.output, s.started_at, s.finished_at, s.created_at
            from created, execution_steps s
           where ${from === 'failed'} and s.execution_id = ${id}::uuid and s.status = 'completed')
        select ${this.reads.columns}, ${this.work} from created`;
      return rows;
    }).then((result) => (Array.isArray(result) ? this.settled(result) : result));
  }

  /**
   * A new execution (trigger `webhook`) of the workflow's current version from a stored delivery,
   * with the input its first run got (triggerInputOf over the stored request). No delivery row is
   * written: the replay is the caller's act, not a request to the hook. A `rejected` delivery is
   * never replayed ('rejected'): it started no run (unverified, too large, or refused for its
   * owner's limits) and keeps no body to start one from; the insert itself refuses one, whatever
   * the caller checked. A `duplicate` keeps no body either: it replays as the delivery it repeated
   * (the accepted one of the same execution, deleted only with it and so with the duplicate too).
   * 'no-webhook' when the workflow's graph no longer has
   * a trigger.webhook node to take the request; null when the caller has no such delivery.
   */
  async replay(userId: string, deliveryId: string): Promise<ExecutionRecord | 'rejected' | 'no-webhook' | null> {
    const [delivery] = await this.sql<
      {
        status: (typeof webhookDeliveryStatuses)[number];
        method: string;
        headers: Record<string, string>;
        query: Record<string, unknown>;
        contentType: string | null;
        body: Buffer;
        receivedAtMs: number;
        hooked: boolean;
        firstId: string | null;
      }[]
    >`
      select d.status, d.method, d.headers, d.query, d.content_type as "contentType", d.body,
             (extract(epoch from d.received_at) * 1000)::float8 as "receivedAtMs", w.hook_id is not null as hooked,
             (select f.id from webhook_deliveries f
               where d.status = 'duplicate' and f.execution_id = d.execution_id and f.status = 'accepted' and f.user_id = d.user_id
               limit 1) as "firstId"
        from webhook_deliveries d join workflows w on w.id = d.workflow_id
       where d.id = ${deliveryId}::uuid and d.user_id = ${userId}`;
    if (!delivery) return null;
    // A duplicate keeps no body: it is the first delivery's repeat, and replays as that one (gone with it).
    if (delivery.status === 'duplicate') return delivery.firstId === null ? 'rejected' : this.replay(userId, delivery.firstId);
    if (delivery.status === 'rejected') return 'rejected';
    if (!delivery.hooked) return 'no-webhook';
    const input = triggerInputOf({ ...delivery, receivedAt: new Date(delivery.receivedAtMs) });
    this.assertInputFits(input);
    await this.assertMayStart(userId);
    const rows = await this.sql<(ExecutionRecord & { announced: unknown })[]>`
      with created as (
        insert into executions (user_id, workflow_id, workflow_version, trigger, input)
        select w.user_id, w.id, w.version, 'webhook', ${jsonParam(input)}::jsonb
          from webhook_deliveries d join workflows w on w.id = d.workflow_id
         where d.id = ${deliveryId}::uuid and d.user_id = ${userId} and d.status = 'accepted'
        returning *)
      select ${this.reads.columns}, ${this.work} from created`;
    return this.settled(rows);
  }

  /**
   * Fires up to `limit` due jobs in one transaction of two statements: claims due ACTIVE, unlocked
   * jobs with SKIP LOCKED (two schedulers never take the same job), then, for the whole batch at
   * once, creates each job's `schedule` execution, locks the job while that execution runs, and
   * moves nextRunAt to the next occurrence after now (a long downtime yields one catch-up run, not
   * one per missed slot).
   *
   * Fair across users: the batch takes every user's most overdue job before anyone's second (a
   * round-robin by turn), so one user's many due jobs cannot push another's back by more than
   * one job per user. A full batch means more may be due: the caller fires again at once.
   */
  async fireDueJobs(limit = 500): Promise<FiredJob[]> {
    return this.sql.begin(async (tx) => {
      const due = await tx<{ id: string; user_id: string; cron: string; timezone: string; next_run_at: string; now_ms: number }[]>`
        with turns as (
          select id, next_run_at, row_number() over (partition by user_id order by next_run_at) as turn
            from jobs
           where status = 'ACTIVE' and next_run_at <= now() and not locked)
        select j.id, j.user_id, j.cron, j.timezone, j.next_run_at, (extract(epoch from now()) * 1000)::float8 as now_ms
          from jobs j
         where j.id in (select id from turns order by turn, next_run_at limit ${limit})
           and j.status = 'ACTIVE' and j.next_run_at <= now() and not j.locked
         for update of j skip locked`;
      if (due.length === 0) return [];
      // Many jobs share a schedule: each distinct one is parsed and stepped once per batch. From the
      // database's clock, which decided these slots were due: from this process's, running behind,
      // the next run could be the slot just fired, due again at once.
      const now = new Date(due[0]?.now_ms ?? Date.now());
      const nextRuns = new Map<string, string | null>();
      const nextRunOf = (cron: string, timezone: string) => {
        const key = `${timezone} ${cron}`;
        if (!nextRuns.has(key)) {
          const parsed = parseSchedule(cron, timezone);
          nextRuns.set(key, 'schedule' in parsed ? (parsed.schedule.nextRun(now)?.toISOString() ?? null) : null);
        }
        return nextRuns.get(key) ?? null;
      };
      const scheduledAt = due.map((job) => new Date(job.next_run_at).toISOString());
      const rows = await tx<{ job_id: string | null; execution_id: string | null; announced: unknown }[]>`
        with due as (
          -- Times travel as text: drizzle makes postgres.js pass timestamps through unserialised.
          select job_id, scheduled_at, next_run_at::timestamptz as next_run_at
            from unnest(${due.map((job) => job.id)}::uuid[], ${scheduledAt}::text[], ${due.map((job) => nextRunOf(job.cron, job.timezone))}::text[])
              as due(job_id, scheduled_at, next_run_at)),
        crowded as (
          select x.user_id from executions x
           where x.user_id in (select j.user_id from due d join jobs j on j.id = d.job_id) and x.status in ('pending', 'paused')
           group by x.user_id having count(*) >= ${this.limits.maxWaitingPerUser}),
        created as (
          insert into executions (user_id, workflow_id, workflow_version, job_id, trigger, input)
          select w.user_id, w.id, w.version, d.job_id, 'schedule',
                 jsonb_build_object('jobId', d.job_id, 'scheduledAt', d.scheduled_at)
            from due d join jobs j on j.id = d.job_id join workflows w on w.id = j.workflow_id
           -- An owner over the storage quota (usage/usage.ts), or with the most executions waiting
           -- (assertMayStart), misses this slot.
           where not exists (select 1 from user_usage u where u.user_id = w.user_id and u.payload_bytes >= ${this.limits.maxStorageBytes})
             and w.user_id not in (select user_id from crowded)
          returning id, job_id),
        moved as (
          update jobs j
             set locked = exists (select 1 from created c where c.job_id = j.id), last_run_at = now(),
                 next_run_at = d.next_run_at, updated_at = now()
            from due d
           where j.id = d.job_id)
        select c.job_id, c.id as execution_id, null as announced from created c
        union all
        select null, null, ${this.work}`;
      const userOf = new Map(due.map((job, index) => [job.id, { userId: job.user_id, scheduledAt: new Date(scheduledAt[index] as string) }]));
      this.bus.settle(rows);
      return rows.flatMap((row) => {
        const job = row.job_id === null ? undefined : userOf.get(row.job_id);
        return job && row.execution_id ? [{ jobId: row.job_id as string, executionId: row.execution_id, ...job }] : [];
      });
    });
  }

  /**
   * Claims up to `limit` executions, oldest-runnable first (SKIP LOCKED: competing workers never take
   * the same one): pending or paused ones whose time has come, and running ones whose lease expired
   * (a takeover). Each kind is read from the front of its own index (executions_ready_idx,
   * executions_lease_idx): one condition over both made PostgreSQL fetch and sort every waiting
   * execution on each claim.
   *
   * No user holds more than `perUser` running executions (ENGINE_USER_CONCURRENCY), counted over
   * every worker: a user at the cap is passed over, so one tenant's hanging runs cannot keep
   * another's waiting. The count is read in the claim's own snapshot, so workers claiming at the
   * same instant can each add one batch for a user; the next claim sees it and adds none.
   */
  async claim(workerId: string, limit: number, leaseMs: number, perUser: number): Promise<ClaimedExecution[]> {
    const sql = this.sql;
    const running = encodeInSql(
      sql,
      sql`jsonb_build_object('kind', 'execution', 'executionId', c.id, 'userId', c.user_id, 'status', 'running')`,
      sql`c.revision`,
    );
    const rows = await sql<
      { id: string; user_id: string; workflow_id: string; job_id: string | null; input: unknown; workflow_snapshot: WorkflowSnapshot; steps: StepState[]; takeovers: number; taken_over: boolean; announced: unknown }[]
    >`
      with busy as (
        select user_id, count(*)::int as running from executions
         where status = 'running' and lease_expires_at >= now()
         group by user_id),
      full_users as (select user_id from busy where running >= ${perUser}),
      -- Users at their share are a filter on the index scan, not a join: the scan stays in the
      -- index's order and stops at the limit instead of reading (and sorting) every runnable row.
      ready as (
        select e.id, e.user_id, coalesce(e.wake_at, e.created_at) as runnable_at from executions e
         where e.status in ('pending', 'paused') and coalesce(e.wake_at, e.created_at) <= now()
           and e.user_id <> all (array(select user_id from full_users))
         order by coalesce(e.wake_at, e.created_at)
         limit ${limit}
         for update skip locked),
      expired as (
        select e.id, e.user_id, e.lease_expires_at as runnable_at from executions e
         where e.status = 'running' and e.lease_expires_at < now()
           and e.user_id <> all (array(select user_id from full_users))
         order by e.lease_expires_at
         limit ${limit}
         for update skip locked),
      ranked as (
        select c.id, c.runnable_at,
               row_number() over (partition by c.user_id order by c.runnable_at) + coalesce(b.running, 0) as user_slot
          from (select * from ready union all select * from expired) c
          left join busy b on b.user_id = c.user_id),
      picked as (
        select id from ranked
         where user_slot <= ${perUser}
         order by runnable_at
         limit ${limit}),
      claimed as (
        update executions e
           set status = 'running', lease_owner = ${workerId},
               lease_expires_at = now() + make_interval(secs => ${leaseMs / 1000}),
               started_at = coalesce(e.started_at, now()), wake_at = null, revision = e.revision + 1,
               takeovers = e.takeovers + (e.id in (select id from expired))::int
         where e.id in (select id from picked)
        returning e.id, e.user_id, e.workflow_id, e.workflow_version, e.job_id, e.input, e.revision, e.takeovers)
      select c.id, c.user_id, c.workflow_id, c.job_id, c.input,
             (select jsonb_build_object('nodes', v.nodes, 'edges', v.edges) from workflow_versions v
               where v.workflow_id = c.workflow_id and v.version = c.workflow_version) as workflow_snapshot,
             (select coalesce(json_agg(json_build_object('nodeId', s.node_id, 'status', s.status, 'attempt', s.attempt,
                                                         'input', s.input, 'output', s.output, 'error', s.error)), '[]'::json)
                from execution_steps s where s.execution_id = c.id) as steps,
             c.takeovers, exists (select 1 from expired x where x.id = c.id) as taken_over,
             ${this.bus.announce(sql`array[${running}]`)}
        from claimed c`;
    this.bus.settle(rows);
    return rows.map((row) => ({
      id: row.id,
      userId: row.user_id,
      workflowId: row.workflow_id,
      jobId: row.job_id,
      input: row.input,
      snapshot: row.workflow_snapshot,
      steps: row.steps,
      takeovers: row.takeovers,
      takenOver: row.taken_over,
    }));
  }

  /** Renews the leases of the executions this worker runs; returns the ids it still holds. */
  async heartbeat(workerId: string, executionIds: readonly string[], leaseMs: number): Promise<Set<string>> {
    if (executionIds.length === 0) return new Set();
    const rows = await this.sql<{ id: string }[]>`
      update executions set lease_expires_at = now() + make_interval(secs => ${leaseMs / 1000})
       where id = any(${executionIds as string[]}::uuid[]) and lease_owner = ${workerId} and status = 'running'
      returning id`;
    return new Set(rows.map((row) => row.id));
  }

  /** Writes step rows (one per node) while this worker holds the execution, in one statement; false when it no longer does. */
  async writeSteps(workerId: string, execution: RunningExecution, changes: readonly StepChange[]): Promise<boolean> {
    if (changes.length === 0) throw new Error('writeSteps needs at least one step');
    return this.failIfRefused(workerId, execution, changes, async () => {
      const prepared = this.prepareChanges(changes);
      const events = prepared.map((step) => stepEvent(execution, step));
      // Only a batch with a failed step has anything to tell subscribers: the others pay nothing for the outbox.
      const failing = prepared.some((step) => step.change.status === 'failed');
      const rows = await retryingConflicts(() => this.sql<{ announced: unknown }[]>`
        with fence as (
          update executions set revision = revision + ${events.length}
           where id = ${execution.id}::uuid and lease_owner = ${workerId} and status = 'running'
          returning id, user_id, workflow_id, revision),
        written as (${this.upsertSteps(execution.id, prepared)})
        ${failing ? this.sql`, ${outbox(this.sql, failedStepEvents(this.sql))}` : this.sql``}
        select ${this.announce(events, { outbox: failing })} from fence where exists (select 1 from written)`);
      return this.settled(rows) !== null;
    });
  }

  /**
   * Ends the execution (completed or failed), writing the step rows not yet written in the same
   * statement; false when it is no longer this worker's.
   */
  async finish(
    workerId: string,
    execution: RunningExecution,
    outcome: { status: 'completed' | 'failed'; output?: unknown; error?: unknown },
    changes: readonly StepChange[] = [],
  ): Promise<boolean> {
    return this.failIfRefused(workerId, execution, changes, () => this.end(workerId, execution, this.boundedOutcome(outcome), changes));
  }

  /**
   * The outcome as stored: an output over the bound (the leaves' outputs joined) or unstorable
   * fails the execution instead; the error is cut down to fit.
   */
  private boundedOutcome(outcome: { status: 'completed' | 'failed'; output?: unknown; error?: unknown }): Outcome {
    const output = serialize(outcome.output);
    const problem = payloadProblem(output, this.limits.maxPayloadBytes, 'the execution output', EXECUTION_OUTPUT_TOO_LARGE);
    if (problem) return { status: 'failed', output: undefined, error: serialize({ code: problem.code, message: problem.message }) };
    return { status: outcome.status, output, error: serialize(boundedError(outcome.error, this.limits.maxPayloadBytes)) };
  }

  /**
   * The statement that ends the execution, with its payloads already serialized and bounded. A
   * run's end is its user's hot write: the usage triggers update the user's `user_usage` row, so
   * two ends of one user's runs wait for each other's commit. Ends of one user that come while
   * another is being written are written together after it (writeEnd), one commit for all.
   */
  private async end(workerId: string, execution: RunningExecution, outcome: Outcome, changes: readonly StepChange[]): Promise<boolean> {
    const statement = this.endStatement(workerId, execution, outcome, changes);
    return this.settled(await this.writeEnd(execution, statement)) !== null;
  }

  /** The statement of end(), to run on the pool or in a transaction (`db`); the caller settles its rows. */
  private endStatement(workerId: string, execution: RunningExecution, outcome: Outcome, changes: readonly StepChange[]): EndStatement {
    const prepared = this.prepareChanges(changes);
    const events = [...prepared.map((step) => stepEvent(execution, step)), executionEvent(execution, outcome.status, outcome)];
    const announced = prepared.some((step) => step.change.status === 'failed')
      ? this.sql`${executionEndedEvent(this.sql)} union all ${failedStepEvents(this.sql)}`
      : executionEndedEvent(this.sql);
    return (db) => db<{ announced: unknown }[]>`
      with fence as (
        update executions
           set status = ${outcome.status}, output = ${outcome.output?.json ?? null}::jsonb,
               error = ${outcome.error?.json ?? null}::jsonb,
               finished_at = now(), lease_owner = null, lease_expires_at = null, revision = revision + ${events.length}
         where id = ${execution.id}::uuid and lease_owner = ${workerId} and status = 'running'
        returning id, user_id, workflow_id, status, error, started_at, finished_at, revision, job_id, trigger),
      ${prepared.length > 0 ? this.sql`written as (${this.upsertSteps(execution.id, prepared)}),` : this.sql``}
      ${outbox(this.sql, announced)},
      ${this.unlockJob}
      select ${this.announce(events, { outbox: true })} from fence`;
  }

  /**
   * Runs an end statement of `userId`'s: at once when none of theirs is being written, else after
   * it, in one transaction with the others that came meanwhile (one commit, one wait for their
   * usage row). What stays true: each statement is fenced on its own execution's lease as alone;
   * the transaction touches one user's rows only, and locks all its executions' rows (in id
   * order) before any statement takes the usage row, as a single statement does, so it waits for
   * no other writer while holding that row (a cancel of one of them, say); the rows come back after the commit (the caller settles, so the
   * in-process bus never announces an end before it is stored); and if the transaction fails
   * (a refused value, a deadlock, the database going away), nothing of it was stored and each
   * statement is run again alone, so every caller gets its own statement's outcome, as before.
   */
  private async writeEnd(execution: RunningExecution, statement: EndStatement): Promise<readonly { announced: unknown }[]> {
    const userId = execution.userId;
    const waiting = this.endsWaiting.get(userId);
    if (waiting) return new Promise((resolve, reject) => waiting.push({ executionId: execution.id, statement, resolve, reject }));
    this.endsWaiting.set(userId, []);
    try {
      return await retryingConflicts(() => statement(this.sql));
    } finally {
      this.writeWaitingEnds(userId);
    }
  }

  /** Writes the ends of `userId` that waited, if any, then looks again; forgets the user once none wait. */
  private writeWaitingEnds(userId: string): void {
    const batch = this.endsWaiting.get(userId) ?? [];
    if (batch.length === 0) {
      this.endsWaiting.delete(userId);
      return;
    }
    this.endsWaiting.set(userId, []);
    void this.writeEndBatch(batch).finally(() => this.writeWaitingEnds(userId));
  }

  private async writeEndBatch(batch: readonly WaitingEnd[]): Promise<void> {
    if (batch.length > 1) {
      const written = await this.writeTogether(batch).catch(() => undefined);
      if (written) {
        batch.forEach((end, index) => end.resolve(written[index] ?? []));
        return;
      }
    }
    for (const end of batch) {
      try {
        end.resolve(await retryingConflicts(() => end.statement(this.sql)));
      } catch (error) {
        end.reject(error);
      }
    }
  }

  /**
   * The batch's statements in one transaction: the locks (in id order), then the ends, sent
   * together once BEGIN is answered. Through sql.begin, which gives the connection back to the pool
   * only when the transaction ended, and settles every statement if the connection closes midway (a
   * connection reserved by hand does neither: its queued statements never settle, and release()
   * would pool a dead connection). Rolled back as a whole when a statement fails.
   */
  private async writeTogether(batch: readonly WaitingEnd[]): Promise<(readonly { announced: unknown }[])[]> {
    const ids = batch.map((end) => end.executionId);
    return this.sql.begin(async (tx) => {
      const [, ...ends] = await Promise.all([
        // One parameter per id (not an array): the plan is generic after a few runs, not planned again at every bind.
        tx`select 1 from executions where id in ${tx(ids)} order by id for update`,
        ...batch.map((end) => end.statement(tx)),
      ]);
      return ends;
    });
  }

  /**
   * Runs a write of step rows; if the database refuses its data (or a step output is over the
   * bound), ends the execution `failed` with the reason instead, and answers false: the run is no
   * longer the worker's to continue. Any other error (the database is down) propagates.
   */
  private async failIfRefused(workerId: string, execution: RunningExecution, changes: readonly StepChange[], write: () => Promise<boolean>): Promise<boolean> {
    try {
      return await write();
    } catch (error) {
      if (!(error instanceof RefusedPayload) && !isRefusedValue(error)) throw error;
      await this.failRefused(workerId, execution, changes, error);
      return false;
    }
  }

  /**
   * Ends the execution `failed` after a refused write. The statement carries no value of the run:
   * the steps of the refused write end failed (skipped ones stay skipped) with a fixed message.
   * Which value the database refused it does not say, so every step of that write is marked.
   */
  private async failRefused(workerId: string, execution: RunningExecution, changes: readonly StepChange[], error: unknown): Promise<void> {
    const latest = [...new Map(changes.map((change) => [change.nodeId, change])).values()];
    const ran = latest.filter((change) => change.status !== 'skipped');
    const culprit = error instanceof RefusedPayload ? error.nodeId : ran.length === 1 ? ran[0]?.nodeId : undefined;
    const problem: PayloadProblem =
      error instanceof RefusedPayload
        ? error.problem
        : { code: UNSTORABLE_VALUE, message: 'the database refused to store a value of this step (for example a NUL character, an unpaired surrogate, or JSON nested too deeply)' };
    const steps: StepChange[] = latest.map((change) => {
      if (change.status === 'skipped') return { nodeId: change.nodeId, status: 'skipped', attempt: change.attempt, finished: true };
      const message = culprit === undefined || culprit === change.nodeId ? problem.message : 'not recorded: a value written with it was refused';
      return { nodeId: change.nodeId, status: 'failed', attempt: change.attempt, error: { nodeId: change.nodeId, code: problem.code, message }, started: change.started ?? false, finished: true };
    });
    const outcome: Outcome = {
      status: 'failed',
      output: undefined,
      error: serialize({ ...(culprit !== undefined ? { nodeId: culprit } : {}), code: problem.code, message: problem.message }),
    };
    try {
      await this.end(workerId, execution, outcome, steps);
    } catch (again) {
      // Only node ids and our own text are left; should even they be refused, the execution still ends.
      if (!isRefusedValue(again)) throw again;
      await this.end(workerId, execution, outcome, []);
    }
  }

  /**
   * Each change's input, output and error as JSON: an input over the bound or holding text jsonb
   * refuses is recorded as `{ omitted }` (it is for reading only), an error is cut down to fit, and
   * an output over the bound is refused (RefusedPayload). Unstorable text in an output is left to
   * the database to refuse (the runner checks outputs before they get here).
   */
  private prepareChanges(changes: readonly StepChange[]): PreparedChange[] {
    const max = this.limits.maxPayloadBytes;
    return changes.map((change) => {
      const output = serialize(change.output);
      if (output && output.bytes > max) {
        throw new RefusedPayload({ code: STEP_OUTPUT_TOO_LARGE, message: `the step output is ${output.bytes} bytes of JSON, larger than ${max} bytes (ENGINE_MAX_PAYLOAD_BYTES)` }, change.nodeId);
      }
      let input = serialize(change.input);
      const inputProblem = payloadProblem(input, max, 'the step input', 'STEP_INPUT_TOO_LARGE');
      if (inputProblem) input = serialize({ omitted: `${inputProblem.message}, so it is not recorded` });
      return { change, input, output, error: serialize(boundedError(change.error, max)) };
    });
  }

  /**
   * Gives the execution back: `paused` until a delay ends, or `pending` (now, after a retry
   * backoff, or for another worker when this one shuts down). No worker is held while it waits.
   * False when it is no longer this worker's.
   */
  async release(
    workerId: string,
    execution: RunningExecution,
    status: 'pending' | 'paused',
    wakeAt: Date | null,
    changes: readonly StepChange[] = [],
  ): Promise<boolean> {
    return this.failIfRefused(workerId, execution, changes, async () => {
      const prepared = this.prepareChanges(changes);
      const events = [...prepared.map((step) => stepEvent(execution, step)), executionEvent(execution, status, {})];
      const rows = await retryingConflicts(() => this.sql<{ announced: unknown }[]>`
        with fence as (
          update executions
             set status = ${status}, wake_at = ${wakeAt ? wakeAt.toISOString() : null}::timestamptz, lease_owner = null, lease_expires_at = null,
                 revision = revision + ${events.length}
           where id = ${execution.id}::uuid and lease_owner = ${workerId} and status = 'running'
          returning revision)
        ${prepared.length > 0 ? this.sql`, written as (${this.upsertSteps(execution.id, prepared)})` : this.sql``}
        select ${this.announce(events, { andWork: wakeAt === null })} from fence`);
      return this.settled(rows) !== null;
    });
  }

  /**
   * Cancels one of the caller's executions that has not ended: its running or pending steps end
   * failed ("cancelled"), its job is unlocked, and the worker running it loses its lease (its next
   * write is refused, and the cancel event aborts its step at once). 'ended' when it had already
   * ended; null when the caller has no such execution.
   */
  async cancel(userId: string, id: string): Promise<ExecutionRecord | 'ended' | null> {
    const cancelledMessage = JSON.stringify({ message: 'cancelled' });
    const event = executionEvent({ id, userId }, 'cancelled', { output: undefined, error: serialize({ message: 'cancelled' }) });
    const rows = await this.sql<{ announced: unknown }[]>`
      with fence as (
        update executions
           set status = 'cancelled', finished_at = now(), lease_owner = null, lease_expires_at = null, wake_at = null,
               error = ${cancelledMessage}::jsonb, revision = revision + 1
         where id = ${id}::uuid and user_id = ${userId} and status in ('pending', 'running', 'paused')
        returning id, user_id, workflow_id, status, error, started_at, finished_at, revision, job_id, trigger),
      steps as (
        update execution_steps set status = 'failed', error = ${cancelledMessage}::jsonb, finished_at = now()
         where execution_id = (select id from fence) and status in ('running', 'pending')),
      -- The steps a cancel ends are announced by execution.cancelled alone, not as step.failed.
      ${outbox(this.sql, executionEndedEvent(this.sql))},
      ${this.unlockJob}
      select ${this.announce([event], { outbox: true })} from fence`;
    const cancelled = this.settled(rows) !== null;
    const record = await this.reads.get(userId, id);
    if (!record) return null;
    return cancelled ? record : 'ended';
  }

  /**
   * The select-list expression that announces `events`, numbered up to the statement's new
   * revision (the `revision` column of its CTE `fence`): the last event takes it, each earlier
   * one the number before. The one place where event revisions are assigned. `andWork` adds
   * "work"; `outbox` (the statement has the CTE `outbox`) adds it when the outbox wrote a message,
   * so the delivery workers wake only when there is something to send.
   */
  private announce(events: readonly PendingEvent[], options: { andWork?: boolean; outbox?: boolean } = {}): Fragment {
    const sql = this.sql;
    const encoded = encodeInSql(sql, sql`e.value`, sql`fence.revision - ${events.length} + e.ordinality::int`);
    let messages = sql`(select array_agg(${encoded} order by e.ordinality)
      from jsonb_array_elements(${`[${events.join(',')}]`}::jsonb) with ordinality as e)`;
    if (options.andWork) messages = sql`${messages} || ${WORK}::text`;
    if (options.outbox) messages = sql`${messages} || case when ${outboxWrote(sql)} then array[${WORK}::text] else array[]::text[] end`;
    return this.bus.announce(messages);
  }

  /** Hands the statement's rows to the bus; the first row, or null when the statement changed nothing. */
  private settled<Row extends { announced?: unknown }>(rows: readonly Row[]): Row | null {
    this.bus.settle(rows);
    return rows[0] ?? null;
  }

  /**
   * The upsert of step rows, run only when the CTE `fence` (the lease check) returned its row. A
   * step's `started_at` is set when it starts and kept after; JSON travels as text, so a JSON null
   * stays distinct from "no value" (SQL NULL). Returns the rows as written, which the outbox reads
   * for failed steps (failedStepEvents).
   */
  private upsertSteps(executionId: string, changes: readonly PreparedChange[]): Fragment {
    // One row per node: a later change of the same node in the batch replaces an earlier one.
    const latest = new Map(changes.map((prepared) => [prepared.change.nodeId, prepared]));
    const rows = JSON.stringify(
      [...latest.values()].map(({ change, input, output, error }, position) => ({
        position,
        node_id: change.nodeId,
        status: change.status,
        attempt: change.attempt,
        input: input?.json ?? null,
        output: output?.json ?? null,
        error: error?.json ?? null,
        started: change.started ?? false,
        finished: change.finished ?? false,
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
      returning s.node_id, s.status, s.error, s.started_at, s.finished_at`;
  }
}

/**
 * An event as JSON text. Its output and error travel only when they fit one NOTIFY (in bytes);
 * otherwise it says `truncated` (read them from the steps route), and they stay out of the
 * statement too. encodeInSql measures the final message, revision included, once more.
 */
function eventJson(fields: EventFields, output: Serialized | undefined, error: Serialized | undefined): PendingEvent {
  const base = JSON.stringify(fields);
  if (!output && !error) return base;
  const bytes = (output?.bytes ?? 0) + (error?.bytes ?? 0);
  const tail = bytes > MAX_MESSAGE_BYTES ? '"truncated":true' : [output && `"output":${output.json}`, error && `"error":${error.json}`].filter(Boolean).join(',');
  return `${base.slice(0, -1)},${tail}}`;
}

function stepEvent(execution: RunningExecution, { change, output, error }: PreparedChange): PendingEvent {
  return eventJson(
    { kind: 'step', executionId: execution.id, userId: execution.userId, nodeId: change.nodeId, status: change.status, attempt: change.attempt },
    change.output !== undefined && change.output !== null ? output : undefined,
    change.error !== undefined && change.error !== null ? error : undefined,
  );
}

function executionEvent(execution: RunningExecution, status: string, outcome: { output?: Serialized | undefined; error?: Serialized | undefined }): PendingEvent {
  return eventJson({ kind: 'execution', executionId: execution.id, userId: execution.userId, status }, outcome.output, outcome.error);
}
