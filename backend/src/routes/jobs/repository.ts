import { and, eq, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { jobs, workflows } from '../../db/schema/index.js';
import { parseSchedule, type Schedule } from '../../engine/schedule.js';
import { gapBelow } from '../../engine/schedule-interval.js';
import { removeIfMatch, updateIfMatch, versionEtag } from '../../lib/conditional-update.js';
import { iso, isoOrNull } from '../../lib/http.js';
import { columnSortKeys, getOwned, listOwned, type ListParams, type Page } from '../../lib/pagination.js';
import { createWithinLimit } from '../../lib/per-user-limit.js';
import { notFound, ProblemError } from '../../lib/problem.js';
import type { CreateJobInput, JobDto, UpdateJobInput } from './schemas.js';

export type JobRow = typeof jobs.$inferSelect;

const sortKeys = columnSortKeys(jobs, { createdAt: 'timestamp', updatedAt: 'timestamp', name: 'text' });

export function present(row: JobRow): JobDto {
  return {
    id: row.id,
    name: row.name,
    definitionNL: row.definitionNL,
    workflowId: row.workflowId,
    cron: row.cron,
    timezone: row.timezone,
    status: row.status,
    nextRunAt: isoOrNull(row.nextRunAt),
    lastRunAt: isoOrNull(row.lastRunAt),
    locked: row.locked,
    createdAt: iso(row.createdAt),
    updatedAt: iso(row.updatedAt),
  };
}


export function scheduleOf(cron: string, timezone: string): Schedule {
  const parsed = parseSchedule(cron, timezone);
  if ('errors' in parsed) throw new ProblemError(400, 'INVALID_SCHEDULE', 'The schedule is invalid.', { errors: parsed.errors });
  return parsed.schedule;
}

/** The bounds a job's save enforces (config.jobs). */
export interface JobLimits {
  readonly maxPerUser: number;
  readonly minScheduleIntervalSeconds: number;
}

/** A new or changed schedule may not run two runs closer than the minimum, anywhere in its pattern. */
function assertScheduleInterval(schedule: Schedule, minSeconds: number): void {
  const gap = gapBelow(schedule.cron, schedule.timezone, minSeconds);
  if (gap === null) return;
  const where = gap.at ? ` (after the run of ${gap.at.toISOString()}, as the clock changes)` : '';
  throw new ProblemError(400, 'INVALID_SCHEDULE', 'The schedule is invalid.', {
    errors: [{ path: 'cron', message: `runs ${gap.seconds} s apart at its closest${where}; the shortest interval allowed is ${minSeconds} s` }],
  });
}

/** Only an ACTIVE job has a next run; pausing or archiving clears it, resuming computes it afresh. */
const nextRunAtFor = (status: JobRow['status'], schedule: Schedule) => (status === 'ACTIVE' ? schedule.nextRun() : null);

async function assertOwnWorkflow(db: Db, userId: string, workflowId: string): Promise<void> {
  const [row] = await db.select({ id: workflows.id }).from(workflows).where(and(eq(workflows.userId, userId), eq(workflows.id, workflowId)));
  if (!row) throw notFound('workflow', workflowId);
}

export async function list(db: Db, userId: string, params: ListParams & { status?: JobRow['status'] | undefined; workflowId?: string | undefined }): Promise<Page<JobDto>> {
  const filters = [params.status ? eq(jobs.status, params.status) : undefined, params.workflowId ? eq(jobs.workflowId, params.workflowId) : undefined];
  return listOwned(db, jobs, userId, params, { sortKeys, searchColumns: [jobs.name, jobs.definitionNL], filters }, present);
}

export async function get(db: Db, userId: string, id: string): Promise<JobRow | null> {
  return getOwned(db, jobs, userId, id);
}

/** Creates a job, within the user's limit (createWithinLimit), for a workflow of the user's. */
export async function create(db: Db, userId: string, input: CreateJobInput, limits: JobLimits): Promise<JobRow> {
  const schedule = scheduleOf(input.cron, input.timezone);
  assertScheduleInterval(schedule, limits.minScheduleIntervalSeconds);
  const limit = { maxPerUser: limits.maxPerUser, noun: 'jobs', code: 'JOB_LIMIT_REACHED' };
  const insert = async (tx: Db) => {
    const [row] = await tx
      .insert(jobs)
      .values({
        userId,
        workflowId: input.workflowId,
        name: input.name,
        definitionNL: input.definitionNL,
        cron: schedule.cron,
        timezone: schedule.timezone,
        status: input.status,
        nextRunAt: nextRunAtFor(input.status, schedule),
      })
      .returning();
    return row;
  };
  return createWithinLimit(db, jobs, userId, limit, insert, { underLock: (tx) => assertOwnWorkflow(tx, userId, input.workflowId) });
}

/** Changes a job under a row lock (If-Match, schedule and ownership checks see what is written). */
export async function update(db: Db, userId: string, id: string, input: UpdateJobInput, ifMatch: string | undefined, limits: JobLimits): Promise<JobRow | null> {
  return updateIfMatch(db, jobs, userId, id, ifMatch, async (tx, current) => {
    const status = input.status ?? current.status;
    const schedule = scheduleOf(input.cron ?? current.cron, input.timezone ?? current.timezone);
    // A schedule saved under an older, looser minimum stays as it is until it is changed.
    if (schedule.cron !== current.cron || schedule.timezone !== current.timezone) assertScheduleInterval(schedule, limits.minScheduleIntervalSeconds);
    if (input.workflowId && input.workflowId !== current.workflowId) await assertOwnWorkflow(tx, userId, input.workflowId);
    const scheduleChanged = schedule.cron !== current.cron || schedule.timezone !== current.timezone || status !== current.status;
    return {
      name: input.name ?? current.name,
      definitionNL: input.definitionNL ?? current.definitionNL,
      workflowId: input.workflowId ?? current.workflowId,
      cron: schedule.cron,
      timezone: schedule.timezone,
      status,
      nextRunAt: scheduleChanged ? nextRunAtFor(status, schedule) : current.nextRunAt,
    };
  });
}

export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  // Its executions are locked first, in id order, as the engine's writes lock them (see the
  // workflow's remove): the delete's ON DELETE SET NULL updates them. And the job's row is locked
  // FOR NO KEY UPDATE: a run's write checks its job key (KEY SHARE) while it holds its execution,
  // which this delete waits for; FOR UPDATE made the two wait for each other, PostgreSQL aborted
  // the run's write, and a takeover ran its step again.
  return removeIfMatch(
    db,
    jobs,
    userId,
    id,
    ifMatch,
    async (tx) => {
      await tx.execute(sql`select 1 from executions where job_id = ${id} and user_id = ${userId} order by id for update`);
    },
    'no key update',
  );
}
