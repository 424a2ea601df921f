import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { repoRoot, type Config } from '../config.js';
import { generateKeyEntry, Keyring, parseKeyEntries } from './keyring.js';

/** Where development keeps its generated key when SECRETS_KEYS is unset (never in production). */
export function developmentKeyFile(config: Pick<Config, 'database'>): string {
  return config.database.kind === 'embedded'
    ? path.join(config.database.dataDir, 'secrets-key')
    : path.join(repoRoot, '.data', 'development-secrets-key');
}

/**
 * The keyring of SECRETS_KEYS. Outside production, without it: a key generated once into a file
 * and reused by every later start (in the embedded database's data directory, so it lives and
 * goes with the data it protects; beside it, in `.data/`, for a real PostgreSQL, with a warning:
 * the database's secrets then depend on a file on this machine). Production has refused to start
 * without SECRETS_KEYS (config.ts).
 */
export async function loadKeyring(config: Pick<Config, 'secretsKeys' | 'database' | 'isProduction'>, logger: { warn(details: object, message: string): void }): Promise<Keyring> {
  if (config.secretsKeys) return new Keyring(parseKeyEntries(config.secretsKeys));
  if (config.isProduction) throw new Error('SECRETS_KEYS is required in production');
  const file = developmentKeyFile(config);
  const spec = await readOrCreateKeyFile(file);
  if (config.database.kind === 'external') {
    logger.warn({ file }, 'SECRETS_KEYS is not set: secrets are sealed with a development key kept in this file; set SECRETS_KEYS (see README) before storing anything real');
  }
  return new Keyring(parseKeyEntries(spec));
}

/** The file's key, or a new one written with mode 0600; two processes starting together agree on one. */
async function readOrCreateKeyFile(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await mkdir(path.dirname(file), { recursive: true });
  try {
    await writeFile(file, `${generateKeyEntry('dev')}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    // Another process wrote it first: use theirs.
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return (await readFile(file, 'utf8')).trim();
}
