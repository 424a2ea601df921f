import { Cron, CronDate, CronPattern, type CronOptions } from 'croner';

/**
 * The shortest time between two consecutive runs of a 5-field schedule, computed instead of
 * sampled: a schedule can be irregular (`*\/7 * * * *` runs 7 minutes apart but 4 across the hour;
 * `0,59 0,23 * * *` 1 minute apart across midnight, if two days in a row match; a daylight-saving
 * change can bring two wall-clock times an hour apart to one minute apart), so the first few runs
 * prove nothing. Three sources of gaps, each checked exactly:
 * 1. within a day: the minute and hour fields give the same times of day on every matching day;
 * 2. across midnight: the last time of one day to the first of the next, when two consecutive days
 *    match (days are enumerated over 28 years, the calendar's full cycle of dates and weekdays);
 * 3. around each UTC-offset change of the timezone in the coming year: the runs croner itself
 *    computes there (it moves or drops wall-clock times that do not exist or repeat).
 * Cost: no croner call for (1); plain date arithmetic for (2), only when that gap could be the
 * shortest; a few croner calls per offset change for (3).
 */

/** croner's defaults as parseSchedule uses them: day-of-month OR day-of-week when both are set. */
const cronOptions: CronOptions = { domAndDow: false, mode: '5-part' };

const MINUTES_PER_DAY = 24 * 60;
const DAY_MS = 86_400_000;
const CALENDAR_CYCLE_DAYS = 28 * 366;

/**
 * The closest gap below `minSeconds` between consecutive runs, in seconds, and a run where it
 * occurs when known; null when no two runs are closer than `minSeconds`. `cron` must already be a
 * valid 5-field pattern (parseSchedule) and `minSeconds` at most a day.
 */
export function gapBelow(cron: string, timezone: string, minSeconds: number, now = new Date()): { seconds: number; at?: Date } | null {
  // Runs fall on whole minutes, so no two are closer than a minute.
  if (minSeconds <= 60) return null;
  const fields = cron.trim().split(/\s+/);
  const pattern = new CronPattern(fields.join(' '), undefined, { mode: '5-part' });

  const times: number[] = [];
  pattern.hour.forEach((hourSet, hour) => {
    if (!hourSet) return;
    pattern.minute.forEach((minuteSet, minute) => {
      if (minuteSet) times.push(hour * 60 + minute);
    });
  });
  let shortest = Number.POSITIVE_INFINITY;
  for (let index = 1; index < times.length; index++) shortest = Math.min(shortest, (times[index] as number) - (times[index - 1] as number));
  const acrossMidnight = MINUTES_PER_DAY - (times[times.length - 1] as number) + (times[0] as number);
  if (acrossMidnight < shortest && acrossMidnight * 60 < minSeconds && hasConsecutiveDays(fields, now)) shortest = acrossMidnight;
  if (shortest * 60 < minSeconds) return { seconds: shortest * 60 };

  return gapAroundOffsetChanges(fields.join(' '), timezone, minSeconds, now);
}

/** Whether two consecutive calendar days both match the day-of-month, month and day-of-week fields. */
function hasConsecutiveDays(fields: readonly string[], now: Date): boolean {
  const days = new CronPattern(`0 0 ${fields.slice(2).join(' ')}`, undefined, { mode: '5-part' });
  const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  let previous = false;
  for (let day = 0; day < CALENDAR_CYCLE_DAYS; day++) {
    // A numeric zone (0) makes CronDate read the date's UTC fields: calendar arithmetic, no Intl.
    const matches = new CronDate(new Date(start + day * DAY_MS), 0).match(days, cronOptions);
    if (matches && previous) return true;
    previous = matches;
  }
  return false;
}

/** The offset from UTC, in minutes, of `timezone` at `at`. */
function offsetMinutes(format: Intl.DateTimeFormat, at: number): number {
  const name = format.formatToParts(at).find((part) => part.type === 'timeZoneName')?.value ?? 'GMT';
  const match = /^GMT([+-])(\d{2}):(\d{2})$/.exec(name);
  if (!match) return 0;
  return (match[1] === '-' ? -1 : 1) * (Number(match[2]) * 60 + Number(match[3]));
}

/** The instants, in the year after `now`, at which `timezone`'s offset changes, with the size of the change. */
function offsetChanges(timezone: string, now: Date): { at: number; minutes: number }[] {
  const format = new Intl.DateTimeFormat('en-US', { timeZone: timezone, timeZoneName: 'longOffset' });
  const changes: { at: number; minutes: number }[] = [];
  // On whole minutes, as offsets change: the bisection then lands on the first minute of the new one.
  const start = Math.floor(now.getTime() / 60_000) * 60_000;
  let before = start;
  let offset = offsetMinutes(format, before);
  for (let day = 1; day <= 366; day++) {
    const after = start + day * DAY_MS;
    const next = offsetMinutes(format, after);
    if (next !== offset) {
      // Offsets change at most once a day: bisect to the minute.
      let low = before;
      let high = after;
      while (high - low > 60_000) {
        const middle = low + Math.floor((high - low) / 120_000) * 60_000;
        if (offsetMinutes(format, middle) === offset) low = middle;
        else high = middle;
      }
      changes.push({ at: high, minutes: Math.abs(next - offset) });
    }
    before = after;
    offset = next;
  }
  return changes;
}

function gapAroundOffsetChanges(cron: string, timezone: string, minSeconds: number, now: Date): { seconds: number; at: Date } | null {
  const changes = offsetChanges(timezone, now);
  if (changes.length === 0) return null;
  const schedule = new Cron(cron, { ...cronOptions, timezone, paused: true });
  for (const change of changes) {
    // Runs whose gap can differ from the wall-clock one: from the last before the change to the
    // first after the shifted stretch (runs croner moves out of a skipped hour land inside it).
    const end = change.at + (change.minutes + 1) * 60_000;
    let previous = schedule.previousRuns(1, new Date(change.at))[0] ?? null;
    let current = schedule.nextRun(previous ?? new Date(change.at - 1));
    for (let steps = 0; current !== null && steps < 10_000; steps++) {
      if (previous !== null) {
        const seconds = (current.getTime() - previous.getTime()) / 1000;
        if (seconds < minSeconds) return { seconds, at: previous };
      }
      if (current.getTime() > end) break;
      previous = current;
      current = schedule.nextRun(current);
    }
  }
  return null;
}
