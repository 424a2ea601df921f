import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runScript } from './process.js';
import { createScratchDatabase, type ScratchDatabase } from './scratch.js';
import { generateKeyEntry } from '../src/secrets/keyring.js';

async function dbScript(command: string, env: Record<string, string>) {
  const run = runScript('scripts/db.ts', [command], { NODE_ENV: 'development', LOG_LEVEL: 'warn', ...env });
  const code = await run.exited;
  return { code, output: run.output() };
}

const counts = (scratch: ScratchDatabase) =>
  scratch.use(async (client) => {
    const [row] = await client.sql<{ users: number; accounts: number; workflows: number; jobs: number; executions: number; steps: number }[]>`
      select (select count(*) from "user")::int as users, (select count(*) from account)::int as accounts,
             (select count(*) from workflows)::int as workflows, (select count(*) from jobs)::int as jobs,
             (select count(*) from executions)::int as executions, (select count(*) from execution_steps)::int as steps`;
    return row;
  });

describe('database scripts', () => {
  let scratch: ScratchDatabase;
  beforeAll(async () => {
    scratch = await createScratchDatabase();
  });
  afterAll(async () => {
    await scratch.drop();
  });

  it('migrate, seed idempotently, reset the data and nuke the schema', async () => {
    const env = { DATABASE_URL: scratch.url };
    expect((await dbScript('migrate', env)).code).toBe(0);

    const firstSeed = await dbScript('seed', env);
    expect(firstSeed.code).toBe(0);
    const afterFirst = await counts(scratch);
    expect(afterFirst?.users).toBeGreaterThan(0);
    expect(afterFirst?.workflows).toBeGreaterThan(0);
    expect(afterFirst?.jobs).toBeGreaterThan(0);
    expect(afterFirst?.executions).toBeGreaterThan(0);
    const secondSeed = await dbScript('seed', env);
    expect(secondSeed.code).toBe(0);
    expect(await counts(scratch)).toEqual(afterFirst);
    expect(secondSeed.output).toContain(firstSeed.output.match(/"userId":"[^"]+"/)?.[0] ?? 'no user id printed');

    expect((await dbScript('reset', env)).code).toBe(0);
    expect(await counts(scratch)).toEqual({ users: 0, accounts: 0, workflows: 0, jobs: 0, executions: 0, steps: 0 });

    expect((await dbScript('nuke', env)).code).toBe(0);
    const tables = await scratch.use((client) => client.sql`select tablename from pg_tables where schemaname in ('public', 'drizzle')`);
    expect(tables).toHaveLength(0);
  }, 120_000);

  it('refuse to reset or nuke in production, and to nuke a production-looking URL', async () => {
    const production = { NODE_ENV: 'production', SECRETS_KEYS: generateKeyEntry('k1'), DATABASE_URL: 'postgres://u@127.0.0.1:1/x', BETTER_AUTH_SECRET: 'p'.repeat(40) };
    for (const command of ['reset', 'nuke']) {
      const refused = await dbScript(command, production);
      expect(refused.code).toBe(1);
      expect(refused.output).toMatch(/refused: NODE_ENV is production/);
    }
    for (const url of ['postgres://u@db-prod.internal/app', 'postgres://u@db.example.com/app', 'postgres://u@x.rds.amazonaws.com/app']) {
      const refused = await dbScript('nuke', { DATABASE_URL: url });
      expect(refused.code).toBe(1);
      expect(refused.output).toMatch(/refused: the database URL looks like a production database/);
    }
  }, 120_000);
});
