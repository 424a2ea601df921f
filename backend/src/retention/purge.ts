import type postgres from 'postgres';
import type { Sql } from '../db/client.js';

/**
 * Data retention (API.md, Retention): ended executions (completed, failed, cancelled) whose
 * `finished_at` is older than their workflow's `retention_days`, else the server's default, are
 * deleted with their steps and webhook deliveries (both ON DELETE CASCADE); webhook deliveries
 * that have no execution (rejected ones) go once their `received_at` is older than the same
 * retention (their workflow's, else the default). The user_usage triggers (migrations 0014, 0020)
 * take every deleted row, cascades included, off its user's usage.
 *
 * One process purges at a time: every batch is a transaction that first takes a transaction-level
 * advisory lock without waiting, and a round that finds it taken stops (another process is
 * purging). No connection is held between batches, so the purge never reserves one of the pool's
 * connections for its round. Each batch deletes at most `batchSize` executions or deliveries,
 * taking its rows with SKIP LOCKED (it never waits on a row someone else holds), with a pause
 * between batches, and the round lasts at most `maxRunMs`: whatever is left waits for the next.
 *
 * Five walks, each along an index, none reading a row it keeps more than once per round (the
 * fifth, event messages whose workflow was deleted while they were pending, is detachedMessages):
 *  - workflows with a retention of their own (few), through `workflows_own_retention_idx`, each
 *    workflow's oldest ended executions through `executions_workflow_ended_finished_idx`
 *    (workflow, finished_at): each probe stops at that workflow's cutoff, so the executions it keeps
 *    are never read;
 *  - the same workflows' oldest deliveries without an execution, through
 *    `webhook_deliveries_workflow_received_idx` (workflow, received_at): each probe stops at that
 *    workflow's cutoff; on the way it passes only that workflow's older deliveries whose execution
 *    is still kept (not ended, or ended within the retention);
 *  - every other workflow's executions, through `executions_ended_finished_idx` (finished_at,
 *    workflow, id), oldest first up to the default cutoff, leaving out executions of workflows
 *    that have a retention of their own (a probe of the small partial `workflows_own_retention_idx`).
 *    Those of them older than the default cutoff but kept by a longer retention lie on the way; the
 *    walk resumes by keyset after the last row it took, so it passes over them once per round, not
 *    once per batch;
 *  - every other workflow's deliveries without an execution, through
 *    `webhook_deliveries_unexecuted_received_idx` (received_at), the same way (resuming at the
 *    received_at of the last it took).
 * Executions and deliveries still within their retention lie past the cutoff of their walk and are
 * never read. The walks take turns, one batch each, so a long one (a backlog of millions) cannot
 * starve the others of the round's time.
 */

export interface PurgeOptions {
  /** Days an ended execution, or a delivery without an execution, is kept when its workflow sets none (EXECUTION_RETENTION_DAYS). */
  readonly defaultDays: number;
  /** Most executions (or deliveries) one statement deletes; their steps and deliveries go with them. */
  readonly batchSize?: number;
  /** Pause between two statements, so the purge leaves the database and the connection pool room for everyone else. */
  readonly pauseMs?: number;
  /** Time budget of one round: no new batch starts after it. */
  readonly maxRunMs?: number;
  /** Asked before each batch: true ends the round (the process is shutting down). */
  readonly shouldStop?: () => boolean;
}

export interface PurgeResult {
  /** False when another process holds the purge lock: this one deleted nothing. */
  readonly ran: boolean;
  readonly executions: number;
  /** Deliveries without an execution (those of deleted executions are counted with them, not here). */
  readonly deliveries: number;
  /** Event messages whose workflow was deleted while they were pending (others go with their execution or delivery). */
  readonly messages: number;
  readonly batches: number;
  /** True when every walk reached its end; false when the time budget or a stop ended the round first. */
  readonly finished: boolean;
}

export const PURGE_DEFAULTS = { batchSize: 1_000, pauseMs: 50, maxRunMs: 15_000 } as const;

/** Workflows with a retention of their own probed by one statement. */
const OWN_RETENTION_WORKFLOWS_PER_BATCH = 200;
const FIRST_UUID = '00000000-0000-0000-0000-000000000000';

/**
 * Where the default walk stopped: the (finished_at, workflow_id, id) of the last execution it took.
 * `finishedAt` is PostgreSQL's own text of the timestamp (or '-infinity'), sent back as text: it
 * casts back to the same value, where the driver's timestamp parameter would go through a Date.
 */
export interface DefaultWalkPosition {
  readonly finishedAt: string;
  readonly workflowId: string;
  readonly id: string;
}
export const DEFAULT_WALK_START: DefaultWalkPosition = { finishedAt: '-infinity', workflowId: FIRST_UUID, id: FIRST_UUID };

/**
 * Where the default walk of deliveries without an execution stopped: the received_at of the last
 * it took (PostgreSQL's text of it, as above). The next batch starts at that time, not after it:
 * rows received in the same millisecond may be left, and only those the walk keeps are read again.
 */
export const DELIVERY_WALK_START = '-infinity';

/** The next OWN_RETENTION_WORKFLOWS_PER_BATCH workflows after `afterWorkflowId` with a retention of their own, as the CTE `page`. */
const ownRetentionPage = (sql: postgres.ISql, afterWorkflowId: string) => sql`
    page as (
      select id, retention_days from workflows
       where retention_days is not null and id > ${afterWorkflowId}::uuid
       order by id
       limit ${OWN_RETENTION_WORKFLOWS_PER_BATCH}
    )`;

/**
 * The purge's statements, one batch each. The ended statuses are literals, not parameters: the
 * planner can then prove the partial indexes' predicate (`status in (...)`) from the query.
 * Exported for the tests that EXPLAIN them and for the benchmark.
 */
export const purgeStatements = {
  /**
   * Ended executions past the retention of their own workflow, among the next
   * OWN_RETENTION_WORKFLOWS_PER_BATCH workflows after `afterWorkflowId` that have one. `found`
   * below `batchSize` means those workflows are done: the walk moves on after `lastWorkflowId`.
   */
  ownRetention: (sql: postgres.ISql, afterWorkflowId: string, batchSize: number) => sql<OwnBatchRow[]>`
    with ${ownRetentionPage(sql, afterWorkflowId)},
    candidates as (
      select expired.id
        from page w
        cross join lateral (
          select e.id from executions e
           where e.workflow_id = w.id
             and e.status in ('completed', 'failed', 'cancelled')
             and e.finished_at < now() - make_interval(days => w.retention_days)
           order by e.finished_at
           limit ${batchSize}
           for update of e skip locked
        ) expired
       limit ${batchSize}
    ),
    gone as (
      delete from executions x using candidates c where x.id = c.id returning 1
    )
    select (select count(*)::int from gone) as deleted,
           (select count(*)::int from candidates) as found,
           (select id from page order by id desc limit 1) as "lastWorkflowId"`,

  /**
   * Ended executions past the default retention of workflows without one of their own, oldest
   * first from `after` on. `found` below `batchSize` means the walk is done; otherwise the next
   * batch starts after the returned position.
   */
  defaultRetention: (sql: postgres.ISql, defaultDays: number, after: DefaultWalkPosition, batchSize: number) => sql<
    { deleted: number; found: number; finishedAt: string | null; workflowId: string | null; id: string | null }[]
  >`
    with candidates as (
      select e.id, e.finished_at, e.workflow_id
        from executions e
       where e.status in ('completed', 'failed', 'cancelled')
         and e.finished_at < now() - make_interval(days => ${defaultDays}::int)
         and (e.finished_at, e.workflow_id, e.id) > (${after.finishedAt}::text::timestamptz, ${after.workflowId}::uuid, ${after.id}::uuid)
         and not exists (select 1 from workflows w where w.id = e.workflow_id and w.retention_days is not null)
       order by e.finished_at, e.workflow_id, e.id
       limit ${batchSize}
       for update of e skip locked
    ),
    gone as (
      delete from executions x using candidates c where x.id = c.id returning 1
    ),
    last as (
      select finished_at, workflow_id, id from candidates order by finished_at desc, workflow_id desc, id desc limit 1
    )
    select (select count(*)::int from gone) as deleted,
           (select count(*)::int from candidates) as found,
           last.finished_at::text as "finishedAt", last.workflow_id as "workflowId", last.id
      from (select 1) one left join last on true`,

  /**
   * Webhook deliveries without an execution (rejected ones) past the retention of their own
   * workflow, among the same page of workflows as ownRetention; `found` and `lastWorkflowId` as there.
   */
  ownRetentionDeliveries: (sql: postgres.ISql, afterWorkflowId: string, batchSize: number) => sql<OwnBatchRow[]>`
    with ${ownRetentionPage(sql, afterWorkflowId)},
    candidates as (
      select expired.id
        from page w
        cross join lateral (
          select d.id from webhook_deliveries d
           where d.workflow_id = w.id
             and d.received_at < now() - make_interval(days => w.retention_days)
             and d.execution_id is null
           order by d.received_at
           limit ${batchSize}
           for update of d skip locked
        ) expired
       limit ${batchSize}
    ),
    gone as (
      delete from webhook_deliveries x using candidates c where x.id = c.id returning 1
    )
    select (select count(*)::int from gone) as deleted,
           (select count(*)::int from candidates) as found,
           (select id from page order by id desc limit 1) as "lastWorkflowId"`,

  /**
   * Webhook deliveries without an execution (rejected ones) past the default retention, of
   * workflows without one of their own, oldest first from `afterReceivedAt` on (DELIVERY_WALK_START);
   * `found` below `batchSize` means the walk is done, else the next batch starts at the returned
   * `receivedAt`. Ordered as the index is (received_at alone), so the index serves the order too.
   */
  unexecutedDeliveries: (sql: postgres.ISql, defaultDays: number, batchSize: number, afterReceivedAt: string = DELIVERY_WALK_START) => sql<
    { deleted: number; found: number; receivedAt: string | null }[]
  >`
    with candidates as (
      select d.id, d.received_at
        from webhook_deliveries d
       where d.execution_id is null
         and d.received_at < now() - make_interval(days => ${defaultDays}::int)
         and d.received_at >= ${afterReceivedAt}::text::timestamptz
         and not exists (select 1 from workflows w where w.id = d.workflow_id and w.retention_days is not null)
       order by d.received_at
       limit ${batchSize}
       for update of d skip locked
    ),
    gone as (
      delete from webhook_deliveries x using candidates c where x.id = c.id returning 1
    )
    select (select count(*)::int from gone) as deleted,
           (select count(*)::int from candidates) as found,
           (select max(received_at)::text from candidates) as "receivedAt"`,

  /**
   * Event messages left without their execution or delivery (a workflow deleted while they were
   * pending keeps them for their subscriptions: workflows/repository.ts, remove) once they have
   * ended, delivered or failed, and were written before the default retention's cutoff, oldest
   * first, through `event_messages_detached_created_idx`. One batch per call; `found` below
   * `batchSize` means none are left.
   */
  detachedMessages: (sql: postgres.ISql, defaultDays: number, batchSize: number) => sql<{ deleted: number; found: number }[]>`
    with candidates as (
      select m.id from event_messages m
       where m.execution_id is null and m.webhook_delivery_id is null
         and m.created_at < now() - make_interval(days => ${defaultDays}::int)
         and m.status <> 'pending'
       order by m.created_at
       limit ${batchSize}
       for update of m skip locked
    ),
    gone as (
      delete from event_messages x using candidates c where x.id = c.id returning 1
    )
    select (select count(*)::int from gone) as deleted, (select count(*)::int from candidates) as found`,
};

/** What a batch of a walk over the workflows with a retention of their own answers. */
interface OwnBatchRow {
  readonly deleted: number;
  readonly found: number;
  readonly lastWorkflowId: string | null;
}

interface BatchOutcome {
  readonly executions: number;
  readonly deliveries: number;
  readonly messages?: number;
  /** The walk has nothing more to delete this round. */
  readonly done: boolean;
}

/** One walk: each call deletes one batch, on the connection (or transaction) it is given. */
type Walk = (sql: postgres.ISql) => Promise<BatchOutcome>;

/**
 * A walk over the workflows with a retention of their own, a page of them at a time: a full batch
 * may have left rows in the page, so the same page comes again; else the walk moves past it, and
 * ends after the last page. `count` says what the deleted rows are.
 */
function ownWalk(statement: (sql: postgres.ISql, afterWorkflowId: string) => Promise<readonly OwnBatchRow[]>, batchSize: number, count: 'executions' | 'deliveries'): Walk {
  let afterWorkflowId = FIRST_UUID;
  return async (sql) => {
    const [row] = await statement(sql, afterWorkflowId);
    const deleted = row?.deleted ?? 0;
    const outcome = { executions: count === 'executions' ? deleted : 0, deliveries: count === 'deliveries' ? deleted : 0 };
    if ((row?.found ?? 0) >= batchSize) return { ...outcome, done: false };
    const lastWorkflowId = row?.lastWorkflowId ?? null;
    if (lastWorkflowId === null) return { ...outcome, done: true };
    afterWorkflowId = lastWorkflowId;
    return { ...outcome, done: false };
  };
}

function walks(defaultDays: number, batchSize: number): Walk[] {
  let position = DEFAULT_WALK_START;
  let deliveriesAfter = DELIVERY_WALK_START;
  return [
    ownWalk((sql, after) => purgeStatements.ownRetention(sql, after, batchSize), batchSize, 'executions'),
    ownWalk((sql, after) => purgeStatements.ownRetentionDeliveries(sql, after, batchSize), batchSize, 'deliveries'),
    async (sql) => {
      const [row] = await purgeStatements.defaultRetention(sql, defaultDays, position, batchSize);
      if (row?.finishedAt && row.workflowId && row.id) position = { finishedAt: row.finishedAt, workflowId: row.workflowId, id: row.id };
      return { executions: row?.deleted ?? 0, deliveries: 0, done: (row?.found ?? 0) < batchSize };
    },
    async (sql) => {
      const [row] = await purgeStatements.unexecutedDeliveries(sql, defaultDays, batchSize, deliveriesAfter);
      if (row?.receivedAt) deliveriesAfter = row.receivedAt;
      return { executions: 0, deliveries: row?.deleted ?? 0, done: (row?.found ?? 0) < batchSize };
    },
    async (sql) => {
      const [row] = await purgeStatements.detachedMessages(sql, defaultDays, batchSize);
      return { executions: 0, deliveries: 0, messages: row?.deleted ?? 0, done: (row?.found ?? 0) < batchSize };
    },
  ];
}

/** The advisory lock each batch takes for its transaction: one process's batches at a time. */
const LOCK_KEY = 'autonode:retention-purge';

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * One round of the purge (the engine's housekeeping runs one a minute): the walks in turn until
 * all are done, the time is up, or a stop is asked for. Each batch is its own transaction that
 * first tries the transaction-level advisory lock (it never waits for it): the lock is held only
 * while a batch runs, on the connection the batch borrowed, and returns with its commit, so the
 * round holds no connection between batches. A batch that finds the lock taken ends the round
 * (another process is purging); `ran: false` when that was its first.
 */
export async function purgeExpired(sql: Sql, options: PurgeOptions): Promise<PurgeResult> {
  const batchSize = options.batchSize ?? PURGE_DEFAULTS.batchSize;
  const pauseMs = options.pauseMs ?? PURGE_DEFAULTS.pauseMs;
  const maxRunMs = options.maxRunMs ?? PURGE_DEFAULTS.maxRunMs;
  const shouldStop = options.shouldStop ?? (() => false);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError('batchSize must be a positive integer');

  const started = performance.now();
  let pending = walks(options.defaultDays, batchSize);
  let executions = 0;
  let deliveries = 0;
  let messages = 0;
  let batches = 0;
  let deletedLast = false;
  while (pending.length > 0) {
    const next: Walk[] = [];
    for (const walk of pending) {
      if (shouldStop() || performance.now() - started >= maxRunMs) return { ran: true, executions, deliveries, messages, batches, finished: false };
      // A batch that deleted nothing wrote nothing: the next one need not wait.
      if (deletedLast) await sleep(pauseMs);
      const outcome = await sql.begin(async (tx) => {
        const [lock] = await tx<{ locked: boolean }[]>`select pg_try_advisory_xact_lock(hashtextextended(${LOCK_KEY}, 0)) as locked`;
        return lock?.locked ? walk(tx) : ('locked' as const);
      });
      if (outcome === 'locked') return { ran: batches > 0, executions, deliveries, messages, batches, finished: false };
      batches += 1;
      executions += outcome.executions;
      deliveries += outcome.deliveries;
      messages += outcome.messages ?? 0;
      deletedLast = outcome.executions + outcome.deliveries + (outcome.messages ?? 0) > 0;
      if (!outcome.done) next.push(walk);
    }
    pending = next;
  }
  return { ran: true, executions, deliveries, messages, batches, finished: true };
}
