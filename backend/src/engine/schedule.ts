import { Cron } from 'croner';
import type { ProblemFieldError } from '../lib/problem.js';

/** A validated cron schedule: 5 fields (minute hour day-of-month month day-of-week) in an IANA timezone. */
export interface Schedule {
  readonly cron: string;
  readonly timezone: string;
  /** The first occurrences strictly after `after`: the runs the scheduler fires, in order, each once. */
  nextRuns(count: number, after?: Date): Date[];
  /** The first occurrence strictly after `after` (the scheduler's step); null if there is none. */
  nextRun(after?: Date): Date | null;
}

/** More than the minutes of any repeated hour (an hour at most): nextRun's steps through one. */
const MAX_STEPS_THROUGH_REPEATED_HOUR = 120;

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
  const croner = (after: Date): Date | null => {
    try {
      return pattern.nextRun(after);
    } catch (error) {
      // croner searches recursively: for a date that never comes (31 February, April 31) it can
      // overflow the stack instead of answering null.
      if (error instanceof RangeError) return null;
      throw error;
    }
  };
  // Always strictly after `after`. From inside the second pass of an hour a fall-back repeats,
  // croner answers the slot's first pass, already gone (01:20 EDT for 01:05 EST): a scheduler
  // would fire that past slot again every tick until the hour ended. Stepping on from croner's
  // answers walks the first pass's remaining slots (at most one an hour's minutes) to the first
  // one after the repeated hour, which is the rule: such an hour fires on its first pass only.
  const nextRun = (after: Date = new Date()): Date | null => {
    let run = croner(after);
    for (let step = 0; run !== null && run.getTime() <= after.getTime(); step++) {
      if (step === MAX_STEPS_THROUGH_REPEATED_HOUR) throw new Error(`cron '${cron}' in ${timezone}: no run after ${after.toISOString()} found by stepping`);
      run = croner(run);
    }
    return run;
  };
  if (nextRun() === null) return { errors: [{ path: 'cron', message: 'never fires (no such date)' }] };

  return {
    schedule: {
      cron: fields.join(' '),
      timezone,
      // Step by step, as the scheduler goes from one run to the next, so the listing is what it
      // fires: croner's own nextRuns lists the first instant after a spring-forward gap twice.
      nextRuns: (count, after = new Date()) => {
        const runs: Date[] = [];
        for (let run = nextRun(after); run !== null && runs.length < count; run = nextRun(run)) runs.push(run);
        return runs;
      },
      nextRun,
    },
  };
}
