import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMigrations } from '../src/db/migrate.js';
import { createScratchDatabase, type ScratchDatabase } from './scratch.js';

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
});
