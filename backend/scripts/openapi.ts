/**
 * Writes the OpenAPI document the service publishes at /api/openapi.json to a file (default:
 * client/openapi.json), for the typed client. No database is needed: the app is built on a
 * postgres.js client that never connects (postgres.js opens connections at the first query, and
 * building the routes runs none), with the in-process event bus so nothing LISTENs either.
 *
 *   tsx scripts/openapi.ts [output path]
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buildApp } from '../src/app.js';
import { createAuth } from '../src/auth/auth.js';
import { loadConfig, repoRoot } from '../src/config.js';
import { createDbClient } from '../src/db/client.js';
import { createLogger } from '../src/logger.js';

const outputPath = path.resolve(process.argv[2] ?? path.join(repoRoot, 'client', 'openapi.json'));

// A fixed environment, not the caller's: the document (its `servers` entry among others) must not
// depend on who runs the script, or the CI drift check would flag every developer's .env.
const config = loadConfig({
  NODE_ENV: 'development',
  LOG_LEVEL: 'silent',
  // Never reached: port 9 (discard) refuses at once, so an accidental query fails loudly instead of hanging.
  DATABASE_URL: 'postgres://openapi@127.0.0.1:9/never-connected',
});
const logger = createLogger(config);
const database = createDbClient(
  {
    url: 'postgres://openapi@127.0.0.1:9/never-connected',
    poolSize: 1,
    idleTimeoutSeconds: 0,
    connectTimeoutSeconds: 1,
    statementTimeoutMs: 0,
    logger,
  },
  // 'embedded' only selects the in-process event bus (no LISTEN connection); no query is run.
  'embedded',
);
const auth = createAuth({ config, db: database.db, logger });
const app = await buildApp({ config, database, auth, logger });
try {
  await app.ready();
  // The same object /api/openapi.json serves; two-space JSON with a final newline, so that
  // regenerating an unchanged API leaves the committed file byte for byte the same.
  await writeFile(outputPath, `${JSON.stringify(app.swagger(), null, 2)}\n`);
  process.stdout.write(`wrote ${path.relative(process.cwd(), outputPath)}\n`);
} finally {
  await app.close();
}
