import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../src/app.js';
import { runMigrations } from '../src/db/migrate.js';
import { buildTestApp, isEmbeddedDatabase, signUp, type SignedInUser } from './helpers.js';
import { createScratchDatabase, type ScratchDatabase } from './scratch.js';

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Relation Name'?: string;
  'Actual Rows'?: number;
  Plans?: PlanNode[];
}

function nodesOf(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodesOf)];
}

const bigTables = ['workflows', 'jobs', 'executions', 'execution_steps', 'api_keys'];

/**
 * The list queries the routes really send (captured from the driver), run under EXPLAIN ANALYZE on a realistic
 * table: every one must be served by an index, and a cursor page must need no Sort.
 */
describe.skipIf(isEmbeddedDatabase())('list queries use their indexes (skipped on the embedded database: needs TEST_DATABASE_URL for its 200k-row tables)', () => {
  let scratch: ScratchDatabase;
  let app: App;
  let caller: SignedInUser;
  const captured: { query: string; parameters: readonly unknown[] }[] = [];

  beforeAll(async () => {
    scratch = await createScratchDatabase();
    await scratch.use((client) => runMigrations(client.db));
    app = await buildTestApp({ DATABASE_URL: scratch.url }, { onQuery: (query, parameters) => captured.push({ query, parameters }) });
    caller = await signUp(app);
    await scratch.use(async ({ sql }) => {
      await sql`insert into "user" (id, name, email) select 'bulk-' || g, 'Bulk ' || g, 'bulk-' || g || '@example.test' from generate_series(1, 100) g`;
      await sql`
        with created as (
          insert into workflows (user_id, name, description, nodes, edges)
          select case when g % 10 = 0 then ${caller.id} else 'bulk-' || (g % 100 + 1) end, 'workflow ' || g, 'bulk', '[]', '[]'
            from generate_series(1, 5000) g
          returning id, version, user_id, nodes, edges)
        insert into workflow_versions (workflow_id, version, user_id, nodes, edges) select * from created`;
      await sql`
        with numbered as (select id, user_id, row_number() over (order by id) as n from workflows)
        insert into jobs (user_id, workflow_id, name, cron, status, next_run_at)
        select user_id, id, 'job ' || n, '0 * * * *', (array['ACTIVE','PAUSED','ARCHIVED'])[1 + n % 3]::job_status, now() + (n || ' minutes')::interval
        from numbered`;
      await sql`
        with numbered as (select id, user_id, row_number() over (order by id) as n from workflows)
        insert into executions (user_id, workflow_id, workflow_version, trigger, status, created_at)
        select w.user_id, w.id, 1, 'manual', (array['pending','running','completed','failed'])[1 + g % 4]::execution_status,
               now() - (g || ' seconds')::interval
        from generate_series(1, 200000) g join numbered w on w.n = 1 + g % 5000`;
      await sql`
        insert into execution_steps (execution_id, node_id, status, attempt)
        select e.id, 'node-' || k, 'completed', 1 from (select id from executions limit 20000) e, generate_series(1, 5) k`;
      await sql`insert into api_keys (user_id, name, prefix, key_hash)
        select 'bulk-' || (g % 100 + 1), 'key ' || g, 'ank_' || g, md5(g::text) from generate_series(1, 20000) g`;
      // A busy workflow: filtering by it must walk the (user, workflow, createdAt) index, not sort.
      await sql`update executions set workflow_id = (select id from workflows where user_id = ${caller.id} order by id limit 1)
        where user_id = ${caller.id} and id in (select id from executions where user_id = ${caller.id} order by id limit 10000)`;
      await sql`analyze`;
    });
  }, 180_000);

  afterAll(async () => {
    await app?.close();
    await scratch?.drop();
  });

  it('serves every list, filter and sort with an index and no Sort on cursor pages', async () => {
    const headers = { cookie: caller.cookie };
    const [execution] = await app.database.sql<{ workflow_id: string }[]>`select workflow_id from executions where user_id = ${caller.id} group by 1 order by count(*) desc limit 1`;
    const [anyExecution] = await app.database.sql<{ id: string }[]>`select execution_id as id from execution_steps limit 1`;
    await app.database.sql`update executions set user_id = ${caller.id} where id = ${anyExecution?.id ?? ''}`;
    const lists = [
      '/api/v1/workflows',
      '/api/v1/workflows?sortBy=name&sortDirection=asc',
      '/api/v1/workflows?sortBy=updatedAt',
      '/api/v1/jobs',
      '/api/v1/jobs?status=ACTIVE',
      `/api/v1/jobs?workflowId=${execution?.workflow_id}`,
      '/api/v1/jobs?sortBy=name',
      '/api/v1/executions',
      '/api/v1/executions?sortDirection=asc',
      '/api/v1/executions?status=failed',
      '/api/v1/executions?status=failed,running',
      `/api/v1/executions?workflowId=${execution?.workflow_id}`,
      `/api/v1/executions/${anyExecution?.id}/steps`,
      '/api/v1/api-keys',
    ];
    const explained: string[] = [];
    for (const list of lists) {
      const first = (await app.inject({ url: list, headers })).json<{ nextCursor: string | null }>();
      expect(first).toHaveProperty('items');
      const separator = list.includes('?') ? '&' : '?';
      const cursorUrl = first.nextCursor ? `${list}${separator}cursor=${encodeURIComponent(first.nextCursor)}` : list;
      captured.length = 0;
      expect((await app.inject({ url: cursorUrl, headers })).statusCode).toBe(200);
      // drizzle quotes table names, the hand-written hot queries do not.
      const reads = (query: string, table: string) => new RegExp(`\\bfrom "?${table}"?\\s`).test(query);
      const listQueries = captured.filter(({ query }) => /^select/i.test(query.trim()) && bigTables.some((table) => reads(query, table)));
      expect(listQueries.length, `no list query captured for ${list}`).toBeGreaterThan(0);
      for (const { query, parameters } of listQueries) {
        const [row] = await app.database.sql.unsafe<{ 'QUERY PLAN': PlanNode[] }[]>(`explain (analyze, format json) ${query}`, parameters as never[]);
        const plan = row?.['QUERY PLAN'][0] as unknown as { Plan: PlanNode };
        const nodes = nodesOf(plan.Plan);
        const seqScans = nodes.filter((node) => node['Node Type'] === 'Seq Scan' && bigTables.includes(node['Relation Name'] ?? ''));
        expect(seqScans, `${cursorUrl}: sequential scan in\n${query}`).toEqual([]);
        // An execution's steps are bounded by MAX_NODES, so the planner may sort those few rows instead.
        if (!reads(query, 'execution_steps')) {
          expect(nodes.filter((node) => node['Node Type'].includes('Sort')), `${cursorUrl}: sort in\n${query}`).toEqual([]);
        }
        explained.push(cursorUrl);
      }
    }
    expect(new Set(explained).size).toBe(lists.length);
  });

  it("reads the engine's claim from the front of its indexes, however many executions wait", async () => {
    const [waiting] = await app.database.sql<{ count: number }[]>`select count(*)::int as count from executions where status in ('pending', 'paused')`;
    expect(waiting?.count).toBeGreaterThan(10_000);
    await expectClaimReadsFront(app, 2);
  });

  it("reads the claim from the front of its index when one user's backlog is all that waits and a run of theirs holds a slot", async () => {
    // The engine benchmark's shape, on a table of its own: with statistics that see one user and
    // few running rows, the planner once joined the waiting rows with the busy users, reading and
    // sorting every one of them.
    const backlog = await createScratchDatabase();
    const backlogApp = await buildTestApp({ DATABASE_URL: backlog.url }, { onQuery: (query, parameters) => captured.push({ query, parameters }) });
    try {
      await backlog.use((client) => runMigrations(client.db));
      const owner = await signUp(backlogApp);
      await backlog.use(async ({ sql }) => {
        const [workflow] = await sql<{ id: string }[]>`
          with created as (insert into workflows (user_id, name, nodes, edges) values (${owner.id}, 'backlog', '[]', '[]') returning id, version, user_id, nodes, edges)
          insert into workflow_versions (workflow_id, version, user_id, nodes, edges) select * from created returning workflow_id as id`;
        await sql`
          insert into executions (user_id, workflow_id, workflow_version, trigger, status, created_at)
          select ${owner.id}, ${workflow?.id ?? ''}::uuid, 1, 'manual', 'pending', now() - make_interval(secs => (3000 - g) / 1000.0)
            from generate_series(1, 3000) g`;
        await sql`vacuum (analyze) executions`;
      });
      expect(await backlogApp.executions.claim('index-test-worker', 1, 30_000, 4)).toHaveLength(1);
      await expectClaimReadsFront(backlogApp, 1);
    } finally {
      await backlogApp.close();
      await backlog.drop();
    }
  });

  /** Claims `count` (the front of the queue), then EXPLAIN ANALYZEs that claim statement: index scans reading at most `count` rows. */
  async function expectClaimReadsFront(app: App, count: number) {
    captured.length = 0;
    const claimed = await app.executions.claim('index-test-worker', count, 30_000, 4);
    expect(claimed).toHaveLength(count);
    const claim = captured.find(({ query }) => /update executions e\s+set status = 'running'/.test(query));
    expect(claim, 'the claim statement was not captured').toBeDefined();
    // EXPLAIN ANALYZE runs the statement: it claims again, inside a transaction that is rolled back.
    const reserved = await app.database.sql.reserve();
    try {
      await reserved`begin`;
      const [row] = await reserved.unsafe<{ 'QUERY PLAN': PlanNode[] }[]>(`explain (analyze, format json) ${claim?.query ?? ''}`, (claim?.parameters ?? []) as never[]);
      const plan = row?.['QUERY PLAN'][0] as unknown as { Plan: PlanNode };
      const reads = nodesOf(plan.Plan).filter((node) => node['Relation Name'] === 'executions' && node['Node Type'] !== 'ModifyTable');
      expect(reads.length).toBeGreaterThan(0);
      // The runs holding slots (counted per user) are bounded by the workers, not by the backlog.
      const [leased] = await reserved<{ count: number }[]>`select count(*)::int as count from executions where status = 'running' and lease_expires_at >= now()`;
      for (const node of reads) {
        // An index scan stopped by the LIMIT: a few rows, not every waiting execution.
        expect(node['Node Type'], JSON.stringify(node)).toBe('Index Scan');
        const bound = node['Index Name'] === 'executions_ready_idx' ? count : Math.max(count, leased?.count ?? 0);
        expect(node['Actual Rows'] ?? Number.POSITIVE_INFINITY, JSON.stringify(node).slice(0, 400)).toBeLessThanOrEqual(bound);
      }
    } finally {
      await reserved`rollback`;
      reserved.release();
    }
  }
});
