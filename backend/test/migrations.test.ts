import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { migrationsFolder, runMigrations } from '../src/db/migrate.js';
import { lacksConcurrentConnections } from './helpers.js';
import { runScript, startServerProcess } from './process.js';
import { createScratchDatabase, type ScratchDatabase } from './scratch.js';

/** Applies the migrations up to number `last` only (a copy of the folder, its journal cut there): the schema as it stood then. */
async function migrateUpTo(database: ScratchDatabase, olderFolder: string, last: number): Promise<void> {
  await cp(migrationsFolder, olderFolder, { recursive: true });
  const journalPath = path.join(olderFolder, 'meta', '_journal.json');
  const journal = JSON.parse(await readFile(journalPath, 'utf8')) as { entries: { idx: number }[] };
  await writeFile(journalPath, JSON.stringify({ ...journal, entries: journal.entries.filter((entry) => entry.idx <= last) }));
  await database.use((client) => migrate(client.db, { migrationsFolder: olderFolder }));
}

describe('migrations', () => {
  let scratch: ScratchDatabase;
  beforeAll(async () => {
    scratch = await createScratchDatabase();
  });
  afterAll(async () => {
    await scratch.drop();
  });

  it('build the whole schema on an empty database, and a second run changes nothing', async () => {
    const tablesBefore = await scratch.use((client) => client.sql<{ tablename: string }[]>`select tablename from pg_tables where schemaname = 'public'`);
    expect(tablesBefore).toHaveLength(0);

    await scratch.use((client) => runMigrations(client.db));
    const tables = await scratch.use(async (client) =>
      (await client.sql<{ tablename: string }[]>`select tablename from pg_tables where schemaname = 'public' order by 1`).map((row) => row.tablename),
    );
    expect(tables).toEqual(expect.arrayContaining(['account', 'session', 'user', 'verification']));
    const applied = await scratch.use((client) => client.sql`select count(*)::int as count from drizzle.__drizzle_migrations`);

    await scratch.use((client) => runMigrations(client.db));
    const appliedAgain = await scratch.use((client) => client.sql`select count(*)::int as count from drizzle.__drizzle_migrations`);
    expect(appliedAgain).toEqual(applied);
  });

  it('take back what stored rejected and duplicate webhook deliveries had added to their owner`s bytes (0026)', async () => {
    const upgraded = await createScratchDatabase();
    const olderFolder = await mkdtemp(path.join(tmpdir(), 'autonode-migrations-'));
    try {
      // The schema as it stood before: every delivery's bytes counted.
      await migrateUpTo(upgraded, olderFolder, 25);

      const payloadBytes = async (owner: string) =>
        Number((await upgraded.use(({ sql }) => sql<{ bytes: string }[]>`select payload_bytes::text as bytes from user_usage where user_id = ${owner}`))[0]?.bytes);
      const deliveryBytes = async (owner: string, statuses: readonly string[]) =>
        Number((await upgraded.use(({ sql }) => sql<{ bytes: string }[]>`
          select coalesce(sum(payload_bytes), 0)::text as bytes from webhook_deliveries where user_id = ${owner} and status::text in ${sql(statuses as string[])}`))[0]?.bytes);
      // Rows as that schema's code wrote them, for two users; the triggers of that schema count them.
      await upgraded.use(async ({ sql }) => {
        for (const owner of ['hooked', 'other']) {
          await sql`insert into "user" (id, name, email) values (${owner}, ${owner}, ${`${owner}@example.test`})`;
          const [workflow] = await sql<{ id: string }[]>`insert into workflows (user_id, name, nodes, edges) values (${owner}, 'w', '[]'::jsonb, '[]'::jsonb) returning id`;
          await sql`insert into workflow_versions (workflow_id, version, user_id, nodes, edges) values (${workflow?.id ?? ''}, 1, ${owner}, '[]'::jsonb, '[]'::jsonb)`;
          const [execution] = await sql<{ id: string }[]>`
            insert into executions (user_id, workflow_id, workflow_version, trigger, input) values (${owner}, ${workflow?.id ?? ''}, 1, 'webhook', '{}'::jsonb) returning id`;
          const rows: [string, string | null, string][] = [
            ['accepted', execution?.id ?? null, 'a'.repeat(500)],
            ['duplicate', execution?.id ?? null, 'd'.repeat(700)],
            ['rejected', null, ''],
          ];
          for (const [status, executionId, body] of owner === 'hooked' ? rows : rows.slice(0, 1)) {
            await sql`
              insert into webhook_deliveries (user_id, workflow_id, execution_id, status, method, headers, query, body, body_bytes)
              values (${owner}, ${workflow?.id ?? ''}, ${executionId}, ${status}::webhook_delivery_status, 'POST',
                      ${JSON.stringify({ 'x-pad': 'p'.repeat(900) })}::jsonb, '{"q":"1"}'::jsonb, ${Buffer.from(body)}::bytea, ${body.length})`;
          }
        }
      });
      const before = { hooked: await payloadBytes('hooked'), other: await payloadBytes('other') };
      const notAccepted = await deliveryBytes('hooked', ['duplicate', 'rejected']);
      expect(notAccepted).toBeGreaterThan(2_000);

      await upgraded.use((client) => runMigrations(client.db));
      expect(await payloadBytes('hooked')).toBe(before.hooked - notAccepted);
      expect(await payloadBytes('other')).toBe(before.other);
      // And from now on, as the new trigger counts: deleting them takes nothing more away.
      await upgraded.use(({ sql }) => sql`delete from webhook_deliveries where user_id = 'hooked' and status <> 'accepted'`);
      expect(await payloadBytes('hooked')).toBe(before.hooked - notAccepted);
    } finally {
      await rm(olderFolder, { recursive: true, force: true });
      await upgraded.drop();
    }
  });

  it('move the graphs executions carried into workflow versions, keeping every run and its graph', async () => {
    const upgraded = await createScratchDatabase();
    const olderFolder = await mkdtemp(path.join(tmpdir(), 'autonode-migrations-'));
    try {
      // The schema as it stood before workflow versions: the migrations up to 0007.
      await migrateUpTo(upgraded, olderFolder, 7);

      // Rows of that schema, as its code wrote them: each execution with its own copy of the graph.
      const graphV1 = { nodes: [{ id: 'start', type: 'trigger.manual' }], edges: [] };
      const graphV2 = { nodes: [{ id: 'start', type: 'trigger.manual' }, { id: 'b', type: 'transform', params: { expression: '1' } }], edges: [{ source: 'start', target: 'b' }] };
      const graphV3 = { nodes: [{ id: 'begin', type: 'trigger.manual' }], edges: [] };
      await upgraded.use(async ({ sql }) => {
        await sql`insert into "user" (id, name, email) values ('old-user', 'Old', 'old@example.test')`;
        await sql`insert into workflows (id, user_id, name, nodes, edges, version)
          values ('00000000-0000-4000-8000-000000000001', 'old-user', 'w', ${JSON.stringify(graphV3.nodes)}::jsonb, ${JSON.stringify(graphV3.edges)}::jsonb, 3)`;
        for (const [version, graph] of [[1, graphV1], [1, graphV1], [2, graphV2]] as const) {
          await sql`insert into executions (user_id, workflow_id, workflow_version, workflow_snapshot, trigger, status)
            values ('old-user', '00000000-0000-4000-8000-000000000001', ${version}, ${JSON.stringify(graph)}::jsonb, 'manual', 'completed')`;
        }
      });

      await upgraded.use((client) => runMigrations(client.db));
      const versions = await upgraded.use(({ sql }) => sql<{ version: number; nodes: unknown; edges: unknown }[]>`
        select version, nodes, edges from workflow_versions order by version`);
      expect(versions).toEqual([
        { version: 1, ...graphV1 },
        { version: 2, ...graphV2 },
        { version: 3, ...graphV3 },
      ]);
      const runs = await upgraded.use(({ sql }) => sql<{ count: number }[]>`
        select count(*)::int as count from executions e join workflow_versions v on v.workflow_id = e.workflow_id and v.version = e.workflow_version`);
      expect(runs[0]?.count).toBe(3);
    } finally {
      await rm(olderFolder, { recursive: true, force: true });
      await upgraded.drop();
    }
  });
});

// Processes on a real PostgreSQL of their own (the embedded server serves one connection, one process).
describe.skipIf(lacksConcurrentConnections())('migrating from the service`s processes', () => {
  const production = { NODE_ENV: 'production', BETTER_AUTH_SECRET: 'a'.repeat(32), SECRETS_KEYS: `k1:${Buffer.alloc(32, 7).toString('base64')}`, LOG_LEVEL: 'info' };

  it('applies them once from two migration processes started together, whatever DB_STATEMENT_TIMEOUT says', async () => {
    const fresh = await createScratchDatabase();
    try {
      // A 1 ms statement timeout is for requests; migration statements would not survive it.
      const env = { ...production, DATABASE_URL: fresh.url, DB_STATEMENT_TIMEOUT: '1' };
      const runs = [runScript('dist/migrate.js', [], env), runScript('dist/migrate.js', [], env)];
      const codes = await Promise.all(runs.map((run) => run.exited));
      expect(codes, runs.map((run) => run.output()).join('\n')).toEqual([0, 0]);
      const journal = JSON.parse(await readFile(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] };
      const [applied] = await fresh.use((client) => client.sql<{ count: number }[]>`select count(*)::int as count from drizzle.__drizzle_migrations`);
      expect(applied?.count).toBe(journal.entries.length);
    } finally {
      await fresh.drop();
    }
  });

  it('says why a migration cannot reach its database', async () => {
    const missing = new URL(inject('databaseUrl'));
    missing.pathname = `/autonode_missing_${Date.now()}`;
    const run = runScript('dist/migrate.js', [], { ...production, DATABASE_URL: missing.toString() });
    expect(await run.exited).toBe(1);
    expect(run.output()).toMatch(/autonode migrate failed: database "autonode_missing_\d+" does not exist/);
  });

  it('refuses to start the server on a schema older than its migrations, saying how to migrate', async () => {
    const older = await createScratchDatabase();
    const folder = await mkdtemp(path.join(tmpdir(), 'autonode-migrations-'));
    try {
      await migrateUpTo(older, folder, 20);
      const server = await startServerProcess({ ...production, DATABASE_URL: older.url }).catch((error: unknown) => error);
      expect(String(server)).toMatch(/autonode failed to start: the database schema is older than this version: apply the migrations first \(npm run db:migrate/);
      // With MIGRATE_ON_START it migrates, then serves.
      const migrating = await startServerProcess({ ...production, DATABASE_URL: older.url, MIGRATE_ON_START: 'true' });
      try {
        expect((await fetch(`${migrating.baseUrl}/api/ready`)).status).toBe(200);
      } finally {
        await migrating.stop();
      }
    } finally {
      await rm(folder, { recursive: true, force: true });
      await older.drop();
    }
  });
});
