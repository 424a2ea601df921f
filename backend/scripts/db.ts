/**
 * Database maintenance: `tsx scripts/db.ts <migrate|push|seed|reset|nuke>` (the root npm scripts
 * db:*). Each opens the service's one client from the same config as the server: DATABASE_URL,
 * or the embedded database in EMBEDDED_DATA_DIR (stop the server first: PGlite allows one process).
 */
import { spawnSync } from 'node:child_process';
import { sql } from 'drizzle-orm';
import { ConfigError, loadConfig, type Config } from '../src/config.js';
import { openDatabase, type DbClient } from '../src/db/client.js';
import { describeFailure } from '../src/db/errors.js';
import { migrateExternal, runMigrations } from '../src/db/migrate.js';
import { refusalToWipe } from '../src/db/safeguards.js';
import { createLogger } from '../src/logger.js';
import { seedDemoData } from './seed.js';

const commands = ['migrate', 'push', 'seed', 'reset', 'nuke'] as const;
type Command = (typeof commands)[number];

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

function parseCommand(argument: string | undefined): Command {
  const command = commands.find((candidate) => candidate === argument);
  if (!command) fail(`usage: tsx scripts/db.ts <${commands.join('|')}>`);
  return command;
}

/** Refusals come first, on names alone, before anything connects. */
function checkSafeguards(command: Command, config: Config): void {
  const nodeEnv = config.env;
  const url = config.database.kind === 'external' ? config.database.url : undefined;
  if (command === 'reset') {
    const refusal = refusalToWipe({ nodeEnv, url: undefined, operation: 'db:reset' });
    if (refusal) fail(refusal);
  }
  if (command === 'nuke') {
    const refusal = refusalToWipe({ nodeEnv, url, operation: 'db:nuke' });
    if (refusal) fail(refusal);
  }
  if (command === 'push' && config.isProduction) {
    fail('db:push refused: NODE_ENV is production; apply committed migrations with db:migrate.');
  }
}

/** Deletes every row of every application table; the schema and the migration history stay. */
async function resetData(database: DbClient): Promise<number> {
  const tables = await database.sql<{ name: string }[]>`
    select quote_ident(tablename) as name from pg_tables where schemaname = 'public'`;
  if (tables.length === 0) return 0;
  await database.db.execute(sql.raw(`truncate table ${tables.map((table) => table.name).join(', ')} restart identity cascade`));
  return tables.length;
}

/** Drops everything: the public schema and drizzle's migration journal. */
async function nukeSchema(database: DbClient): Promise<void> {
  await database.sql.begin(async (tx) => {
    await tx`drop schema if exists drizzle cascade`;
    await tx`drop schema if exists public cascade`;
    await tx`create schema public`;
  });
}

async function main(): Promise<void> {
  const command = parseCommand(process.argv[2]);
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  checkSafeguards(command, config);

  if (command === 'push') {
    if (config.database.kind !== 'external') fail('db:push needs DATABASE_URL (drizzle-kit talks to a real server).');
    const result = spawnSync('drizzle-kit', ['push'], { stdio: 'inherit', env: process.env, shell: false });
    process.exit(result.status ?? 1);
  }

  const logger = createLogger({ logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel });
  const database = await openDatabase(config, logger, `autonode-db-${command}`);
  try {
    switch (command) {
      case 'migrate':
        if (config.database.kind === 'external') await migrateExternal(config.database.url, config.db.connectTimeoutSeconds);
        else await runMigrations(database.db);
        process.stdout.write('migrations applied\n');
        break;
      case 'seed': {
        const summary = await seedDemoData(database, config, logger);
        process.stdout.write(`seeded: ${JSON.stringify(summary)}\n`);
        break;
      }
      case 'reset':
        process.stdout.write(`emptied ${await resetData(database)} tables\n`);
        break;
      case 'nuke':
        await nukeSchema(database);
        process.stdout.write('schema dropped; run db:migrate to recreate it\n');
        break;
    }
  } finally {
    await database.close();
  }
}

main().catch((error: unknown) => fail(`db script failed: ${describeFailure(error)}`));
