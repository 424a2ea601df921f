import { ConfigError, loadConfigOrExit } from './config.js';
import { describeFailure } from './db/errors.js';
import { migrateExternal } from './db/migrate.js';
import { createLogger } from './logger.js';

/**
 * Applies the committed migrations to DATABASE_URL and exits: 0 once the schema is current,
 * 1 with the reason on stderr otherwise (`node dist/migrate.js`, for a one-shot migration
 * container that runs before the API and the workers, which then need no MIGRATE_ON_START).
 * It reads the same configuration as the server; the embedded database is refused, since the
 * server migrates it itself on every start.
 */
async function main(): Promise<void> {
  const config = loadConfigOrExit((loaded) => {
    if (loaded.database.kind === 'embedded') {
      throw new ConfigError('Invalid configuration: DATABASE_URL: migrations run against a real PostgreSQL (npm start migrates the embedded database itself)');
    }
  });
  if (config.database.kind !== 'external') return;
  const logger = createLogger(config);
  await migrateExternal(config.database.url, config.db.connectTimeoutSeconds, logger);
  logger.info('autonode migrate: the database schema is up to date');
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`autonode migrate failed: ${describeFailure(error)}\n`);
    process.exit(1);
  },
);
