/**
 * Data retention (API.md, Retention): executions are made by running workflows through the
 * engine, webhook deliveries through the real hook endpoint; only the clock is moved, by SQL on
 * their timestamps, to make them old. The purge runs as the engine's housekeeping runs it.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { createDbClient } from '../src/db/client.js';
import type { Engine } from '../src/engine/engine.js';
import { DEFAULT_WALK_START, purgeExpired, purgeStatements, type PurgeOptions } from '../src/retention/purge.js';
import { createSubscription, runWorkflow, startEngine, startTestHttpServer, waitForStatus, type TestHttpServer } from './engine-helpers.js';
import { buildTestApp, expectProblem, lacksConcurrentConnections, signUp, type SignedInUser } from './helpers.js';

interface UsageView {
  executions: number;
  steps: number;
  webhookDeliveries: number;
  eventDeliveries: number;
  payloadBytes: number;
}
interface WorkflowView {
  id: string;
  version: number;
  retentionDays: number | null;
  webhook: { url: string; hookId: string } | null;
}
interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Plans?: PlanNode[];
}

/** A manual trigger feeding a transform: two steps per run. */
const twoSteps = {
  nodes: [
    { id: 'start', type: 'trigger.manual', params: {} },
    { id: 't', type: 'transform', params: { expression: 'input.n + 1' } },
  ],
  edges: [{ source: 'start', target: 't' }],
};
/** Waits an hour: its runs stay paused (or are cancelled there). */
const waitsAnHour = {
  nodes: [
    { id: 'start', type: 'trigger.manual', params: {} },
    { id: 'wait', type: 'delay', params: { ms: 3_600_000 } },
  ],
  edges: [{ source: 'start', target: 'wait' }],
};
const httpGraph = (url: string) => ({
  nodes: [
    { id: 'start', type: 'trigger.manual', params: {} },
    { id: 'call', type: 'http.request', params: { method: 'GET', url } },
  ],
  edges: [{ source: 'start', target: 'call' }],
});

const ended = ['completed', 'failed', 'cancelled'];
/** No pause between batches: these rounds are a few batches, and their pacing is not what the tests check. */
const quick: Partial<PurgeOptions> = { pauseMs: 0 };

type Statement = ReturnType<(typeof purgeStatements)[keyof typeof purgeStatements]>;

function planNodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(planNodes)];
}

describe('data retention', () => {
  let app: App;
  let user: SignedInUser;
  let server: TestHttpServer;

  beforeAll(async () => {
    // Subscriptions to the local server pass the guard at save.
    app = await buildTestApp({ ENGINE_HTTP_ALLOW: '127.0.0.1' });
    user = await signUp(app);
    server = await startTestHttpServer();
  });
  afterAll(async () => {
    await server?.close();
    await app?.close();
  });

  const as = (who: SignedInUser = user) => ({ cookie: who.cookie });
  const sql = () => app.database.sql;

  /**
   * An engine for one test, stopped at its end: its housekeeping (a minute after it starts) must
   * not purge in the middle of a test that counts what its own purge deleted.
   */
  async function withEngine<T>(work: (engine: Engine) => Promise<T>, overrides: Record<string, string> = {}): Promise<T> {
    const engine = startEngine(app, overrides);
    try {
      return await work(engine);
    } finally {
      await engine.stop(2_000);
    }
  }

  async function workflow(graph: { nodes: unknown[]; edges: unknown[] } = twoSteps, retentionDays: number | null = null, who: SignedInUser = user): Promise<string> {
    const response = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: as(who), payload: { name: `retention ${randomUUID()}`, ...graph, retentionDays } });
    expect(response.statusCode, response.body).toBe(201);
    return response.json<WorkflowView>().id;
  }

  /** `count` runs of the workflow, each run through the engine to its end. */
  async function runs(workflowId: string, count: number, statuses = ['completed'], who: SignedInUser = user): Promise<string[]> {
    const ids: string[] = [];
    for (let n = 0; n < count; n += 1) {
      const started = await runWorkflow(app, who, workflowId, { n });
      ids.push((await waitForStatus(app, who, started.id, statuses)).id);
    }
    return ids;
  }

  /** Only the clock is moved: these executions were created, started and finished `days` days ago. */
  async function finishedDaysAgo(ids: readonly string[], days: number): Promise<void> {
    await sql()`
      update executions
         set created_at = now() - make_interval(days => ${days}, mins => 1),
             started_at = now() - make_interval(days => ${days}, mins => 1),
             finished_at = now() - make_interval(days => ${days})
       where id in ${sql()(ids)}`;
  }

  async function remaining(ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const rows = await sql()<{ id: string }[]>`select id from executions where id in ${sql()(ids)}`;
    return rows.map((row) => row.id).sort();
  }
  async function stepCount(ids: readonly string[]): Promise<number> {
    const [row] = await sql()<{ count: number }[]>`select count(*)::int as count from execution_steps where execution_id in ${sql()(ids)}`;
    return row?.count ?? 0;
  }
  const usage = async (who: SignedInUser = user) => (await app.inject({ url: '/api/v1/usage', headers: as(who) })).json<UsageView>();
  /** What user_usage should count: the user's rows, counted (the bytes are checked against what each test deleted). */
  async function recount(who: SignedInUser = user): Promise<Omit<UsageView, 'payloadBytes'>> {
    const [row] = await sql()<Omit<UsageView, 'payloadBytes'>[]>`
      select (select count(*)::int from executions where user_id = ${who.id}) as executions,
             (select count(*)::int from execution_steps s join executions e on e.id = s.execution_id where e.user_id = ${who.id}) as steps,
             (select count(*)::int from webhook_deliveries where user_id = ${who.id}) as "webhookDeliveries",
             (select count(*)::int from event_messages where user_id = ${who.id}) as "eventDeliveries"`;
    if (!row) throw new Error('no recount');
    return row;
  }
  const sorted = (ids: readonly string[]) => [...ids].sort();

  it('deletes ended executions past the default retention with their steps, keeps the recent ones, and usage drops by what went', async () => {
    const { expired, kept, before } = await withEngine(async () => {
      const plain = await workflow();
      const failing = await workflow(httpGraph(`${server.url}/fail?status=500`));
      const waiting = await workflow(waitsAnHour);
      const completed = await runs(plain, 4);
      const failed = await runs(failing, 1, ['failed']);
      const paused = await runs(waiting, 1, ['paused']);
      const cancel = await app.inject({ method: 'POST', url: `/api/v1/executions/${paused[0] ?? ''}/cancel`, headers: as() });
      expect(cancel.json<{ status: string }>().status).toBe('cancelled');
      return { expired: [completed[0], completed[1], failed[0], paused[0]].map(String), kept: [completed[2], completed[3]].map(String), before: await usage() };
    });
    expect(await stepCount(expired)).toBeGreaterThanOrEqual(7);
    await finishedDaysAgo(expired, 31);
    await finishedDaysAgo(kept.slice(0, 1), 29);
    const [gone] = await sql()<{ steps: number; bytes: number }[]>`
      select sum(step_count)::int as steps, sum(payload_bytes + step_payload_bytes)::int as bytes from executions where id in ${sql()(expired)}`;

    const result = await purgeExpired(sql(), { defaultDays: 30, ...quick });
    expect(result).toMatchObject({ ran: true, executions: 4, deliveries: 0, finished: true });
    expect(await remaining(expired)).toEqual([]);
    expect(await stepCount(expired)).toBe(0);
    expect(await remaining(kept)).toEqual(sorted(kept));
    expect(await stepCount(kept)).toBe(4);
    for (const id of expired) expectProblem(await app.inject({ url: `/api/v1/executions/${id}`, headers: as() }), 404);

    const after = await usage();
    expect(after.executions).toBe(before.executions - 4);
    expect(after.steps).toBe(before.steps - (gone?.steps ?? 0));
    expect(after.payloadBytes).toBe(before.payloadBytes - (gone?.bytes ?? 0));
    expect(after).toMatchObject(await recount());
    // Nothing is left to delete: a second round finds nothing.
    expect(await purgeExpired(sql(), { defaultDays: 30, ...quick })).toMatchObject({ ran: true, executions: 0, finished: true });
  });

  it("deletes an execution's event messages with it, and usage's eventDeliveries drops by what went", async () => {
    const { expired, kept, before } = await withEngine(async () => {
      const plain = await workflow();
      await createSubscription(app, user, { url: `${server.url}/events`, events: ['execution.completed'], workflowId: plain });
      const [old, recent] = await runs(plain, 2);
      return { expired: String(old), kept: String(recent), before: await usage() };
    });
    const messagesOf = async (id: string) =>
      (await sql()<{ count: number }[]>`select count(*)::int as count from event_messages where execution_id = ${id}`)[0]?.count;
    expect(await messagesOf(expired)).toBe(1);
    expect(await messagesOf(kept)).toBe(1);
    await finishedDaysAgo([expired], 31);

    expect(await purgeExpired(sql(), { defaultDays: 30, ...quick })).toMatchObject({ ran: true, executions: 1, finished: true });
    expect(await messagesOf(expired)).toBe(0);
    expect(await messagesOf(kept)).toBe(1);
    const after = await usage();
    expect(after.eventDeliveries).toBe(before.eventDeliveries - 1);
    expect(after).toMatchObject(await recount());
  });

  it('never deletes a pending, running or paused execution, whatever its age', async () => {
    const key = randomUUID();
    await withEngine(
      async () => {
        const waiting = await workflow(waitsAnHour);
        const slow = await workflow(httpGraph(`${server.url}/slow?delay=20000&key=${key}`));
        const plain = await workflow();
        const [endedOne] = await runs(plain, 1);
        // One run at a time for this user: the paused one frees its slot, the running one holds it, the last waits.
        const [paused] = await runs(waiting, 1, ['paused']);
        const running = (await runWorkflow(app, user, slow)).id;
        await waitForStatus(app, user, running, ['running']);
        const pending = (await runWorkflow(app, user, plain, { n: 1 })).id;
        expect((await app.inject({ url: `/api/v1/executions/${pending}`, headers: as() })).json<{ status: string }>().status).toBe('pending');
        const unfinished = [String(paused), running, pending];
        // A year old, finished_at included (which these states never have): only their status keeps them.
        await finishedDaysAgo([...unfinished, String(endedOne)], 400);

        const result = await purgeExpired(sql(), { defaultDays: 30, ...quick });
        expect(result).toMatchObject({ ran: true, executions: 1 });
        expect(await remaining(unfinished)).toEqual(sorted(unfinished));
        expect(await remaining([String(endedOne)])).toEqual([]);
        const statuses = await sql()<{ status: string }[]>`select status from executions where id in ${sql()(unfinished)} order by status::text`;
        expect(statuses.map((row) => row.status)).toEqual(['paused', 'pending', 'running']);
        for (const id of unfinished) await app.inject({ method: 'POST', url: `/api/v1/executions/${id}/cancel`, headers: as() });
      },
      { ENGINE_USER_CONCURRENCY: '1' },
    );
  });

  it("keeps a workflow's executions for its own retentionDays, shorter or longer than the default, and for the default again once it is unset", async () => {
    const made = await withEngine(async () => {
      const short = await workflow(twoSteps, 7);
      const long = await workflow(twoSteps, 90);
      const plain = await workflow();
      return { short, long, plain, shortRuns: await runs(short, 2), longRuns: await runs(long, 2), plainRuns: await runs(plain, 2) };
    });
    const [shortOld, shortNew] = made.shortRuns.map(String);
    const [longOld, longMiddle] = made.longRuns.map(String);
    const [plainOld, plainNew] = made.plainRuns.map(String);
    await finishedDaysAgo([String(shortOld)], 10); // past its 7 days, within the default 30
    await finishedDaysAgo([String(shortNew)], 5);
    await finishedDaysAgo([String(longOld)], 100); // past its 90 days
    await finishedDaysAgo([String(longMiddle)], 60); // past the default 30, within its 90
    await finishedDaysAgo([String(plainOld)], 31);
    await finishedDaysAgo([String(plainNew)], 29);

    expect(await purgeExpired(sql(), { defaultDays: 30, ...quick })).toMatchObject({ executions: 3, finished: true });
    const all = [shortOld, shortNew, longOld, longMiddle, plainOld, plainNew].map(String);
    expect(await remaining(all)).toEqual(sorted([String(shortNew), String(longMiddle), String(plainNew)]));

    // Back to the default: the 60-day-old run is now past it.
    const patched = await app.inject({ method: 'PATCH', url: `/api/v1/workflows/${made.long}`, headers: as(), payload: { retentionDays: null } });
    expect(patched.json<WorkflowView>().retentionDays).toBeNull();
    expect(await purgeExpired(sql(), { defaultDays: 30, ...quick })).toMatchObject({ executions: 1, finished: true });
    expect(await remaining(all)).toEqual(sorted([String(shortNew), String(plainNew)]));
  });

  it('purges in batches: with a small batch size every expired row goes, over several batches, past the rows a longer retention keeps', async () => {
    const made = await withEngine(async () => {
      const plain = await workflow();
      const short = await workflow(twoSteps, 3);
      const long = await workflow(twoSteps, 365);
      return { plainRuns: await runs(plain, 7), shortRuns: await runs(short, 5), longRuns: await runs(long, 4) };
    });
    // The long-retention runs sit among the default ones in finished_at order: the default walk
    // must move past them (they are older than the default cutoff) without stopping or deleting them.
    const plainRuns = made.plainRuns.map(String);
    for (const [index, id] of plainRuns.entries()) await finishedDaysAgo([id], 40 + index * 2);
    for (const [index, id] of made.longRuns.map(String).entries()) await finishedDaysAgo([id], 41 + index * 2);
    await finishedDaysAgo(made.shortRuns.map(String), 4);

    // No time: the round stops before its first batch and says it did not finish.
    expect(await purgeExpired(sql(), { defaultDays: 30, batchSize: 2, maxRunMs: 0 })).toMatchObject({ ran: true, executions: 0, batches: 0, finished: false });
    const result = await purgeExpired(sql(), { defaultDays: 30, batchSize: 2, pauseMs: 1 });
    expect(result).toMatchObject({ ran: true, executions: 12, finished: true });
    // 7 default rows in batches of 2 (4 batches), 5 short ones (3), plus the batches that find the end.
    expect(result.batches).toBeGreaterThanOrEqual(7);
    expect(await remaining([...plainRuns, ...made.shortRuns.map(String)])).toEqual([]);
    expect(await remaining(made.longRuns.map(String))).toEqual(sorted(made.longRuns.map(String)));
    expect(await usage()).toMatchObject(await recount());
  });

  it('keeps the retry of a deleted execution, which loses only its link to it', async () => {
    const { original, retry } = await withEngine(async () => {
      const failing = await workflow(httpGraph(`${server.url}/fail?status=500`));
      const [first] = await runs(failing, 1, ['failed']);
      const retried = await app.inject({ method: 'POST', url: `/api/v1/executions/${first ?? ''}/retry`, headers: as() });
      expect(retried.statusCode, retried.body).toBe(202);
      const again = retried.json<{ id: string; retryOfId: string }>();
      expect(again.retryOfId).toBe(first);
      await waitForStatus(app, user, again.id, ['failed']);
      return { original: String(first), retry: again.id };
    });
    await finishedDaysAgo([original], 31);
    expect(await purgeExpired(sql(), { defaultDays: 30, ...quick })).toMatchObject({ executions: 1 });
    expect(await remaining([original, retry])).toEqual([retry]);
    expect((await app.inject({ url: `/api/v1/executions/${retry}`, headers: as() })).json<{ retryOfId: string | null }>().retryOfId).toBeNull();
  });

  it("runs in the engine's housekeeping with EXECUTION_RETENTION_DAYS as the default", async () => {
    await withEngine(
      async (engine) => {
        const plain = await workflow();
        const [old, recent] = (await runs(plain, 2)).map(String);
        await finishedDaysAgo([String(old)], 6);
        await finishedDaysAgo([String(recent)], 4);
        await engine.keepHouse();
        expect(await remaining([String(old), String(recent)])).toEqual([String(recent)]);
      },
      { EXECUTION_RETENTION_DAYS: '5' },
    );
  });

  it('deletes webhook deliveries with their execution, and those without one (rejected) past the default retention', async () => {
    const SECRET = 'a-shared-webhook-secret';
    const created = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: as(), payload: { key: 'HOOK_SECRET', value: SECRET, secret: true } });
    expect(created.statusCode, created.body).toBe(201);
    const verify = { scheme: 'hmac-sha256', header: 'x-hub-signature-256', prefix: 'sha256=', secretVariable: 'HOOK_SECRET' };
    const sign = (body: string, secret = SECRET) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
    const graph = {
      nodes: [
        { id: 'hook', type: 'trigger.webhook', params: { verify } },
        { id: 'echo', type: 'transform', params: { expression: 'input.body' } },
      ],
      edges: [{ source: 'hook', target: 'echo' }],
    };
    const response = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: as(), payload: { name: 'hooked', ...graph } });
    expect(response.statusCode, response.body).toBe(201);
    const hooked = response.json<WorkflowView>();
    const path = new URL(hooked.webhook?.url ?? '').pathname;
    const deliver = (body: string, headers: Record<string, string>) => app.inject({ method: 'POST', url: path, headers: { 'content-type': 'application/json', ...headers }, payload: body });

    const made = await withEngine(async () => {
      const executions: string[] = [];
      for (const n of [1, 2]) {
        const body = JSON.stringify({ n });
        const sent = await deliver(body, { 'x-hub-signature-256': sign(body), 'idempotency-key': `delivery-${n}` });
        expect(sent.statusCode, sent.body).toBe(202);
        executions.push(sent.json<{ executionId: string }>().executionId);
      }
      // A repeat of the first: a duplicate delivery, pointing at the first one's execution.
      const repeat = JSON.stringify({ n: 1 });
      expect((await deliver(repeat, { 'x-hub-signature-256': sign(repeat), 'idempotency-key': 'delivery-1' })).json<{ executionId: string }>().executionId).toBe(executions[0]);
      for (const n of [3, 4]) expectProblem(await deliver(JSON.stringify({ n }), { 'x-hub-signature-256': sign('forged', 'a guess') }), 401);
      for (const id of executions) await waitForStatus(app, user, id, ended);
      return executions;
    });
    const deliveries = await sql()<{ id: string; status: string; executionId: string | null }[]>`
      select id, status, execution_id as "executionId" from webhook_deliveries where workflow_id = ${hooked.id} order by received_at, id`;
    expect(deliveries.map((row) => row.status).sort()).toEqual(['accepted', 'accepted', 'duplicate', 'rejected', 'rejected']);
    const rejected = deliveries.filter((row) => row.status === 'rejected').map((row) => row.id);
    // Only the clock is moved: the first execution finished, and one rejected delivery came, 31 days ago.
    await finishedDaysAgo([String(made[0])], 31);
    await sql()`update webhook_deliveries set received_at = now() - interval '31 days' where id = ${String(rejected[0])} or execution_id = ${String(made[0])}`;
    const [gone] = await sql()<{ bytes: number }[]>`
      select (select sum(payload_bytes + step_payload_bytes) from executions where id = ${String(made[0])})
           + (select sum(payload_bytes) from webhook_deliveries
               where (id = ${String(rejected[0])} or execution_id = ${String(made[0])}) and status = 'accepted') as bytes`;
    const before = await usage();

    const result = await purgeExpired(sql(), { defaultDays: 30, ...quick });
    expect(result).toMatchObject({ executions: 1, deliveries: 1, finished: true });
    const left = await sql()<{ id: string; status: string }[]>`select id, status from webhook_deliveries where workflow_id = ${hooked.id}`;
    // The first execution's accepted delivery and its duplicate went with it; the old rejected one by age.
    expect(left.map((row) => row.status).sort()).toEqual(['accepted', 'rejected']);
    expect(left.find((row) => row.status === 'rejected')?.id).toBe(rejected[1]);
    expect(await remaining(made)).toEqual([String(made[1])]);
    const after = await usage();
    expect(after.webhookDeliveries).toBe(before.webhookDeliveries - 3);
    expect(after.executions).toBe(before.executions - 1);
    expect(after.payloadBytes).toBe(before.payloadBytes - Number(gone?.bytes));
    expect(after).toMatchObject(await recount());
  });

  it("keeps deliveries without an execution (rejected) for their workflow's own retentionDays, shorter or longer than the default", async () => {
    const graph = { nodes: [{ id: 'hook', type: 'trigger.webhook', params: { verify: { scheme: 'header', header: 'x-token', secretVariable: 'REJECTING_SECRET' } } }], edges: [] };
    const made = await app.inject({ method: 'POST', url: '/api/v1/variables', headers: as(), payload: { key: 'REJECTING_SECRET', value: 'the-token', secret: true } });
    expect(made.statusCode, made.body).toBe(201);
    /** A workflow whose webhook refuses every delivery sent here: `count` rejected deliveries, received `days` ago each. */
    async function rejectedDeliveries(retentionDays: number | null, ages: readonly number[]): Promise<{ workflowId: string; ids: string[] }> {
      const response = await app.inject({ method: 'POST', url: '/api/v1/workflows', headers: as(), payload: { name: `rejecting ${randomUUID()}`, ...graph, retentionDays } });
      expect(response.statusCode, response.body).toBe(201);
      const created = response.json<WorkflowView>();
      const ids: string[] = [];
      for (const days of ages) {
        const sent = await app.inject({ method: 'POST', url: new URL(created.webhook?.url ?? '').pathname, headers: { 'content-type': 'application/json', 'x-token': 'a guess' }, payload: '{}' });
        expect(sent.statusCode, sent.body).toBe(401);
        const [row] = await sql()<{ id: string }[]>`
          update webhook_deliveries set received_at = now() - make_interval(days => ${days})
           where id = (select id from webhook_deliveries where workflow_id = ${created.id} order by received_at desc limit 1) returning id`;
        ids.push(String(row?.id));
      }
      return { workflowId: created.id, ids };
    }
    const short = await rejectedDeliveries(7, [10, 5]); // the first past its 7 days, though within the default 30
    const long = await rejectedDeliveries(90, [100, 40]); // the second past the default 30, within its 90
    const plain = await rejectedDeliveries(null, [31, 29]);
    const before = await usage();

    const result = await purgeExpired(sql(), { defaultDays: 30, ...quick });
    expect(result).toMatchObject({ executions: 0, deliveries: 3, finished: true });
    const left = await sql()<{ id: string }[]>`select id from webhook_deliveries where id in ${sql()([...short.ids, ...long.ids, ...plain.ids])}`;
    expect(left.map((row) => row.id).sort()).toEqual(sorted([String(short.ids[1]), String(long.ids[1]), String(plain.ids[1])]));
    expect((await usage()).webhookDeliveries).toBe(before.webhookDeliveries - 3);
    expect(await usage()).toMatchObject(await recount());

    // Small batches walk past the kept ones to the end, and a second round finds nothing.
    await sql()`update webhook_deliveries set received_at = now() - interval '200 days' where id = ${String(long.ids[1])}`;
    expect(await purgeExpired(sql(), { defaultDays: 30, batchSize: 1, pauseMs: 0 })).toMatchObject({ deliveries: 1, finished: true });
    expect(await purgeExpired(sql(), { defaultDays: 30, ...quick })).toMatchObject({ deliveries: 0, finished: true });
  });

  it('holds no connection and no lock between its batches: each batch takes the purge lock for its own transaction', async () => {
    const ids = await withEngine(async () => runs(await workflow(), 4));
    await finishedDaysAgo(ids, 31);
    // Batches of one, 150 ms apart: the round lasts over half a second, mostly between batches.
    const round = purgeExpired(sql(), { defaultDays: 30, batchSize: 1, pauseMs: 150 });
    let settled = false;
    void round.finally(() => {
      settled = true;
    });
    const samples: number[] = [];
    while (!settled) {
      const [row] = await sql()<{ held: number }[]>`
        select count(*)::int as held from pg_locks
         where locktype = 'advisory' and granted and objsubid = 1
           and (classid::bigint << 32) | objid::bigint = hashtextextended('autonode:retention-purge', 0)`;
      samples.push(row?.held ?? 0);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    expect(await round).toMatchObject({ ran: true, executions: 4, finished: true });
    expect(samples.length).toBeGreaterThan(10);
    // Held a round long, the lock would show in (nearly) every sample; per batch, in few.
    expect(samples.filter((held) => held === 0).length).toBeGreaterThan(samples.length / 2);
  });

  it.skipIf(lacksConcurrentConnections())('lets one purger at a time delete: a held lock stops a round, and two rounds at once delete every row once', async () => {
    const other = await buildTestApp();
    const holder = await app.database.sql.reserve();
    try {
      const ids = await withEngine(async () => runs(await workflow(), 10));
      await finishedDaysAgo(ids, 31);
      const before = await usage();

      // Held elsewhere (as by another replica mid-batch): no round runs, on a pool of any size, and nothing goes.
      await holder`select pg_advisory_lock(hashtextextended('autonode:retention-purge', 0))`;
      expect(await purgeExpired(other.database.sql, { defaultDays: 30 })).toEqual({ ran: false, executions: 0, deliveries: 0, messages: 0, batches: 0, finished: false });
      if (app.config.database.kind !== 'external') throw new Error('needs a real server');
      const single = createDbClient({ url: app.config.database.url, poolSize: 1, idleTimeoutSeconds: 0, connectTimeoutSeconds: 10, statementTimeoutMs: 0 });
      try {
        expect(await purgeExpired(single.sql, { defaultDays: 30 })).toMatchObject({ ran: false, executions: 0 });
      } finally {
        await single.close();
      }
      expect(await remaining(ids)).toHaveLength(10);
      await holder`select pg_advisory_unlock(hashtextextended('autonode:retention-purge', 0))`;

      // Two replicas' rounds at once, slowed down (batches of 2, 30 ms apart): their batches never run
      // together (one that meets the other's ends its round), and every expired row goes exactly once.
      const options = { defaultDays: 30, batchSize: 2, pauseMs: 30 };
      const results = await Promise.all([purgeExpired(app.database.sql, options), purgeExpired(other.database.sql, options)]);
      expect(results[0].executions + results[1].executions).toBe(10);
      expect(await remaining(ids)).toEqual([]);
      const after = await usage();
      expect(after.executions).toBe(before.executions - 10);
      expect(after).toMatchObject(await recount());
    } finally {
      holder.release();
      await other.close();
    }
  });

  it('reads every purge statement through an index, never a sequential scan of executions or webhook_deliveries', async () => {
    const plans: Record<string, PlanNode[]> = {};
    // A few rows are enough to plan with: on a table this small the planner would rightly prefer a
    // sequential scan, so seqscan is turned off for the transaction; it only wins now if no index
    // path exists. The parameters are the housekeeping's own (the default retention, the batch size).
    await sql().begin(async (tx) => {
      await tx`set local enable_seqscan = off`;
      const explain = async (name: string, statement: Statement) => {
        const [row] = await tx<{ 'QUERY PLAN': { Plan: PlanNode }[] }[]>`explain (format json) ${statement}`;
        const plan = row?.['QUERY PLAN'][0]?.Plan;
        if (!plan) throw new Error(`no plan for ${name}`);
        plans[name] = planNodes(plan);
      };
      await explain('ownRetention', purgeStatements.ownRetention(tx, DEFAULT_WALK_START.workflowId, 1_000));
      await explain('defaultRetention', purgeStatements.defaultRetention(tx, 30, DEFAULT_WALK_START, 1_000));
      await explain('defaultRetention, later batch', purgeStatements.defaultRetention(tx, 30, { finishedAt: new Date(Date.now() - 40 * 86_400_000).toISOString(), workflowId: randomUUID(), id: randomUUID() }, 1_000));
      await explain('ownRetentionDeliveries', purgeStatements.ownRetentionDeliveries(tx, DEFAULT_WALK_START.workflowId, 1_000));
      await explain('unexecutedDeliveries', purgeStatements.unexecutedDeliveries(tx, 30, 1_000));
      await explain('unexecutedDeliveries, later batch', purgeStatements.unexecutedDeliveries(tx, 30, 1_000, new Date(Date.now() - 40 * 86_400_000).toISOString()));
      await explain('detachedMessages', purgeStatements.detachedMessages(tx, 30, 1_000));
      // What each deleted execution costs through its foreign keys: its retries lose their link.
      const [retry] = await tx<{ 'QUERY PLAN': { Plan: PlanNode }[] }[]>`explain (format json) update executions set retry_of_id = null where retry_of_id = ${randomUUID()}::uuid`;
      if (retry) plans['retry link'] = planNodes(retry['QUERY PLAN'][0]?.Plan ?? { 'Node Type': 'none' });
    });
    // The nodes that read a table (a Delete or Update node names its table too, but reads nothing).
    const scans = (name: string) => (plans[name] ?? []).filter((node) => node['Relation Name'] !== undefined && node['Node Type'].endsWith('Scan'));
    for (const name of Object.keys(plans)) {
      const seq = scans(name).filter((node) => node['Node Type'] === 'Seq Scan' && ['executions', 'webhook_deliveries'].includes(node['Relation Name'] ?? ''));
      expect(seq, `${name}: ${JSON.stringify(scans(name))}`).toEqual([]);
    }
    const indexes = (name: string) => (plans[name] ?? []).flatMap((node) => (node['Index Name'] ? [node['Index Name']] : []));
    // Each workflow's expired executions are read up to its cutoff, which bounds the index read (on
    // tables this small the planner may take either retention index for it; bench/retention.ts
    // checks the plans on 100,000 rows with the planner's own settings).
    const ownScans = scans('ownRetention').filter((node) => node['Relation Name'] === 'executions' && node['Index Name'] !== 'executions_pkey');
    expect(ownScans.length).toBeGreaterThan(0);
    for (const node of ownScans) {
      expect(['executions_workflow_ended_finished_idx', 'executions_ended_finished_idx']).toContain(node['Index Name']);
      expect(node['Index Cond']).toContain('finished_at <');
    }
    expect(indexes('defaultRetention')).toContain('executions_ended_finished_idx');
    expect(indexes('defaultRetention, later batch')).toContain('executions_ended_finished_idx');
    for (const name of ['unexecutedDeliveries', 'unexecutedDeliveries, later batch']) {
      expect(indexes(name), JSON.stringify(scans(name))).toContain('webhook_deliveries_unexecuted_received_idx');
    }
    // Each workflow's deliveries are read up to its cutoff: whichever index (or bitmap of one) reads them is bounded by it.
    const ownDeliveryReads = (plans['ownRetentionDeliveries'] ?? []).filter((node) => node['Index Name']?.startsWith('webhook_deliveries_') && node['Index Name'] !== 'webhook_deliveries_pkey');
    expect(ownDeliveryReads.length, JSON.stringify(plans['ownRetentionDeliveries'])).toBeGreaterThan(0);
    for (const node of ownDeliveryReads) expect(node['Index Cond']).toContain('received_at <');
    expect(indexes('retry link')).toContain('executions_retry_of_idx');
    expect(indexes('detachedMessages'), JSON.stringify(scans('detachedMessages'))).toContain('event_messages_detached_created_idx');
  });

  it('takes retentionDays on create and change (1..3650 or null), returns it, and refuses anything else', async () => {
    const create = (retentionDays: unknown) =>
      app.inject({ method: 'POST', url: '/api/v1/workflows', headers: as(), payload: { name: 'retention', ...twoSteps, ...(retentionDays === undefined ? {} : { retentionDays }) } });
    const unset = await create(undefined);
    expect(unset.statusCode).toBe(201);
    expect(unset.json<WorkflowView>().retentionDays).toBeNull();
    expect((await create(null)).json<WorkflowView>().retentionDays).toBeNull();
    for (const days of [1, 3650]) expect((await create(days)).json<WorkflowView>().retentionDays).toBe(days);
    for (const bad of [0, -1, 3651, 1.5, '30', true]) {
      const refused = expectProblem(await create(bad), 400);
      expect(JSON.stringify(refused.errors)).toContain('retentionDays');
    }

    const made = (await create(7)).json<WorkflowView>();
    const url = `/api/v1/workflows/${made.id}`;
    const read = async () => (await app.inject({ url, headers: as() })).json<WorkflowView>();
    expect((await read()).retentionDays).toBe(7);
    // A change of retentionDays alone is saved as any PATCH is: a new version (and ETag), the graph as it was.
    const patched = await app.inject({ method: 'PATCH', url, headers: as(), payload: { retentionDays: 90 } });
    expect(patched.json<WorkflowView>()).toMatchObject({ retentionDays: 90, version: made.version + 1 });
    expect((await read()).retentionDays).toBe(90);
    // Another field's change keeps it; null sets it back to the default.
    expect((await app.inject({ method: 'PATCH', url, headers: as(), payload: { name: 'renamed' } })).json<WorkflowView>().retentionDays).toBe(90);
    expect((await app.inject({ method: 'PATCH', url, headers: as(), payload: { retentionDays: null } })).json<WorkflowView>().retentionDays).toBeNull();
    expect((await read()).retentionDays).toBeNull();
    for (const bad of [0, 3651, 2.5, '7']) {
      const refused = expectProblem(await app.inject({ method: 'PATCH', url, headers: as(), payload: { retentionDays: bad } }), 400);
      expect(JSON.stringify(refused.errors)).toContain('retentionDays');
    }
    expect((await read()).retentionDays).toBeNull();
    // The database refuses what the API would, whoever writes.
    await expect(sql()`update workflows set retention_days = 0 where id = ${made.id}`).rejects.toThrow(/workflows_retention_days_range/);
    // Listed too.
    const listed = (await app.inject({ url: '/api/v1/workflows?pageSize=100', headers: as() })).json<{ items: WorkflowView[] }>();
    expect(listed.items.find((item) => item.id === made.id)).toMatchObject({ retentionDays: null });
  });
});
