import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { parseSchedule, type Schedule } from '../src/engine/schedule.js';
import { createWorkflow } from './engine-helpers.js';
import { buildTestApp, expectProblem, signUp, type SignedInUser } from './helpers.js';

function scheduleOf(cron: string, timezone: string): Schedule {
  const parsed = parseSchedule(cron, timezone);
  if (!('schedule' in parsed)) throw new Error(`refused: ${JSON.stringify(parsed.errors)}`);
  return parsed.schedule;
}

/** What the scheduler fires from `after` on: each run's successor is the schedule's next run after it. */
function firedByScheduler(schedule: Schedule, after: Date, count: number): string[] {
  const fired: string[] = [];
  for (let run = schedule.nextRun(after); run && fired.length < count; run = schedule.nextRun(run)) fired.push(run.toISOString());
  return fired;
}

describe('schedules across daylight-saving changes', () => {
  // Each case: the listing from just before a clock change must be what the scheduler fires,
  // strictly increasing (no instant twice), with the instants a person would expect.
  const cases = [
    {
      zone: 'America/New_York, spring forward (02:00 EST -> 03:00 EDT)',
      cron: '30 * 14 3 *',
      timezone: 'America/New_York',
      after: '2027-03-14T04:00:00Z',
      // 00:30 EST, 01:30 EST, then 03:30 EDT (02:30 does not exist that day), 04:30 EDT.
      expected: ['2027-03-14T05:30:00.000Z', '2027-03-14T06:30:00.000Z', '2027-03-14T07:30:00.000Z', '2027-03-14T08:30:00.000Z'],
    },
    {
      zone: 'America/New_York, fall back (02:00 EDT -> 01:00 EST)',
      cron: '*/30 0-3 7 11 *',
      timezone: 'America/New_York',
      after: '2027-11-07T03:59:00Z',
      // 00:00, 00:30, 01:00, 01:30 EDT; the repeated 01:00-01:59 (EST) is not fired again; 02:00 EST on.
      expected: ['2027-11-07T04:00:00.000Z', '2027-11-07T04:30:00.000Z', '2027-11-07T05:00:00.000Z', '2027-11-07T05:30:00.000Z', '2027-11-07T07:00:00.000Z'],
    },
    {
      zone: 'Europe/Paris, spring forward (02:00 CET -> 03:00 CEST)',
      cron: '15 1-4 28 3 *',
      timezone: 'Europe/Paris',
      after: '2027-03-27T23:00:00Z',
      // 01:15 CET, then 03:15 and 04:15 CEST (02:15 does not exist that day).
      expected: ['2027-03-28T00:15:00.000Z', '2027-03-28T01:15:00.000Z', '2027-03-28T02:15:00.000Z'],
    },
    {
      zone: 'Europe/Paris, fall back (03:00 CEST -> 02:00 CET)',
      cron: '0 * 31 10 *',
      timezone: 'Europe/Paris',
      after: '2027-10-30T22:30:00Z',
      // 01:00 CEST, 02:00 CEST, then 03:00 CET (the repeated 02:00 CET is not fired again).
      expected: ['2027-10-30T23:00:00.000Z', '2027-10-31T00:00:00.000Z', '2027-10-31T02:00:00.000Z'],
    },
  ];

  it.each(cases)('$zone: the listing is what the scheduler fires, each instant once', ({ cron, timezone, after, expected }) => {
    const schedule = scheduleOf(cron, timezone);
    const listed = schedule.nextRuns(expected.length, new Date(after)).map((run) => run.toISOString());
    expect(listed).toEqual(expected);
    expect(listed).toEqual(firedByScheduler(schedule, new Date(after), expected.length));
  });
});

describe('schedules stepped from inside an hour that a fall-back repeats', () => {
  // The scheduler steps from now, and a job is created, resumed or caught up at any time: from the
  // repeated hour's second pass, the next run must still be after `after` (croner alone answers
  // the slot's first pass, already gone, which a scheduler would fire again every tick), and it is
  // the first slot after the repeated hour, as that hour fires on its first pass only.
  const cases = [
    { cron: '*/20 * * * *', timezone: 'America/New_York', after: '2026-11-01T06:05:00Z', next: '2026-11-01T07:00:00.000Z' },
    { cron: '* * * * *', timezone: 'America/New_York', after: '2026-11-01T06:05:00Z', next: '2026-11-01T07:00:00.000Z' },
    { cron: '*/15 * * * *', timezone: 'Europe/Paris', after: '2026-10-25T01:10:00Z', next: '2026-10-25T02:00:00.000Z' },
    { cron: '*/15 * * * *', timezone: 'Europe/London', after: '2026-10-25T01:10:00Z', next: '2026-10-25T02:00:00.000Z' },
    { cron: '*/15 * * * *', timezone: 'Australia/Sydney', after: '2026-04-04T16:10:00Z', next: '2026-04-04T17:00:00.000Z' },
    // A daily run in the repeated hour, asked about during its second pass: tomorrow's.
    { cron: '30 1 * * *', timezone: 'America/New_York', after: '2026-11-01T06:00:00Z', next: '2026-11-02T06:30:00.000Z' },
  ];

  it.each(cases)('$cron in $timezone from $after: next $next, and every later run after the one before', ({ cron, timezone, after, next }) => {
    const schedule = scheduleOf(cron, timezone);
    expect(schedule.nextRun(new Date(after))?.toISOString()).toBe(next);
    const listed = schedule.nextRuns(5, new Date(after)).map((run) => Date.parse(run.toISOString()));
    expect(listed[0]).toBe(Date.parse(next));
    for (const [index, run] of listed.entries()) expect(run).toBeGreaterThan(index === 0 ? Date.parse(after) : (listed[index - 1] as number));
  });
});

describe('schedules that never fire', () => {
  let app: App;
  let user: SignedInUser;
  let workflowId: string;
  beforeAll(async () => {
    app = await buildTestApp();
    user = await signUp(app);
    workflowId = await createWorkflow(app, user, { nodes: [{ id: 'start', type: 'trigger.schedule' }], edges: [] });
  });
  afterAll(async () => {
    await app.close();
  });

  it.each(['0 0 31 2,4,6,9,11 *', '0 0 30 2 *', '0 0 31 4 *'])('refuses %s with 400 INVALID_SCHEDULE, not a 500', async (cron) => {
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { cookie: user.cookie },
      payload: { name: `never ${cron}`, workflowId, cron, status: 'ACTIVE' },
    });
    expect(expectProblem(response, 400)).toMatchObject({ code: 'INVALID_SCHEDULE', errors: [{ path: 'cron' }] });
  });
});
