import type { Sql } from '../db/client.js';
import type { WorkflowSnapshot } from '../db/schema/index.js';
import { parseSchedule } from './schedule.js';

export interface FiredJob {
  readonly jobId: string;
  readonly executionId: string;
  readonly userId: string;
  readonly scheduledAt: Date;
}

/**
 * Fires due jobs. In one transaction per batch: claims due ACTIVE, unlocked jobs with SKIP LOCKED
 * (two schedulers never take the same job), creates each job's `schedule` execution, locks the job
 * while that execution runs, and moves nextRunAt to the next occurrence after now, so a long
 * downtime yields one catch-up run, not one per missed slot.
 */
export async function fireDueJobs(sql: Sql, limit = 20): Promise<FiredJob[]> {
  return sql.begin(async (tx) => {
    const due = await tx<
      { id: string; user_id: string; workflow_id: string; cron: string; timezone: string; next_run_at: string; nodes: WorkflowSnapshot['nodes']; edges: WorkflowSnapshot['edges']; version: number }[]
    >`
      select j.id, j.user_id, j.workflow_id, j.cron, j.timezone, j.next_run_at, w.nodes, w.edges, w.version
        from jobs j join workflows w on w.id = j.workflow_id
       where j.status = 'ACTIVE' and j.next_run_at <= now() and not j.locked
       order by j.next_run_at
       limit ${limit}
       for update of j skip locked`;
    const fired: FiredJob[] = [];
    for (const job of due) {
      const parsed = parseSchedule(job.cron, job.timezone);
      const nextRunAt = 'schedule' in parsed ? parsed.schedule.nextRun(new Date()) : null;
      const scheduledAt = new Date(job.next_run_at);
      const input = { jobId: job.id, scheduledAt: scheduledAt.toISOString() };
      const [execution] = await tx<{ id: string }[]>`
        insert into executions (user_id, workflow_id, workflow_version, workflow_snapshot, job_id, trigger, input)
        values (${job.user_id}, ${job.workflow_id}, ${job.version}, ${JSON.stringify({ nodes: job.nodes, edges: job.edges })}::jsonb,
                ${job.id}, 'schedule', ${JSON.stringify(input)}::jsonb)
        returning id`;
      await tx`update jobs set locked = true, last_run_at = now(), next_run_at = ${nextRunAt ? nextRunAt.toISOString() : null}::timestamptz,
                      updated_at = now() where id = ${job.id}`;
      if (execution) fired.push({ jobId: job.id, executionId: execution.id, userId: job.user_id, scheduledAt });
    }
    return fired;
  });
}
