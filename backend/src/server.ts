import closeWithGrace from 'close-with-grace';
import { loadConfigOrExit } from './config.js';
import { openDatabase, type DbClient } from './db/client.js';
import { describeFailure } from './db/errors.js';
import { assertSchemaCurrent, migrateExternal, runMigrations } from './db/migrate.js';
import { createLogger } from './logger.js';

/**
 * The modules that make up the service (most of the start-up's module loading: Fastify, Better
 * Auth, zod schemas, the engine), loaded while the database opens and migrates rather than before:
 * the embedded one starts in a thread of its own, so both proceed at once.
 */
async function loadServiceModules() {
  const [{ buildApp }, { createAuth }, { Engine }] = await Promise.all([import('./app.js'), import('./auth/auth.js'), import('./engine/engine.js')]);
  return { buildApp, createAuth, Engine };
}

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger(config);
  const migrated = config.database.kind === 'external' && config.db.migrateOnStart ? migrateExternal(config.database.url, config.db.connectTimeoutSeconds, logger) : Promise.resolve();
  const databaseReady = migrated.then(() => openDatabase(config, logger)).then(async (database) => {
    try {
      if (database.kind === 'embedded') await runMigrations(database.db, logger);
      // Migrated just now (migrateExternal) or expected to be: checked only in the second case.
      else if (!config.db.migrateOnStart) await assertSchemaCurrent(database.db, logger);
      return database;
    } catch (error) {
      await database.close().catch(() => undefined);
      throw error;
    }
  });
  const modulesLoaded = loadServiceModules();
  // Whichever fails first is reported; the other's outcome must not surface as an unhandled rejection.
  modulesLoaded.catch(() => undefined);
  const database: DbClient = await databaseReady;
  try {
    const { buildApp, createAuth, Engine } = await modulesLoaded;
    const auth = createAuth({ config, db: database.db, logger });
    const app = await buildApp({ config, database, auth, logger });
    const engine = config.engine.enabled ? new Engine({ lifecycle: app.executions, bus: app.bus, config: config.engine, logger, db: app.database.db, keyring: app.keyring }) : undefined;

    if (engine) {
      // Registered last, so it runs first among onClose hooks (last-added first): after in-flight
      // requests finished, before the bus and the pool close; running steps may finish.
      app.addHook('onClose', async () => {
        await engine.stop(Math.floor(config.shutdownGraceMs * 0.6));
      });
    }

    // On SIGINT/SIGTERM: the server stops accepting at once (new requests get 503 or a refused
    // connection), in-flight requests finish, the engine stops claiming and lets running steps
    // finish (handing back what it cannot), the bus and then the pool close, and the process exits
    // 0. A second signal or the grace delay running out forces the exit.
    closeWithGrace({ delay: config.shutdownGraceMs, logger }, async ({ signal, err }) => {
      if (err) logger.error({ err }, 'shutting down after an uncaught error');
      else logger.info({ signal }, 'shutting down');
      await app.close();
    });

    await app.listen({ host: config.host, port: config.port });
    engine?.start();
  } catch (error) {
    await database.close().catch(() => undefined);
    throw error;
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`autonode failed to start: ${describeFailure(error)}\n`);
  process.exit(1);
});
