import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { buildTestApp, expectProblem, lacksConcurrentConnections, sampleGraph, signUp, type SignedInUser } from './helpers.js';

describe('jobs', () => {
  let app: App;
  let alice: SignedInUser;
  let workflowId: string;
  const as = (user: SignedInUser) => ({ cookie: user.cookie });

  beforeAll(async () => {
    app = await buildTestApp();
    alice = await signUp(app);
    workflowId = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: as(alice), payload: { name: 'wf', ...sampleGraph } })).json().id;
  });
  afterAll(async () => {
    await app.close();
  });

  const createJob = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/api/v1/jobs', headers: { ...as(alice), ...headers }, payload: { workflowId, ...body } });

  it('creates a paused job without a next run, and resuming computes it in the job’s timezone', async () => {
    const created = await createJob({ name: 'weekday 9:00', cron: '0 9 * * 1-5', timezone: 'Europe/Paris', definitionNL: 'every weekday at nine' });
    expect(created.statusCode).toBe(201);
    const job = created.json();
    expect(job).toMatchObject({ status: 'PAUSED', nextRunAt: null, lastRunAt: null, locked: false, timezone: 'Europe/Paris', workflowId });
    expect(job).not.toHaveProperty('userId');

    const read = await app.inject({ url: `/api/v1/jobs/${job.id}`, headers: as(alice) });
    const resumed = await app.inject({
      method: 'PATCH',
      url: `/api/v1/jobs/${job.id}`,
      headers: { ...as(alice), 'if-match': String(read.headers.etag) },
      payload: { status: 'ACTIVE' },
    });
    expect(resumed.statusCode).toBe(200);
    const nextRunAt = new Date(resumed.json().nextRunAt);
    expect(nextRunAt.getTime()).toBeGreaterThan(Date.now());
    const parisTime = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Paris', hour: '2-digit', minute: '2-digit', weekday: 'short' }).format(nextRunAt);
    expect(parisTime).toMatch(/^(Mon|Tue|Wed|Thu|Fri) 09:00$/);

    expectProblem(
      await app.inject({ method: 'PATCH', url: `/api/v1/jobs/${job.id}`, headers: { ...as(alice), 'if-match': String(read.headers.etag) }, payload: { name: 'stale' } }),
      412,
    );

    const paused = await app.inject({ method: 'PATCH', url: `/api/v1/jobs/${job.id}`, headers: as(alice), payload: { status: 'PAUSED' } });
    expect(paused.json().nextRunAt).toBeNull();
  });

  it('versions a job: each PATCH bumps its ETag, a stale one is refused with 412, the scheduler’s bookkeeping leaves it', async () => {
    const job = (await createJob({ name: 'versioned', cron: '0 * * * *' })).json();
    expect(job).not.toHaveProperty('version');
    const url = `/api/v1/jobs/${job.id}`;
    const read = await app.inject({ url, headers: as(alice) });
    expect(read.headers.etag).toBe('"1"');

    const first = await app.inject({ method: 'PATCH', url, headers: { ...as(alice), 'if-match': '"1"' }, payload: { name: 'first' } });
    expect(first.statusCode).toBe(200);
    expect(first.headers.etag).toBe('"2"');
    expect(first.json()).not.toHaveProperty('version');
    expectProblem(await app.inject({ method: 'PATCH', url, headers: { ...as(alice), 'if-match': '"1"' }, payload: { name: 'second' } }), 412);

    const after = await app.inject({ url, headers: as(alice) });
    expect(after.headers.etag).toBe(first.headers.etag);
    expect(after.json().name).toBe('first');

    // What the scheduler writes when it starts a run is not a change a PATCH could conflict with.
    await app.database.sql`update jobs set locked = true, last_run_at = now() where id = ${job.id}`;
    const started = await app.inject({ url, headers: as(alice) });
    expect(started.json().locked).toBe(true);
    expect(started.headers.etag).toBe('"2"');

    expectProblem(await app.inject({ method: 'DELETE', url, headers: { ...as(alice), 'if-match': '"1"' } }), 412);
    expect((await app.inject({ method: 'DELETE', url, headers: { ...as(alice), 'if-match': '"2"' } })).statusCode).toBe(204);
    expectProblem(await app.inject({ url, headers: as(alice) }), 404);
  });

  it('lists the next runs of the schedule, 1..50 of them', async () => {
    const job = (await createJob({ name: 'every 15', cron: '*/15 * * * *' })).json();
    const response = await app.inject({ url: `/api/v1/jobs/${job.id}/next-runs?count=4`, headers: as(alice) });
    const runs: string[] = response.json().runs;
    expect(runs).toHaveLength(4);
    for (const [index, run] of runs.entries()) {
      expect(new Date(run).getUTCMinutes() % 15).toBe(0);
      if (index > 0) expect(Date.parse(run) - Date.parse(runs[index - 1] as string)).toBe(15 * 60_000);
    }
    expect((await app.inject({ url: `/api/v1/jobs/${job.id}/next-runs`, headers: as(alice) })).json().runs).toHaveLength(5);
    expectProblem(await app.inject({ url: `/api/v1/jobs/${job.id}/next-runs?count=51`, headers: as(alice) }), 400);
    expectProblem(await app.inject({ url: `/api/v1/jobs/${job.id}/next-runs?count=0`, headers: as(alice) }), 400);
  });

  it.each([
    [{ cron: '61 * * * *' }, 'cron'],
    [{ cron: '* * * *' }, 'cron'],
    [{ cron: '0 0 * * * *' }, 'cron'],
    [{ cron: '0 0 30 2 *' }, 'cron'],
    [{ cron: '* * * * *', timezone: 'Mars/Olympus' }, 'timezone'],
    [{ cron: '* * * * *', status: 'RUNNING' }, 'status'],
    [{ cron: '* * * * *', locked: true }, 'locked'],
    [{ cron: '* * * * *', nextRunAt: '2030-01-01T00:00:00Z' }, 'nextRunAt'],
  ])('refuses %o with 400', async (body, path) => {
    const problem = expectProblem(await createJob({ name: 'bad', ...body }), 400);
    expect(problem.errors).toEqual(expect.arrayContaining([expect.objectContaining({ path })]));
  });

  it('refuses a workflow that is not the caller’s as if it did not exist', async () => {
    const bob = await signUp(app);
    const response = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: as(bob),
      payload: { name: 'steal', workflowId, cron: '* * * * *' },
    });
    expectProblem(response, 404);
    const missing = await app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: as(bob),
      payload: { name: 'ghost', workflowId: '00000000-0000-4000-8000-000000000000', cron: '* * * * *' },
    });
    expect(missing.json().detail.replace(/'[^']+'/, 'ID')).toBe(response.json().detail.replace(/'[^']+'/, 'ID'));
  });

  it('honours Idempotency-Key: same body returns the first job, another body is 409', async () => {
    const key = `job-${Date.now()}`;
    const first = await createJob({ name: 'once', cron: '0 * * * *' }, { 'idempotency-key': key });
    const again = await createJob({ cron: '0 * * * *', name: 'once' }, { 'idempotency-key': key });
    expect(first.statusCode).toBe(201);
    expect(again.statusCode).toBe(201);
    expect(again.json()).toEqual(first.json());
    expect(again.headers.location).toBe(first.headers.location);
    const other = await createJob({ name: 'twice', cron: '0 * * * *' }, { 'idempotency-key': key });
    expect(expectProblem(other, 409).code).toBe('IDEMPOTENCY_KEY_REUSED');
    const named = (await app.inject({ url: '/api/v1/jobs?searchQuery=once', headers: as(alice) })).json();
    expect(named.items).toHaveLength(1);
  });

  it('filters by status and workflow', async () => {
    const user = await signUp(app);
    const headers = as(user);
    const wfA = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'A', ...sampleGraph } })).json().id;
    const wfB = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'B', ...sampleGraph } })).json().id;
    const make = (workflow: string, status: string, name: string) =>
      app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: { workflowId: workflow, status, name, cron: '0 0 * * *' } });
    await make(wfA, 'ACTIVE', 'a-active');
    await make(wfA, 'PAUSED', 'a-paused');
    await make(wfB, 'ACTIVE', 'b-active');
    const names = async (query: string) =>
      (await app.inject({ url: `/api/v1/jobs?${query}`, headers })).json().items.map((item: { name: string }) => item.name).sort();
    expect(await names('status=ACTIVE')).toEqual(['a-active', 'b-active']);
    expect(await names(`workflowId=${wfA}`)).toEqual(['a-active', 'a-paused']);
    expect(await names(`workflowId=${wfB}&status=PAUSED`)).toEqual([]);
    expect(await names(`workflowId=${workflowId}`)).toEqual([]);
  });

  it('is deleted with its workflow, in one go', async () => {
    const user = await signUp(app);
    const headers = as(user);
    const wf = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'doomed', ...sampleGraph } })).json().id;
    const job = (await app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: { workflowId: wf, name: 'j', cron: '0 0 * * *' } })).json();
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/workflows/${wf}`, headers })).statusCode).toBe(204);
    expectProblem(await app.inject({ url: `/api/v1/jobs/${job.id}`, headers }), 404);
  });
});

describe('job limits', () => {
  let app: App;
  beforeAll(async () => {
    app = await buildTestApp({ JOBS_PER_USER_MAX: '3', SCHEDULE_MIN_INTERVAL_S: '300' });
  });
  afterAll(async () => {
    await app.close();
  });

  async function userWithWorkflow() {
    const user = await signUp(app);
    const headers = { cookie: user.cookie };
    const workflowId = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'wf', ...sampleGraph } })).json().id as string;
    const create = (body: Record<string, unknown>) => app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: { workflowId, name: 'j', ...body } });
    return { headers, create };
  }

  it('refuses a job beyond JOBS_PER_USER_MAX with 409 JOB_LIMIT_REACHED, even when asked all at once', async () => {
    const { headers, create } = await userWithWorkflow();
    const answers = await Promise.all(Array.from({ length: 6 }, () => create({ cron: '0 0 * * *' })));
    expect(answers.map((answer) => answer.statusCode).sort()).toEqual([201, 201, 201, 409, 409, 409]);
    const refused = answers.find((answer) => answer.statusCode === 409);
    expect(expectProblem(refused as (typeof answers)[number], 409).code).toBe('JOB_LIMIT_REACHED');
    const page = (await app.inject({ url: '/api/v1/jobs?pageSize=100', headers })).json();
    expect(page.items).toHaveLength(3);

    // Another user has a limit of their own; a deleted job makes room.
    expect((await (await userWithWorkflow()).create({ cron: '0 0 * * *' })).statusCode).toBe(201);
    expect((await app.inject({ method: 'DELETE', url: `/api/v1/jobs/${page.items[0].id}`, headers })).statusCode).toBe(204);
    expect((await create({ cron: '0 0 * * *' })).statusCode).toBe(201);
  });

  it('refuses a schedule whose runs come closer than SCHEDULE_MIN_INTERVAL_S anywhere, not only at first', async () => {
    const { headers, create } = await userWithWorkflow();
    const refusedWith = async (cron: string, timezone = 'UTC') => {
      const problem = expectProblem(await create({ cron, timezone }), 400);
      expect(problem.code).toBe('INVALID_SCHEDULE');
      const errors = problem.errors as { path: string; message: string }[];
      expect(errors).toEqual([expect.objectContaining({ path: 'cron' })]);
      return errors[0]?.message;
    };
    // Every minute, and a seconds field (six fields are not a schedule at all).
    expect(await refusedWith('* * * * *')).toMatch(/60 s apart.*300 s/);
    await refusedWith('* * * * * *');
    // Seven minutes apart within the hour, but 56 -> 60 is four minutes.
    expect(await refusedWith('*/7 * * * *')).toMatch(/240 s apart/);
    // Hours apart within a day, one minute apart across midnight.
    expect(await refusedWith('0,59 0,23 * * *')).toMatch(/60 s apart/);
    // The last day of a month and the first of the next are consecutive days too.
    await refusedWith('0,59 0,23 1,L * *');

    // Exactly the minimum, and the same midnight pattern on days that never follow each other.
    expect((await create({ cron: '*/5 * * * *' })).statusCode).toBe(201);
    expect((await create({ cron: '0,59 0,23 * * 1' })).statusCode).toBe(201);
    const job = (await create({ cron: '0 * * * *', timezone: 'Europe/Paris' })).json();

    // A PATCH that changes the schedule is checked the same way; one that leaves it alone is not.
    const patched = await app.inject({ method: 'PATCH', url: `/api/v1/jobs/${job.id}`, headers, payload: { cron: '*/2 * * * *' } });
    expect(expectProblem(patched, 400).errors).toEqual([expect.objectContaining({ path: 'cron' })]);
    expect((await app.inject({ method: 'PATCH', url: `/api/v1/jobs/${job.id}`, headers, payload: { name: 'renamed' } })).statusCode).toBe(200);
  });

  // A second app beside this file's: the embedded database serves one connection.
  it.skipIf(lacksConcurrentConnections())('counts the gap a clock change makes between two runs', async () => {
    const app = await buildTestApp({ SCHEDULE_MIN_INTERVAL_S: '7200' });
    try {
      const user = await signUp(app);
      const headers = { cookie: user.cookie };
      const workflowId = (await app.inject({ method: 'POST', url: '/api/v1/workflows', headers, payload: { name: 'wf', ...sampleGraph } })).json().id;
      const create = (timezone: string) => app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: { workflowId, name: 'j', cron: '0 1,3 * * *', timezone } });
      // 01:00 and 03:00 are two hours apart, except on the night New York skips 02:00.
      expect((await create('UTC')).statusCode).toBe(201);
      const problem = expectProblem(await create('America/New_York'), 400);
      expect((problem.errors as { message: string }[])[0]?.message).toMatch(/3600 s apart .*clock changes/);
    } finally {
      await app.close();
    }
  });
});
