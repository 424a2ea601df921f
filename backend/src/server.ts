import closeWithGrace from 'close-with-grace';
import { buildApp } from './app.js';
import { createAuth } from './auth/auth.js';
import { loadConfigOrExit } from './config.js';
import { openDatabase } from './db/client.js';
import { runMigrations } from './db/migrate.js';
import { Engine } from './engine/engine.js';
import { createEventBus } from './engine/events.js';
import { createLogger } from './logger.js';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger(config);
  const database = await openDatabase(config, logger);
  try {
    if (database.kind === 'embedded' || config.db.migrateOnStart) {
      await runMigrations(database.db, logger);
    }
    const bus = await createEventBus(database, logger);
    const auth = createAuth({ config, db: database.db, logger });
    const app = await buildApp({ config, database, auth, logger, bus });
    const engine = config.engine.enabled ? new Engine({ database, bus, config: config.engine, logger }) : undefined;

    if (engine) {
      // Runs before the db plugin's own onClose (Fastify runs onClose hooks last-added first), that
      // is after in-flight requests finished and before the pool ends: running steps may finish.
      app.addHook('onClose', async () => {
        await engine.stop(Math.floor(config.shutdownGraceMs * 0.6));
      });
    }

    // On SIGINT/SIGTERM: the server stops accepting at once (new requests get 503 or a refused
    // connection), in-flight requests finish, the engine stops claiming and lets running steps
    // finish (handing back what it cannot), the pool closes, and the process exits 0. A second
    // signal or the grace delay running out forces the exit.
    closeWithGrace({ delay: config.shutdownGraceMs, logger }, async ({ signal, err }) => {
      if (err) logger.error({ err }, 'shutting down after an uncaught error');
      else logger.info({ signal }, 'shutting down');
      await app.close();
      await bus.close();
    });

    await app.listen({ host: config.host, port: config.port });
    engine?.start();
  } catch (error) {
    await database.close().catch(() => undefined);
    throw error;
  }
}

main().catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`autonode failed to start: ${message}\n`);
  process.exit(1);
});
