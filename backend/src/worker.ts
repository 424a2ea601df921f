import closeWithGrace from 'close-with-grace';
import { createEventBus } from './bus/bus.js';
import { ConfigError, loadConfigOrExit } from './config.js';
import { openDatabase } from './db/client.js';
import { describeFailure } from './db/errors.js';
import { assertSchemaCurrent, migrateExternal } from './db/migrate.js';
import { Engine } from './engine/engine.js';
import { ExecutionLifecycle } from './executions/lifecycle.js';
import { ExecutionReads } from './executions/reads.js';
import { createLogger } from './logger.js';
import { loadKeyring } from './secrets/load.js';

/**
 * The engine without HTTP (`npm run worker`): run as many as the work needs, beside the API
 * replicas (ENGINE_ENABLED=false there if they should only serve HTTP), all on one database.
 */
async function main(): Promise<void> {
  const config = loadConfigOrExit((loaded) => {
    if (loaded.database.kind === 'embedded') {
      throw new ConfigError('Invalid configuration: DATABASE_URL: a separate worker needs a real PostgreSQL (the embedded database serves one process; npm start runs the engine in-process)');
    }
  });
  const logger = createLogger(config);
  // Before the database: a worker that cannot open the stored secrets does not start.
  const keyring = await loadKeyring(config, logger);
  if (config.db.migrateOnStart && config.database.kind === 'external') await migrateExternal(config.database.url, config.db.connectTimeoutSeconds, logger);
  const database = await openDatabase(config, logger, 'autonode-worker');
  if (!config.db.migrateOnStart) {
    try {
      await assertSchemaCurrent(database.db, logger);
    } catch (error) {
      await database.close();
      throw error;
    }
  }
  const bus = createEventBus(database, logger);
  const lifecycle = new ExecutionLifecycle(database.sql, bus, new ExecutionReads(database.sql), {
    maxPayloadBytes: config.engine.maxPayloadBytes,
    maxStorageBytes: config.storageMaxBytes,
    maxWaitingPerUser: config.engine.userWaitingMax,
  });
  const engine = new Engine({ lifecycle, bus, config: config.engine, logger, db: database.db, keyring });

  // The same order as the app's: the engine hands back its work, the bus unlistens, the pool ends.
  closeWithGrace({ delay: config.shutdownGraceMs, logger }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'worker shutting down after an uncaught error');
    else logger.info({ signal }, 'worker shutting down');
    await engine.stop(Math.floor(config.shutdownGraceMs * 0.8));
    await bus.close();
    await database.close();
  });

  engine.start();
}

main().catch((error: unknown) => {
  process.stderr.write(`autonode worker failed to start: ${describeFailure(error)}\n`);
  process.exit(1);
});
