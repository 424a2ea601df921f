/**
 * Key rotation: `node dist/rotate-secrets.js` (the npm script secrets:rotate builds, then runs it;
 * in the Docker image, the same command beside the service's). It reads the
 * service's config (DATABASE_URL, or the embedded database in EMBEDDED_DATA_DIR: stop the server
 * first, PGlite allows one process) and re-wraps every stored secret under the first key of
 * SECRETS_KEYS (src/secrets/rotate.ts). Exit 0: every secret is under the first key, the others
 * may leave SECRETS_KEYS; 2: some could not be opened or were not reached (named in the output),
 * keep the old keys; 1: it could not run.
 */
import { ConfigError, loadConfigOrExit } from './config.js';
import { openDatabase } from './db/client.js';
import { describeFailure } from './db/errors.js';
import { createLogger } from './logger.js';
import { developmentKeyFile, loadKeyring } from './secrets/load.js';
import { describeRotation, rotateSecrets, rotationComplete } from './secrets/rotate.js';

const INCOMPLETE_EXIT_CODE = 2;

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  // Without SECRETS_KEYS the service seals with one development key: there is nothing to rotate
  // to. Moving those secrets to real keys is a rotation with the development key listed second.
  const config = loadConfigOrExit((candidate) => {
    if (!candidate.secretsKeys) {
      throw new ConfigError(
        `secrets:rotate refused: SECRETS_KEYS is not set; list the new key first and the old ones after it (the development key is in ${developmentKeyFile(candidate)})`,
      );
    }
  });
  const logger = createLogger({ logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel });
  const keyring = await loadKeyring(config, logger);
  const database = await openDatabase(config, logger, 'autonode-secrets-rotate');
  let complete: boolean;
  try {
    const report = await rotateSecrets(database.sql, keyring);
    for (const line of describeRotation(report)) process.stdout.write(`${line}\n`);
    complete = rotationComplete(report);
  } finally {
    await database.close();
  }
  process.exit(complete ? 0 : INCOMPLETE_EXIT_CODE);
}

main().catch((error: unknown) => fail(`secrets:rotate failed: ${describeFailure(error)}`));
