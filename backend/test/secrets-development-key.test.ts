import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { repoRoot } from '../src/config.js';
import type * as ConfigModule from '../src/config.js';
import { generateKeyEntry, parseKeyEntries, SecretUnreadableError, type SecretBinding } from '../src/secrets/keyring.js';
import { developmentKeyFile, loadKeyring } from '../src/secrets/load.js';

interface Warning {
  readonly details: object;
  readonly message: string;
}
function recordingLogger(): { warn(details: object, message: string): void; warnings: Warning[] } {
  const warnings: Warning[] = [];
  return { warnings, warn: (details, message) => warnings.push({ details, message }) };
}

const binding = (): SecretBinding => ({ table: 'variables', rowId: randomUUID(), userId: 'development-user' });
const developmentConfig = (database: { kind: 'embedded'; dataDir: string } | { kind: 'external'; url: string }) => ({
  secretsKeys: undefined,
  isProduction: false,
  database,
});

const temporaryDirectories: string[] = [];
async function temporaryDirectory(): Promise<string> {
  const directory = await mkdtemp(path.join(tmpdir(), 'autonode-dev-key-'));
  temporaryDirectories.push(directory);
  return directory;
}
afterAll(async () => {
  for (const directory of temporaryDirectories) await rm(directory, { recursive: true, force: true });
});

describe('the development key (no SECRETS_KEYS outside production)', () => {
  it('on the embedded database: written once into the data directory, mode 0600, and reused by the next start', async () => {
    const dataDir = await temporaryDirectory();
    const config = developmentConfig({ kind: 'embedded', dataDir });
    const file = path.join(dataDir, 'secrets-key');
    expect(developmentKeyFile(config)).toBe(file);

    const logger = recordingLogger();
    const first = await loadKeyring(config, logger);
    const written = await readFile(file, 'utf8');
    expect(((await stat(file)).mode & 0o777).toString(8)).toBe('600');
    expect(parseKeyEntries(written).map((entry) => entry.id)).toEqual(['dev']);
    expect(first.primaryKeyId).toBe('dev');
    // The embedded database is development's own: its key beside its data needs no warning.
    expect(logger.warnings).toEqual([]);

    const where = binding();
    const sealed = first.seal('kept across restarts', where);
    const second = await loadKeyring(config, recordingLogger());
    expect(second.open(sealed, where)).toBe('kept across restarts');
    expect(await readFile(file, 'utf8')).toBe(written);

    // The file is what makes them agree: without it, a new key cannot open the old secrets.
    await rm(file);
    const third = await loadKeyring(config, recordingLogger());
    expect(() => third.open(sealed, where)).toThrow(SecretUnreadableError);
    expect(await readFile(file, 'utf8')).not.toBe(written);
  });

  it('two processes starting together on a new data directory agree on one key', async () => {
    const dataDir = await temporaryDirectory();
    const config = developmentConfig({ kind: 'embedded', dataDir });
    const keyrings = await Promise.all(Array.from({ length: 8 }, () => loadKeyring(config, recordingLogger())));
    const where = binding();
    const sealed = keyrings[0]?.seal('agreed', where);
    if (!sealed) throw new Error('no keyring');
    for (const keyring of keyrings) expect(keyring.open(sealed, where)).toBe('agreed');
    expect(await readdir(dataDir)).toEqual(['secrets-key']);
  });

  it('on a real PostgreSQL: .data/development-secrets-key under the repository root, with a warning at every start', async () => {
    // load.ts again, over a config.ts whose repository root is a temporary directory: this case
    // writes `<repoRoot>/.data/development-secrets-key`, which must not be the developer's own.
    const fakeRepoRoot = await temporaryDirectory();
    vi.resetModules();
    vi.doMock('../src/config.js', async (importOriginal) => ({ ...(await importOriginal<typeof ConfigModule>()), repoRoot: fakeRepoRoot }));
    const loadOverFakeRoot = await import('../src/secrets/load.js');
    vi.doUnmock('../src/config.js');

    const config = developmentConfig({ kind: 'external', url: 'postgres://developer@127.0.0.1:5432/autonode' });
    const file = path.join(fakeRepoRoot, '.data', 'development-secrets-key');
    expect(loadOverFakeRoot.developmentKeyFile(config)).toBe(file);

    const logger = recordingLogger();
    const first = await loadOverFakeRoot.loadKeyring(config, logger);
    expect(((await stat(file)).mode & 0o777).toString(8)).toBe('600');
    expect(logger.warnings).toHaveLength(1);
    expect(logger.warnings[0]?.details).toEqual({ file });
    expect(logger.warnings[0]?.message).toMatch(/SECRETS_KEYS is not set: secrets are sealed with a development key kept in this file/);
    // The warning names the file, never the key in it.
    const key = (await readFile(file, 'utf8')).trim().split(':')[1] ?? '';
    expect(key.length).toBeGreaterThan(40);
    expect(JSON.stringify(logger.warnings)).not.toContain(key);

    const again = recordingLogger();
    const second = await loadOverFakeRoot.loadKeyring(config, again);
    const where = binding();
    expect(second.open(first.seal('same file', where), where)).toBe('same file');
    expect(again.warnings).toHaveLength(1);
  });

  it('the real repository root, which the test above replaces, is the directory above backend/', () => {
    const backendDirectory = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
    expect(repoRoot).toBe(path.dirname(backendDirectory));
    expect(developmentKeyFile(developmentConfig({ kind: 'external', url: 'postgres://developer@127.0.0.1:5432/autonode' }))).toBe(
      path.join(path.dirname(backendDirectory), '.data', 'development-secrets-key'),
    );
  });

  it('with SECRETS_KEYS, no file is read or written; in production without it, nothing is generated', async () => {
    const dataDir = await temporaryDirectory();
    const keyring = await loadKeyring({ secretsKeys: `${generateKeyEntry('k2')},${generateKeyEntry('k1')}`, isProduction: false, database: { kind: 'embedded', dataDir } }, recordingLogger());
    expect(keyring.primaryKeyId).toBe('k2');
    expect(await readdir(dataDir)).toEqual([]);

    // config.ts refuses this environment first (test/config.test.ts); loadKeyring refuses it too.
    await expect(loadKeyring({ secretsKeys: undefined, isProduction: true, database: { kind: 'embedded', dataDir } }, recordingLogger())).rejects.toThrow(
      'SECRETS_KEYS is required in production',
    );
    expect(await readdir(dataDir)).toEqual([]);
  });

  it('a key file someone damaged stops the start with a message that shows none of it', async () => {
    const dataDir = await temporaryDirectory();
    const damaged = 'dev:c2hvcnQta2V5LW1hdGVyaWFs';
    await writeFile(path.join(dataDir, 'secrets-key'), `${damaged}\n`, { mode: 0o600 });
    const failure = await loadKeyring(developmentConfig({ kind: 'embedded', dataDir }), recordingLogger()).then(
      () => undefined,
      (error: unknown) => error as Error,
    );
    expect(failure?.message).toMatch(/key 'dev' must be 32 random bytes/);
    expect(failure?.message).not.toContain('c2hvcnQta2V5');
  });
});
