import { Cron } from 'croner';
import type { ProblemFieldError } from '../lib/problem.js';

/** A validated cron schedule: 5 fields (minute hour day-of-month month day-of-week) in an IANA timezone. */
export interface Schedule {
  readonly cron: string;
  readonly timezone: string;
  /** The first occurrences strictly after `after`. */
  nextRuns(count: number, after?: Date): Date[];
  nextRun(after?: Date): Date | null;
}

export function isTimezone(timezone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses with croner (a maintained parser with timezone support). Returns the field errors for
 * a 400 instead of throwing, so the caller reports them with the request's own paths.
 */
export function parseSchedule(cron: string, timezone: string): { schedule: Schedule } | { errors: ProblemFieldError[] } {
  const errors: ProblemFieldError[] = [];
  const fields = cron.trim().split(/\s+/);
  if (fields.length !== 5) {
    errors.push({ path: 'cron', message: 'use 5 fields: minute hour day-of-month month day-of-week' });
  }
  if (!isTimezone(timezone)) errors.push({ path: 'timezone', message: `'${timezone}' is not an IANA timezone (for example Europe/Paris)` });
  if (errors.length > 0) return { errors };

  let pattern: Cron;
  try {
    pattern = new Cron(fields.join(' '), { timezone, paused: true, mode: '5-part' });
  } catch (error) {
    return { errors: [{ path: 'cron', message: error instanceof Error ? error.message.replace(/^CronPattern: /, '') : 'is not a valid cron expression' }] };
  }
  if (pattern.nextRun() === null) return { errors: [{ path: 'cron', message: 'never fires (no such date)' }] };

  return {
    schedule: {
      cron: fields.join(' '),
      timezone,
      nextRuns: (count, after = new Date()) => pattern.nextRuns(count, after),
      nextRun: (after = new Date()) => pattern.nextRun(after),
    },
  };
}
