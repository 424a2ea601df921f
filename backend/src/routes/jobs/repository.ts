import { and, eq, ilike, or, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { jobs, workflows } from '../../db/schema/index.js';
import { parseSchedule, type Schedule } from '../../engine/schedule.js';
import { checkIfMatch, etagOf, iso, isoOrNull } from '../../lib/http.js';
import { keysetPlan, likePattern, toPage, type ListParams, type Page, type SortKey } from '../../lib/pagination.js';
import { notFound, ProblemError } from '../../lib/problem.js';
import type { CreateJobInput, JobDto, UpdateJobInput } from './schemas.js';

export type JobRow = typeof jobs.$inferSelect;

const sortKeys: Record<string, SortKey> = {
  createdAt: { column: jobs.createdAt, kind: 'timestamp' },
  updatedAt: { column: jobs.updatedAt, kind: 'timestamp' },
  name: { column: jobs.name, kind: 'text' },
};

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

/** Jobs carry no version column; their last change (millisecond precision) is the version. */
export const jobEtag = (row: { updatedAt: Date }) => etagOf(row.updatedAt.getTime());

export function scheduleOf(cron: string, timezone: string): Schedule {
  const parsed = parseSchedule(cron, timezone);
  if ('errors' in parsed) throw new ProblemError(400, 'INVALID_SCHEDULE', 'The schedule is invalid.', { errors: parsed.errors });
  return parsed.schedule;
}

/** Only an ACTIVE job has a next run; pausing or archiving clears it, resuming computes it afresh. */
const nextRunAtFor = (status: JobRow['status'], schedule: Schedule) => (status === 'ACTIVE' ? schedule.nextRun() : null);

async function assertOwnWorkflow(db: Db, userId: string, workflowId: string): Promise<void> {
  const [row] = await db.select({ id: workflows.id }).from(workflows).where(and(eq(workflows.userId, userId), eq(workflows.id, workflowId)));
  if (!row) throw notFound('workflow', workflowId);
}

export async function list(db: Db, userId: string, params: ListParams & { status?: JobRow['status'] | undefined; workflowId?: string | undefined }): Promise<Page<JobDto>> {
  const plan = keysetPlan(params, sortKeys, jobs.id);
  const conditions: (SQL | undefined)[] = [eq(jobs.userId, userId), plan.after];
  if (params.status) conditions.push(eq(jobs.status, params.status));
  if (params.workflowId) conditions.push(eq(jobs.workflowId, params.workflowId));
  if (params.searchQuery) {
    const pattern = likePattern(params.searchQuery);
    conditions.push(or(ilike(jobs.name, pattern), ilike(jobs.definitionNL, pattern)));
  }
  const rows = await db.select().from(jobs).where(and(...conditions)).orderBy(...plan.orderBy).limit(plan.limit).offset(plan.offset);
  return toPage(rows, params, (row) => (params.sortBy === 'name' ? row.name : row[params.sortBy as 'createdAt' | 'updatedAt']), present);
}

export async function get(db: Db, userId: string, id: string): Promise<JobRow | null> {
  const [row] = await db.select().from(jobs).where(and(eq(jobs.userId, userId), eq(jobs.id, id)));
  return row ?? null;
}

export async function create(db: Db, userId: string, input: CreateJobInput): Promise<JobRow> {
  const schedule = scheduleOf(input.cron, input.timezone);
  await assertOwnWorkflow(db, userId, input.workflowId);
  const [row] = await db
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
  if (!row) throw new Error('insert returned no row');
  return row;
}

/** Changes a job under a row lock (If-Match, schedule and ownership checks see what is written). */
export async function update(db: Db, userId: string, id: string, input: UpdateJobInput, ifMatch: string | undefined): Promise<JobRow | null> {
  return db.transaction(async (tx) => {
    const [current] = await tx.select().from(jobs).where(and(eq(jobs.userId, userId), eq(jobs.id, id))).for('update');
    if (!current) return null;
    checkIfMatch(ifMatch, jobEtag(current));
    const status = input.status ?? current.status;
    const schedule = scheduleOf(input.cron ?? current.cron, input.timezone ?? current.timezone);
    if (input.workflowId && input.workflowId !== current.workflowId) await assertOwnWorkflow(tx, userId, input.workflowId);
    const scheduleChanged = schedule.cron !== current.cron || schedule.timezone !== current.timezone || status !== current.status;
    // updatedAt strictly increases, so the ETag changes even for two writes within one millisecond.
    const updatedAt = new Date(Math.max(Date.now(), current.updatedAt.getTime() + 1));
    const [row] = await tx
      .update(jobs)
      .set({
        name: input.name ?? current.name,
        definitionNL: input.definitionNL ?? current.definitionNL,
        workflowId: input.workflowId ?? current.workflowId,
        cron: schedule.cron,
        timezone: schedule.timezone,
        status,
        nextRunAt: scheduleChanged ? nextRunAtFor(status, schedule) : current.nextRunAt,
        updatedAt,
      })
      .where(eq(jobs.id, current.id))
      .returning();
    return row ?? null;
  });
}

export async function remove(db: Db, userId: string, id: string, ifMatch: string | undefined): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [current] = await tx
      .select({ id: jobs.id, updatedAt: jobs.updatedAt })
      .from(jobs)
      .where(and(eq(jobs.userId, userId), eq(jobs.id, id)))
      .for('update');
    if (!current) return false;
    checkIfMatch(ifMatch, jobEtag(current));
    await tx.delete(jobs).where(eq(jobs.id, current.id));
    return true;
  });
}
